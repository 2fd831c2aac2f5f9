"""Issue 13: live across tabs and instances. Three chatd instances on one
PostgreSQL and one Redis behind a real nginx (round robin): events (codes
14, 15) reach every subscribed connection on every instance; a running
turn is resumed (code 16) on another instance with no gap and no duplicate
delta, after a reload too; a turn outlives its connection
(DETACHED_TURNS=finish); a stop from another tab on another instance stops
the turn; an instance killed mid-stream gives "Turn Interrupted" to the
client resuming it; an admin's SQL sends its events at once; with Redis
down, subscribe and resume answer a clear error while turns go on."""

import json
import time
import unittest

from harness import MODEL, Agent, Chatd, Database, RedisServer, behind_nginx, cleanup, wait_for


def drain_until(client, pred, limit=200):
    """Frames until pred(frame) is true (that one included)."""
    out = []
    for _ in range(limit):
        m = client.recv()
        out.append(m)
        if pred(m):
            return out
    raise AssertionError("never came: %r" % out[-5:])


def events_of(frames):
    return [m["data"] for m in frames if m.get("type") == 15]



def stream_new(c, uid, message, upto=0):
    """Sends a streamed chat in a new session on c and reads until its
    delta of index upto: (the frames read, the new session's id)."""
    c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, session_prompt="", file_name="",
                   message=message, stream=True))
    frames = drain_until(c, lambda m: m.get("type") == 7 and m["data"]["index"] >= upto)
    return frames, frames[0]["data"]["session_id"]


