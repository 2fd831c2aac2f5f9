"""Issue 12: money that adds up (the ledger, exact decimals, code 13) and
titles (the Title RPC), against a real chatd, chat-agent, PostgreSQL and
Redis. The agent's AGENT_COSTS makes its replies cost exact amounts;
AGENT_COST_FIELDS makes it an older agent (float only) or a newer one."""

import json
import threading
import time
import unittest
from decimal import Decimal

from harness import MODEL, Agent, Chatd, Database, StackCase, cleanup, read, redis_client, wait_for


def ledger(db, uid):
    return db.query("select kind, seq, model_name, cost, prompt_tokens, completion_tokens, estimated"
                    " from usage_ledger where user_id = %s order by entry_id", (uid,))



class ExactMoney(StackCase):
    DB_PREFIX = "chatd_ledger_float"
    # an older agent: only the float field, and no summaries or titles
    AGENT_ENV = dict(AGENT_COSTS="0.000128,0.000218", AGENT_COST_FIELDS="float",
                     AGENT_DISABLE="Summarize,Title")

    def test_balance_is_exact(self):
        uid = self.db.add_user(balance=10)
        c = self.chatd.client()
        sid = c.chat(uid, "NEW", "one")["data"]["session_id"]
        self.assertEqual(c.chat(uid, sid, "two")["type"], 3)
        # the frame itself says 9.999654: never 9.99965400000003
        c.send(6, {"user_id": uid})
        raw = c.ws.recv()
        self.assertEqual(raw, '{"type":6,"data":{"balance":9.999654}}')
        self.assertEqual(self.db.one("select balance::text from user_data where user_id = %s", (uid,)),
                         "9.999654")
        rows = ledger(self.db, uid)
        self.assertEqual([(r[0], r[1], r[2]) for r in rows], [("turn", 1, MODEL), ("turn", 3, MODEL)])
        # (the agent charges its costs in turn, whichever test came first)
        self.assertEqual(sorted(r[3] for r in rows), [Decimal("0.000128"), Decimal("0.000218")])
        # the echo agent reports its token estimates
        self.assertTrue(all(r[4] > 0 and r[5] > 0 and not r[6] for r in rows), rows)
        u = c.req(13, {"user_id": uid})["data"]
        self.assertRegex(u.pop("caps_reset"), r"^\d{4}-\d\d-01T00:00:00Z$")
        self.assertEqual(u, {"user_id": uid, "balance": 9.999654, "spent": 0.000346, "turns": 2,
                             "by_model": [{"model": MODEL, "turns": 2, "spent": 0.000346}],
                             "caps": []})
        c.close()

    def test_admin_sql_unchanged(self):
        # the statements admins have always used
        uid = str(self.db.one("insert into user_data(username, models, balance)"
                              " values ('Admin Made', array[4,5,8], 1) returning user_id"))
        self.db.query("update user_data set balance = balance + 5 where user_id = %s", (uid,))
        c = self.chatd.client()
        self.assertEqual(c.req(6, {"user_id": uid})["data"]["balance"], 6)
        self.assertEqual(c.chat(uid, "NEW", "hi")["type"], 3)
        b = Decimal(self.db.one("select balance::text from user_data where user_id = %s", (uid,)))
        self.assertIn(6 - b, (Decimal("0.000128"), Decimal("0.000218")))
        c.close()


class PreciseCost(StackCase):
    DB_PREFIX = "chatd_ledger_double"
    AGENT_ENV = dict(AGENT_COSTS="0.00012812345678", AGENT_COST_FIELDS="double",
                     AGENT_DISABLE="Summarize,Title")

    def test_double_field_taken_in_full(self):
        uid = self.db.add_user(balance=1)
        c = self.chatd.client()
        self.assertEqual(c.chat(uid, "NEW", "x")["type"], 3)
        self.assertEqual(ledger(self.db, uid)[0][3], Decimal("0.00012812345678"))
        self.assertEqual(self.db.one("select balance::text from user_data where user_id = %s", (uid,)),
                         "0.99987187654322")
        c.close()


