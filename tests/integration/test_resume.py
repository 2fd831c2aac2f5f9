"""Issue 20, items 2 to 5: what a resumer (code 16) receives, and what a stop
(code 8) stops, when instances die or stall and Redis stalls or drops its
connections.

- Every frame and every end a resumer receives belongs to the turn it
  resumed: a new turn on the session after an instance was killed, the turn
  after a stalled instance, and the stalled instance waking up reach only
  their own resumers.
- Error 29 means the turn was not stored; a stored turn's resumer gets its
  reply even when its last frame never reached Redis.
- A Redis stall, or Redis dropping chatd's connections (CLIENT KILL), loses
  no frame of a resumed turn: the resumer gets every delta once, in order,
  or error 30 with a detail. A worker's first Redis use after its
  connection was dropped succeeds.
- A turn's deltas are published live only once a connection resumes it:
  one nobody follows costs one XADD per delta and no PUBLISH; a resumed
  one publishes every delta from the moment its chatd heard of the
  resumer, and the resumer still gets every delta once, in order.
- A stop stops exactly the turn it names (the connection's latest on that
  session, or from elsewhere the one running there), and `stopped: true`
  comes only with a reply that was cut ("... [stopped]"); otherwise 23.
"""

import os
import re
import signal
import threading
import time
import unittest
import uuid

from harness import MODEL, Agent, Chatd, Database, RedisServer, cleanup, wait_for
from test_live import drain_until

WORDS = 40


def words(tag, n=WORDS):
    return " ".join("%s%d" % (tag, i) for i in range(n))


def chat_frame(uid, sid, message, stream=True):
    return dict(user_id=uid, session_id=sid, model_name=MODEL, session_prompt="", file_name="",
                message=message, stream=stream)


def until_end(c, limit=400):
    """Frames until a turn's end (type 3) or an error."""
    return drain_until(c, lambda m: m.get("type") == 3 or "error" in m, limit=limit)


def deltas(frames):
    return [m["data"] for m in frames if m.get("type") == 7]


def tags_in(frames):
    """The word tags ("a", "b", ...) the deltas of frames carry."""
    return {w[0] for d in deltas(frames) for w in re.findall(r"\b[a-z]\d+\b", d["delta"])}


def pause(proc):
    os.kill(proc.pid, signal.SIGSTOP)


def unpause(proc):
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


class Resumer:
    """A connection that resumed a turn, and checks what it is sent: the
    acknowledgement names the turn; then deltas, each index once and in
    order from where it asked, then one end."""

    def __init__(self, testcase, inst, uid, sid, after=-1):
        self.t = testcase
        self.c = inst.client(timeout=60)
        req = {"user_id": uid, "session_id": sid}
        if after >= 0:
            req["after"] = after
        self.c.send(16, req)
        self.ack = self.c.recv()
        self.after = after

    def finish(self):
        """Reads to the end; returns (deltas' data, the end frame)."""
        t = self.t
        frames = until_end(self.c)
        ds = deltas(frames)
        idx = [d["index"] for d in ds]
        t.assertEqual(idx, list(range(self.after + 1, self.after + 1 + len(idx))), "a gap or a repeat: %r" % idx)
        return ds, frames[-1]

    def close(self):
        self.c.close()


class Case(unittest.TestCase):
    def assertReply(self, m):
        """A turn's reply (an error frame carries its request's type too)."""
        self.assertEqual(m.get("type"), 3, m)
        self.assertNotIn("error", m)


