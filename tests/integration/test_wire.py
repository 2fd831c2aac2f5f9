"""Issue 10 (D3-D6): wire defects found from outside, each with the test
that shows it.

- D3: error frames carry exactly the documented text in "error", details in
  "detail"; refusals at the WebSocket upgrade are HTTP/1.1 answers a strict
  RFC 6455 client can read; a 401 on /upload names its scheme.
- D4: empty WebSocket frames (first, after a message over 64 KiB, empty
  continuations) are answered like any other input, never undefined
  behaviour (the asan run of this module aborts on the old code).
- D5: NUL bytes in multipart fields or framing get 400; methods a resource
  does not have get 405 with Allow; Sec-WebSocket-Version other than 13 gets
  426 with Sec-WebSocket-Version: 13.
- D6: with AUTH_MODE=jwt a stored file's bare name fetches nothing: chatd
  hands out expiring signed references, everywhere it gives one out.
"""

import hashlib
import hmac
import json
import os
import socket
import time
import unittest
import urllib.parse

import websocket

from harness import MODEL, StackCase
from test_auth import SECRET, token
from test_http import PNG, STORED, multipart, request


def raw_http(port, text, timeout=10):
    """Sends text as-is and returns everything the server answers until it
    closes (or stops talking)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(text.encode() if isinstance(text, str) else text)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                clen = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if clen and len(body) >= int(clen[0].split(b":")[1]):
                    break
        return out
    finally:
        s.close()


def upgrade(path="/ws", version="13", extra=""):
    return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: %s\r\n%s\r\n"
            % (path, version, extra))


def head_of(answer):
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return head[0], headers


class Wire(StackCase):
    DB_PREFIX = "chatd_wire"
    CHATD_ENV = dict(MAX_MESSAGE_BYTES=200000)

    def setUp(self):
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def assertAlive(self, uid):
        self.assertEqual(self.c.req(6, {"user_id": uid})["type"], 6)

    # ----------------------------------------------------------------- D3

    def test_error_texts_are_exactly_the_documented_ones(self):
        r = self.c.req_raw("not json")
        self.assertEqual((r["error"], r["code"]), ("JSON Parsing Error", 0), r)
        self.assertIn("position", r["detail"])
        r = self.c.req_raw('{"type": 0, "data": {"user_id": "a\\u0000"}}')
        self.assertEqual(r["error"], "JSON Parsing Error", r)
        # codes without detail have none
        r = self.c.req_raw('{"type": 99, "data": {}}')
        self.assertEqual((r["error"], r["code"]), ("Unknown Message", 1))
        self.assertNotIn("detail", r)

    def test_frame_too_large_text_is_exact(self):
        c = self.chatd.client()
        try:
            c.send_raw(json.dumps({"type": 0, "data": {"pad": "x" * 300000}}))
            r = c.recv()
            self.assertEqual((r["error"], r["code"]), ("Frame Too Large", 19), r)
            self.assertEqual(r["detail"], "limit is 200000 bytes")
        finally:
            c.close()

    def test_upgrade_refusals_are_http_1_1(self):
        for path, want in (("/nope", 404), ("/ws", 426)):
            status_line, headers = head_of(raw_http(self.chatd.port, upgrade(path, "13" if want == 404 else "8")))
            self.assertEqual(status_line.split(" ")[:2], ["HTTP/1.1", str(want)], status_line)
            self.assertEqual(headers.get("content-type"), "application/json")
        # a strict client reads the status instead of failing the handshake
        with self.assertRaises(websocket.WebSocketBadStatusException) as cm:
            websocket.create_connection("ws://127.0.0.1:%d/nope" % self.chatd.port, timeout=5)
        self.assertEqual(cm.exception.status_code, 404)

    # ----------------------------------------------------------------- D4

    def test_empty_frames(self):
        uid = self.db.add_user("Empty")
        OP = websocket.ABNF
        # first thing on a fresh connection: an empty text frame, then an
        # empty binary one
        self.c.ws.send_frame(OP.create_frame("", OP.OPCODE_TEXT, 1))
        r = self.c.recv()
        self.assertEqual((r["code"], r["error"]), (0, "JSON Parsing Error"), r)
        self.c.ws.send_frame(OP.create_frame(b"", OP.OPCODE_BINARY, 1))
        self.assertEqual(self.c.recv()["code"], 22)
        # after a message over 64 KiB (its buffer is then let go)
        big = json.dumps({"type": 0, "data": {"user_id": uid, "pad": "y" * 70000}})
        self.assertEqual(self.c.req_raw(big)["data"]["username"], "Empty")
        self.c.ws.send_frame(OP.create_frame("", OP.OPCODE_TEXT, 1))
        self.assertEqual(self.c.recv()["code"], 0)
        # empty fragments around a real message, and an empty continuation
        # ending it
        text = json.dumps({"type": 0, "data": {"user_id": uid}})
        self.c.ws.send_frame(OP.create_frame("", OP.OPCODE_TEXT, 0))
        self.c.ws.send_frame(OP.create_frame(text, OP.OPCODE_CONT, 0))
        self.c.ws.send_frame(OP.create_frame("", OP.OPCODE_CONT, 0))
        self.c.ws.send_frame(OP.create_frame("", OP.OPCODE_CONT, 1))
        self.assertEqual(self.c.recv()["data"]["username"], "Empty")
        self.assertAlive(uid)

    # ----------------------------------------------------------------- D5

    def upload_body(self, body, ctype):
        status, _, data = request(self.chatd.port, "POST", "/upload", body, {"Content-Type": ctype})
        return status, json.loads(data)

    def test_nul_bytes_in_multipart_fields_and_framing(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        fields = {"user_id": uid, "session_id": sid, "model_name": MODEL, "session_prompt": ""}
        body, ctype = multipart(fields, ("photo.png", PNG, "image/png"))
        boundary = ctype.split("boundary=")[1].encode()
        # a NUL inside a field: lws keeps fields as C strings and would cut it
        bad = body.replace(uid.encode(), uid.encode() + b"\x00x", 1)
        status, data = self.upload_body(bad, ctype)
        self.assertEqual(status, 400, data)
        # a NUL right after a boundary line
        bad = body.replace(b"--" + boundary + b"\r\n", b"--" + boundary + b"\r\n\x00", 1)
        self.assertEqual(self.upload_body(bad, ctype)[0], 400)
        # a NUL after the closing boundary
        self.assertEqual(self.upload_body(body + b"\x00", ctype)[0], 400)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)
        # NUL bytes inside the file itself are the file's business (PNG has them)
        status, data = self.upload_body(body, ctype)
        self.assertEqual(status, 202, data)

    def test_methods_a_resource_lacks_get_405_with_allow(self):
        for method, path, allow in (("PUT", "/healthz", "GET, OPTIONS"), ("DELETE", "/metrics", "GET, OPTIONS"),
                                    ("GET", "/upload", "POST, OPTIONS"), ("PATCH", "/upload", "POST, OPTIONS")):
            status, headers, body = request(self.chatd.port, method, path)
            self.assertEqual(status, 405, (method, path))
            self.assertEqual(headers.get("allow"), allow)
            self.assertEqual(json.loads(body), {"message": "Method Not Allowed", "data": None})

    def test_other_websocket_versions_get_426(self):
        status_line, headers = head_of(raw_http(self.chatd.port, upgrade(version="8")))
        self.assertTrue(status_line.startswith("HTTP/1.1 426"), status_line)
        self.assertEqual(headers.get("sec-websocket-version"), "13")
        status_line, _ = head_of(raw_http(self.chatd.port, upgrade(version="13")))
        self.assertTrue(status_line.startswith("HTTP/1.1 101"), status_line)


def file_sig(name, exp, secret=SECRET):
    """The signature docs/SECURITY.md describes."""
    key = hmac.new(secret.encode(), b"chatd file url v1", hashlib.sha256).digest()
    return hmac.new(key, ("%s\n%d" % (name, exp)).encode(), hashlib.sha256).hexdigest()


class SignedFiles(StackCase):
    """D6: AUTH_MODE=jwt, a file reference is a capability that expires."""
    DB_PREFIX = "chatd_wire_jwt"
    CHATD_ENV = dict(AUTH_MODE="jwt", JWT_SECRET=SECRET, FILE_URL_TTL_SECONDS=600)

    def test_file_references_are_signed_and_expire(self):
        uid = self.db.add_user("Files")
        sid = self.db.add_session(uid)
        auth = "Bearer " + token(uid)
        body, ctype = multipart({"user_id": uid, "session_id": sid, "model_name": MODEL, "session_prompt": ""},
                                ("photo.png", PNG, "image/png"))
        status, _, data = request(self.chatd.port, "POST", "/upload", body,
                                  {"Content-Type": ctype, "Authorization": auth})
        self.assertEqual(status, 202, data)
        d = json.loads(data)["data"]
        name, _, query = d["fileName"].partition("?")
        self.assertRegex(name, STORED)
        q = urllib.parse.parse_qs(query)
        exp, sig = int(q["exp"][0]), q["sig"][0]
        self.assertTrue(time.time() < exp <= time.time() + 600 + 5)
        self.assertEqual(sig, file_sig(name, exp))
        self.assertEqual(d["imageUrl"], "http://127.0.0.1:%d/uploads/%s" % (self.chatd.port, d["fileName"]))

        def get(path):
            return request(self.chatd.port, "GET", path)[0]

        self.assertEqual(get("/uploads/" + d["fileName"]), 200)
        self.assertEqual(get("/uploads/" + name), 404)  # the bare name: a capability no more
        self.assertEqual(get("/uploads/%s?exp=%d&sig=%s" % (name, exp, "0" * 64)), 404)
        self.assertEqual(get("/uploads/%s?exp=%d&sig=%s" % (name, exp + 1, sig)), 404)
        past = int(time.time()) - 5
        self.assertEqual(get("/uploads/%s?exp=%d&sig=%s" % (name, past, file_sig(name, past))), 404)
        self.assertEqual(get("/uploads/%s?exp=%d&sig=%s" % (name, exp, file_sig(name, exp, "x" * 40))), 404)
        # ...which looks exactly like a file that does not exist
        self.assertEqual(request(self.chatd.port, "GET", "/uploads/" + name)[2],
                         request(self.chatd.port, "GET", "/uploads/" + "0" * 32 + ".png")[2])

        # the client sends back what it was given; code 2 shows a working,
        # signed link; PostgreSQL keeps the bare name
        c = self.chatd.client(header=["Authorization: " + auth])
        try:
            r = c.chat(uid, sid, "look", file_name=d["fileName"])
            self.assertEqual(r["type"], 3, r)
            chat = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
        finally:
            c.close()
        self.assertEqual(chat[-1]["role"], "file")
        self.assertTrue(chat[-1]["content"].startswith(name + "?exp="), chat[-1])
        self.assertEqual(get("/uploads/" + chat[-1]["content"]), 200)
        self.assertEqual(self.db.one("select content from chat_messages where session_id = %s and role = 'file'",
                                     (sid,)), name)
        # the agent got a signed URL it can fetch
        reqs = [q for q in self.agent.requests() if q["method"] in ("Process", "ProcessStream")]
        url = reqs[-1]["file_name"][0]
        self.assertTrue(url.startswith("http://127.0.0.1:%d/uploads/%s?exp=" % (self.chatd.port, name)), url)
        self.assertEqual(get(url.split(str(self.chatd.port), 1)[1]), 200)

    def test_upload_401_names_its_scheme(self):
        body, ctype = multipart({"user_id": "x"}, ("photo.png", PNG, "image/png"))
        status, headers, _ = request(self.chatd.port, "POST", "/upload", body, {"Content-Type": ctype})
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("www-authenticate"), 'Bearer realm="chatd"')


if __name__ == "__main__":
    unittest.main()
