"""Issue 10 (D1, D2): Redis may stall, drop a connection, be flushed or lose
a write at any moment, and no answer of chatd may be one that PostgreSQL
contradicts.

- A session's context is versioned by next_seq and used only at the
  version the turn knows to be current: a stalled Redis or a killed client
  connection during a turn (so the old context survives in Redis) must not
  give the next turn a stale history or summary.
- The session list, the user profile and the model names are copies
  checked against what PostgreSQL announced (NOTIFY from triggers): a
  populate that read before a write and lands after it, a write whose
  invalidation never reached Redis, or an admin's plain SQL must not show.
- A randomized run: clients writing (turns, new sessions, deletes) and
  reading, while Redis is stopped (SIGSTOP), its clients are killed and it
  is flushed at random; every answer is compared with PostgreSQL.
"""

import json
import os
import random
import signal
import sys
import threading
import time
import unittest
import uuid

from harness import MODEL, Agent, Chatd, Database, RedisServer, cleanup
from test_faults import PRICES, START_BALANCE, Traffic, agent_priced, check_store

SEED = int(os.environ.get("COHERENCE_SEED", "0")) or random.randrange(1, 1 << 30)
DURATION = float(os.environ.get("COHERENCE_SECONDS", "40"))


def process_requests(agent, sid):
    return [r for r in agent.requests() if r["method"] in ("Process", "ProcessStream")
            and r["session_id"] == sid]