class Live(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = Database("chatd_live")
        cls.agent = Agent(AGENT_DELAY_MS=1500)
        try:
            cls.chatds, cls.nginx = behind_nginx(cls.db, 3, cls.agent.port, TURN_LEASE_SECONDS=3)
        except BaseException:
            cleanup(cls.agent, cls.db)
            raise

    @classmethod
    def tearDownClass(cls):
        cleanup(cls.nginx, *cls.chatds, cls.agent, cls.db)

    def subscribed(self, inst, uid):
        c = inst.client()
        r = c.req(14, {"user_id": uid})
        self.assertEqual(r, {"type": 14, "data": {"user_id": uid, "subscribed": True}})
        return c

    def test_events_reach_every_instance(self):
        uid = self.db.add_user(balance=5)
        subs = [self.subscribed(inst, uid) for inst in self.chatds]
        plain = self.chatds[0].client()  # never asks: never gets an event
        a = self.chatds[0].client()
        r = a.chat(uid, "NEW", "plan a trip to Rome")
        sid = r["data"]["session_id"]
        for s in subs:
            ev = events_of(drain_until(s, lambda m: m.get("type") == 15 and m["data"]["kind"] == "balance"))
            kinds = [e["kind"] for e in ev]
            self.assertEqual(kinds[0], "turn_started")
            self.assertEqual(ev[0], {"kind": "turn_started", "session_id": sid, "new_session": True})
            self.assertIn({"kind": "session_created", "session_id": sid, "session_name": "plan a trip to Rome"}, ev)
            fin = [e for e in ev if e["kind"] == "turn_finished"][0]
            self.assertEqual(fin, {"kind": "turn_finished", "session_id": sid, "stored": True, "seqs": [0, 1]})
            # the balance right after the turn's charge (the title's comes
            # later); code 6's precision: 15 significant digits
            spent = self.db.one("select sum(cost) from usage_ledger where user_id = %s and kind = 'turn'", (uid,))
            self.assertAlmostEqual(ev[-1]["balance"], float(5 - spent), places=12)
        # the title, then a rename on another instance, a delete on a third
        for s in subs:
            ev = events_of(drain_until(s, lambda m: m.get("type") == 15 and m["data"]["kind"] == "session_renamed"))
            self.assertEqual(ev[-1], {"kind": "session_renamed", "session_id": sid,
                                      "session_name": "plan a trip to Rome"})
        b = self.chatds[1].client()
        self.assertEqual(b.req(10, {"user_id": uid, "session_id": sid, "session_name": "Rome"})["type"], 10)
        c = self.chatds[2].client()
        self.assertEqual(c.req(4, {"user_id": uid, "session_id": sid})["type"], 4)
        for s in subs:
            ev = events_of(drain_until(s, lambda m: m.get("type") == 15 and m["data"]["kind"] == "session_deleted"))
            self.assertIn({"kind": "session_renamed", "session_id": sid, "session_name": "Rome"}, ev)
            self.assertEqual(ev[-1], {"kind": "session_deleted", "session_id": sid})
        # someone else's events never come; the plain connection got none
        other = self.db.add_user(balance=5)
        self.assertEqual(a.chat(other, "NEW", "not yours")["type"], 3)
        self.assertEqual(plain.req(0, {"user_id": uid})["type"], 0)  # its next frame is its reply
        for s in subs:
            s.send(0, {"user_id": uid})
            frames = drain_until(s, lambda m: m.get("type") == 0)
            self.assertFalse(any("not yours" in json.dumps(m) for m in frames), frames)
        for x in subs + [plain, a, b, c]:
            x.close()

    def test_resume_on_another_instance_mid_stream(self):
        uid = self.db.add_user(balance=5)
        c1 = self.chatds[0].client()
        first, sid = stream_new(c1, uid, "one two three four five six seven eight nine ten eleven twelve", 2)
        with self.agent.held():  # still running when the second tab comes
            c2 = self.chatds[1].client()  # a second tab, on another instance
            c2.send(16, {"user_id": uid, "session_id": sid, "after": 1})
            ack = c2.recv()
        got2 = [ack] + drain_until(c2, lambda m: m.get("type") == 3 or "error" in m)
        got1 = first + drain_until(c1, lambda m: m.get("type") == 3 or "error" in m)
        ack = got2[0]
        self.assertEqual(ack["type"], 16, ack)
        self.assertEqual((ack["data"]["active"], ack["data"]["after"]), (True, 1))
        d1 = [m["data"] for m in got1 if m.get("type") == 7]
        d2 = [m["data"] for m in got2 if m.get("type") == 7]
        self.assertEqual([d["index"] for d in d1], list(range(len(d1))))
        self.assertEqual(d2, d1[2:])  # from where it was, no gap, no duplicate
        self.assertEqual(got2[-1], got1[-1])  # the final reply, exactly
        self.assertEqual(got1[-1]["type"], 3)
        # after the end: a resume replays nothing it has, then the end
        c3 = self.chatds[2].client()
        c3.send(16, {"user_id": uid, "session_id": sid, "after": d1[-1]["index"]})
        got3 = drain_until(c3, lambda m: m.get("type") == 3)
        self.assertEqual(got3[0]["data"]["active"], False)
        self.assertEqual(got3[1:], [got1[-1]])
        for x in (c1, c2, c3):
            x.close()

    def test_reload_mid_stream_resumes_and_the_turn_is_stored(self):
        uid = self.db.add_user(balance=5)
        c1 = self.nginx.client()
        seen, sid = stream_new(c1, uid, "alpha beta gamma delta epsilon zeta eta theta iota kappa", 1)
        text = "".join(m["data"]["delta"] for m in seen if m.get("type") == 7)
        last = seen[-1]["data"]["index"]
        c1.ws.close()  # the reload: the turn goes on (DETACHED_TURNS=finish)
        c2 = self.nginx.client()  # wherever nginx sends it
        c2.send(16, {"user_id": uid, "session_id": sid, "after": last})
        rest = drain_until(c2, lambda m: m.get("type") == 3 or "error" in m)
        self.assertEqual(rest[0]["type"], 16, rest[0])
        deltas = [m["data"] for m in rest if m.get("type") == 7]
        self.assertEqual([d["index"] for d in deltas], list(range(last + 1, last + 1 + len(deltas))))
        final = rest[-1]
        self.assertEqual(final["type"], 3, final)
        self.assertEqual(text + "".join(d["delta"] for d in deltas), final["data"]["message"])
        # stored and charged, as the reload shows
        rows = self.db.query("select role, content from chat_messages where session_id = %s order by seq", (sid,))
        self.assertEqual(rows[1], ("assistant", final["data"]["message"]))
        self.assertEqual(self.db.one("select count(*) from usage_ledger where session_id = %s and kind = 'turn'",
                                     (sid,)), 1)
        c2.close()

    def test_dropped_connection_leaves_a_stored_turn(self):
        uid = self.db.add_user(balance=5)
        c1 = self.nginx.client()
        c1.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, session_prompt="", file_name="",
                        message="answer me while I am gone"))
        wait_for(lambda: self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)) == 0
                 and any(r["chat_message"] == "answer me while I am gone" for r in self.agent.requests()
                         if r["method"] in ("Process", "ProcessStream")), "the turn reached the agent")
        c1.ws.close()
        sid = wait_for(lambda: self.db.one("select session_id from chat_sessions where user_id = %s", (uid,)),
                       "the turn stored")
        c2 = self.nginx.client()
        page = c2.req(9, {"user_id": uid, "session_id": str(sid)})["data"]["messages"]
        self.assertEqual([m["role"] for m in page], ["user", "assistant"])
        self.assertTrue(page[1]["content"].startswith("echo: answer me while I am gone"))
        self.assertLess(self.db.one("select balance from user_data where user_id = %s", (uid,)), 5)
        c2.close()

    def test_stop_from_another_tab_on_another_instance(self):
        uid = self.db.add_user(balance=5)
        c1 = self.chatds[0].client()
        first, sid = stream_new(c1, uid, "a b c d e f g h i j k l m n o p q r s t")
        c2 = self.chatds[1].client()
        with self.agent.held():  # still running when the stop comes
            self.assertEqual(c2.req(8, {"user_id": uid, "session_id": sid}),
                             {"type": 8, "data": {"user_id": uid, "session_id": sid, "stopped": True}})
        final = drain_until(c1, lambda m: m.get("type") == 3)[-1]
        self.assertTrue(final["data"]["message"].endswith("[stopped]"), final)
        self.assertEqual(self.db.one("select content from chat_messages where session_id = %s and seq = 1", (sid,)),
                         final["data"]["message"])
        # no turn running now: a stop from anywhere is error 23
        self.assertEqual(c2.req(8, {"user_id": uid, "session_id": sid})["code"], 23)
        other = self.db.add_user()
        self.assertEqual(c2.req(8, {"user_id": other, "session_id": sid})["code"], 23)
        c1.close()
        c2.close()

    def test_admin_sql_events_at_once_everywhere(self):
        uid = self.db.add_user(balance=5, models=(8,))
        subs = [self.subscribed(inst, uid) for inst in self.chatds]
        self.db.query("update user_data set models = array[4, 8] where user_id = %s", (uid,))
        self.db.query("update user_data set balance = balance + 5 where user_id = %s", (uid,))
        sid = self.db.add_session(uid, name="made by SQL")
        self.db.query("update chat_sessions set session_name = 'renamed by SQL' where session_id = %s", (sid,))
        self.db.query("delete from chat_sessions where session_id = %s", (sid,))
        want = [{"kind": "models"}, {"kind": "balance", "balance": 10},
                {"kind": "session_created", "session_id": sid, "session_name": "made by SQL"},
                {"kind": "session_renamed", "session_id": sid, "session_name": "renamed by SQL"},
                {"kind": "session_deleted", "session_id": sid}]
        for s in subs:
            got = events_of(drain_until(s, lambda m: m.get("type") == 15 and m["data"]["kind"] == "session_deleted"))
            self.assertEqual(got, want)
            s.close()
        # the model granted by SQL is usable at once, on every instance
        for inst in self.chatds:
            c = inst.client()
            self.assertEqual(c.chat(uid, "NEW", "with the new model", model="gpt-4-turbo")["type"], 3)
            c.close()

    def test_resume_with_nothing_running(self):
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
        c = self.nginx.client()
        self.assertEqual(c.req(16, {"user_id": uid, "session_id": sid}),
                         {"type": 16, "data": {"user_id": uid, "session_id": sid, "active": False, "last_seq": 1}})
        # someone else's session: the same as a missing one
        other = self.db.add_user()
        self.assertEqual(c.req(16, {"user_id": other, "session_id": sid})["code"], 18)
        self.assertEqual(c.req(16, {"user_id": uid, "session_id": "nope"})["code"], 17)
        self.assertEqual(c.req(16, {"user_id": uid, "session_id": sid, "after": "x"})["code"], 17)
        c.close()


