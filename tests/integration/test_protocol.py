"""Issue 3: the WebSocket protocol, codes 0, 1, 2, 4, 5, 6, on real
PostgreSQL and Redis, with the exact shapes the existing client reads."""

import json
import socket
import time
import unittest
import uuid

import websocket

from harness import MODEL, Chatd, Database, StackCase, redis_client, run_threads

MODELS_SORTED = ["gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-instruct",
                 "gpt-4", "gpt-4-32k", "gpt-4-turbo", "gpt-4-turbo-2024-04-09", "llama3.1:8b"]


class Protocol(StackCase):
    DB_PREFIX = "chatd_proto"
    AGENT_ENV = dict(AGENT_DELAY_MS=0)
    CHATD_ENV = dict(MAX_MESSAGE_BYTES=65536, MAX_CHAT_MESSAGE_BYTES=1000)

    def setUp(self):
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def assertError(self, reply, code, type_=None, text=None, detail=None):
        self.assertIn("error", reply, reply)
        self.assertEqual(reply["code"], code, reply)
        if type_ is not None:
            self.assertEqual(reply.get("type"), type_, reply)
        if text is not None:
            self.assertIn(text, reply["error"])
        if detail is not None:
            self.assertIn(detail, reply.get("detail", ""), reply)

    def assertClosedWith(self, status):
        frame = self.c.ws.recv_frame()
        self.assertEqual(frame.opcode, websocket.ABNF.OPCODE_CLOSE)
        self.assertEqual(int.from_bytes(frame.data[:2], "big"), status)

    def assertAlive(self, uid):
        self.assertEqual(self.c.req(6, {"user_id": uid})["type"], 6)

    # ------------------------------------------------------------ happy paths

    def test_page_load_sequence(self):
        uid = self.db.add_user("Ada", balance=2.5)
        for t in (0, 1, 5, 6):  # sent without waiting, as the client does
            self.c.send(t, {"user_id": uid})
        r0, r1, r5, r6 = (self.c.recv() for _ in range(4))
        self.assertEqual(r0, {"type": 0, "data": {"user_id": uid, "username": "Ada"}})
        self.assertEqual(r1, {"type": 1, "data": {"user_id": uid, "session_info": []}})
        self.assertEqual(r5, {"type": 5, "data": {"models": MODELS_SORTED}})
        self.assertEqual(r6, {"type": 6, "data": {"balance": 2.5}})

    def test_sessions_newest_first(self):
        uid = self.db.add_user()
        a = self.db.add_session(uid, "first")
        b = self.db.add_session(uid, "second")
        r = self.c.req(1, {"user_id": uid})
        self.assertEqual(r["data"]["session_info"],
                         [{"session_id": b, "session_name": "second"}, {"session_id": a, "session_name": "first"}])

    def test_chats_is_a_json_string(self):
        uid = self.db.add_user()
        msgs = [("user", "hi"), ("assistant", "hello \"there\"\n"), ("file", "http://x/uploads/a.png"),
                ("user", "ünïcødé ✓"), ("assistant", "ok")]
        sid = self.db.add_session(uid, messages=msgs)
        r = self.c.req(2, {"user_id": uid, "session_id": sid})
        self.assertEqual(r["type"], 2)
        self.assertEqual(set(r["data"]), {"user_id", "session_id", "chat"})
        self.assertEqual(r["data"]["session_id"], sid)
        self.assertIsInstance(r["data"]["chat"], str)
        self.assertEqual(json.loads(r["data"]["chat"]), [{"role": a, "content": b} for a, b in msgs])

    def test_empty_session_chat_is_empty_array(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        r = self.c.req(2, {"user_id": uid, "session_id": sid})
        self.assertEqual(json.loads(r["data"]["chat"]), [])

    def test_delete_session(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, messages=[("user", "a"), ("assistant", "b")])
        keep = self.db.add_session(uid, "keep")
        self.assertEqual(len(self.c.req(1, {"user_id": uid})["data"]["session_info"]), 2)  # cached now
        r = self.c.req(4, {"user_id": uid, "session_id": sid})
        self.assertEqual(r, {"type": 4, "data": {"user_id": uid}})
        self.assertEqual(self.c.req(1, {"user_id": uid})["data"]["session_info"],
                         [{"session_id": keep, "session_name": "keep"}])
        self.assertError(self.c.req(2, {"user_id": uid, "session_id": sid}), 18, 2)
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 0)
        # deleting again: it is gone
        self.assertError(self.c.req(4, {"user_id": uid, "session_id": sid}), 18, 4, "Session Not Found")

    def test_upper_case_ids_are_the_same_ids(self):
        uid = self.db.add_user("Upper")
        r = self.c.req(0, {"user_id": uid.upper()})
        self.assertEqual(r["data"], {"user_id": uid, "username": "Upper"})

    def test_unknown_fields_are_ignored(self):
        uid = self.db.add_user("Extra")
        r = self.c.req(0, {"user_id": uid, "shoe_size": 44, "nested": {"a": [1]}})
        self.assertEqual(r["data"]["username"], "Extra")
        self.c.send_raw(json.dumps({"type": 6, "data": {"user_id": uid}, "id": 7, "meta": None}))
        self.assertEqual(self.c.recv()["type"], 6)

    # ------------------------------------------------------------- ownership

    def test_someone_elses_session_is_a_missing_session(self):
        a = self.db.add_user("A")
        b = self.db.add_user("B")
        sid = self.db.add_session(a, messages=[("user", "secret"), ("assistant", "shh")])
        missing = str(uuid.uuid4())
        for code in (2, 4):
            theirs = self.c.req(code, {"user_id": b, "session_id": sid})
            nothing = self.c.req(code, {"user_id": b, "session_id": missing})
            self.assertEqual(theirs, nothing)
            self.assertError(theirs, 18, code)
        chat = self.c.chat(b, sid, "let me in")
        self.assertEqual(chat, self.c.chat(b, missing, "let me in"))
        self.assertError(chat, 18, 3)
        # A's session is untouched
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 2)
        self.assertEqual(json.loads(self.c.req(2, {"user_id": a, "session_id": sid})["data"]["chat"])[0]["content"],
                         "secret")
        self.assertNotIn(sid, json.dumps(self.c.req(1, {"user_id": b})))

    def test_unknown_user(self):
        nobody = str(uuid.uuid4())
        self.assertError(self.c.req(0, {"user_id": nobody}), 3, 0, "User Does Not Exists")
        self.assertError(self.c.req(1, {"user_id": nobody}), 3, 1)
        self.assertError(self.c.req(6, {"user_id": nobody}), 3, 6)
        self.assertError(self.c.chat(nobody, "NEW", "hi"), 3, 3)

    # ------------------------------------------------------------- bad input

    def test_bad_frames_get_clear_errors_and_the_connection_stays(self):
        uid = self.db.add_user()
        cases = [
            ("{", 0, "JSON Parsing Error"),
            ("not json", 0, "JSON Parsing Error"),
            ("[1]", 17, "'frame'"),
            ('{"data": {}}', 17, "'type': missing"),
            ('{"type": "0", "data": {}}', 17, "'type': expected an integer"),
            ('{"type": null, "data": {}}', 17, "'type'"),
            ('{"type": 99, "data": {}}', 1, "Unknown Message"),
            ('{"type": -1, "data": {}}', 1, "Unknown Message"),
            ('{"type": 1e400, "data": {}}', 17, "Invalid field 'type': number out of range"),
            ('{"type": 0}', 17, "'data': missing"),
            ('{"type": 0, "data": "x"}', 17, "'data': expected an object"),
            ('{"type": 0, "data": {}}', 17, "'user_id': missing"),
            ('{"type": 0, "data": {"user_id": 12}}', 17, "'user_id': expected a string"),
            ('{"type": 0, "data": {"user_id": "12"}}', 17, "'user_id': not a valid UUID"),
            ('{"type": 0, "data": {"user_id": "\'; drop table user_data; --"}}', 17, "not a valid UUID"),
            ('{"type": 2, "data": {"user_id": "%s", "session_id": "NEW"}}' % uid, 17, "'session_id'"),
            ('{"type": 2, "data": {"user_id": "%s", "session_id": []}}' % uid, 17, "'session_id': expected a string"),
            ('{"type": 3, "data": {"user_id": "%s", "session_id": "NEW", "message": "x"}}' % uid, 17,
             "'model_name'"),
            ('{"type": 3, "data": {"user_id": "%s", "session_id": "NEW", "model_name": "%s", "message": 5}}'
             % (uid, MODEL), 17, "'message': expected a string"),
            ('{"type": 0, "data": {"user_id": "a\\u0000"}}', 0, "JSON Parsing Error"),
            ('{"type": 8, "data": {"user_id": "%s", "session_id": "%s"}}' % (uid, uuid.uuid4()), 23,
             "No Chat In Progress"),
        ]
        for frame, code, text in cases:
            self.assertError(self.c.req_raw(frame), code, text=text)
        self.c.ws.send(b'\xff\xfe{"type":0}', opcode=websocket.ABNF.OPCODE_BINARY)
        self.assertError(self.c.recv(), 22, text="Binary")
        self.assertAlive(uid)
        self.assertEqual(self.db.one("select count(*) from user_data where user_id = %s", (uid,)), 1)

    def test_invalid_utf8_text_frame(self):
        uid = self.db.add_user()
        # websocket-client would refuse to send invalid UTF-8 as text; build the frame by hand.
        frame = websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 1, b'{"type":0,"data":{"user_id":"\xc3\x28"}}')
        self.c.ws.sock.send(frame.format())
        try:
            r = self.c.recv()
            self.assertError(r, 0)
            self.assertAlive(uid)
        except websocket.WebSocketConnectionClosedException:
            pass  # closing with 1007 is the other correct answer
        # either way the server serves others
        other = self.chatd.client()
        self.assertEqual(other.req(6, {"user_id": uid})["type"], 6)
        other.close()

    def test_long_chat_message(self):
        uid = self.db.add_user()
        r = self.c.chat(uid, "NEW", "x" * 1001)
        # the documented text exactly; the limit in "detail"
        self.assertEqual(r["error"], "Message Too Long", r)
        self.assertError(r, 20, 3, detail="exceeds 1000 bytes")
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        self.assertAlive(uid)

    def test_huge_frame_is_refused_and_closed(self):
        uid = self.db.add_user()
        self.c.send_raw(json.dumps({"type": 0, "data": {"user_id": uid, "pad": "x" * 200000}}))
        r = self.c.recv()
        self.assertError(r, 19, text="Frame Too Large")
        self.assertClosedWith(1009)
        # others are unaffected
        other = self.chatd.client()
        self.assertEqual(other.req(0, {"user_id": uid})["type"], 0)
        other.close()

    def test_fragmented_frame_within_limit(self):
        uid = self.db.add_user("Frag")
        text = json.dumps({"type": 0, "data": {"user_id": uid, "pad": "y" * 30000}})
        parts = [text[i:i + 7000] for i in range(0, len(text), 7000)]
        self.c.ws.send_frame(websocket.ABNF.create_frame(parts[0], websocket.ABNF.OPCODE_TEXT, 0))
        for p in parts[1:-1]:
            self.c.ws.send_frame(websocket.ABNF.create_frame(p, websocket.ABNF.OPCODE_CONT, 0))
        self.c.ws.send_frame(websocket.ABNF.create_frame(parts[-1], websocket.ABNF.OPCODE_CONT, 1))
        self.assertEqual(self.c.recv()["data"]["username"], "Frag")

    def test_fragmented_frame_over_limit(self):
        uid = self.db.add_user()
        for i in range(10):  # 10 x 8000 > 65536, no single fragment is
            op = websocket.ABNF.OPCODE_TEXT if i == 0 else websocket.ABNF.OPCODE_CONT
            self.c.ws.send_frame(websocket.ABNF.create_frame("z" * 8000, op, 0))
        self.assertError(self.c.recv(), 19)
        self.assertClosedWith(1009)
        other = self.chatd.client()
        self.assertEqual(other.req(6, {"user_id": uid})["type"], 6)
        other.close()

    def test_many_unknown_frames_in_a_row(self):
        uid = self.db.add_user()
        n = 2000
        for i in range(n):
            self.c.send_raw('{"type": %d, "data": {}}' % (100 + i))
        for i in range(n):
            r = self.c.recv()
            self.assertEqual((r["code"], r["type"]), (1, 100 + i))
        self.assertAlive(uid)

    def test_other_paths_are_refused(self):
        with self.assertRaises(websocket.WebSocketException):
            websocket.create_connection("ws://127.0.0.1:%d/other" % self.chatd.port, timeout=5)

    # ----------------------------------------------------- cache correctness

    def test_user_added_by_sql_is_served_at_once(self):
        before = self.c.req(1, {"user_id": str(uuid.uuid4())})
        self.assertError(before, 3)
        uid = self.db.add_user("Late Arrival", balance=3)
        self.assertEqual(self.c.req(0, {"user_id": uid})["data"]["username"], "Late Arrival")
        self.assertEqual(self.c.req(6, {"user_id": uid})["data"]["balance"], 3)

    def test_flushall_changes_no_answer(self):
        uid = self.db.add_user("Flushy", balance=4.25)
        sid = self.db.add_session(uid, "s", messages=[("user", "q"), ("assistant", "a")])
        r = redis_client()

        def answers():
            out = []
            for t in (0, 1, 5, 6):
                out.append(self.c.req(t, {"user_id": uid}))
            out.append(self.c.req(2, {"user_id": uid, "session_id": sid}))
            return out

        first = answers()
        self.assertTrue(r.exists("chatd:{u:%s}:profile" % uid))
        self.assertTrue(r.exists("chatd:{u:%s}:sessions" % uid))
        r.flushall()
        self.assertEqual(answers(), first)
        self.assertEqual(answers(), first)  # rebuilt copies answer the same
        # a chat turn, flush, and the turn is visible through every code
        reply = self.c.chat(uid, sid, "after flush")
        self.assertEqual(reply["type"], 3, reply)
        r.flushall()
        chat = json.loads(self.c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
        self.assertEqual([m["content"] for m in chat][-2:], ["after flush", reply["data"]["message"]])

    def test_keys_are_prefixed_and_hash_tagged(self):
        uid = self.db.add_user()
        self.c.req(0, {"user_id": uid})
        self.c.req(1, {"user_id": uid})
        keys = {k.decode() for k in redis_client().keys("chatd:{u:%s}*" % uid)}
        self.assertEqual(keys, {"chatd:{u:%s}:profile" % uid, "chatd:{u:%s}:sessions" % uid})

    # ------------------------------------------------------------- ordering

    def test_replies_keep_request_order(self):
        uid = self.db.add_user("Order", balance=7)
        sids = [self.db.add_session(uid, "s%d" % i) for i in range(3)]
        frames = []
        for i in range(30):
            t = (0, 1, 5, 6, 2)[i % 5]
            d = {"user_id": uid}
            if t == 2:
                d["session_id"] = sids[i % 3]
            frames.append(t)
            self.c.send(t, d)
        got = [self.c.recv()["type"] for _ in frames]
        self.assertEqual(got, frames)


class Concurrency(StackCase):
    DB_PREFIX = "chatd_conc"
    AGENT_ENV = dict(AGENT_DELAY_MS=1500)

    def test_slow_chat_does_not_hold_back_other_replies(self):
        uid = self.db.add_user(balance=5)
        c = self.chatd.client()
        c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="slow one",
                       session_prompt="", file_name=""))
        c.send(6, {"user_id": uid})
        c.send(0, {"user_id": uid})
        first, second, third = c.recv(), c.recv(), c.recv()
        self.assertEqual([first["type"], second["type"], third["type"]], [6, 0, 3], (first, second, third))
        c.close()

    def test_fifty_connections_mixing_all_codes(self):
        users = [self.db.add_user("U%d" % i, balance=10) for i in range(10)]
        sessions = {u: self.db.add_session(u, "base", messages=[("user", "q"), ("assistant", "a")]) for u in users}

        def client(i):
            uid = users[i % len(users)]
            c = self.chatd.client(timeout=60)
            try:
                for round_ in range(3):
                    self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "U%d" % (i % 10))
                    self.assertIn(sessions[uid], json.dumps(c.req(1, {"user_id": uid})["data"]["session_info"]))
                    chat = json.loads(c.req(2, {"user_id": uid, "session_id": sessions[uid]})["data"]["chat"])
                    self.assertEqual(chat[:2], [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
                    self.assertEqual(len(c.req(5, {"user_id": uid})["data"]["models"]), 9)
                    self.assertIsInstance(c.req(6, {"user_id": uid})["data"]["balance"], float)
                    if round_ == 0 and i % 5 == 0:
                        r = c.chat(uid, "NEW", "hello from %d" % i)
                        self.assertEqual(r["type"], 3, r)
                        self.assertEqual(set(r["data"]), {"user_id", "session_id", "session_name", "message"})
                        d = c.req(4, {"user_id": uid, "session_id": r["data"]["session_id"]})
                        self.assertEqual(d, {"type": 4, "data": {"user_id": uid}})
            finally:
                c.close()

        run_threads(50, client)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where session_name like 'hello%%'"), 0)

    def test_dropped_connection_while_work_in_flight(self):
        uid = self.db.add_user(balance=5)
        c = self.chatd.client()
        for t in (0, 1, 5, 6):
            c.send(t, {"user_id": uid})
        c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="never mind",
                       session_prompt="", file_name=""))
        c.ws.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        time.sleep(2.5)  # past the agent's delay: the turn was cancelled, not stored
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), 5)
        c2 = self.chatd.client()
        self.assertEqual(c2.req(6, {"user_id": uid})["data"]["balance"], 5)
        c2.close()


