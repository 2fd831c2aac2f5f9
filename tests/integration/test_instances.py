"""Issue 13 (first part): several chatd instances on one PostgreSQL and one
Redis. Turns on one session are serialized across instances by the
session's turn lease (migration 0007): each turn is given the history the
one before it stored, whichever instance ran it; an instance that dies
holding a lease loses it within TURN_LEASE_SECONDS; one that stalls past
its lease is fenced off and its turn is not stored ("Turn Interrupted")."""

import json
import os
import re
import signal
import sys
import threading
import unittest
import uuid

import psycopg2

from harness import MODEL, PG, SOURCE_DIR, Agent, Chatd, Database, cleanup, wait_for

sys.path.insert(0, os.path.join(SOURCE_DIR, "scripts"))
import pg_statement  # noqa: E402  (scripts/pg_statement.py)

LEASE = 2



def process_calls(agent, sid):
    return [r for r in agent.requests()
            if r["method"] in ("Process", "ProcessStream") and r["session_id"] == sid]


class Instances(unittest.TestCase):
    def setUp(self):
        self.db = Database("chatd_instances")
        self.agent = Agent(AGENT_DELAY_MS=300)
        env = dict(TURN_LEASE_SECONDS=LEASE, MAX_CHAT_HISTORY_CONTEXT=200)
        self.a = Chatd(self.db, agent_port=self.agent.port, **env)
        self.b = Chatd(self.db, agent_port=self.agent.port, **env)
        self.addCleanup(cleanup, self.a, self.b, self.agent, self.db)

    def stored(self, sid):
        return self.db.query("select seq, role, content from chat_messages where session_id = %s"
                             " order by seq", (sid,))

    def test_turns_on_one_session_from_two_instances_run_in_order(self):
        uid = self.db.add_user(balance=10)
        c = self.a.client()
        sid = c.chat(uid, "NEW", "turn 0")["data"]["session_id"]
        c.close()
        results, errors = [], []

        def client(i):
            inst = self.a if i % 2 == 0 else self.b
            cl = inst.client(timeout=60)
            try:
                for k in range(2):
                    msg = "client %d turn %d" % (i, k)
                    r = cl.chat(uid, sid, msg)
                    (results if r.get("type") == 3 and "data" in r else errors).append((msg, r))
            finally:
                cl.close()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 12)
        rows = self.stored(sid)
        self.assertEqual([r[0] for r in rows], list(range(26)))
        self.assertEqual([r[1] for r in rows], ["user", "assistant"] * 13)
        # each turn was given exactly the history stored before it, on
        # whichever instance it ran: 0, 2, 4, ... entries, each once
        calls = process_calls(self.agent, sid)
        self.assertEqual(sorted(len(json.loads(p["chat_history"] or "[]")) for p in calls),
                         list(range(0, 26, 2)))
        for p in calls:
            history = json.loads(p["chat_history"] or "[]")
            self.assertEqual([m["content"] for m in history], [r[2] for r in rows[:len(history)]])
        # and the running summary went from one turn to the next
        summary = self.db.one("select summary from chat_sessions where session_id = %s", (sid,))
        for msg, _ in results:
            self.assertIn(msg[:40], summary)
        self.assertIsNone(self.db.one("select turn_id from turn_leases where session_id = %s", (sid,)))

    def test_instance_killed_mid_turn(self):
        slow = Agent(AGENT_DELAY_MS=4000)
        a = Chatd(self.db, agent_port=slow.port, TURN_LEASE_SECONDS=LEASE)
        self.addCleanup(cleanup, a, slow)
        uid = self.db.add_user(balance=10)
        c = self.b.client()
        sid = c.chat(uid, "NEW", "first")["data"]["session_id"]
        balance = self.db.one("select balance from user_data where user_id = %s", (uid,))
        ca = a.client()
        ca.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, message="dies with its chatd",
                        session_prompt="", file_name=""))
        wait_for(lambda: process_calls(slow, sid), "the turn reached the agent")
        self.assertIsNotNone(self.db.one("select turn_id from turn_leases where session_id = %s", (sid,)))
        a.proc.kill()
        a.proc.wait(10)
        # the other instance takes the session once the lease runs out
        r = c.chat(uid, sid, "after the crash")
        self.assertEqual(r["type"], 3, r)
        self.assertEqual([x[2] for x in self.stored(sid)][2:3], ["after the crash"])
        self.assertEqual(len(self.stored(sid)), 4)
        # the dead turn cost nothing; the new one was given no trace of it
        self.assertEqual(self.db.one("select count(*) from usage_ledger where session_id = %s and kind = 'turn'", (sid,)), 2)
        last = process_calls(self.agent, sid)[-1]
        self.assertNotIn("dies with its chatd", last["chat_history"])
        self.assertGreater(balance, self.db.one("select balance from user_data where user_id = %s", (uid,)))
        c.close()
        ca.ws.close()

    def test_stalled_instance_is_fenced(self):
        slow = Agent(AGENT_DELAY_MS=1500)
        a = Chatd(self.db, agent_port=slow.port, TURN_LEASE_SECONDS=LEASE)
        self.addCleanup(cleanup, a, slow)
        uid = self.db.add_user(balance=10)
        c = self.b.client()
        sid = c.chat(uid, "NEW", "first")["data"]["session_id"]
        ca = a.client(timeout=60)
        ca.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, message="from the stalled one",
                        session_prompt="", file_name=""))
        wait_for(lambda: process_calls(slow, sid), "the turn reached the agent")
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            # the lease runs out while it is stopped: the session goes on
            r = c.chat(uid, sid, "meanwhile")
            self.assertEqual(r["type"], 3, r)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        # its reply came back meanwhile; it may not store it any more
        r = ca.recv()
        self.assertEqual((r.get("type"), r.get("code"), r.get("error")), (3, 29, "Turn Interrupted"), r)
        self.assertEqual([x[2] for x in self.stored(sid)][2:], ["meanwhile", self.stored(sid)[3][2]])
        self.assertEqual(len(self.stored(sid)), 4)
        self.assertEqual(self.db.one("select count(*) from usage_ledger where session_id = %s and kind = 'turn'", (sid,)), 2)
        self.assertIn("event=turn_lease_lost", a.logs())
        # and both instances serve the session normally afterwards
        self.assertEqual(ca.chat(uid, sid, "back again")["type"], 3)
        self.assertEqual(c.chat(uid, sid, "and here")["type"], 3)
        self.assertEqual([x[0] for x in self.stored(sid)], list(range(8)))
        c.close()
        ca.close()