class Identity(Case):
    """Three instances, turns of 40 streamed words over 3 s, leases of 3 s,
    on a Redis of their own: the turn streams these tests read back must
    not be flushed by another test module's FLUSHALL of the shared Redis
    (CTest runs two modules at once; a CI run once lost a stream so)."""

    def setUp(self):
        self.db = Database("chatd_resume_id")
        self.redis = RedisServer()
        self.agent = Agent(AGENT_DELAY_MS=3000)
        self.chatds = []
        self.addCleanup(self.stop_all)
        for _ in range(3):
            self.chatds.append(Chatd(self.db, agent_port=self.agent.port, TURN_LEASE_SECONDS=3,
                                     REDIS_PORT=self.redis.port))

    def stop_all(self):
        for c in self.chatds:
            if c.proc is not None:
                unpause(c.proc)
        cleanup(*self.chatds, self.agent, self.redis, self.db)

    def resumed_turn(self, resumer_at):
        """A turn of "a" words on instance 0, resumed on resumer_at: (the
        user, the session, the starter, the resumer)."""
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        ca = self.chatds[0].client(timeout=60)
        ca.send(3, chat_frame(uid, sid, words("a")))
        drain_until(ca, lambda m: m.get("type") == 7 and m["data"]["index"] >= 2)
        with self.agent.held():  # still running when the resume comes
            r1 = Resumer(self, resumer_at, uid, sid)
        self.assertEqual(r1.ack["data"]["active"], True, r1.ack)
        return uid, sid, ca, r1

    def test_a_new_turn_after_a_kill_reaches_only_its_own_resumers(self):
        a, b, c = self.chatds
        uid, sid, ca, r1 = self.resumed_turn(b)
        t1 = r1.ack["data"]["turn_id"]
        a.proc.kill()
        a.proc.wait(10)
        cc = c.client(timeout=60)
        cc.send(3, chat_frame(uid, sid, words("b")))
        ds, end = r1.finish()
        self.assertEqual((end.get("code"), end.get("error")), (29, "Turn Interrupted"), end)
        self.assertEqual({d["session_id"] for d in ds}, {sid})
        self.assertEqual(tags_in([{"type": 7, "data": d} for d in ds]) - {"a"}, set(), "another turn's delta")
        # the new turn is stored, and a resume that comes later hears it
        got = until_end(cc)
        self.assertReply(got[-1])
        self.assertEqual(tags_in(got), {"b"})
        # The reply reaches its connection before its chatd's publisher has
        # written it to the turn's stream (and a slow Redis can hold that
        # up for seconds); until then a resume rightly answers from
        # PostgreSQL alone ("no turn", last_seq). Wait for the stream.
        rc = self.redis.client()

        def new_turn_ended_in_its_stream():
            t = rc.get("chatd:{s:%s}:turn" % sid)
            return (t is not None and t.decode() != t1 and
                    any(i.startswith(b"2-") for i, _ in rc.xrange("chatd:{s:%s}:turn:%s" % (sid, t.decode()))))
        wait_for(new_turn_ended_in_its_stream, "the new turn's end in its stream")
        r2 = Resumer(self, b, uid, sid)
        self.assertEqual(r2.ack["data"]["active"], False)
        self.assertNotEqual(r2.ack["data"]["turn_id"], t1)
        ds2, end2 = r2.finish()
        self.assertEqual(end2, got[-1])
        self.assertEqual("".join(d["delta"] for d in ds2), got[-1]["data"]["message"])
        self.assertEqual(self.db.one("select next_seq from chat_sessions where session_id = %s", (sid,)), 4)
        for x in (r1, r2, cc):
            x.close()

    def test_a_stalled_turn_and_the_turn_after_it_reach_only_their_own_resumers(self):
        a, b, c = self.chatds
        uid, sid, ca, r1 = self.resumed_turn(c)
        pause(a.proc)  # past its lease: another turn may run on the session
        cb = b.client(timeout=60)
        cb.send(3, chat_frame(uid, sid, words("b")))
        first_b = drain_until(cb, lambda m: m.get("type") == 7 or "error" in m)
        self.assertEqual(first_b[-1].get("type"), 7, first_b[-1])
        # the stalled turn's resumer is told it was interrupted, with none
        # of the new turn's frames
        ds1, end1 = r1.finish()
        self.assertEqual(end1.get("code"), 29, end1)
        self.assertEqual(tags_in([{"type": 7, "data": d} for d in ds1]) - {"a"}, set())
        # the new turn's resumer, attached while the stalled instance wakes
        # up and sends what it had (deltas, then 29 for its own turn)
        r2 = Resumer(self, c, uid, sid)
        self.assertEqual(r2.ack["data"]["active"], True, r2.ack)
        unpause(a.proc)
        got_a = until_end(ca)
        self.assertEqual(got_a[-1].get("code"), 29, got_a[-1])  # fenced: not stored
        got_b = first_b + until_end(cb)
        self.assertReply(got_b[-1])
        ds2, end2 = r2.finish()
        self.assertEqual(end2, got_b[-1])
        self.assertEqual(tags_in([{"type": 7, "data": d} for d in ds2]) - {"b"}, set())
        self.assertEqual(self.db.one("select next_seq from chat_sessions where session_id = %s", (sid,)), 4)
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id = %s", (uid,)), 1)
        for x in (r1, r2):
            x.close()


