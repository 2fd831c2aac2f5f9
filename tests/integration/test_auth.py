"""Issue 6: who may connect and as whom (AUTH_MODE=jwt, ALLOWED_ORIGINS), and
the per-address, global and slow-reader connection limits. Real PostgreSQL,
Redis, chat-agent and chatd via harness.py; tokens are made with PyJWT
(python3-jwt), independently of chatd's verifier."""

import json
import os
import socket
import time
import unittest

import jwt
import websocket

from harness import MODEL, Agent, Chatd, Database, StackCase, cleanup
from test_http import PNG, multipart, request

SECRET = "integration-secret-integration-secret-42"


def token(sub, secret=SECRET, exp_in=3600, **claims):
    body = {"sub": sub, "exp": int(time.time()) + exp_in}
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def handshake_status(url, **kw):
    """The HTTP status of a refused upgrade, or 101 when it was accepted."""
    try:
        ws = websocket.create_connection(url, timeout=10, **kw)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return 101


class JwtMode(StackCase):
    DB_PREFIX = "chatd_auth_jwt"
    CHATD_ENV = dict(AUTH_MODE="jwt", JWT_SECRET=SECRET, JWT_ISSUER="chatd-tests", JWT_AUDIENCE="chatd")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = cls.db.add_user("Alice")
        cls.bob = cls.db.add_user("Bob")
        cls.bob_session = cls.db.add_session(cls.bob, "Bob's", messages=[("user", "secret"), ("assistant", "ok")])

    def tok(self, sub, **kw):
        claims = dict(iss="chatd-tests", aud="chatd")
        claims.update(kw)
        return token(sub, **claims)

    def bearer(self, sub, **kw):
        return ["Authorization: Bearer " + self.tok(sub, **kw)]

    def test_bearer_header_acts_as_its_sub(self):
        c = self.chatd.client(header=self.bearer(self.alice))
        try:
            r = c.req(0, {"user_id": self.alice})
            self.assertEqual(r["data"]["username"], "Alice", r)
            r = c.chat(self.alice, "NEW", "hello as myself")
            self.assertEqual(r["type"], 3, r)
        finally:
            c.close()

    def test_query_token_for_browsers(self):
        url = self.chatd.url + "?token=" + self.tok(self.alice)
        c = websocket.create_connection(url, timeout=10)
        try:
            c.send(json.dumps({"type": 6, "data": {"user_id": self.alice}}))
            r = json.loads(c.recv())
            self.assertEqual(r["type"], 6, r)
            self.assertNotIn("error", r)
        finally:
            c.close()

    def test_other_user_id_is_refused_and_nothing_happens(self):
        # (turns only: an earlier test's new session may still get its title)
        turns = lambda: [r for r in self.agent.requests() if r["method"] in ("Process", "ProcessStream")]
        agent_before = len(turns())
        c = self.chatd.client(header=self.bearer(self.alice))
        try:
            for type_, data in [
                (0, {"user_id": self.bob}),
                (1, {"user_id": self.bob}),
                (2, {"user_id": self.bob, "session_id": self.bob_session}),
                (4, {"user_id": self.bob, "session_id": self.bob_session}),
                (6, {"user_id": self.bob}),
                (3, dict(user_id=self.bob, session_id=self.bob_session, model_name=MODEL,
                         message="let me in", session_prompt="", file_name="")),
                # Bob's id in upper case is still Bob
                (3, dict(user_id=self.bob.upper(), session_id="NEW", model_name=MODEL,
                         message="upper case is the same user", session_prompt="", file_name="")),
            ]:
                r = c.req(type_, data)
                self.assertEqual(r, {"error": "Not Allowed To Act As This User", "code": 26, "type": type_})
            # the connection still serves its own user
            self.assertEqual(c.req(0, {"user_id": self.alice})["data"]["username"], "Alice")
        finally:
            c.close()
        self.assertEqual(self.db.one("select count(*) from chat_sessions where session_id = %s",
                                     (self.bob_session,)), 1)
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s",
                                     (self.bob_session,)), 2)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (self.bob,)), 1)
        self.assertEqual(len(turns()), agent_before)

    def test_upper_case_sub_matches_lower_case_user_id(self):
        c = self.chatd.client(header=self.bearer(self.alice.upper()))
        try:
            self.assertEqual(c.req(0, {"user_id": self.alice})["data"]["username"], "Alice")
        finally:
            c.close()

    def test_bad_tokens_get_401_at_the_upgrade(self):
        now = int(time.time())
        cases = {
            "none": [],
            "empty bearer": ["Authorization: Bearer "],
            "basic scheme": ["Authorization: Basic YWxpY2U6cHc="],
            "garbage": ["Authorization: Bearer not.a.token"],
            "expired": ["Authorization: Bearer " + self.tok(self.alice, exp=now - 10)],
            "wrong secret": ["Authorization: Bearer " + token(self.alice, secret="x" * 40,
                                                               iss="chatd-tests", aud="chatd")],
            "wrong issuer": self.bearer(self.alice, iss="someone-else"),
            "wrong audience": self.bearer(self.alice, aud="billing"),
            "no issuer": ["Authorization: Bearer " + token(self.alice, aud="chatd")],
            "not yet valid": self.bearer(self.alice, nbf=now + 3600),
            "sub not a uuid": self.bearer("alice"),
            "alg none": ["Authorization: Bearer " + jwt.encode(
                {"sub": self.alice, "exp": now + 60, "iss": "chatd-tests", "aud": "chatd"}, None, algorithm="none")],
            "HS512": ["Authorization: Bearer " + jwt.encode(
                {"sub": self.alice, "exp": now + 60, "iss": "chatd-tests", "aud": "chatd"}, SECRET,
                algorithm="HS512")],
            "longer than any token": ["Authorization: Bearer " + "a" * 4500],
        }
        for name, header in cases.items():
            with self.subTest(name):
                self.assertEqual(handshake_status(self.chatd.url, header=header), 401)
        self.assertEqual(handshake_status(self.chatd.url + "?token=nope"), 401)
        # headers past what lws buffers (8 KiB) end the connection unanswered
        try:
            status = handshake_status(self.chatd.url, header=["Authorization: Bearer " + "a" * 20000])
        except websocket.WebSocketConnectionClosedException:
            status = None
        except ConnectionResetError:
            status = None
        self.assertIn(status, (None, 401, 431))
        # the refusal is a real HTTP answer a client can read
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        status, headers, body = request(self.chatd.port, "GET", "/ws", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13"})
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("www-authenticate"), 'Bearer realm="chatd"')
        self.assertEqual(json.loads(body), {"message": "Unauthorized", "data": None})
        # still serving
        self.assertEqual(handshake_status(self.chatd.url, header=self.bearer(self.alice)), 101)

    def test_upload_needs_the_token_of_its_user(self):
        sid = self.db.add_session(self.alice, "for files")
        fields = {"user_id": self.alice, "session_id": sid, "model_name": MODEL, "session_prompt": ""}
        body, ctype = multipart(fields, ("photo.png", PNG, "image/png"))

        def upload(headers):
            h = {"Content-Type": ctype}
            h.update(headers)
            status, _, data = request(self.chatd.port, "POST", "/upload", body, h)
            return status, json.loads(data)

        self.assertEqual(upload({})[0], 401)
        self.assertEqual(upload({"Authorization": "Bearer garbage"})[0], 401)
        status, data = upload({"Authorization": "Bearer " + self.tok(self.bob)})
        self.assertEqual((status, data["message"]), (403, "Not Allowed To Act As This User"))
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)
        status, data = upload({"Authorization": "Bearer " + self.tok(self.alice)})
        self.assertEqual(status, 202, data)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 1)
        public = self.chatd.env["PUBLIC_DIR"]
        self.assertEqual(len([f for f in os.listdir(public) if not f.startswith(".")]), 1,
                         "only the accepted upload is on disk")


