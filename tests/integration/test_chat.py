"""Issue 4: chat turns end to end over gRPC: history, summary, trimming,
balance, errors, streaming, stop, cancel, and a python3-grpcio agent."""

import json
import os
import socket
import subprocess
import sys
import time
import unittest
import uuid

from harness import (MODEL, StackCase, cleanup, SOURCE_DIR, Agent, Chatd, Database, free_port, read_records, redis_client, run_threads,
                     wait_for, wait_port)


def process_requests(agent):
    return [r for r in agent.requests() if r["method"] in ("Process", "ProcessStream")]


class Turns(StackCase):
    DB_PREFIX = "chatd_chat"

    def setUp(self):
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def test_full_turn_on_new_session(self):
        uid = self.db.add_user(balance=1)
        msg = "Привет, how are you doing today?"  # name cut at 20 characters, not bytes
        r = self.c.chat(uid, "NEW", msg)
        self.assertEqual(r["type"], 3, r)
        d = r["data"]
        self.assertEqual(set(d), {"user_id", "session_id", "session_name", "message"})
        self.assertEqual(d["user_id"], uid)
        self.assertEqual(d["session_name"], msg[:20])
        self.assertTrue(d["message"].startswith("echo: " + msg), d["message"])
        # the 20-character name stays until the agent's title replaces it
        # (the echo agent's: the message's first six words, in quotes
        # that chatd removes)
        names = []
        for _ in range(100):
            sessions = self.c.req(1, {"user_id": uid})["data"]["session_info"]
            self.assertEqual(sessions[0]["session_id"], d["session_id"])
            names.append(sessions[0]["session_name"])
            if names[-1] != msg[:20]:
                break
            time.sleep(0.05)
        self.assertEqual(names[-1], msg, names)
        self.assertLessEqual(set(names), {msg[:20], msg})
        chat = json.loads(self.c.req(2, {"user_id": uid, "session_id": d["session_id"]})["data"]["chat"])
        self.assertEqual(chat, [{"role": "user", "content": msg}, {"role": "assistant", "content": d["message"]}])
        # what the agent got
        req = [p for p in process_requests(self.agent) if p["session_id"] == d["session_id"]][0]
        self.assertEqual((req["chat_message"], req["model_name"], req["model_provider"]), (msg, MODEL, "ollama"))
        self.assertEqual(json.loads(req["chat_history"]), [])
        self.assertAlmostEqual(req["balance"], 1.0, places=5)

    def test_history_and_summary_reach_the_agent(self):
        uid = self.db.add_user(balance=1)
        first = self.c.chat(uid, "NEW", "first question")
        sid = first["data"]["session_id"]
        second = self.c.chat(uid, sid, "second question", session_prompt="be brief")
        self.assertEqual(second["type"], 3, second)
        recs = [p for p in process_requests(self.agent) if p["session_id"] == sid]
        self.assertEqual(len(recs), 2)
        self.assertEqual(json.loads(recs[1]["chat_history"]), [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": first["data"]["message"]}])
        self.assertEqual(recs[1]["session_prompt"], "be brief")
        summaries = [r for r in self.agent.requests() if r["method"] == "Summarize" and r["session_id"] == sid]
        self.assertEqual(len(summaries), 2)
        self.assertEqual(summaries[0]["user_message"], "first question")
        self.assertEqual(summaries[0]["assistant_message"], first["data"]["message"])
        stored = self.db.one("select summary from chat_sessions where session_id = %s", (sid,))
        self.assertNotEqual(recs[1]["chat_summary"], "")
        self.assertEqual(summaries[1]["previous_summary"], recs[1]["chat_summary"])
        self.assertNotEqual(stored, recs[1]["chat_summary"])  # updated again by the second turn

    def test_balance_is_charged(self):
        uid = self.db.add_user(balance=1)
        r = self.c.chat(uid, "NEW", "charge me")
        self.assertEqual(r["type"], 3)
        after = self.c.req(6, {"user_id": uid})["data"]["balance"]
        self.assertLess(after, 1.0)
        self.assertGreater(after, 0.9)

    def test_zero_balance(self):
        uid = self.db.add_user(balance=0)
        before = len(process_requests(self.agent))
        self.assertEqual(self.c.chat(uid, "NEW", "hi")["code"], 15)
        neg = self.db.add_user(balance=-0.5)
        self.assertEqual(self.c.chat(neg, "NEW", "hi")["code"], 15)
        self.assertEqual(len(process_requests(self.agent)), before)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id in (%s, %s)", (uid, neg)), 0)

    def test_model_access(self):
        uid = self.db.add_user(models=(4, 5), balance=1)
        r = self.c.chat(uid, "NEW", "hi")  # llama3.1:8b is id 8
        self.assertEqual((r["code"], r["error"]), (7, "User Does Not Have Model Access"))
        r = self.c.chat(uid, "NEW", "hi", model="gpt-5-ultra")
        self.assertEqual(r["code"], 24)
        r = self.c.chat(uid, "NEW", "hi", model="gpt-4-turbo")
        self.assertEqual(r["type"], 3, r)
        # model_id instead of model_name
        self.c.send(3, dict(user_id=uid, session_id="NEW", model_id=4, message="by id"))
        self.assertEqual(self.c.recv()["type"], 3)

    def test_error_order_user_model_balance(self):
        poor = self.db.add_user(models=(4,), balance=0)
        self.assertEqual(self.c.chat(poor, "NEW", "hi")["code"], 7)  # model before balance
        self.assertEqual(self.c.chat(str(uuid.uuid4()), "NEW", "hi")["code"], 3)  # user first

    def test_other_user_cannot_continue_a_session(self):
        a = self.db.add_user(balance=1)
        b = self.db.add_user(balance=1)
        sid = self.c.chat(a, "NEW", "mine")["data"]["session_id"]
        before = len(process_requests(self.agent))
        r = self.c.chat(b, sid, "hijack")
        self.assertEqual(r["code"], 18)
        self.assertEqual(len(process_requests(self.agent)), before)
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 2)

    def test_streaming(self):
        uid = self.db.add_user(balance=1)
        self.c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="stream these words please",
                            session_prompt="", file_name="", stream=True))
        deltas = []
        while True:
            m = self.c.recv()
            if m.get("type") == 7:
                self.assertEqual(set(m["data"]), {"session_id", "delta", "index"})
                self.assertEqual(m["data"]["index"], len(deltas))  # 0, 1, 2, ...
                deltas.append(m["data"]["delta"])
                continue
            break
        self.assertEqual(m["type"], 3, m)
        self.assertGreaterEqual(len(deltas), 2)
        self.assertEqual("".join(deltas), m["data"]["message"])
        sid = m["data"]["session_id"]
        self.assertEqual(len(json.loads(self.c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])), 2)

    def test_flushall_between_turns_changes_nothing_the_agent_receives(self):
        uid = self.db.add_user(balance=5)
        r = redis_client()

        def two_turns(flush):
            sid = self.c.chat(uid, "NEW", "alpha")["data"]["session_id"]
            if flush:
                r.flushall()
            self.c.chat(uid, sid, "beta")
            rec = [p for p in process_requests(self.agent) if p["session_id"] == sid][-1]
            return rec["chat_history"], rec["chat_summary"]

        self.assertEqual(two_turns(False), two_turns(True))

    def test_two_connections_one_session_are_serialized(self):
        uid = self.db.add_user(balance=5)
        sid = self.c.chat(uid, "NEW", "start")["data"]["session_id"]
        replies = {}

        def turn(i):
            c = self.chatd.client()
            replies[i] = c.chat(uid, sid, "parallel %d" % i)
            c.close()

        run_threads(2, turn)
        self.assertTrue(all(r["type"] == 3 for r in replies.values()), replies)
        rows = self.db.query("select seq, role, content from chat_messages where session_id = %s order by seq",
                             (sid,))
        self.assertEqual([r[0] for r in rows], list(range(6)))
        self.assertEqual([r[1] for r in rows], ["user", "assistant"] * 3)
        # the later turn saw the earlier one in its history
        recs = [p for p in process_requests(self.agent) if p["session_id"] == sid]
        self.assertEqual([len(json.loads(p["chat_history"])) for p in recs], [0, 2, 4])