class OwnRedis(Case):
    """Two instances on a Redis of the class's own, and an agent that
    streams 40 words over 3 s; a test may pause (SIGSTOP) Redis or the
    agent, and finds both running again."""

    DB_NAME = None

    @classmethod
    def setUpClass(cls):
        cls.db = Database(cls.DB_NAME)
        cls.redis = RedisServer()
        cls.agent = Agent(AGENT_DELAY_MS=3000)
        cls.chatds = []
        try:
            for _ in range(2):
                cls.chatds.append(Chatd(cls.db, agent_port=cls.agent.port, REDIS_PORT=cls.redis.port))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for proc in (cls.redis.proc, cls.agent.proc):
            if proc is not None:
                unpause(proc)
        cleanup(*cls.chatds, cls.agent, cls.redis, cls.db)

    def tearDown(self):
        unpause(self.redis.proc)
        unpause(self.agent.proc)


class RedisFaults(OwnRedis):
    """A turn runs on one instance, a resumer follows it on the other while
    Redis stalls or drops connections."""

    DB_NAME = "chatd_resume_redis"

    def live_again(self):
        """Waits until both instances hear Redis again (code 14 answers):
        an event, not a guess of time."""
        uid = self.db.add_user()
        for inst in self.chatds:
            c = inst.client(timeout=30)
            wait_for(lambda: c.req(14, {"user_id": uid}).get("type") == 14, "live updates back")
            c.close()

    def turn_with_resumer(self, fault, at_index=3, tag="a", after_end=None):
        """A streamed turn on instance 0, resumed on instance 1; fault() runs
        once the resumer has delta at_index, after_end() once the starter
        has its reply. Returns (the starter's frames, the resumer's deltas,
        its end, the user, the session)."""
        self.live_again()
        a, b = self.chatds
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        ca = a.client(timeout=60)
        ca.send(3, chat_frame(uid, sid, words(tag)))
        first = drain_until(ca, lambda m: m.get("type") == 7)
        r = Resumer(self, b, uid, sid)
        self.assertEqual(r.ack.get("data", {}).get("active"), True, r.ack)
        seen = drain_until(r.c, lambda m: m.get("type") == 7 and m["data"]["index"] >= at_index)
        fault()
        got_a = first + until_end(ca)
        if after_end is not None:
            after_end()
        rest = until_end(r.c)
        frames = seen + rest
        ds = deltas(frames)
        idx = [d["index"] for d in ds]
        self.assertEqual(idx, list(range(len(idx))), "a gap or a repeat: %r" % idx)
        r.close()
        ca.close()
        return got_a, ds, frames[-1], uid, sid

    def assertWhole(self, got_a, ds, end):
        """The resumer got every delta and the same end as the starter, or
        error 30 saying why."""
        self.assertReply(got_a[-1])
        if "error" in end:
            self.assertEqual(end.get("code"), 30, end)
            self.assertIn("detail", end)
            return False
        self.assertEqual(end, got_a[-1])
        self.assertEqual("".join(d["delta"] for d in ds), end["data"]["message"])
        return True

    def test_a_stall_mid_turn_loses_no_frame(self):
        def stall():
            pause(self.redis.proc)
            time.sleep(1.5)  # the fault's length, not a wait for an outcome
            unpause(self.redis.proc)
        got_a, ds, end, uid, sid = self.turn_with_resumer(stall)
        self.assertTrue(self.assertWhole(got_a, ds, end))
        # a resume that comes later reads the same, whole, from the stream
        r = Resumer(self, self.chatds[1], uid, sid)
        ds2, end2 = r.finish()
        self.assertEqual(end2, end)
        self.assertEqual(ds2, ds)
        r.close()

    def test_a_stall_across_the_end_gives_the_stored_reply(self):
        def stall():
            pause(self.redis.proc)

        def wait_a_little_then_go_on():
            # the stored turn's resumer is watched meanwhile (its lease is
            # gone, its end is not in Redis): it must not be told 29
            time.sleep(3)  # the fault's length, not a wait for an outcome
            unpause(self.redis.proc)
        got_a, ds, end, uid, sid = self.turn_with_resumer(stall, at_index=WORDS - 4,
                                                          after_end=wait_a_little_then_go_on)
        self.assertNotEqual(end.get("code"), 29, end)
        self.assertTrue(self.assertWhole(got_a, ds, end))

    def test_redis_dropping_connections_loses_no_frame(self):
        r = self.redis.client()
        for kind in ("pubsub", "normal"):
            got_a, ds, end, _, _ = self.turn_with_resumer(lambda: r.client_kill_filter(_type=kind))
            self.assertTrue(self.assertWhole(got_a, ds, end), kind)

    def test_the_first_redis_use_after_a_dropped_connection_succeeds(self):
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        c = self.chatds[1].client(timeout=30)
        got = c.req(16, {"user_id": uid, "session_id": sid})
        self.assertEqual(got.get("data", {}).get("active"), False, got)
        r = self.redis.client()
        r.client_kill_filter(_type="normal")
        # every worker's connection was dropped; each resume still reads
        # Redis (a refused one would answer 30)
        for _ in range(8):
            got = c.req(16, {"user_id": uid, "session_id": sid})
            self.assertEqual(got.get("type"), 16, got)
            self.assertEqual(got["data"]["active"], False)
        c.close()