class Ledger(StackCase):
    """The default echo agent: costs from its token estimates, summaries
    and titles on (each charged)."""
    DB_PREFIX = "chatd_ledger"
    AGENT_ENV = dict(AGENT_DELAY_MS="300")

    def test_balance_equals_start_minus_ledger_at_every_moment(self):
        uid = self.db.add_user(balance=50)
        stop = threading.Event()
        seen, bad = [0], []

        def check():
            conn = self.db.connect()
            conn.autocommit = True
            cur = conn.cursor()
            while not stop.is_set():
                # one statement: one snapshot
                cur.execute("select u.balance, coalesce((select sum(cost) from usage_ledger l"
                            " where l.user_id = u.user_id), 0) from user_data u where user_id = %s", (uid,))
                b, spent = cur.fetchone()
                if b + spent != 50:
                    bad.append((b, spent))
                seen[0] += 1
            conn.close()

        t = threading.Thread(target=check)
        t.start()
        try:
            def turns(i):
                c = self.chatd.client()
                sid = "NEW"
                for k in range(4):
                    r = c.chat(uid, sid, "thread %d turn %d" % (i, k), stream=(k % 2 == 0))
                    while r.get("type") == 7:
                        r = c.recv()
                    self.assertEqual(r["type"], 3, r)
                    sid = r["data"]["session_id"]
                c.close()
            threads = [threading.Thread(target=turns, args=(i,)) for i in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            # the four titles come after their replies
            wait_for(lambda: self.db.one("select count(*) from usage_ledger where user_id = %s"
                                         " and kind = 'title'", (uid,)) == 4, "four titles charged")
        finally:
            stop.set()
            t.join()
        self.assertEqual(bad, [])
        self.assertGreater(seen[0], 10)
        kinds = [r[0] for r in ledger(self.db, uid)]
        self.assertEqual((kinds.count("turn"), kinds.count("title")), (16, 4))
        b = self.db.one("select balance from user_data where user_id = %s", (uid,))
        self.assertEqual(b + self.db.one("select sum(cost) from usage_ledger where user_id = %s", (uid,)), 50)
        # a turn's row is its reply's cost plus its summary's: more than the reply alone
        self.assertTrue(all(r[3] > 0 for r in ledger(self.db, uid)))

    def test_stopped_turn_is_charged_its_estimate(self):
        uid = self.db.add_user(balance=1)
        c = self.chatd.client()
        c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="please stop me " * 5,
                       session_prompt="", stream=True))
        first = c.recv()
        self.assertEqual(first["type"], 7, first)
        sid = first["data"]["session_id"]
        with self.agent.held():  # the 0.3 s reply is still running when the stop comes
            c.send(8, {"user_id": uid, "session_id": sid})
            msgs = [c.recv() for _ in range(2)]
            while not any(m.get("type") == 3 and "data" in m for m in msgs):
                msgs.append(c.recv())
        (row,) = [r for r in ledger(self.db, uid) if r[0] == "turn"]
        kind, seq, model, cost, pt, ct, estimated = row
        self.assertTrue(estimated)
        # tokens at llama3.1:8b's prices (0.0015 and 0.002 per 1K), in decimals
        self.assertEqual(cost, (Decimal(pt) * Decimal("0.0015") + Decimal(ct) * Decimal("0.002")) / 1000)
        # the balance is 1 minus the ledger (one snapshot: the new session's
        # title may be charged at any moment)
        self.assertEqual(self.db.one("select u.balance + coalesce((select sum(cost) from usage_ledger l"
                                     " where l.user_id = u.user_id), 0) from user_data u where user_id = %s",
                                     (uid,)), 1)
        c.close()

    def test_failed_turn_charges_nothing(self):
        uid = self.db.add_user(balance=0)  # refused: no balance
        c = self.chatd.client()
        self.assertEqual(c.chat(uid, "NEW", "x")["code"], 15)
        self.assertEqual(ledger(self.db, uid), [])
        c.close()

    def test_admin_view(self):
        uid = self.db.add_user(balance=1, name="Viewed")
        c = self.chatd.client()
        sid = c.chat(uid, "NEW", "a")["data"]["session_id"]
        c.chat(uid, sid, "b")
        c.chat(uid, "NEW", "c", model="gpt-4-turbo")
        wait_for(lambda: self.db.one("select count(*) from usage_ledger where user_id = %s and kind = 'title'",
                                     (uid,)) == 2, "titles")
        rows = self.db.query("select username, model_name, day, turns, spent from usage_daily"
                             " where user_id = %s order by model_name", (uid,))
        self.assertEqual([(r[0], r[1], r[3]) for r in rows], [("Viewed", "gpt-4-turbo", 1), ("Viewed", MODEL, 2)])
        self.assertEqual(rows[0][2], self.db.one("select (now() at time zone 'UTC')::date"))
        self.assertEqual(sum(r[4] for r in rows),
                         self.db.one("select sum(cost) from usage_ledger where user_id = %s", (uid,)))
        c.close()

    def test_usage_code_13(self):
        uid = self.db.add_user(balance=2)
        c = self.chatd.client()
        sid = c.chat(uid, "NEW", "a")["data"]["session_id"]
        c.chat(uid, sid, "b")
        c.chat(uid, "NEW", "c", model="gpt-4-turbo")
        wait_for(lambda: self.db.one("select count(*) from usage_ledger where user_id = %s and kind = 'title'",
                                     (uid,)) == 2, "titles")
        # one of them happened last week
        self.db.query("update usage_ledger set created_at = now() - interval '7 days'"
                      " where user_id = %s and seq = 3", (uid,))
        c.send(13, {"user_id": uid})
        u = json.loads(c.ws.recv(), parse_float=Decimal)  # every digit, as sent
        self.assertEqual(u["type"], 13, u)
        d = u["data"]
        self.assertEqual(set(d), {"user_id", "balance", "spent", "turns", "by_model", "caps",
                                  "caps_reset"})
        spent = self.db.one("select sum(cost) from usage_ledger where user_id = %s", (uid,))
        self.assertGreater(len(str(spent)), 17)  # more digits than a double holds
        self.assertEqual((d["spent"], d["turns"]), (spent, 3))
        self.assertEqual(d["balance"], 2 - spent)
        self.assertEqual(sum(m["spent"] for m in d["by_model"]), spent)
        self.assertEqual(sorted((m["model"], m["turns"]) for m in d["by_model"]), [("gpt-4-turbo", 1), (MODEL, 2)])
        self.assertEqual(d["by_model"], sorted(d["by_model"], key=lambda m: -m["spent"]))
        # since/until (RFC 3339 or a date; until excluded)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        c.send(13, {"user_id": uid, "since": today})
        recent = json.loads(c.ws.recv(), parse_float=Decimal)["data"]
        self.assertEqual(recent["turns"], 2)
        self.assertEqual(recent["balance"], d["balance"])  # the balance is now's
        old = c.req(13, {"user_id": uid, "until": today + "T00:00:00Z"})["data"]
        self.assertEqual((old["turns"], [m["model"] for m in old["by_model"]]), (1, [MODEL]))
        none = c.req(13, {"user_id": uid, "since": "2000-01-01", "until": "2000-01-02T00:00:00+02:00"})["data"]
        self.assertEqual((none["spent"], none["turns"], none["by_model"]), (0, 0, []))
        # a user without a ledger
        fresh = self.db.add_user(balance=3)
        f = c.req(13, {"user_id": fresh})["data"]
        del f["caps_reset"]
        self.assertEqual(f, {"user_id": fresh, "balance": 3, "spent": 0, "turns": 0, "by_model": [],
                             "caps": []})
        # the same after Redis loses everything: the ledger is PostgreSQL's
        redis_client().flushall()
        c.send(13, {"user_id": uid})
        self.assertEqual(json.loads(c.ws.recv(), parse_float=Decimal)["data"], d)
        c.close()

    def test_usage_bad_input(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        for data, field in ((dict(since="yesterday"), "since"), (dict(since=20261130), "since"),
                            (dict(until="2026-02-30"), "until"), (dict(since=["2026-01-01"]), "since"),
                            (dict(since="2026-02-01", until="2026-01-01"), "until"),
                            (dict(since="2026-01-01T00:00:00"), "since")):
            r = c.req(13, dict(user_id=uid, **data))
            self.assertEqual((r["code"], r["type"]), (17, 13), (data, r))
            self.assertIn("'%s'" % field, r["error"])
        r = c.req(13, {"user_id": "00000000-0000-4000-8000-000000000000"})
        self.assertEqual(r["code"], 3, r)
        self.assertEqual(c.req(13, {"user_id": "nope"})["code"], 17)
        self.assertEqual(c.req(13, {"user_id": uid, "since": None})["type"], 13)
        c.close()


class Titles(StackCase):
    DB_PREFIX = "chatd_titles"
    AGENT_ENV = dict(AGENT_DELAY_MS="600")

    def name(self, c, uid, sid):
        return {s["session_id"]: s["session_name"] for s in c.req(1, {"user_id": uid})["data"]["session_info"]}[sid]

    def titled(self, uid, n=1):
        return wait_for(lambda: self.db.one("select count(*) from usage_ledger where user_id = %s"
                                            " and kind = 'title'", (uid,)) >= n, "title charged")

    def test_title_replaces_the_first_name(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        msg = "Plan a long weekend in Rome with kids please"
        r = c.chat(uid, "NEW", msg)
        sid = r["data"]["session_id"]
        self.assertEqual(r["data"]["session_name"], msg[:20])  # the reply keeps today's name
        self.titled(uid)
        self.assertEqual(self.name(c, uid, sid), "Plan a long weekend in Rome")
        (req,) = [x for x in self.agent.requests() if x["method"] == "Title" and x["session_id"] == sid]
        self.assertEqual((req["user_message"], req["model_name"], req["user_id"]), (msg, MODEL, uid))
        self.assertTrue(req["assistant_message"].startswith("echo: " + msg))
        # only the first turn asks
        c.chat(uid, sid, "and a second question")
        time.sleep(1.0)  # (waits for a call that must not come)
        self.assertEqual(len([x for x in self.agent.requests() if x["method"] == "Title"
                              and x["session_id"] == sid]), 1)
        c.close()

    def test_rename_before_the_title_wins(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        sid = c.chat(uid, "NEW", "something to be renamed soon")["data"]["session_id"]
        self.assertEqual(c.req(10, {"user_id": uid, "session_id": sid, "session_name": "Mine"})["type"], 10)
        self.titled(uid)  # the title came, and was charged, but not used
        self.assertEqual(self.name(c, uid, sid), "Mine")
        self.assertEqual(self.db.one("select session_name from chat_sessions where session_id = %s", (sid,)), "Mine")
        c.close()

    def test_reasoning_and_quotes_are_cleaned(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        # the echo agent's title is the first six words, quoted
        sid = c.chat(uid, "NEW", '<think>hidden</think> "Real title"')["data"]["session_id"]
        self.titled(uid)
        self.assertEqual(self.name(c, uid, sid), "Real title")
        sid = c.chat(uid, "NEW", "<think>only thinking here</think>")["data"]["session_id"]
        self.titled(uid, 2)
        self.assertEqual(self.name(c, uid, sid), "<think>only thinking here</think>"[:20])
        c.close()

    def test_deleted_before_the_title(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        sid = c.chat(uid, "NEW", "short lived")["data"]["session_id"]
        self.assertEqual(c.req(4, {"user_id": uid, "session_id": sid})["type"], 4)
        self.titled(uid)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where session_id = %s", (sid,)), 0)
        c.close()


class TitleFailures(unittest.TestCase):
    """UNIMPLEMENTED, a timeout and a failed first turn keep the name."""

    def stack(self, agent_env, chatd_env=None):
        db = Database("chatd_title_fail")
        agent = Agent(**agent_env)
        chatd = Chatd(db, agent_port=agent.port, **(chatd_env or {}))
        self.addCleanup(cleanup, chatd, agent, db)
        return db, agent, chatd

    def test_unimplemented_is_remembered(self):
        db, agent, chatd = self.stack(dict(AGENT_DISABLE="Title"))
        uid = db.add_user()
        c = chatd.client()
        a = c.chat(uid, "NEW", "first session here, long name")["data"]["session_id"]
        wait_for(lambda: any(x["method"] == "Title" for x in agent.requests()), "a Title call")
        b = c.chat(uid, "NEW", "second session here, long name")["data"]["session_id"]
        names = {s["session_id"]: s["session_name"] for s in c.req(1, {"user_id": uid})["data"]["session_info"]}
        self.assertEqual(names, {a: "first session here, ", b: "second session here,"})
        self.assertEqual(len([x for x in agent.requests() if x["method"] == "Title"]), 1)
        self.assertIn("Title not implemented by the agent", read(chatd.log_path))
        c.close()

    def test_timeout_keeps_the_name(self):
        db, agent, chatd = self.stack(dict(AGENT_DELAY_MS="2500"), dict(AI_TITLE_TIMEOUT_SECONDS="1"))
        uid = db.add_user()
        c = chatd.client()
        sid = c.chat(uid, "NEW", "a title that comes too late")["data"]["session_id"]
        wait_for(lambda: "event=title_failed session=%s grpc_status=4" % sid in read(chatd.log_path),
                 "the title's deadline")
        time.sleep(2.0)  # (past the agent's answer, which nobody hears)
        self.assertEqual(c.req(1, {"user_id": uid})["data"]["session_info"][0]["session_name"],
                         "a title that comes t")
        c.close()

    def test_failed_first_turn_asks_for_no_title(self):
        db, agent, chatd = self.stack(dict(AGENT_FAIL_MODE="internal"))
        uid = db.add_user()
        c = chatd.client()
        self.assertEqual(c.chat(uid, "NEW", "this fails")["code"], 6)
        self.assertEqual(db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        time.sleep(0.5)  # (waits for a call that must not come)
        self.assertEqual([x for x in agent.requests() if x["method"] == "Title"], [])
        self.assertEqual(db.one("select count(*) from usage_ledger where user_id = %s", (uid,)), 0)
        c.close()


if __name__ == "__main__":
    unittest.main()