class SlowReader(StackCase):
    """Deltas a connection's socket could not take yet are joined (type 7
    "first"). The agent paces its words (1 ms apart, so each is a message
    of its own) while the client reads nothing until both of its turns are
    stored, its receive buffer made small. Each reply (1,800 words of 2,100
    bytes, 3.9 MB of frames) is about what the sending socket can hold at
    the most its buffer grows to (net.ipv4.tcp_wmem); the second, sent once
    the first is stored, finds the socket full whatever the kernel held of
    the first (a single reply of that size did not always fill it: a
    stressed CI run saw no joined frame)."""
    DB_PREFIX = "chatd_slow"
    AGENT_ENV = dict(AGENT_DELTA_MS=1)
    CHATD_ENV = dict(MAX_CHAT_MESSAGE_BYTES=4 * 1024 * 1024, MAX_MESSAGE_BYTES=8 * 1024 * 1024,
                     MAX_OUTPUT_BYTES_PER_CONN=64 * 1024 * 1024)  # (not closed as a slow reader)

    def test_streaming_to_a_socket_that_fell_behind_joins_deltas(self):
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
        words = " ".join("w%d-%s" % (i, "x" * 2100) for i in range(1800))
        self.assertLess(wmem_max, 2 * len(words), "a send buffer that could hold both replies")
        # a model whose context holds the long message (admins' SQL)
        self.db.query("insert into model_details values (90, 'long-context', 'ollama', 100000000, 0.0001, 0.0001)"
                      " on conflict do nothing")
        uid = self.db.add_user(models=(90,), balance=100)
        slow = self.chatd.client(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        self.addCleanup(slow.close)
        # (words over 2,047 bytes are not indexed: the stored text stays searchable)
        for stored in (2, 4):
            slow.send(3, dict(user_id=uid, session_id="NEW", model_name="long-context", message=words,
                              session_prompt="", file_name="", stream=True))
            # Not read until the turn is stored: every delta was queued by then.
            wait_for(lambda: self.db.one("select count(*) from chat_messages m join chat_sessions s"
                                         " using (session_id) where s.user_id = %s", (uid,)) == stored,
                     "the turn stored", tries=2400)
        joined = 0
        for _ in range(2):
            text, pieces = [], []
            while True:
                m = slow.recv()
                if m.get("type") != 7:
                    break
                d = m["data"]
                first = d.get("first", d["index"])
                self.assertLess(first, d["index"] + (0 if "first" in d else 1))
                joined += "first" in d
                pieces.extend(range(first, d["index"] + 1))
                text.append(d["delta"])
            self.assertEqual(m["type"], 3, m)
            self.assertEqual("".join(text), m["data"]["message"])
            self.assertEqual(pieces, list(range(len(pieces))))
            self.assertGreater(len(pieces), 700)  # (the agent sends a few words together when busy)
        self.assertGreater(joined, 0, "no frame was joined: the socket never fell behind")


class Trimming(StackCase):
    DB_PREFIX = "chatd_trim"
    CHATD_ENV = dict(MAX_CHAT_HISTORY_CONTEXT=4)

    def last_history(self, sid):
        return json.loads([p for p in process_requests(self.agent) if p["session_id"] == sid][-1]["chat_history"])

    def test_by_count(self):
        uid = self.db.add_user(balance=1)
        msgs = [("user" if i % 2 == 0 else "assistant", "m%d" % i) for i in range(10)]
        sid = self.db.add_session(uid, messages=msgs)
        c = self.chatd.client()
        self.assertEqual(c.chat(uid, sid, "next")["type"], 3)
        self.assertEqual(self.last_history(sid), [{"role": r, "content": t} for r, t in msgs[-4:]])
        c.close()

    def test_by_context_length(self):
        # llama3.1:8b has 4096 tokens; each entry is ~(3000 + 32) / 3 = 1011 estimated tokens
        uid = self.db.add_user(balance=1)
        msgs = [("user" if i % 2 == 0 else "assistant", chr(ord("a") + i) * 3000) for i in range(4)]
        sid = self.db.add_session(uid, messages=msgs)
        c = self.chatd.client()
        prompt = "p" * 900  # 300 tokens: now only 3 entries fit
        self.assertEqual(c.chat(uid, sid, "next", session_prompt=prompt)["type"], 3)
        hist = self.last_history(sid)
        self.assertEqual(hist, [{"role": r, "content": t} for r, t in msgs[-3:]])
        total = len(prompt) + len("next") + sum(len(h["content"]) + 32 for h in hist)
        self.assertLessEqual((total + 2) // 3, 4096)
        # and with a gpt-4-turbo (128000 tokens) nothing is trimmed by length
        self.db.query("update user_data set models = array[4,8] where user_id = %s", (uid,))
        self.assertEqual(c.chat(uid, sid, "again", model="gpt-4-turbo", session_prompt=prompt)["type"], 3)
        self.assertEqual(len(self.last_history(sid)), 4)
        c.close()


class AgentFailures(unittest.TestCase):
    def setUp(self):
        self.db = Database("chatd_fail")

    def tearDown(self):
        self.db.drop()

    def assertNothingStored(self, uid, balance):
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), balance)

    def test_agent_down(self):
        chatd = Chatd(self.db, agent_port=free_port())
        try:
            uid = self.db.add_user(balance=2)
            c = chatd.client()
            r = c.chat(uid, "NEW", "anyone there?")
            self.assertEqual((r["code"], r["type"], r["error"]), (6, 3, "Unable to Receive Response To Query"))
            self.assertNothingStored(uid, 2)
            sid = self.db.add_session(uid, messages=[("user", "a"), ("assistant", "b")])
            self.assertEqual(c.chat(uid, sid, "still there?")["code"], 6)
            self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 2)
            self.assertEqual(c.req(6, {"user_id": uid})["data"]["balance"], 2)
            c.close()
        finally:
            chatd.stop()
        self.assertIn("event=agent_call_failed", chatd.logs())
        self.assertIn("grpc_status=14", chatd.logs())

    def test_deadline(self):
        agent = Agent(AGENT_DELAY_MS=4000)
        chatd = Chatd(self.db, agent_port=agent.port, AI_TIMEOUT_SECONDS=1)
        try:
            uid = self.db.add_user(balance=2)
            c = chatd.client()
            r = c.chat(uid, "NEW", "slow")
            self.assertEqual(r["code"], 6)
            # the deadline ended it (DEADLINE_EXCEEDED), not the agent's answer
            self.assertIn("grpc_status=4 ", chatd.logs())
            self.assertNothingStored(uid, 2)
            c.close()
        finally:
            chatd.stop()
            agent.stop()
        self.assertIn("grpc_status=4", chatd.logs())

    def test_agent_error_status(self):
        agent = Agent(AGENT_FAIL_MODE="internal")
        chatd = Chatd(self.db, agent_port=agent.port)
        try:
            uid = self.db.add_user(balance=2)
            c = chatd.client()
            self.assertEqual(c.chat(uid, "NEW", "fail please")["code"], 6)
            self.assertNothingStored(uid, 2)
            c.close()
        finally:
            chatd.stop()
            agent.stop()
        self.assertIn("grpc_status=13", chatd.logs())

    def test_agent_restarts(self):
        agent = Agent()
        chatd = Chatd(self.db, agent_port=agent.port)
        try:
            uid = self.db.add_user(balance=2)
            c = chatd.client()
            self.assertEqual(c.chat(uid, "NEW", "one")["type"], 3)
            agent.stop()
            self.assertEqual(c.chat(uid, "NEW", "two")["code"], 6)
            agent.start()
            deadline = time.time() + 20
            while True:  # gRPC reconnects with back-off
                r = c.chat(uid, "NEW", "three")
                if r.get("type") == 3 or time.time() > deadline:
                    break
                time.sleep(0.5)
            self.assertEqual(r["type"], 3, r)
            c.close()
        finally:
            chatd.stop()
            agent.stop()