class Origins(StackCase):
    DB_PREFIX = "chatd_auth_origin"
    CHATD_ENV = dict(ALLOWED_ORIGINS="http://localhost:3000, https://chat.example.com")

    def test_allowed_origins(self):
        uid = self.db.add_user()
        self.assertEqual(handshake_status(self.chatd.url, origin="http://localhost:3000"), 101)
        self.assertEqual(handshake_status(self.chatd.url, origin="https://chat.example.com"), 101)
        self.assertEqual(handshake_status(self.chatd.url, suppress_origin=True), 101)  # not a browser
        for bad in ("https://evil.example", "http://localhost:3001", "null",
                    "https://chat.example.com.evil.example", "x" * 300):
            with self.subTest(bad):
                self.assertEqual(handshake_status(self.chatd.url, origin=bad), 403)
        c = self.chatd.client(origin="http://localhost:3000")
        try:
            self.assertEqual(c.req(0, {"user_id": uid})["type"], 0)
        finally:
            c.close()


class ConnectionCaps(unittest.TestCase):
    def test_per_address_and_global_caps(self):
        agent = Agent()
        db = Database("chatd_auth_caps")
        chatd = Chatd(db, agent_port=agent.port, MAX_CONNECTIONS_PER_IP=3, MAX_CONNECTIONS=5)

        def from_addr(addr):
            """A socket to chatd whose source is addr (any of 127.0.0.0/8)."""
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((addr, 0))
            s.connect(("127.0.0.1", chatd.port))
            return s

        clients = []
        try:
            uid = db.add_user()
            clients = [chatd.client() for _ in range(3)]
            # 127.0.0.1 is full; 127.0.0.2 is another address on loopback
            self.assertEqual(handshake_status(chatd.url), 503)
            clients += [websocket.create_connection(chatd.url, timeout=10, socket=from_addr("127.0.0.2"))
                        for _ in range(2)]
            self.assertEqual(handshake_status(chatd.url, socket=from_addr("127.0.0.3")), 503)  # 5 in all
            # the refused ones cost the others nothing
            self.assertEqual(clients[0].req(0, {"user_id": uid})["type"], 0)
            # a closed connection frees its place at once
            clients.pop(0).close()
            deadline = time.time() + 10
            while handshake_status(chatd.url) != 101:
                self.assertLess(time.time(), deadline, "the freed place never came back")
                time.sleep(0.1)
            self.assertIn("reason=max_connections_per_ip", chatd.logs())
            self.assertIn("reason=max_connections ", chatd.logs())
        finally:
            for c in clients:
                c.close()
            cleanup(chatd, agent, db)

    def test_slow_reader_is_closed_and_others_are_served(self):
        agent = Agent()
        db = Database("chatd_auth_slow")
        chatd = Chatd(db, agent_port=agent.port, MAX_OUTPUT_BYTES_PER_CONN=65536, SLOW_READER_CLOSE_SECONDS=2,
                      MAX_INFLIGHT_PER_CONN=1000)
        try:
            uid = db.add_user()
            for i in range(200):
                db.add_session(uid, "session %03d %s" % (i, "x" * 100))
            # A client with a tiny receive window that sends and never reads.
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", chatd.port))
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            time.sleep(0.3)
            frame = json.dumps({"type": 1, "data": {"user_id": uid}}).encode()
            mask = b"\x00\x00\x00\x00"
            ws_frame = bytes([0x81, 0x80 | len(frame)]) + mask + frame
            s.setblocking(False)
            sent = 0
            deadline = time.time() + 20
            while time.time() < deadline and sent < 2000:
                try:
                    s.send(ws_frame)
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:
                    break
            # chatd stops reading from it, then closes it after 2 s
            deadline = time.time() + 30
            while "event=slow_reader_closed" not in chatd.logs():
                self.assertLess(time.time(), deadline, "the slow reader was never closed")
                time.sleep(0.2)
            # a well-behaved client meanwhile is served
            c = chatd.client()
            try:
                r = c.req(1, {"user_id": uid})
                self.assertEqual(len(r["data"]["session_info"]), 200)
            finally:
                c.close()
            # the slow one's socket ends (EOF or reset) once its buffers drain
            s.setblocking(True)
            s.settimeout(10)
            closed = False
            try:
                while True:
                    if not s.recv(65536):
                        closed = True
                        break
            except (ConnectionResetError, socket.timeout):
                closed = True
            self.assertTrue(closed)
            s.close()
        finally:
            cleanup(chatd, agent, db)


