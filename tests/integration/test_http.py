"""Issue 5: HTTP on the WebSocket's port (uploads, serving, /healthz, /readyz,
/metrics, CORS) and operations: SIGTERM during a turn, Redis and PostgreSQL
restarts. Real PostgreSQL, Redis, chat-agent and chatd via harness.py."""

import http.client
import json
import os
import re
import select
import signal
import socket
import time
import unittest
import urllib.request
import uuid

from harness import MODEL, Agent, Chatd, Database, PostgresServer, RedisServer, StackCase, free_port

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
STORED = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{1,8}$")


def multipart(fields, file=None, file_first=True):
    """A multipart/form-data body as browsers send it (unquoted boundary).
    fields: name -> str; file: (filename, bytes, content type)."""
    boundary = "----chatdTestBoundary" + uuid.uuid4().hex[:16]
    parts = []
    for name, value in fields.items():
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (boundary, name)).encode()
                     + value.encode() + b"\r\n")
    if file is not None:
        fname, data, ctype = file
        part = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                "Content-Type: %s\r\n\r\n" % (boundary, fname, ctype)).encode() + data + b"\r\n"
        parts.insert(0 if file_first else len(parts), part)
    body = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def request(port, method, path, body=None, headers=None, timeout=30):
    """(status, headers dict with lower-case names, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw_upload(port, head, file_size, tail, chunk=32 * 1024):
    """Sends a multipart upload over a raw socket, stopping as soon as the
    server answers (it may refuse and close before the body is in). Returns
    (bytes of the file sent, response bytes)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent = 0
    try:
        s.sendall(head)
        block = b"a" * chunk
        while sent < file_size:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered: stop, like a browser would
            n = min(chunk, file_size - sent)
            s.sendall(block[:n])
            sent += n
        else:
            s.sendall(tail)
    except OSError:
        pass  # refused and closed while we were still sending: expected
    s.settimeout(10)
    resp = read_until_close(s)
    s.close()
    return sent, resp


def read_until_close(s):
    """What s receives until the peer closes it (or it fails)."""
    resp = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            resp += d
    except OSError:
        pass
    return resp


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body.decode())