class StopAndCancel(StackCase):
    DB_PREFIX = "chatd_stop"
    AGENT_ENV = dict(AGENT_DELAY_MS=3000)
    # today's behaviour for a dropped client (the default, finish, is in
    # test_live.py)
    CHATD_ENV = dict(DETACHED_TURNS="cancel")

    def test_stop_mid_stream(self):
        uid = self.db.add_user(balance=1)
        c = self.chatd.client()
        words = " ".join("w%d" % i for i in range(30))
        c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message=words, session_prompt="",
                       file_name="", stream=True))
        first = c.recv()
        self.assertEqual(first["type"], 7, first)
        sid = first["data"]["session_id"]
        got = [first["data"]["delta"]]
        with self.agent.held():  # still running when the stop comes
            c.send(8, {"user_id": uid, "session_id": sid})
            ack = None
            while True:
                m = c.recv()
                if m.get("type") == 7:
                    got.append(m["data"]["delta"])
                elif m.get("type") == 8:
                    ack = m
                else:
                    break
        self.assertEqual(ack, {"type": 8, "data": {"user_id": uid, "session_id": sid, "stopped": True}})
        self.assertEqual(m["type"], 3, m)
        partial = "".join(got)
        self.assertTrue(m["data"]["message"].endswith("[stopped]"), m)
        self.assertTrue(m["data"]["message"].startswith(partial), (partial, m))
        self.assertLess(len(m["data"]["message"]), len(words))
        chat = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
        self.assertEqual(chat, [{"role": "user", "content": words}, {"role": "assistant", "content": m["data"]["message"]}])
        self.assertLess(c.req(6, {"user_id": uid})["data"]["balance"], 1)
        c.close()

    def test_dropped_client_cancels_the_call_with_detached_turns_cancel(self):
        uid = self.db.add_user(balance=1)
        c = self.chatd.client()
        c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="going away", session_prompt="",
                       file_name=""))
        time.sleep(0.5)
        c.ws.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        deadline = time.time() + 5
        while "event=turn_cancelled" not in self.chatd.logs() and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("event=turn_cancelled", self.chatd.logs())
        time.sleep(3)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), 1)