def statement(name):
    """chatd's own SQL of a statement of src/store/pg.c (as
    scripts/pg_statement.py reads it), with $n as psycopg2 named
    parameters pn."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", pg_statement.statement_sql(name))


class LeaseStatement(unittest.TestCase):
    """The lease is taken by one statement (lease_take) while the turn
    before it may be storing: the next_seq it returns must be the one that
    store committed, or the new turn is given an old context. Driven here
    step by step on two connections, deterministically."""

    def test_lease_taken_while_the_previous_turn_stores_sees_its_commit(self):
        db = Database("chatd_lease_stmt")
        chatd = Chatd(db)  # migrates
        self.addCleanup(cleanup, chatd, db)
        uid = db.add_user()
        sid = db.add_session(uid, messages=[("user", "a"), ("assistant", "b")])
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        db.query("insert into turn_leases values (%s, %s, %s, now() + interval '10 seconds')", (sid, uid, first))
        connect = lambda: psycopg2.connect(dbname=db.name, **PG)
        x, y = connect(), connect()
        y.autocommit = True
        try:
            xc = x.cursor()
            # the first turn's store, as chatd runs it, held before its commit
            xc.execute(statement("turn_store"), dict(
                p1=uid, p2=sid, p3=first, p4=2, p5="q", p6="a", p7="", p8="summary", p9="turn", p10=8,
                p11="llama3.1:8b", p12="0.001", p13="0", p14=None, p15=None, p16=False, p17=False, p18=0, p19=0, p20=0, p21=False, p22=0, p23=None))
            row = xc.fetchone()
            self.assertEqual((row[:4], str(row[4])), ((True, True, 2, 2), "0.999"))
            got = {}

            def take():
                yc = y.cursor()
                yc.execute(statement("lease_take"), dict(p1=uid, p2=sid, p3=second, p4=10, p5=False,
                                                         p6=[8], p7=2))
                got["row"] = yc.fetchone()
            t = threading.Thread(target=take)
            t.start()
            # it waits for the store's row lock (so the wait is exercised)
            wait_for(lambda: db.one("select count(*) from pg_stat_activity where datname = %s"
                                    " and wait_event_type = 'Lock'", (db.name,)) > 0, "the lease take waits")
            x.commit()
            t.join()
            # taken, at the committed next_seq and active leaf (the store's answer),
            # with the most a llama turn (two calls) can cost reserved
            self.assertEqual(got["row"][:6], (4, True, True, 3, "{0.028672}", None))
        finally:
            x.close()
            y.close()


class LeaseRelease(unittest.TestCase):
    """A released lease is announced (NOTIFY chatd_turn, which wakes the
    turns parked on it on every instance) when a turn found it held, and
    only then (migration 0015): every store announcing its release made
    all stores commit one after another. Driven with chatd's own
    statements; a marker notification sent after each release shows, by
    commit order, whether the release's came before it."""

    def test_release_announced_only_when_waited_for(self):
        db = Database("chatd_lease_release")
        chatd = Chatd(db)  # migrates
        self.addCleanup(cleanup, chatd, db)
        uid = db.add_user()
        sid = db.add_session(uid, messages=[("user", "a"), ("assistant", "b")])
        listener = psycopg2.connect(dbname=db.name, **PG)
        w = psycopg2.connect(dbname=db.name, **PG)
        listener.autocommit = w.autocommit = True
        self.addCleanup(listener.close)
        self.addCleanup(w.close)
        listener.cursor().execute("listen chatd_turn; listen chatd_test_marker")
        wc = w.cursor()

        def take(turn):
            wc.execute(statement("lease_take"), dict(p1=uid, p2=sid, p3=turn, p4=10, p5=False,
                                                     p6=None, p7=1))
            return wc.fetchone()[1]

        def heard_until_marker(mark):
            wc.execute("select pg_notify('chatd_test_marker', %s)", (mark,))
            heard = []

            def marker():
                listener.poll()
                while listener.notifies:
                    n = listener.notifies.pop(0)
                    heard.append((n.channel, n.payload))
                return ("chatd_test_marker", mark) in heard
            wait_for(marker, "the marker notification")
            return [h for h in heard if h[0] == "chatd_turn"]

        a, b, c = (str(uuid.uuid4()) for _ in range(3))
        # nobody waits: taken, given back, not announced
        self.assertTrue(take(a))
        wc.execute(statement("lease_drop"), dict(p1=sid, p2=a))
        self.assertEqual(heard_until_marker("1"), [])
        # a turn finds it held: its release is announced, once
        self.assertTrue(take(a))
        self.assertFalse(take(b))
        self.assertFalse(take(c))
        self.assertEqual(db.one("select turn_id::text || ' ' || waiters from turn_leases"
                                " where session_id = %s", (sid,)), a + " true")
        wc.execute(statement("lease_drop"), dict(p1=sid, p2=a))
        self.assertEqual(heard_until_marker("2"), [("chatd_turn", sid)])
        # the next holder starts unmarked
        self.assertTrue(take(b))
        self.assertEqual(db.one("select waiters from turn_leases where session_id = %s", (sid,)), False)
        wc.execute(statement("lease_drop"), dict(p1=sid, p2=b))
        self.assertEqual(heard_until_marker("3"), [])
        # a lease that ran out is taken over, unmarked, by whoever comes
        self.assertTrue(take(a))
        self.assertFalse(take(b))
        db.query("update turn_leases set lease_until = now() - interval '1 second' where session_id = %s",
                 (sid,))
        self.assertTrue(take(c))
        self.assertEqual(db.one("select turn_id::text || ' ' || waiters || ' ' || stopped from turn_leases"
                                " where session_id = %s", (sid,)), c + " false false")


if __name__ == "__main__":
    unittest.main()