def parse_prometheus(text):
    """{(name, frozenset(labels.items())): value}, checking the format line
    by line: # HELP / # TYPE, then samples of declared families only."""
    types, samples = {}, {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = sample.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, "no # TYPE for %s" % name
        pairs = label.findall(labels)
        assert ",".join('%s="%s"' % p for p in pairs) == labels, line
        samples[(name, frozenset(pairs))] = float(value)
    return types, samples


class Http(StackCase):
    DB_PREFIX = "chatd_http"
    CHATD_ENV = dict(MAX_FILE_SIZE=1)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.port = cls.chatd.port
        cls.public = cls.chatd.env["PUBLIC_DIR"]

    def upload(self, fields, file=("photo.png", PNG, "image/png"), file_first=True, headers=None, port=None):
        body, ctype = multipart(fields, file, file_first)
        h = {"Content-Type": ctype}
        h.update(headers or {})
        status, hdrs, data = request(port or self.port, "POST", "/upload", body, h)
        return status, json.loads(data), hdrs

    def fields(self, uid, sid, **extra):
        f = {"user_id": uid, "session_id": sid, "model_name": MODEL, "session_prompt": ""}
        f.update(extra)
        return {k: v for k, v in f.items() if v is not None}

    def files_on_disk(self):
        return sorted(os.listdir(self.public))

    def assertClientLinkServes(self, content, body):
        """The existing client links a code 2 file entry as
        "http://localhost:8000/uploads/" + content, verbatim (CLIENT.md)."""
        url = "http://127.0.0.1:%d/uploads/%s" % (self.port, content)
        with urllib.request.urlopen(url, timeout=10) as resp:
            self.assertEqual((resp.status, resp.read()), (200, body), url)

    def assertRefused(self, status, reply, expected_status, text=None):
        self.assertEqual(status, expected_status, reply)
        self.assertIsNone(reply["data"], reply)
        self.assertIsInstance(reply["message"], str)
        if text is not None:
            self.assertIn(text, reply["message"])

    # ---------------------------------------------------------- uploads

    def test_upload_then_chat_names_the_file(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, messages=[("user", "hi"), ("assistant", "hello")])
        status, reply, hdrs = self.upload(self.fields(uid, sid))
        self.assertEqual(status, 202, reply)
        self.assertEqual(reply["message"], "File uploaded successfully")
        d = reply["data"]
        self.assertEqual(set(d), {"fileName", "sessionId", "imageUrl", "size"})
        self.assertRegex(d["fileName"], STORED)
        self.assertTrue(d["fileName"].endswith(".png"))
        self.assertEqual(d["sessionId"], sid)
        self.assertEqual(d["size"], len(PNG))
        self.assertEqual(d["imageUrl"], "http://127.0.0.1:%d/uploads/%s" % (self.port, d["fileName"]))
        self.assertEqual(hdrs.get("access-control-allow-origin"), "*")
        self.assertEqual(self.db.query("select original_name, content_type, size_bytes from uploaded_files"
                                       " where stored_name = %s and session_id = %s and user_id = %s",
                                       (d["fileName"], sid, uid)), [("photo.png", "image/png", len(PNG))])
        # served back byte for byte, with its type; no temporary file left
        status, h, data = request(self.port, "GET", "/uploads/" + d["fileName"])
        self.assertEqual((status, h["content-type"], data), (200, "image/png", PNG))
        self.assertFalse([f for f in self.files_on_disk() if f.startswith(".")])

        c = self.chatd.client()
        try:
            r = c.chat(uid, sid, "what is in the picture?", file_name=d["fileName"])
            self.assertEqual(r["type"], 3, r)
            reqs = [q for q in self.agent.requests() if q["method"] in ("Process", "ProcessStream")
                    and q["session_id"] == sid]
            self.assertEqual(reqs[-1]["file_name"], [d["imageUrl"]])
            chat = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
            # The bare stored name, as the system chatd replaces stored it:
            # the client links "<base>/uploads/" + content (CLIENT.md).
            self.assertEqual(chat[-3:], [{"role": "user", "content": "what is in the picture?"},
                                         {"role": "assistant", "content": r["data"]["message"]},
                                         {"role": "file", "content": d["fileName"]}])
            self.assertClientLinkServes(chat[-1]["content"], PNG)
            # ...and the agent still gets the whole URL, now and in later history
            r = c.chat(uid, sid, "and now?")
            self.assertEqual(r["type"], 3, r)
            reqs = [q for q in self.agent.requests() if q["method"] in ("Process", "ProcessStream")
                    and q["session_id"] == sid]
            self.assertIn({"role": "file", "content": d["imageUrl"]},
                          json.loads(reqs[-1]["chat_history"]))
        finally:
            c.close()

    def test_fields_before_the_file(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        doc = b"# notes\n\nplain text, \xc3\xa9t\xc3\xa9\n" * 50
        status, reply, _ = self.upload(self.fields(uid, sid), file=("Notes.MD", doc, "text/markdown"),
                                       file_first=False)
        self.assertEqual(status, 202, reply)
        self.assertTrue(reply["data"]["fileName"].endswith(".md"))
        status, h, data = request(self.port, "GET", "/uploads/" + reply["data"]["fileName"])
        self.assertEqual((status, data), (200, doc))
        self.assertTrue(h["content-type"].startswith("text/markdown"), h)

    def test_new_session_upload(self):
        uid = self.db.add_user()
        status, reply, _ = self.upload(self.fields(uid, "NEW", session_prompt="be brief"))
        self.assertEqual(status, 202, reply)
        sid = reply["data"]["sessionId"]
        self.assertEqual(str(uuid.UUID(sid)), sid)
        self.assertEqual(self.db.query("select session_name, model_id, session_prompt from chat_sessions"
                                       " where session_id = %s and user_id = %s", (sid, uid)),
                         [("New Chat", 8, "be brief")])
        c = self.chatd.client()
        try:
            self.assertEqual(c.req(1, {"user_id": uid})["data"]["session_info"],
                             [{"session_id": sid, "session_name": "New Chat"}])
            self.assertEqual(json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"]), [])
            r = c.chat(uid, sid, "describe it", file_name=reply["data"]["fileName"])
            self.assertEqual(r["type"], 3, r)
            self.assertEqual(r["data"]["session_id"], sid)
            chat = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
            self.assertEqual([m["role"] for m in chat], ["user", "assistant", "file"])
            self.assertEqual(chat[2]["content"], reply["data"]["fileName"])
            self.assertClientLinkServes(chat[2]["content"], PNG)
        finally:
            c.close()

    def test_new_session_needs_model_access(self):
        uid = self.db.add_user(models=(4,))
        before = self.files_on_disk()
        status, reply, _ = self.upload(self.fields(uid, "NEW"))
        self.assertRefused(status, reply, 400, "Model Access")
        status, reply, _ = self.upload(self.fields(uid, "NEW", model_name="no-such-model"))
        self.assertRefused(status, reply, 400, "Unknown Model")
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 0)
        self.assertEqual(self.files_on_disk(), before)

    def test_too_large_is_refused_early(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        before = self.files_on_disk()
        boundary = "XchatdBoundary42"
        head_body = ("--%s\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\n%s\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"session_id\"\r\n\r\n%s\r\n"
                     "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
                     "Content-Type: text/plain\r\n\r\n" % (boundary, uid, boundary, sid, boundary)).encode()
        tail = ("\r\n--%s--\r\n" % boundary).encode()
        # 3 MB: refused from its Content-Length, before the file is read; a
        # bit over 1 MB (within what Content-Length alone can tell): refused
        # while streaming, at the first chunk past the limit.
        for size in (3 * 1024 * 1024, 1024 * 1024 + 40 * 1024):
            total = len(head_body) + size + len(tail)
            head = ("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                    "Content-Length: %d\r\n\r\n" % (boundary, total)).encode() + head_body
            sent, raw = raw_upload(self.port, head, size, tail)
            self.assertTrue(raw, "no answer (sent %d bytes)" % sent)
            status, reply = parse_response(raw)
            self.assertRefused(status, reply, 413, "File too large: the limit is 1 MB")
            if size > 2 * 1024 * 1024:
                self.assertLess(sent, 2 * 1024 * 1024, "the answer should come before the body is sent")
        self.assertEqual(self.files_on_disk(), before)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)

    def test_cut_off_upload_leaves_nothing(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        before = self.files_on_disk()
        body, ctype = multipart(self.fields(uid, sid), ("half.txt", b"x" * 400000, "text/plain"))
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                   % (ctype, len(body))).encode() + body[:200000])
        deadline = time.time() + 5
        while not [f for f in self.files_on_disk() if f.startswith(".upload-")] and time.time() < deadline:
            time.sleep(0.02)
        self.assertTrue([f for f in self.files_on_disk() if f.startswith(".upload-")], "streams to a temp file")
        s.close()
        deadline = time.time() + 5
        while self.files_on_disk() != before and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.files_on_disk(), before)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)

    def test_bad_types(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        before = self.files_on_disk()
        cases = [
            (("tool.exe", b"MZ\x90\x00", "application/octet-stream"), "'.exe' is not allowed"),
            (("noext", b"hello", "text/plain"), "not allowed"),
            (("fake.png", b"this is not a png at all", "image/png"), "does not match its type '.png'"),
            (("binary.txt", b"text\x00with a NUL", "text/plain"), "does not match its type '.txt'"),
            (("../../etc/x.sh", b"#!/bin/sh", "text/plain"), "'.sh' is not allowed"),
        ]
        for file, text in cases:
            status, reply, _ = self.upload(self.fields(uid, sid), file=file)
            self.assertRefused(status, reply, 415, text)
        # chunked: lws 4.1 would leave the chunk framing in the file
        body, ctype = multipart(self.fields(uid, sid), ("c.txt", b"chunked text\n" * 100, "text/plain"))
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "%x\r\n" % (ctype, len(body))).encode() + body + b"\r\n0\r\n\r\n")
        s.settimeout(10)
        raw = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                raw += d
        except OSError:
            pass
        s.close()
        status, reply = parse_response(raw)
        self.assertRefused(status, reply, 411, "Content-Length")
        # not multipart at all
        status, h, data = request(self.port, "POST", "/upload", b'{"file": 1}', {"Content-Type": "application/json"})
        self.assertRefused(status, json.loads(data), 415, "multipart/form-data")
        self.assertEqual(self.files_on_disk(), before)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)

    def test_missing_or_bad_fields(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        before = self.files_on_disk()
        cases = [
            (self.fields(None, sid), True, "Invalid field 'user_id': missing"),
            (self.fields(uid, None), True, "Invalid field 'session_id': missing"),
            (self.fields("not-a-uuid", sid), True, "Invalid field 'user_id': not a UUID"),
            (self.fields(uid, "nope"), True, "Invalid field 'session_id'"),
            (self.fields(uid, "NEW", model_name=None), True, "Invalid field 'model_name'"),
            (self.fields(uid, sid), False, "Invalid field 'file'"),
            (self.fields(str(uuid.uuid4()), sid), True, "User Does Not Exists"),
            (self.fields(uid, str(uuid.uuid4())), True, "Session Not Found"),
        ]
        for fields, with_file, text in cases:
            file = ("a.png", PNG, "image/png") if with_file else None
            status, reply, _ = self.upload(fields, file=file)
            self.assertRefused(status, reply, 400, text)
        self.assertEqual(self.files_on_disk(), before)

    def test_someone_elses_session(self):
        owner = self.db.add_user("Owner")
        other = self.db.add_user("Other")
        sid = self.db.add_session(owner)
        before = self.files_on_disk()
        status, reply, _ = self.upload(self.fields(other, sid))
        missing = self.upload(self.fields(other, str(uuid.uuid4())))
        self.assertRefused(status, reply, 400, "Session Not Found")
        self.assertEqual((status, reply), missing[:2])  # same as a session that does not exist
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)
        self.assertEqual(self.files_on_disk(), before)

    # ---------------------------------------------------------- serving

    def test_traversal_and_unknown_names_are_404(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        status, reply, _ = self.upload(self.fields(uid, sid))
        self.assertEqual(status, 202, reply)
        name = reply["data"]["fileName"]
        # a file outside PUBLIC_DIR that a traversal would reach
        secret = os.path.join(os.path.dirname(self.public), "secret.txt")
        with open(secret, "w") as f:
            f.write("secret")
        for path in ["/uploads/../etc/passwd", "/uploads/..%2f..%2fetc%2fpasswd", "/uploads/%2e%2e/x",
                     "/uploads/%2e%2e%2fsecret.txt", "/uploads/../secret.txt", "/uploads/..\\secret.txt",
                     "/uploads/..%5csecret.txt", "/uploads/0123456789abcdef0123456789abcdef.png",
                     "/uploads/", "/uploads", "/uploads/" + name.upper(), "/uploads/" + name + "/",
                     "/uploads/%2e" + name[1:], "/uploads/./" + name + "x", "/uploads/.upload-x.part",
                     "/nothing-here"]:
            status, _, data = request(self.port, "GET", path)
            self.assertEqual(status, 404, path)
            self.assertNotIn(b"secret", data)
            self.assertNotIn(b"root:", data)
        self.assertEqual(request(self.port, "GET", "/uploads/" + name)[0], 200)

    def test_cors(self):
        status, h, _ = request(self.port, "OPTIONS", "/upload",
                               headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "content-type"})
        self.assertIn(status, (200, 204))
        self.assertEqual(h["access-control-allow-origin"], "*")
        self.assertIn("POST", h["access-control-allow-methods"])
        self.assertIn("content-type", h["access-control-allow-headers"].lower())
        # a list of origins: only those get the header
        db = Database("chatd_http_cors")
        chatd = Chatd(db, agent_port=self.agent.port, CORS_ORIGINS="http://app.example, http://localhost:3000")
        try:
            for origin, allowed in (("http://localhost:3000", True), ("http://app.example", True),
                                    ("http://evil.example", False)):
                status, h, _ = request(chatd.port, "OPTIONS", "/upload",
                                       headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
                self.assertEqual(h.get("access-control-allow-origin"), origin if allowed else None, origin)
                status, h, _ = request(chatd.port, "GET", "/healthz", headers={"Origin": origin})
                self.assertEqual(status, 200)
                self.assertEqual(h.get("access-control-allow-origin"), origin if allowed else None, origin)
                if allowed:
                    self.assertIn("Origin", h.get("vary", ""))
        finally:
            chatd.stop()
            db.drop()

    def test_wrong_methods(self):
        self.assertEqual(request(self.port, "GET", "/upload")[0], 405)
        self.assertEqual(request(self.port, "POST", "/healthz", b"x", {"Content-Type": "text/plain"})[0], 405)
        self.assertEqual(request(self.port, "GET", "/healthz")[0], 200)  # still serving

    # ------------------------------------------------------ health, metrics

    def test_healthz_and_readyz(self):
        status, h, data = request(self.port, "GET", "/healthz")
        self.assertEqual((status, json.loads(data)), (200, {"status": "ok"}))
        status, h, data = request(self.port, "GET", "/readyz")
        self.assertEqual((status, json.loads(data)),
                         (200, {"status": "ok", "postgres": "ok", "redis": "ok", "agent": "ok"}))
        # the agent down: 503 naming it
        db = Database("chatd_http_ready")
        chatd = Chatd(db, agent_port=free_port())
        try:
            status, h, data = request(chatd.port, "GET", "/readyz")
            self.assertEqual((status, json.loads(data)),
                             (503, {"status": "unavailable", "postgres": "ok", "redis": "ok", "agent": "down"}))
        finally:
            chatd.stop()
            db.drop()

    def test_metrics(self):
        uid = self.db.add_user()
        c = self.chatd.client()
        try:
            c.req(6, {"user_id": uid})  # the connection is open and counted
            _, h, text = request(self.port, "GET", "/metrics")
            self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"), h)
            types, before = parse_prometheus(text.decode())
            for name, kind in [("chatd_connections_open", "gauge"), ("chatd_requests_total", "counter"),
                               ("chatd_request_duration_seconds", "histogram"),
                               ("chatd_agent_call_duration_seconds", "histogram"),
                               ("chatd_agent_errors_total", "counter"), ("chatd_turns_in_flight", "gauge"),
                               ("chatd_pg_errors_total", "counter"), ("chatd_redis_errors_total", "counter"),
                               ("chatd_upload_bytes_total", "counter")]:
                self.assertEqual(types.get(name), kind, name)
            self.assertGreaterEqual(before[("chatd_connections_open", frozenset())], 1)

            ok, bad = 5, 3
            for _ in range(ok):
                self.assertEqual(c.req(6, {"user_id": uid})["type"], 6)
            for _ in range(bad):
                self.assertEqual(c.req(6, {"user_id": str(uuid.uuid4())})["code"], 3)
            self.assertEqual(c.chat(uid, "NEW", "count me")["type"], 3)
            sid = self.db.add_session(uid)
            # codes past 12 have series of their own, not "other" (14 on a
            # connection of its own: a subscribed one also gets the events
            # of the turn above, its title's among them, whenever they come)
            self.assertEqual(c.req(13, {"user_id": uid})["type"], 13)
            self.assertEqual(c.req(16, {"user_id": uid, "session_id": sid})["type"], 16)
            sub = self.chatd.client()
            self.assertEqual(sub.req(14, {"user_id": uid})["type"], 14)
            sub.close()
            status, reply, _ = self.upload(self.fields(uid, sid))
            self.assertEqual(status, 202)
            _, _, text = request(self.port, "GET", "/metrics")
            _, after = parse_prometheus(text.decode())
        finally:
            c.close()

        def delta(name, **labels):
            key = (name, frozenset(labels.items()))
            return after.get(key, 0) - before.get(key, 0)

        self.assertEqual(delta("chatd_requests_total", code="6", outcome="ok"), ok)
        self.assertEqual(delta("chatd_requests_total", code="6", outcome="error"), bad)
        self.assertEqual(delta("chatd_request_duration_seconds_count", code="6"), ok + bad)
        self.assertEqual(delta("chatd_request_duration_seconds_bucket", code="6", le="+Inf"), ok + bad)
        self.assertEqual(delta("chatd_requests_total", code="3", outcome="ok"), 1)
        for code in ("13", "14", "16"):
            self.assertEqual(delta("chatd_requests_total", code=code, outcome="ok"), 1, code)
            self.assertEqual(delta("chatd_request_duration_seconds_count", code=code), 1, code)
        self.assertEqual(delta("chatd_requests_total", code="other", outcome="ok"), 0)
        # every code the server answers has its series; the server's own
        # frame types (7, 15) have none
        codes = {dict(k[1])["code"] for k in after if k[0] == "chatd_requests_total"}
        self.assertEqual(codes, {str(c) for c in (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21,
                                                 22, 23, 24, 25, 26)} | {"other"})
        self.assertEqual(delta("chatd_agent_call_duration_seconds_count"), 1)
        self.assertEqual(delta("chatd_upload_bytes_total"), len(PNG))
        self.assertEqual(after[("chatd_turns_in_flight", frozenset())], 0)
        # buckets are cumulative and end in +Inf == count
        les = [(float(dict(k[1])["le"]), v) for k, v in after.items()
               if k[0] == "chatd_request_duration_seconds_bucket" and dict(k[1])["code"] == "6"]
        les.sort()
        self.assertEqual([v for _, v in les], sorted(v for _, v in les))
        self.assertEqual(les[-1][1], after[("chatd_request_duration_seconds_count", frozenset({("code", "6")}))])

    # -------------------------------------------------- failed turns

    def test_failed_turn_removes_its_file(self):
        agent = Agent(AGENT_FAIL_MODE="internal")
        db = Database("chatd_http_fail")
        chatd = Chatd(db, agent_port=agent.port)
        public = chatd.env["PUBLIC_DIR"]
        try:
            uid = db.add_user()
            sid = db.add_session(uid)
            status, reply, _ = self.upload(self.fields(uid, sid), port=chatd.port)
            self.assertEqual(status, 202, reply)
            name = reply["data"]["fileName"]
            # a second file that an earlier, stored turn already shows
            status, shown, _ = self.upload(self.fields(uid, sid), port=chatd.port)
            db.query("insert into chat_messages(session_id, seq, role, content) values (%s, 0, 'file', %s)",
                     (sid, shown["data"]["fileName"]))
            db.query("update chat_sessions set next_seq = 1 where session_id = %s", (sid,))
            c = chatd.client()
            try:
                r = c.chat(uid, sid, "look", file_name=name)
                self.assertEqual(r.get("code"), 6, r)
                r = c.chat(uid, sid, "look again", file_name=shown["data"]["fileName"])
                self.assertEqual(r.get("code"), 6, r)
            finally:
                c.close()
            self.assertEqual(db.one("select count(*) from uploaded_files where stored_name = %s", (name,)), 0)
            self.assertFalse(os.path.exists(os.path.join(public, name)))
            # the shown one stays, row and disk
            self.assertEqual(db.one("select count(*) from uploaded_files where stored_name = %s",
                                    (shown["data"]["fileName"],)), 1)
            self.assertTrue(os.path.exists(os.path.join(public, shown["data"]["fileName"])))
        finally:
            chatd.stop()
            agent.stop()
            db.drop()


class Operations(unittest.TestCase):
    """Each test runs its own processes: they stop and restart things."""

    def test_readyz_follows_redis(self):
        rds = RedisServer()

        def ready(port):
            status, _, data = request(port, "GET", "/readyz")
            return status, json.loads(data)

        def wait_for(port, status, timeout=15):
            deadline = time.time() + timeout
            while True:
                got = ready(port)
                if got[0] == status or time.time() > deadline:
                    return got
                time.sleep(0.2)

        agent = Agent()
        db = Database("chatd_http_redis")
        chatd = Chatd(db, agent_port=agent.port, REDIS_PORT=rds.port)
        try:
            uid = db.add_user("Redis")
            self.assertEqual(wait_for(chatd.port, 200)[0], 200)
            rds.kill()
            self.assertEqual(wait_for(chatd.port, 503),
                             (503, {"status": "unavailable", "postgres": "ok", "redis": "down", "agent": "ok"}))
            c = chatd.client()  # Redis down: still answered, from PostgreSQL
            try:
                self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "Redis")
            finally:
                c.close()
            rds.start()
            self.assertEqual(wait_for(chatd.port, 200),
                             (200, {"status": "ok", "postgres": "ok", "redis": "ok", "agent": "ok"}))
        finally:
            chatd.stop()
            agent.stop()
            db.drop()
            rds.stop()

    def test_sigterm_answers_the_slow_turn_then_exits_0(self):
        agent = Agent(AGENT_DELAY_MS=2000)
        db = Database("chatd_http_term")
        chatd = Chatd(db, agent_port=agent.port)
        try:
            uid = db.add_user()
            c = chatd.client()
            c.send(3, dict(user_id=uid, session_id="NEW", model_name=MODEL, message="slow one",
                           session_prompt="", file_name=""))
            deadline = time.time() + 10
            while not agent.requests() and time.time() < deadline:
                time.sleep(0.02)
            self.assertTrue(agent.requests(), "the turn reached the agent")
            chatd.proc.send_signal(signal.SIGTERM)
            r = c.recv()
            self.assertEqual(r["type"], 3, r)
            self.assertIn("slow one", r["data"]["message"])
            c.close()
            self.assertEqual(chatd.proc.wait(30), 0, chatd.logs())
            self.assertEqual(db.one("select count(*) from chat_messages m join chat_sessions s using (session_id)"
                                    " where s.user_id = %s", (uid,)), 2)
        finally:
            chatd.stop()
            agent.stop()
            db.drop()

    def test_postgres_restart(self):
        pg = PostgresServer("chatd_restart")
        agent = Agent()
        chatd = Chatd(pg, agent_port=agent.port, DB_PORT=pg.port, REDIS_PORT=pg.redis_port, WORKER_THREADS=4)
        try:
            uid = str(pg.query("insert into user_data(username, models, balance) values ('R', '{8}', 5)"
                               " returning user_id")[0][0])
            clients = [chatd.client() for _ in range(4)]
            c = clients[0]
            # every worker gets a connection before the restart
            for cl in clients:
                cl.send(6, {"user_id": uid})
            for cl in clients:
                self.assertEqual(cl.recv()["type"], 6)
            first = c.chat(uid, "NEW", "before the restart")
            self.assertEqual(first["type"], 3, first)
            sid = first["data"]["session_id"]

            pg.stop_pg()
            # during the outage: clear errors, no crash or hang (the
            # client's own timeout would fail the test)
            self.assertEqual(c.req(6, {"user_id": uid}).get("code"), 16)
            self.assertEqual(c.chat(uid, sid, "during the outage").get("code"), 14)
            status, _, data = request(chatd.port, "GET", "/readyz")
            self.assertEqual(status, 503)
            self.assertEqual(json.loads(data)["postgres"], "down")
            self.assertIsNone(chatd.proc.poll())

            pg.start()
            # full service at once: every request after the restart succeeds,
            # whichever worker (and stale connection) it lands on
            for i in range(12):
                cl = clients[i % len(clients)]
                r = cl.req(6, {"user_id": uid})
                self.assertEqual(r.get("type"), 6, (i, r))
                self.assertNotIn("error", r, (i, r))
            after = c.chat(uid, sid, "after the restart")
            self.assertEqual(after["type"], 3, after)
            status, _, _ = request(chatd.port, "GET", "/readyz")
            self.assertEqual(status, 200)
            for cl in clients:
                cl.close()
            rows = pg.query("select role, content from chat_messages where session_id = %s order by seq", (sid,))
            self.assertEqual([r[0] for r in rows], ["user", "assistant", "user", "assistant"])
            self.assertEqual((rows[0][1], rows[2][1]), ("before the restart", "after the restart"))
        finally:
            chatd.stop()
            agent.stop()
            pg.stop()


if __name__ == "__main__":
    unittest.main()