class StopRace(StackCase):
    DB_PREFIX = "chatd_chat_stoprace"

    def test_a_stop_at_the_last_delta_agrees_with_the_stored_reply(self):
        # The stop races the end of the agent call: chatd either says it was
        # too late (23) and stores the whole reply, or acknowledges it and
        # stores the reply marked [stopped]; never an acknowledged stop with
        # an unstopped reply (found by bench/soak.c).
        uid = self.db.add_user(balance=100)
        c = self.chatd.client()
        outcomes = set()  # with an agent that answers at once, mostly "too late"
        try:
            for i in range(20):
                msg = "last delta race %d" % i
                c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message=msg, session_prompt="",
                               file_name="", stream=True))
                final = ack = None
                sid = None
                while final is None or ack is None:
                    m = c.recv()
                    if m.get("type") == 7 and ack is None and sid is None and "files=" in m["data"]["delta"]:
                        sid = m["data"]["session_id"]  # the echo reply's last piece
                        c.send(8, {"user_id": uid, "session_id": sid})
                    elif m.get("type") == 3:
                        final = m
                    elif m.get("type") == 8:
                        ack = m
                    if final is not None and sid is None:
                        self.fail("no last delta seen: %r" % final)
                self.assertNotIn("error", final, final)
                stored = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])[1]["content"]
                self.assertEqual(stored, final["data"]["message"])
                if ack.get("code") == 23:
                    self.assertFalse(final["data"]["message"].endswith("[stopped]"), final)
                    outcomes.add("too late")
                else:
                    self.assertEqual(ack["data"]["stopped"], True, ack)
                    self.assertTrue(final["data"]["message"].endswith("[stopped]"), (ack, final))
                    outcomes.add("stopped")
        finally:
            c.close()
        self.assertIn("too late", outcomes)