class Interrupted(unittest.TestCase):
    """An instance SIGKILLed mid-stream."""

    def test_killed_instance_gives_turn_interrupted(self):
        db = Database("chatd_live_kill")
        agent = Agent(AGENT_DELAY_MS=6000)
        a = Chatd(db, agent_port=agent.port, TURN_LEASE_SECONDS=2)
        b = Chatd(db, agent_port=agent.port, TURN_LEASE_SECONDS=2)
        self.addCleanup(cleanup, a, b, agent, db)
        uid = db.add_user(balance=5)
        sid = db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
        ca = a.client()
        ca.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, session_prompt="", file_name="",
                        message="w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12", stream=True))
        drain_until(ca, lambda m: m.get("type") == 7)
        cb = b.client(timeout=30)
        cb.send(16, {"user_id": uid, "session_id": sid})
        self.assertEqual(cb.recv()["data"]["active"], True)
        a.proc.kill()
        a.proc.wait(10)
        # the resuming client learns it within TURN_LEASE_SECONDS
        got = drain_until(cb, lambda m: "error" in m or m.get("type") == 3)
        self.assertEqual((got[-1].get("code"), got[-1].get("error")), (29, "Turn Interrupted"), got[-1])
        # nothing stored or charged; the session takes a new turn at once
        self.assertEqual(db.one("select next_seq from chat_sessions where session_id = %s", (sid,)), 2)
        self.assertEqual(db.one("select count(*) from usage_ledger where user_id = %s", (uid,)), 0)
        r = cb.chat(uid, sid, "again")
        self.assertEqual(r["type"], 3, r)
        # and a resume that comes later hears the same. "again" has ended
        # (its reply came): `active` is PostgreSQL's word (the lease), not
        # whether its end has reached Redis yet, so this holds however
        # fast the machine (issue 20: it once said true on a loaded one)
        self.assertEqual(cb.req(16, {"user_id": uid, "session_id": sid})["data"]["active"], False)
        cb.close()
        ca.ws.close()