class Monitor:
    """Every command a Redis runs (MONITOR), from now until stop()."""

    def __init__(self, server):
        self.server = server
        self.mark = "chatd-test-monitor-end-%s" % uuid.uuid4()
        self.mon = server.client().monitor()
        self.mon.__enter__()  # MONITOR answered: from here on nothing is missed
        self.cmds = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            cmd = self.mon.next_command()["command"]
            if self.mark in cmd:
                return
            self.cmds.append(cmd)

    def stop(self):
        """The commands run, in Redis's order (ours, after all of them,
        ends the list: an event, not a wait)."""
        self.server.client().echo(self.mark)
        self.thread.join(60)
        self.assert_ended = not self.thread.is_alive()
        self.mon.__exit__(None, None, None)
        return self.cmds


class Following(OwnRedis):
    """Watched with MONITOR: a turn's deltas go to Redis's pub/sub only
    while someone resumes it."""

    DB_NAME = "chatd_resume_follow"

    def commands(self, mon, sid):
        """(delta indices XADDed to sid's turn stream, delta indices and
        other messages PUBLISHed on sid's turn channel), once Redis has run
        the turn's last PUBLISH, its end (F): the client has the end before
        chatd's publisher sends it, and whatever the publisher sent before,
        in its one queue's order, Redis ran before."""
        end = re.compile(r"PUBLISH chatd:\{s:%s\}:live \S{36}F%s" % (sid, sid))
        wait_for(lambda: any(end.match(c) for c in list(mon.cmds)), "the turn's end published")
        cmds = mon.stop()
        self.assertTrue(mon.assert_ended, "MONITOR never saw the end mark")
        added = [int(m.group(1)) for c in cmds
                 for m in [re.match(r"XADD chatd:\{s:%s\}:turn:\S+ MAXLEN ~ \d+ 1-(\d+) " % sid, c)] if m]
        pub = [c for c in cmds if c.startswith("PUBLISH chatd:{s:%s}:live " % sid)]
        published = [int(m.group(1)) for c in pub for m in [re.search(r"D%s\S{36} (\d+) " % sid, c)] if m]
        others = [c for c in pub if not re.search(r"D%s\S{36} (\d+) " % sid, c)]
        return added, published, others

    def test_a_turn_nobody_resumes_publishes_no_delta(self):
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        mon = Monitor(self.redis)
        c = self.chatds[0].client(timeout=60)
        c.send(3, chat_frame(uid, sid, words("a")))
        frames = until_end(c)
        self.assertReply(frames[-1])
        c.close()
        added, published, others = self.commands(mon, sid)
        n = len(deltas(frames))
        self.assertGreater(n, 1)
        self.assertEqual(added, list(range(n)), "every delta in the turn's stream")
        self.assertEqual(published, [], "no delta published: nobody followed the turn")
        self.assertEqual(len(others), 1, others)  # the turn's end, for a resumer yet to come
        self.assertRegex(others[0], r"F%s\S{36} %d " % (sid, n - 1))

    def test_a_resumed_turn_publishes_its_deltas_from_its_follow_on(self):
        a, b = self.chatds
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        mon = Monitor(self.redis)
        ca = a.client(timeout=60)
        ca.send(3, chat_frame(uid, sid, words("a")))
        first = drain_until(ca, lambda m: m.get("type") == 7 and m["data"]["index"] >= 2)
        pause(self.agent.proc)  # no new delta until instance 0 has heard of the resumer
        r = Resumer(self, b, uid, sid)
        self.assertEqual(r.ack.get("data", {}).get("active"), True, r.ack)
        wait_for(lambda: "event=turn_followed session=%s" % sid in a.logs(), "instance 0 hears of the resumer")
        unpause(self.agent.proc)
        ds, end = r.finish()
        got_a = first + until_end(ca)
        self.assertReply(got_a[-1])
        self.assertEqual(end, got_a[-1])
        self.assertEqual("".join(d["delta"] for d in ds), end["data"]["message"])
        r.close()
        ca.close()
        added, published, others = self.commands(mon, sid)
        n = len(deltas(got_a))
        self.assertEqual(added, list(range(n)))
        # From the follow on, every delta: a run of the turn's last indices,
        # at least the ones the agent sent after it was let go; none of the
        # three the starter had before anyone resumed.
        self.assertTrue(published, "no delta published after the resumer was heard")
        self.assertEqual(published, list(range(published[0], n)), published)
        self.assertGreater(published[0], 2, published)
        self.assertEqual(len(others), 1, others)