class StartupWarning(unittest.TestCase):
    def test_warns_without_auth_on_a_network_address_only(self):
        agent = Agent()
        db = Database("chatd_auth_warn")
        try:
            for env, warned in [(dict(SERVER_HOST="0.0.0.0"), True),
                                (dict(SERVER_HOST="0.0.0.0", AUTH_MODE="jwt", JWT_SECRET=SECRET), False),
                                (dict(), False)]:
                chatd = Chatd(db, agent_port=agent.port, **env)
                try:
                    self.assertEqual("event=auth_disabled" in chatd.logs(), warned, env)
                finally:
                    chatd.stop()
        finally:
            cleanup(agent, db)

    def test_jwt_without_a_strong_secret_does_not_start(self):
        import subprocess
        from harness import CHATD_BIN
        for secret in ("", "short"):
            env = dict(os.environ, AUTH_MODE="jwt", JWT_SECRET=secret, CHATD_ENV_FILE="/dev/null")
            p = subprocess.run([CHATD_BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("JWT_SECRET", p.stderr + p.stdout)
        env = dict(os.environ, AUTH_MODE="ldap", CHATD_ENV_FILE="/dev/null")
        p = subprocess.run([CHATD_BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("AUTH_MODE", p.stderr + p.stdout)


if __name__ == "__main__":
    unittest.main()