def numsub(r, channel):
    return dict(r.pubsub_numsub(channel)).get(channel.encode(), 0)


def wait_numsub(r, channel, pred, what):
    for _ in range(600):  # a deadline of a minute, not a timing claim
        n = numsub(r, channel)
        if pred(n):
            return n
        time.sleep(0.1)
    raise AssertionError("%s: %s has %d subscribers" % (what, channel, n))


class TurnChannel(unittest.TestCase):
    """A turn's deltas go to the session's own channel, which a chatd
    subscribes to only while one of its connections resumes the session."""

    def test_subscribed_only_while_resumed_and_again_after_redis_drops_it(self):
        db = Database("chatd_live_channel")
        redis = RedisServer()
        agent = Agent(AGENT_DELAY_MS=8000)
        a = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port)
        b = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port)
        self.addCleanup(cleanup, a, b, agent, redis, db)
        r = redis.client()
        uid = db.add_user(balance=5)
        ca = a.client(timeout=30)
        words = " ".join("w%d" % i for i in range(40))
        first, sid = stream_new(ca, uid, words, 0)
        channel = "chatd:{s:%s}:live" % sid
        # nobody resumes it: no chatd listens, its deltas come back to none
        self.assertEqual(numsub(r, channel), 0)
        cb = b.client(timeout=30)
        cb.send(16, {"user_id": uid, "session_id": sid, "after": 0})
        self.assertEqual(cb.recv()["data"]["active"], True)
        self.assertEqual(numsub(r, channel), 1)  # subscribed before the answer
        # Redis drops every subscriber connection; b subscribes again to
        # the session's channel, and the deltas sent after that reach cb
        self.assertGreaterEqual(r.client_kill_filter(_type="pubsub"), 2)
        wait_numsub(r, channel, lambda n: n == 1, "not subscribed again")
        got_b = drain_until(cb, lambda m: m.get("type") == 3 or "error" in m)
        got_a = first + drain_until(ca, lambda m: m.get("type") == 3 or "error" in m)
        self.assertEqual(got_a[-1]["type"], 3, got_a[-1])
        self.assertEqual(got_b[-1], got_a[-1])
        d_a = [m["data"]["index"] for m in got_a if m.get("type") == 7]
        d_b = [m["data"]["index"] for m in got_b if m.get("type") == 7]
        self.assertEqual(d_a, list(range(len(d_a))))
        self.assertEqual(d_b[-1], d_a[-1])  # the last delta came live, after the drop
        self.assertEqual(d_b, sorted(set(d_b)))  # in order, none twice
        # the resume is over: b lets the channel go (after a short linger)
        wait_numsub(r, channel, lambda n: n == 0, "still subscribed")
        ca.close()
        cb.close()