def wait_for(fn, timeout=10.0):
    """fn() until it returns something true, at most timeout seconds (a
    bound on a hang, not a measure: NOTIFY arrives in milliseconds)."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.02)


class Stack:
    """A private Redis (to stop and kill), an echo agent, a database and
    one chatd with one worker, so that every request uses the one Redis
    connection a fault reaches."""

    def __init__(self, name, workers=1):
        self.rds = self.agent = self.db = self.chatd = None
        try:
            self.rds = RedisServer()
            self.agent = Agent(**PRICES)
            self.db = Database(name)
            self.chatd = Chatd(self.db, agent_port=self.agent.port, REDIS_PORT=self.rds.port,
                               WORKER_THREADS=workers, AI_TIMEOUT_SECONDS=20)
            agent_priced(self.db)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.rds is not None and self.rds.proc is not None:
            self.rds.proc.send_signal(signal.SIGCONT)
        cleanup(self.chatd, self.agent, self.db, self.rds)

    def redis(self):
        return self.rds.client()

    def kill_redis_clients(self):
        """Every chatd connection to Redis is cut; chatd learns it only at
        its next command (this is the dropped-connection fault)."""
        self.redis().execute_command("CLIENT", "KILL", "TYPE", "normal")

    def stall(self):
        self.rds.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.rds.proc.send_signal(signal.SIGCONT)


class Context(unittest.TestCase):
    """D1: the context a turn is given is exactly what PostgreSQL holds."""

    def three_turns(self, fault, undo=lambda s: None):
        s = Stack("chatd_coh_ctx")
        try:
            uid = s.db.add_user("Ctx", balance=START_BALANCE)
            c = s.chatd.client()
            try:
                r1 = c.chat(uid, "NEW", "first turn")
                self.assertEqual(r1["type"], 3, r1)
                sid = r1["data"]["session_id"]
                key = "chatd:{s:%s}:ctx" % sid
                self.assertTrue(s.redis().exists(key), "turn 1 wrote its context")
                fault(s)
                r2 = c.chat(uid, sid, "second turn")
                self.assertEqual(r2["type"], 3, r2)
                undo(s)
                # past the 1 s back-off after a Redis failure: Redis is used again
                time.sleep(1.5)
                r3 = c.chat(uid, sid, "third turn")
                self.assertEqual(r3["type"], 3, r3)
                self.assertIn("[history=4 ", r3["data"]["message"])
            finally:
                c.close()
            reqs = process_requests(s.agent, sid)
            self.assertEqual(len(json.loads(reqs[2]["chat_history"])), 4)
            self.assertIn("second turn", reqs[2]["chat_summary"])
            turns = [dict(msg=m, result="ok", session=sid) for m in ("first turn", "second turn", "third turn")]
            check_store(self, s.db.query, uid, turns, s.agent.requests())
            summary = s.db.one("select summary from chat_sessions where session_id = %s", (sid,))
            for m in ("first turn", "second turn", "third turn"):
                self.assertIn(m, summary)
        finally:
            s.stop()

    def test_killed_redis_connection_during_a_turn(self):
        # The turn's cache delete and rewrite both fail; turn 1's context
        # stays in Redis, one turn behind.
        self.three_turns(lambda s: s.kill_redis_clients())

    def test_stalled_redis_during_a_turn(self):
        # Redis frozen for the whole turn: every command of it times out.
        self.three_turns(lambda s: s.stall(), lambda s: s.resume())

    def test_stale_context_put_back_is_not_used(self):
        # Whatever way an older context gets (back) into Redis, a turn
        # never uses it: here it is written back by hand after turn 2.
        s = Stack("chatd_coh_ctx_back")
        try:
            uid = s.db.add_user("Ctx", balance=START_BALANCE)
            c = s.chatd.client()
            try:
                sid = c.chat(uid, "NEW", "first turn")["data"]["session_id"]
                key = "chatd:{s:%s}:ctx" % sid
                old = s.redis().get(key)
                self.assertEqual(c.chat(uid, sid, "second turn")["type"], 3)
                s.redis().set(key, old)
                r3 = c.chat(uid, sid, "third turn")
                self.assertIn("[history=4 ", r3["data"]["message"])
                self.assertEqual(len(json.loads(process_requests(s.agent, sid)[2]["chat_history"])), 4)
            finally:
                c.close()
        finally:
            s.stop()


class Lists(unittest.TestCase):
    """D2: the session list, profile and model names never contradict
    PostgreSQL once a write is acknowledged (or an admin's SQL committed)."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack("chatd_coh_lists")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def setUp(self):
        self.c = self.s.chatd.client()

    def tearDown(self):
        self.c.close()

    def sessions(self, uid):
        r = self.c.req(1, {"user_id": uid})
        self.assertEqual(r["type"], 1, r)
        return [x["session_id"] for x in r["data"]["session_info"]]

    def test_late_populate_cannot_hide_a_new_session(self):
        uid = self.s.db.add_user("Late", balance=START_BALANCE)
        key = "chatd:{u:%s}:sessions" % uid
        self.assertEqual(self.sessions(uid), [])
        old = self.s.redis().get(key)
        self.assertIsNotNone(old, "code 1 populated the cache")
        sid = self.c.chat(uid, "NEW", "hello")["data"]["session_id"]
        # A reader that read PostgreSQL before the commit writes its list
        # after the turn's invalidation:
        self.s.redis().set(key, old)
        self.assertEqual(self.sessions(uid), [sid])
        # and the same after a delete
        self.assertEqual(self.sessions(uid), [sid])
        old = self.s.redis().get(key)
        self.assertEqual(self.c.req(4, {"user_id": uid, "session_id": sid})["type"], 4)
        self.s.redis().set(key, old)
        self.assertEqual(self.sessions(uid), [])

    def test_new_session_while_the_redis_connection_is_gone(self):
        uid = self.s.db.add_user("Gone", balance=START_BALANCE)
        self.assertEqual(self.sessions(uid), [])
        self.s.kill_redis_clients()
        r = self.c.chat(uid, "NEW", "hello")
        self.assertEqual(r["type"], 3, r)
        time.sleep(1.5)  # past the back-off: the old list is readable again
        self.assertEqual(self.sessions(uid), [r["data"]["session_id"]])

    def test_admin_sql_shows_at_once(self):
        db = self.s.db
        uid = db.add_user("Before", balance=START_BALANCE)
        self.assertEqual(self.c.req(0, {"user_id": uid})["data"]["username"], "Before")
        self.assertEqual(self.sessions(uid), [])
        models = self.c.req(5, {"user_id": uid})["data"]["models"]
        # each copy is cached now; the admin changes all three by SQL
        db.query("update user_data set username = 'After' where user_id = %s", (uid,))
        sid = db.add_session(uid, name="By hand")
        db.query("insert into model_details values (77, 'coherence-model', 'ollama', 4096, 0, 0)")
        try:
            self.assertTrue(wait_for(lambda: self.c.req(0, {"user_id": uid})["data"]["username"] == "After"))
            self.assertTrue(wait_for(lambda: self.sessions(uid) == [sid]))
            self.assertTrue(wait_for(lambda: "coherence-model" in self.c.req(5, {"user_id": uid})["data"]["models"]))
            # and stays so: no older copy comes back, whatever Redis holds
            for _ in range(50):
                self.assertEqual(self.c.req(0, {"user_id": uid})["data"]["username"], "After")
                self.assertEqual(self.sessions(uid), [sid])
            db.query("delete from chat_sessions where session_id = %s", (sid,))
            self.assertTrue(wait_for(lambda: self.sessions(uid) == []))
        finally:
            db.query("delete from model_details where model_id = 77")
        self.assertTrue(wait_for(lambda: self.c.req(5, {"user_id": uid})["data"]["models"] == models))
        # a deleted user is not served from a copy either
        db.query("delete from user_data where user_id = %s", (uid,))
        self.assertTrue(wait_for(lambda: self.c.req(0, {"user_id": uid}).get("code") == 3))


class InMemory(unittest.TestCase):
    """Codes 0, 1 and 5 answered by the service thread from copies in
    chatd's memory (store/local.c): the same bytes a worker writes, never a
    copy PostgreSQL contradicts, and a connection always sees its own
    earlier writes, even when it does not wait for their answers."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack("chatd_coh_memory", workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def raw(self, c, type_, data):
        c.send(type_, data)
        return c.ws.recv()

    def test_the_same_bytes_as_a_worker(self):
        uid = self.s.db.add_user("Bytes", balance=START_BALANCE)
        self.s.db.add_session(uid, 'Name with "quotes" \u00e9 and \\ slash')
        c = self.s.chatd.client()
        try:
            for code, data in ((0, {"user_id": uid}), (1, {"user_id": uid}), (5, {"user_id": uid})):
                self.s.redis().flushall()
                self.s.chatd.stop()
                self.s.chatd.start()  # nothing in memory: a worker answers
                c.close()
                c = self.s.chatd.client()
                first = self.raw(c, code, data)
                again = self.raw(c, code, data)  # from memory
                self.assertEqual(first, again, code)
                self.assertEqual(json.loads(first)["type"], code)
        finally:
            c.close()

    def test_admin_sql_and_flushall(self):
        # An admin's commit reaches chatd as a NOTIFY, a moment after the
        # commit itself (docs/ARCHITECTURE.md): each change is awaited, and
        # once seen it must stay seen.
        uid = self.s.db.add_user("Admin", balance=START_BALANCE)
        c = self.s.chatd.client()

        def seen(type_, pick, want):
            self.assertTrue(wait_for(lambda: pick(c.req(type_, {"user_id": uid})["data"]) == want), want)
            for _ in range(5):
                self.assertEqual(pick(c.req(type_, {"user_id": uid})["data"]), want)
        try:
            for _ in range(3):
                self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "Admin")
            self.s.db.query("update user_data set username = 'Renamed' where user_id = %s", (uid,))
            seen(0, lambda d: d["username"], "Renamed")
            sid = self.s.db.add_session(uid, "by SQL")
            seen(1, lambda d: [x["session_id"] for x in d["session_info"]], [sid])
            self.s.db.query("update chat_sessions set session_name = 'renamed by SQL' where session_id = %s", (sid,))
            seen(1, lambda d: d["session_info"][0]["session_name"], "renamed by SQL")
            self.s.redis().flushall()
            self.assertEqual(c.req(1, {"user_id": uid})["data"]["session_info"][0]["session_name"], "renamed by SQL")
            self.s.db.query("update model_details set model_name = model_name || '-v2' where model_id = 4")
            try:
                seen(5, lambda d: d["models"], sorted(r[0] for r in self.s.db.query("select model_name from model_details")))
            finally:
                self.s.db.query("update model_details set model_name = left(model_name, -3) where model_id = 4")
        finally:
            c.close()

    def test_own_writes_without_waiting(self):
        uid = self.s.db.add_user("Mine", balance=START_BALANCE)
        c = self.s.chatd.client()
        try:
            sid = c.chat(uid, "NEW", "hello")["data"]["session_id"]
            for _ in range(3):  # in memory now
                self.assertEqual(len(c.req(1, {"user_id": uid})["data"]["session_info"]), 1)
            # the delete and the list sent together: the list comes after
            # the delete's answer, and without the session
            c.send(4, {"user_id": uid, "session_id": sid})
            c.send(1, {"user_id": uid})
            self.assertEqual(c.recv()["type"], 4)
            self.assertEqual(c.recv()["data"]["session_info"], [])
            # the same with a rename
            sid = c.chat(uid, "NEW", "again")["data"]["session_id"]
            self.assertEqual(len(c.req(1, {"user_id": uid})["data"]["session_info"]), 1)
            c.send(10, {"user_id": uid, "session_id": sid, "session_name": "fresh name"})
            c.send(1, {"user_id": uid})
            self.assertEqual(c.recv()["type"], 10)
            self.assertEqual(c.recv()["data"]["session_info"][0]["session_name"], "fresh name")
        finally:
            c.close()


class Randomized(unittest.TestCase):
    """Readers and writers on two users while Redis stalls, drops its
    clients and is flushed at random; every answer against PostgreSQL."""

    def test_random_faults_never_give_a_wrong_answer(self):
        print("coherence: seed %d (COHERENCE_SEED to repeat), %.0f s" % (SEED, DURATION), file=sys.stderr)
        rnd = random.Random(SEED)
        s = Stack("chatd_coh_random", workers=4)
        traffic, lists = [], []
        stop = threading.Event()
        faults = dict(stall=0, kill=0, flush=0)
        try:
            users = [(s.db.add_user("Rnd%d" % i, balance=START_BALANCE), "Rnd%d" % i) for i in range(2)]
            for uid, name in users:
                traffic.append(Traffic(s.chatd, uid, name, threads=3, label="%s-" % name).start())
            # Two more users, each with two clients creating, deleting and
            # listing sessions at once (check_store above is about the
            # Traffic users' turns, whose sessions are never deleted).
            for i in range(2):
                uid = s.db.add_user("List%d" % i, balance=START_BALANCE)
                for _ in range(2):
                    lists.append(ListChecker(s.chatd, uid, stop, random.Random(rnd.random())).start())

            end = time.monotonic() + DURATION
            while time.monotonic() < end:
                time.sleep(rnd.uniform(0.1, 0.8))
                kind = rnd.choice(("stall", "stall", "kill", "flush"))
                faults[kind] += 1
                try:
                    if kind == "stall":
                        s.stall()
                        time.sleep(rnd.uniform(0.2, 1.2))
                        s.resume()
                    elif kind == "kill":
                        s.kill_redis_clients()
                    else:
                        s.redis().flushall()
                except Exception as e:  # noqa: BLE001 - a fault that failed is not a wrong answer
                    print("coherence: fault %s failed: %r" % (kind, e), file=sys.stderr)
                    s.resume()
            stop.set()
            for t in traffic:
                t.stop()
            for lc in lists:
                lc.join()

            requests = sum(len(t.replies) for t in traffic) + sum(lc.count for lc in lists)
            wrong = [p for t in traffic for p in t.problems] + [p for lc in lists for p in lc.problems]
            stored = 0
            for (uid, _), t in zip(users, traffic):
                stored += check_store(self, s.db.query, uid, t.turns, s.agent.requests())
            print("coherence: %d requests (%d turns stored, %d list checks), %d faults %r, %d wrong answers"
                  % (requests, stored, sum(lc.count for lc in lists), sum(faults.values()), faults, len(wrong)),
                  file=sys.stderr)
            self.assertEqual(wrong, [], "\n  ".join(wrong[:20]))
            self.assertGreater(stored, 20)
            self.assertGreater(sum(lc.count for lc in lists), 50)
        finally:
            stop.set()
            s.stop()


LIVE_DURATION = float(os.environ.get("COHERENCE_LIVE_SECONDS", "30"))
LIVE_WORDS = 20


class LiveRun:
    """The shared state of RandomizedLive: three chatd instances, what each
    client saw, and the faults."""

    def __init__(self, s, rnd):
        self.s, self.rnd = s, rnd
        self.lock = threading.Lock()
        self.down = set()      # instances killed or stopped now
        self.resumes = []      # (session, ack, frames, how it ended)
        self.stops = []        # (session, turn message, reply to the stop)
        self.problems = []

    def pick(self, rnd, other_than=None):
        with self.lock:
            up = [i for i in range(len(self.s.chatds)) if i not in self.down and i != other_than]
        return rnd.choice(up) if up else None


def live_frames(c, pred_end, limit=400, out=None):
    """Frames until an end (type 3 or an error) or the connection fails:
    (frames, "end" or "lost"). out: the list to gather them in (a hung
    helper's report shows what it had)."""
    out = [] if out is None else out
    try:
        for _ in range(limit):
            m = c.recv()
            out.append(m)
            if pred_end(m):
                return out, "end"
    except Exception:  # noqa: BLE001 - its instance was killed: nothing to check
        return out, "lost"
    return out, "hung"


class _Following:
    """What a resumer following a turn has had so far, said when it hangs."""

    def __init__(self, ack, instance, frames, since):
        self.ack, self.instance, self.frames, self.since = ack, instance, frames, since

    def __str__(self):
        return "following turn %s on instance %d for %.0f s, ack %r, %d frames, the last %r" % (
            self.ack["data"]["turn_id"], self.instance, time.monotonic() - self.since, self.ack["data"],
            len(self.frames), self.frames[-3:])


def is_end(m):
    return m.get("type") == 3 or "error" in m


class LiveSession:
    """One session's turns, one at a time, each started on a random
    instance; now and then a resumer on another instance follows it, and
    now and then a stop comes from another instance."""

    def __init__(self, run, uid, sid, n, rnd, stop_evt):
        self.run, self.uid, self.sid, self.n, self.rnd, self.stop_evt = run, uid, sid, n, rnd, stop_evt
        self.turns = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_evt.is_set():
            try:
                self.one_turn()
            except Exception as e:  # noqa: BLE001 - an instance went away under us
                if not isinstance(e, (ConnectionError, OSError)) and "Connection" not in repr(e):
                    with self.run.lock:
                        self.run.problems.append("session %s: %r" % (self.sid, e))
                time.sleep(0.1)

    def one_turn(self):
        run, rnd = self.run, self.rnd
        i = run.pick(rnd)
        if i is None:
            time.sleep(0.2)
            return
        self.turns += 1
        msg = "s%dt%d %s" % (self.n, self.turns, " ".join("w%d" % k for k in range(LIVE_WORDS)))
        c = run.s.chatds[i].client(timeout=60)
        helpers = []
        try:
            c.send(3, dict(user_id=self.uid, session_id=self.sid, model_name=MODEL, session_prompt="",
                           file_name="", message=msg, stream=True))
            first, how = live_frames(c, lambda m: m.get("type") == 7 or is_end(m))
            if how != "end" or first[-1].get("type") != 7:
                return
            if rnd.random() < 0.6:
                helpers.append(threading.Thread(target=self.resume, args=(i,), name="resumer", daemon=True))
            if rnd.random() < 0.35:
                helpers.append(threading.Thread(target=self.stop, args=(i, msg), name="stop", daemon=True))
            for h in helpers:
                h.phase = "start"
                h.start()
            live_frames(c, is_end)
        finally:
            for h in helpers:
                h.join(90)
                if h.is_alive():
                    with run.lock:
                        run.problems.append("session %s: a %s hung at %s" % (self.sid, h.name, h.phase))
            c.close()

    def resume(self, starter):
        run = self.run
        j = run.pick(random.Random(self.rnd.random()), other_than=starter)
        if j is None:
            return
        me = threading.current_thread()
        me.phase = "connect to instance %d" % j
        try:
            c = run.s.chatds[j].client(timeout=60)
        except Exception:  # noqa: BLE001 - it went down meanwhile
            return
        try:
            me.phase = "waiting for the ack from instance %d" % j
            c.send(16, {"user_id": self.uid, "session_id": self.sid})
            frames, how = live_frames(c, lambda m: m.get("type") == 16 or "error" in m)
            if how != "end":
                return
            ack = frames[-1]
            if "error" in ack or not ack["data"].get("turn_id"):
                with run.lock:
                    run.resumes.append((self.sid, ack, [], "answered"))
                return
            got = []
            me.phase = _Following(ack, j, got, time.monotonic())
            frames, how = live_frames(c, is_end, out=got)
            with run.lock:
                run.resumes.append((self.sid, ack, frames, how))
        finally:
            c.close()

    def stop(self, starter, msg):
        run = self.run
        rnd = random.Random(self.rnd.random())
        j = run.pick(rnd, other_than=starter)
        if j is None:
            return
        time.sleep(rnd.uniform(0, 1.8))  # somewhere in a 1.5 s reply, or after it
        threading.current_thread().phase = "code 8 on instance %d" % j
        try:
            c = run.s.chatds[j].client(timeout=60)
            r = c.req(8, {"user_id": self.uid, "session_id": self.sid})
            c.close()
        except Exception:  # noqa: BLE001 - it went down meanwhile
            return
        with run.lock:
            run.stops.append((self.sid, msg, r))


class RandomizedLive(unittest.TestCase):
    """Streamed turns on three instances, resumed and stopped from other
    instances, while Redis stalls and drops its connections and instances
    are killed or stopped past their leases. Every resumer's frames are
    checked against what PostgreSQL stored for the turn it resumed, and
    every stop against the reply it stopped."""

    def test_resumes_and_stops_under_faults(self):
        seed = SEED + 1
        print("coherence(live): seed %d (COHERENCE_SEED - 1 to repeat), %.0f s" % (seed, LIVE_DURATION),
              file=sys.stderr)
        rnd = random.Random(seed)

        class S:
            pass
        s = S()
        s.rds = RedisServer()
        s.agent = s.db = None
        s.chatds = []
        stop = threading.Event()
        faults = dict(stall=0, kill_pubsub=0, kill_normal=0, sigstop=0, sigkill=0)
        sessions = []
        try:
            s.agent = Agent(AGENT_DELAY_MS=1500, **PRICES)
            s.db = Database("chatd_coh_live")
            for _ in range(3):
                s.chatds.append(Chatd(s.db, agent_port=s.agent.port, REDIS_PORT=s.rds.port,
                                      TURN_LEASE_SECONDS=3, AI_TIMEOUT_SECONDS=30))
            agent_priced(s.db)
            run = LiveRun(s, rnd)
            uids = [s.db.add_user("Live%d" % i, balance=START_BALANCE) for i in range(2)]
            for n in range(6):
                uid = uids[n % 2]
                sid = s.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
                sessions.append(LiveSession(run, uid, sid, n, random.Random(rnd.random()), stop))
            for x in sessions:
                x.thread.start()
            end = time.monotonic() + LIVE_DURATION
            while time.monotonic() < end:
                time.sleep(rnd.uniform(0.5, 1.5))
                kind = rnd.choice(("stall", "kill_pubsub", "kill_normal", "sigstop", "sigkill"))
                faults[kind] += 1
                try:
                    if kind == "stall":
                        s.rds.proc.send_signal(signal.SIGSTOP)
                        time.sleep(rnd.uniform(0.2, 1.5))
                        s.rds.proc.send_signal(signal.SIGCONT)
                    elif kind.startswith("kill_"):
                        s.rds.client().execute_command("CLIENT", "KILL", "TYPE", kind[5:])
                    else:
                        i = rnd.randrange(3)
                        with run.lock:
                            if run.down:
                                faults[kind] -= 1
                                continue
                            run.down.add(i)
                        inst = s.chatds[i]
                        if kind == "sigstop":
                            inst.proc.send_signal(signal.SIGSTOP)
                            time.sleep(4)  # past its 3 s lease
                            inst.proc.send_signal(signal.SIGCONT)
                        else:
                            inst.proc.kill()
                            inst.proc.wait(10)
                            inst.log.close()
                            inst.start()
                        with run.lock:
                            run.down.discard(i)
                except Exception as e:  # noqa: BLE001 - a fault that failed is not a wrong answer
                    print("coherence(live): fault %s failed: %r" % (kind, e), file=sys.stderr)
                    s.rds.proc.send_signal(signal.SIGCONT)
            stop.set()
            for x in sessions:
                x.thread.join(120)
                if x.thread.is_alive():
                    run.problems.append("session %s hung" % x.sid)
            wrong = list(run.problems)
            checked_resumes, checked_stops, told_30 = 0, 0, 0
            for sid, ack, frames, how in run.resumes:
                if how == "answered":
                    if "error" in ack and ack.get("code") not in (30,):
                        wrong.append("resume answered %r" % ack)
                    continue
                if how == "lost":
                    continue  # the resumer's own instance was killed
                if how == "hung":
                    wrong.append("resumer never got an end: %r" % frames[-3:])
                    continue
                checked_resumes += 1
                turn = ack["data"]["turn_id"]
                row = s.db.query("select m.content from usage_ledger l join chat_messages m"
                                 " on m.session_id = l.session_id and m.seq = l.seq where l.turn_id = %s", (turn,))
                stored = row[0][0] if row else None
                ds = [m["data"] for m in frames if m.get("type") == 7]
                idx = [d["index"] for d in ds]
                if idx != list(range(len(idx))):
                    wrong.append("resume of %s: deltas %r" % (turn, idx))
                text = "".join(d["delta"] for d in ds)
                if any(d["session_id"] != sid for d in ds):
                    wrong.append("resume of %s: another session's delta" % turn)
                last = frames[-1]
                if "error" not in last:
                    if stored is None:
                        wrong.append("resume of %s: a reply %r for a turn not stored" % (turn, last))
                    elif last["data"]["message"] != stored:
                        wrong.append("resume of %s: reply %r, stored %r" % (turn, last["data"]["message"], stored))
                    elif not stored.startswith(text) and not (stored.endswith("[stopped]")):
                        wrong.append("resume of %s: deltas %r not of %r" % (turn, text, stored))
                    elif not stored.endswith("[stopped]") and text != stored:
                        wrong.append("resume of %s: deltas %r, reply %r" % (turn, text, stored))
                elif last.get("code") == 29:
                    if stored is not None:
                        wrong.append("resume of %s: 29 for a stored turn" % turn)
                elif last.get("code") == 30:
                    told_30 += 1
                    if "detail" not in last:
                        wrong.append("resume of %s: 30 without a detail" % turn)
                elif last.get("code") not in (6, 14):
                    wrong.append("resume of %s: ended with %r" % (turn, last))
                if stored is not None and not stored.endswith("[stopped]") and text and not stored.startswith(text):
                    wrong.append("resume of %s: deltas %r are not the stored reply's" % (turn, text))
            for sid, msg, r in run.stops:
                rows = s.db.query("select content from chat_messages where session_id = %s and seq ="
                                  " (select seq + 1 from chat_messages where session_id = %s and role = 'user'"
                                  "  and content = %s)", (sid, sid, msg))
                stored = rows[0][0] if rows else None
                if "error" not in r:
                    checked_stops += 1
                    if stored is not None and not stored.endswith("[stopped]"):
                        wrong.append("stop said stopped, but %r was stored" % stored)
                elif r.get("code") == 23:
                    checked_stops += 1
                    if stored is not None and stored.endswith("[stopped]"):
                        wrong.append("stop said 23, but %r was stored" % stored)
                elif r.get("code") != 30:
                    wrong.append("stop answered %r" % r)
            for uid in uids:
                bal, spent = s.db.query("select u.balance, coalesce((select sum(cost) from usage_ledger l"
                                        " where l.user_id = u.user_id), 0) from user_data u where user_id = %s",
                                        (uid,))[0]
                if bal + spent != START_BALANCE:
                    wrong.append("user %s: balance %s + charges %s != %s" % (uid, bal, spent, START_BALANCE))
            turns = sum(x.turns for x in sessions)
            print("coherence(live): %d turns, %d resumes checked (%d told 30), %d stops checked, %d faults %r,"
                  " %d wrong answers" % (turns, checked_resumes, told_30, checked_stops, sum(faults.values()),
                                         faults, len(wrong)), file=sys.stderr)
            logs = "  instance logs: %s" % ", ".join("%d %s" % (k, x.log_path) for k, x in enumerate(s.chatds))
            self.assertEqual(wrong, [], "\n  ".join(wrong[:20] + [logs]))
            self.assertGreater(checked_resumes, 10)
            self.assertGreater(checked_stops, 3)
        finally:
            stop.set()
            if s.rds.proc is not None:
                s.rds.proc.send_signal(signal.SIGCONT)
            for inst in s.chatds:
                if inst.proc is not None and inst.proc.poll() is None:
                    inst.proc.send_signal(signal.SIGCONT)
            cleanup(*s.chatds, s.agent, s.db, s.rds)


class ListChecker:
    """One client of uid that creates sessions, deletes them and reads the
    list (code 1) in a loop. Of the sessions it created, a list must hold
    every one whose creation was acknowledged before the request was sent
    and whose deletion was not sent before the answer came, and none whose
    deletion was acknowledged before the request was sent. (Other clients
    of the same user change the list meanwhile; their sessions are theirs
    to check.)"""

    def __init__(self, chatd, uid, stop, rnd):
        self.chatd, self.uid, self.stop_evt, self.rnd = chatd, uid, stop, rnd
        self.problems, self.count = [], 0
        self.created = {}  # sid -> time its NEW turn was acknowledged
        self.deleted = {}  # sid -> (time the delete was sent, time it was acknowledged)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def join(self):
        self.thread.join(120)
        if self.thread.is_alive():
            self.problems.append("list checker hung")

    def run(self):
        c = self.chatd.client(timeout=60)
        try:
            while not self.stop_evt.is_set():
                live = [sid for sid in self.created if sid not in self.deleted]
                op = self.rnd.random()
                if op < 0.15 or not live:
                    r = c.chat(self.uid, "NEW", "list %s" % uuid.uuid4().hex[:8])
                    if r.get("type") != 3:
                        self.problems.append("NEW turn failed: %r" % r)
                        continue
                    self.created[r["data"]["session_id"]] = time.monotonic()
                elif op < 0.25:
                    sid = self.rnd.choice(live)
                    sent = time.monotonic()
                    r = c.req(4, {"user_id": self.uid, "session_id": sid})
                    if r.get("type") != 4:
                        self.problems.append("delete failed: %r" % r)
                        continue
                    self.deleted[sid] = (sent, time.monotonic())
                else:
                    sent = time.monotonic()
                    r = c.req(1, {"user_id": self.uid})
                    got = time.monotonic()
                    self.count += 1
                    if r.get("type") != 1:
                        self.problems.append("code 1 failed: %r" % r)
                        continue
                    listed = {x["session_id"] for x in r["data"]["session_info"]}
                    for sid, at in self.created.items():
                        d = self.deleted.get(sid)
                        if at < sent and (d is None or d[0] > got) and sid not in listed:
                            self.problems.append("session %s, created %.3f s before the request, is missing"
                                                 % (sid, sent - at))
                        if d is not None and d[1] < sent and sid in listed:
                            self.problems.append("session %s, deleted %.3f s before the request, is listed"
                                                 % (sid, sent - d[1]))
        except Exception as e:  # noqa: BLE001 - reported as a problem
            self.problems.append("list checker: %r" % e)
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