class Stops(Case):
    """A stop stops the turn it names, and says so only when it did."""

    @classmethod
    def setUpClass(cls):
        cls.db = Database("chatd_resume_stop")
        cls.slow = Agent(AGENT_DELAY_MS=2000)
        cls.fast = Agent(AGENT_DELAY_MS=0)
        cls.chatds = []
        try:
            for agent in (cls.slow, cls.slow, cls.fast):
                cls.chatds.append(Chatd(cls.db, agent_port=agent.port))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cleanup(*cls.chatds, cls.slow, cls.fast, cls.db)

    def assertHonest(self, stop, end, sid):
        """stopped: true comes with a cut reply, 23 with a whole one; both
        as PostgreSQL holds it."""
        self.assertNotIn("error", end)
        msg = end["data"]["message"]
        stored = self.db.one("select content from chat_messages where session_id = %s and role = 'assistant'"
                             " order by seq desc limit 1", (sid,))
        self.assertEqual(stored, msg)
        if "error" not in stop:
            self.assertEqual(stop["data"], {"user_id": stop["data"]["user_id"], "session_id": sid,
                                            "stopped": True})
            self.assertTrue(msg.endswith("[stopped]"), msg)
        else:
            self.assertEqual(stop.get("code"), 23, stop)
            self.assertFalse(msg.endswith("[stopped]"), msg)
            self.assertIn("[history=", msg)

    def test_a_stop_right_behind_a_chat_stops_that_chat(self):
        inst = self.chatds[0]
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
        c1, c2 = inst.client(timeout=60), inst.client(timeout=60)
        c1.send(3, chat_frame(uid, sid, words("y", 20)))
        drain_until(c1, lambda m: m.get("type") == 7)
        c2.send(3, chat_frame(uid, sid, words("x", 20)))
        c2.send(8, {"user_id": uid, "session_id": sid})
        stop = c2.recv()
        self.assertEqual(stop.get("type"), 8, stop)  # X had not started: it is cut before it runs
        got2 = until_end(c2)
        got1 = until_end(c1)
        # Y ran whole; X was the one stopped
        self.assertReply(got1[-1])
        self.assertFalse(got1[-1]["data"]["message"].endswith("[stopped]"), got1[-1])
        self.assertTrue(got1[-1]["data"]["message"].startswith("echo: y0 "), got1[-1])
        self.assertEqual(got2[-1]["data"]["message"], "[stopped]", got2[-1])
        c1.close()
        c2.close()

    def test_a_stop_from_another_instance_says_stopped_only_when_it_cut(self):
        a, b = self.chatds[0], self.chatds[1]
        uid = self.db.add_user(balance=50)
        ca, cb = a.client(timeout=60), b.client(timeout=60)
        for k in (0, 3, 8, 14, 19, 20, 21):
            sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
            ca.send(3, chat_frame(uid, sid, words("s", 20)))
            # the stop goes out after delta k (k past the last delta: after
            # the reply is complete, racing its store)
            frames = drain_until(ca, lambda m: (m.get("type") == 7 and m["data"]["index"] >= k)
                                 or m.get("type") == 3 or "error" in m)
            stop = cb.req(8, {"user_id": uid, "session_id": sid})
            end = frames[-1] if frames[-1].get("type") != 7 else until_end(ca)[-1]
            self.assertHonest(stop, end, sid)
        ca.close()
        cb.close()

    def test_a_stop_right_after_the_chat_on_one_connection(self):
        inst = self.chatds[2]  # its agent answers at once
        uid = self.db.add_user(balance=50)
        c = inst.client(timeout=60)
        outcomes = set()
        for i in range(40):
            sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "r")])
            c.send(3, chat_frame(uid, sid, words("q", 6)))
            c.send(8, {"user_id": uid, "session_id": sid})
            frames = drain_until(c, lambda m: m.get("type") == 8 or m.get("code") == 23)
            stop = frames[-1]
            end = [m for m in frames if m.get("type") == 3]
            end = end[-1] if end else until_end(c)[-1]
            self.assertHonest(stop, end, sid)
            outcomes.add(stop.get("type", stop.get("code")))
        c.close()


if __name__ == "__main__":
    unittest.main()