class KeepAlive(unittest.TestCase):
    def test_silent_peer_is_closed(self):
        db = Database("chatd_ping")
        chatd = Chatd(db, WS_PING_SECONDS=1)
        try:
            uid = db.add_user()
            alive = chatd.client(timeout=10)
            # A raw TCP peer that completes the handshake and then never
            # answers a ping (nor reads anything).
            s = socket.create_connection(("127.0.0.1", chatd.port))
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            self.assertIn(b"101", s.recv(4096))
            deadline = time.time() + 8
            closed = False
            s.settimeout(0.5)
            while time.time() < deadline and not closed:
                try:
                    closed = s.recv(4096) == b""
                except socket.timeout:
                    alive.req(6, {"user_id": uid})  # a live client answers pings as it reads
                except ConnectionResetError:
                    closed = True
            self.assertTrue(closed, "a peer that never answers pings was not closed")
            self.assertEqual(alive.req(6, {"user_id": uid})["type"], 6)
            alive.close()
            s.close()
        finally:
            chatd.stop()
            db.drop()

    def test_quiet_peer_that_answers_pings_stays(self):
        """A client that sends nothing but pongs is pinged again and again
        and kept: each pong counts as hearing from it."""
        db = Database("chatd_ping_quiet")
        chatd = Chatd(db, WS_PING_SECONDS=1)
        try:
            uid = db.add_user()
            c = chatd.client(timeout=10)
            c.ws.settimeout(0.3)
            pings = 0
            deadline = time.time() + 6  # three times the hang-up delay
            while time.time() < deadline:
                try:
                    op, _ = c.ws.recv_data_frame(True)  # answers a ping with a pong
                except websocket.WebSocketTimeoutException:
                    continue
                self.assertNotEqual(op, websocket.ABNF.OPCODE_CLOSE, "closed though it answered")
                if op == websocket.ABNF.OPCODE_PING:
                    pings += 1
            self.assertGreaterEqual(pings, 2)
            c.ws.settimeout(10)
            self.assertEqual(c.req(6, {"user_id": uid})["type"], 6)
            c.close()
        finally:
            chatd.stop()
            db.drop()


class RedisDown(unittest.TestCase):
    def test_serves_from_postgres_without_redis(self):
        db = Database("chatd_noredis")
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                dead = s.getsockname()[1]
            chatd = Chatd(db, REDIS_PORT=dead)
            try:
                uid = db.add_user("NoCache", balance=1.5)
                sid = db.add_session(uid, messages=[("user", "x"), ("assistant", "y")])
                c = chatd.client()
                self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "NoCache")
                self.assertEqual(c.req(1, {"user_id": uid})["data"]["session_info"][0]["session_id"], sid)
                self.assertEqual(len(json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])), 2)
                self.assertEqual(c.req(6, {"user_id": uid})["data"]["balance"], 1.5)
                c.close()
            finally:
                chatd.stop()
        finally:
            db.drop()


if __name__ == "__main__":
    unittest.main()