class NotResumable(unittest.TestCase):
    def test_resumable_streams_off_keeps_nothing_in_redis(self):
        db = Database("chatd_live_noresume")
        redis = RedisServer()
        agent = Agent(AGENT_DELAY_MS=300)
        chatd = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port, RESUMABLE_STREAMS=0)
        self.addCleanup(cleanup, chatd, agent, redis, db)
        r = redis.client()
        uid = db.add_user(balance=5)
        c = chatd.client()
        sub = chatd.client()
        self.assertEqual(sub.req(14, {"user_id": uid})["type"], 14)
        frames, sid = stream_new(c, uid, "one two three four", 0)
        frames += drain_until(c, lambda m: m.get("type") == 3 or "error" in m)
        self.assertEqual(frames[-1]["type"], 3, frames[-1])
        deltas = [m["data"]["delta"] for m in frames if m.get("type") == 7]
        self.assertEqual("".join(deltas), frames[-1]["data"]["message"])  # the turn streams as ever
        ev = events_of(drain_until(sub, lambda m: m.get("type") == 15 and m["data"]["kind"] == "turn_finished"))
        self.assertEqual(ev[-1]["session_id"], sid)  # and the other tab still hears of it
        self.assertEqual(r.exists("chatd:{s:%s}:turn" % sid), 0)
        got = c.req(16, {"user_id": uid, "session_id": sid})
        self.assertEqual((got.get("code"), got.get("error")), (30, "Live Updates Unavailable"), got)
        self.assertIn("RESUMABLE_STREAMS=0", got.get("detail", ""))
        c.close()
        sub.close()


class RedisDown(unittest.TestCase):
    def test_subscribe_and_resume_answer_a_clear_error(self):
        db = Database("chatd_live_noredis")
        redis = RedisServer()
        agent = Agent()
        chatd = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port)
        self.addCleanup(cleanup, chatd, agent, redis, db)
        uid = db.add_user(balance=5)
        c = chatd.client()
        self.assertEqual(c.req(14, {"user_id": uid})["type"], 14)
        redis.kill(hard=True)
        time.sleep(1.5)  # (the subscriber notices: its connection is gone)
        r = c.req(14, {"user_id": uid})
        self.assertEqual((r["code"], r["error"]), (30, "Live Updates Unavailable"), r)
        sid = c.chat(uid, "NEW", "still works")["data"]["session_id"]  # turns go on
        r = c.req(16, {"user_id": uid, "session_id": sid})
        self.assertEqual(r["code"], 30, r)
        c.close()


if __name__ == "__main__":
    unittest.main()