class PythonAgent(unittest.TestCase):
    """An agent on python3-grpcio with Process only: chatd falls back."""

    @classmethod
    def setUpClass(cls):
        cls.db = Database("chatd_pyagent")
        cls.port = free_port()
        cls.record = os.path.join(SOURCE_DIR, "build", "py-agent-%s.jsonl" % uuid.uuid4().hex[:6])
        cls.log_path = cls.record + ".log"
        cls.log = open(cls.log_path, "wb")
        cls.proc = subprocess.Popen([sys.executable if sys.executable.startswith("/usr/bin") else "/usr/bin/python3",
                                     os.path.join(SOURCE_DIR, "tests", "fixtures", "py_agent.py"),
                                     str(cls.port), cls.record], stdout=cls.log, stderr=subprocess.STDOUT)
        wait_port(cls.port, cls.proc, cls.log_path, timeout=30)
        cls.chatd = Chatd(cls.db, agent_port=cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(10)
        cls.log.close()
        for p in (cls.record, cls.log_path):
            if os.path.exists(p):
                os.unlink(p)
        cleanup(cls.chatd, cls.db)

    def records(self):
        return read_records(self.record)

    def test_process_only_agent(self):
        uid = self.db.add_user(balance=1)
        c = self.chatd.client()
        r = c.chat(uid, "NEW", "hello python")
        self.assertEqual(r["type"], 3, r)
        self.assertEqual(r["data"]["message"], "py-agent: hello python (history 0)")
        sid = r["data"]["session_id"]
        # balance decreases by exactly the reported cost: a float32 0.001
        # is taken at float precision, 0.001, not 0.0010000000474974513
        bal = c.req(6, {"user_id": uid})["data"]["balance"]
        self.assertEqual(bal, 0.999)
        self.assertEqual(self.db.one("select balance::text from user_data where user_id = %s", (uid,)),
                         "0.999")
        # stream requested: falls back to Process, one delta then the reply
        c.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, message="again", session_prompt="",
                       file_name="", stream=True))
        m1, m2 = c.recv(), c.recv()
        self.assertEqual((m1["type"], m2["type"]), (7, 3), (m1, m2))
        self.assertEqual(m1["data"]["delta"], m2["data"]["message"])
        self.assertEqual(m2["data"]["message"], "py-agent: again (history 2)")
        # Summarize is UNIMPLEMENTED: the summary stays as it was
        self.assertEqual(self.db.one("select summary from chat_sessions where session_id = %s", (sid,)), "")
        recs = self.records()
        self.assertEqual([x["chat_summary"] for x in recs if x["session_id"] == sid], ["", ""])
        self.assertEqual(c.req(2, {"user_id": uid, "session_id": sid})["type"], 2)
        c.close()


if __name__ == "__main__":
    unittest.main()
