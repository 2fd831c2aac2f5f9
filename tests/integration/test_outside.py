"""Issue 20: what an outside check found on the HTTP surface and the wire,
each with the test that shows it (items 6, 7 and 8 of the issue).

- Request framing: a Content-Length that is not one run of digits, or two
  of them, or one beside Transfer-Encoding, is 400 and the connection is
  closed; what follows is never served as a request of its own (request
  smuggling behind a proxy that frames it differently).
- A cut-off upload (the client declared more than it sent, then hung up)
  leaves no file and no row.
- Query parameters are found wherever they stand: export's `format` after
  `user_id`; an unknown, empty or repeated one is 400.
- A 9 KB token is answered 401, not dropped unanswered.
- File links: one spelling only (lower-case hex, exp without leading zeros).
- A JSON integer past 64 bits is error 17, naming the field.
- Session names: format characters (bidirectional overrides and isolates,
  zero-width characters, a BOM) are refused; every Unicode space is
  trimmed.
- The echo agent gives a message of several lines back byte for byte.
- The export's file name carries the whole session id.
"""

import json
import os
import socket
import time
import unittest
import urllib.parse

from harness import MODEL, StackCase
from test_auth import SECRET, token
from test_http import PNG, multipart, request
from test_wire import file_sig, head_of, raw_http, upgrade


def exchange(port, data, timeout=10, hang_up=False):
    """Sends data (then, with hang_up, shuts the sending side: the client
    has said all it will), then reads until the server closes the
    connection (or a quiet `timeout`). Returns (everything answered,
    closed by the server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if hang_up:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            if not chunk:
                return out, True
            out += chunk
    finally:
        s.close()


def responses(answer):
    """How many HTTP responses the bytes hold."""
    return answer.count(b"HTTP/1.1 ")


class Framing(StackCase):
    DB_PREFIX = "chatd_outside_framing"

    def test_invalid_or_conflicting_content_length_is_400_and_closes(self):
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for clen in (b"Content-Length: abc\r\n", b"Content-Length: 0x2f\r\n", b"Content-Length: 0, 47\r\n",
                     b"Content-Length: 0\r\nContent-Length: 47\r\n", b"Content-Length: -1\r\n",
                     b"Content-Length: +47\r\n",
                     b"Content-Length: 47\r\nTransfer-Encoding: chunked\r\n"):
            for path in (b"/upload", b"/healthz"):
                method = b"POST" if path == b"/upload" else b"GET"
                req = (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: multipart/form-data; boundary=b\r\n" + clen + b"\r\n" + smuggled)
                answer, closed = exchange(self.chatd.port, req)
                status, headers = head_of(answer)
                self.assertTrue(status.startswith("HTTP/1.1 400"), (clen, path, answer))
                self.assertEqual(headers.get("connection"), "close", (clen, answer))
                self.assertEqual(responses(answer), 1, (clen, path, answer))  # nothing smuggled
                self.assertTrue(closed, (clen, path))
        # a well-framed pipelined request still gets both answers
        answer, _ = exchange(self.chatd.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                             + smuggled, timeout=3)
        self.assertEqual(responses(answer), 2, answer)

    def test_an_upload_cut_short_leaves_nothing(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        body, ctype = multipart({"user_id": uid, "session_id": sid, "model_name": MODEL, "session_prompt": ""},
                                ("photo.png", PNG, "image/png"))
        files_before = set(os.listdir(self.chatd.env["PUBLIC_DIR"]))
        head = ("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (ctype, len(body) + 5000)).encode()
        answer, closed = exchange(self.chatd.port, head + body, hang_up=True)
        self.assertTrue(closed)
        self.assertNotIn(b" 202 ", answer.split(b"\r\n", 1)[0], answer)
        # nothing stored: no row, and no file (a whole upload afterwards works)
        self.assertEqual(self.db.one("select count(*) from uploaded_files where session_id = %s", (sid,)), 0)
        self.assertEqual(set(os.listdir(self.chatd.env["PUBLIC_DIR"])) - files_before, set())
        status, _, data = request(self.chatd.port, "POST", "/upload", body, {"Content-Type": ctype})
        self.assertEqual(status, 202, data)


class QueryOrder(StackCase):
    DB_PREFIX = "chatd_outside_query"

    def test_export_parameters_in_any_order(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, messages=[("user", "hi"), ("assistant", "hello")])
        for fmt, ctype in (("csv", "text/csv"), ("md", "text/markdown"), ("txt", "text/plain"),
                           ("json", "application/json")):
            for q in ("user_id=%s&format=%s" % (uid, fmt), "format=%s&user_id=%s" % (fmt, uid)):
                status, headers, body = request(self.chatd.port, "GET", "/sessions/%s/export?%s" % (sid, q))
                self.assertEqual(status, 200, (q, body))
                self.assertTrue(headers["content-type"].startswith(ctype), (q, headers))
                # the whole session id in the download's name
                self.assertIn("-%s.%s\"" % (sid, fmt), headers["content-disposition"])
        for q in ("user_id=%s&format=xml" % uid, "user_id=%s&format=" % uid,
                  "user_id=%s&format=csv&format=json" % uid, "format=csv&user_id=%s&user_id=%s" % (uid, uid)):
            status, _, body = request(self.chatd.port, "GET", "/sessions/%s/export?%s" % (sid, q))
            self.assertEqual(status, 400, (q, body))
        status, _, body = request(self.chatd.port, "GET", "/export?user_id=%s&format=csv" % uid)
        self.assertEqual(status, 400, body)
        self.assertEqual(json.loads(body)["message"], "Unknown format: use jsonl or zip")
        status, headers, _ = request(self.chatd.port, "GET", "/export?user_id=%s&format=jsonl" % uid)
        self.assertEqual(status, 200)


class Tokens(StackCase):
    DB_PREFIX = "chatd_outside_jwt"
    CHATD_ENV = dict(AUTH_MODE="jwt", JWT_SECRET=SECRET, FILE_URL_TTL_SECONDS=600)

    def test_a_9_kb_token_is_answered_401(self):
        big = "x" * 9000
        for path, method in (("/upload", "POST"), ("/client-config", "GET"), ("/export", "GET")):
            status, headers, _ = request(self.chatd.port, method, path, b"" if method == "POST" else None,
                                         {"Authorization": "Bearer " + big})
            self.assertEqual(status, 401, path)
        status, _, _ = request(self.chatd.port, "GET", "/export?token=" + big)
        self.assertEqual(status, 401)
        # the WebSocket upgrade too, by header or by ?token=
        for path, extra in (("/ws?token=" + big, ""), ("/ws", "Authorization: Bearer %s\r\n" % big)):
            status_line, _ = head_of(raw_http(self.chatd.port, upgrade(path=path, extra=extra)))
            self.assertTrue(status_line.startswith("HTTP/1.1 401"), (path[:20], status_line))

    def test_file_links_have_one_spelling(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        body, ctype = multipart({"user_id": uid, "session_id": sid, "model_name": MODEL, "session_prompt": ""},
                                ("photo.png", PNG, "image/png"))
        status, _, data = request(self.chatd.port, "POST", "/upload", body,
                                  {"Content-Type": ctype, "Authorization": "Bearer " + token(uid)})
        self.assertEqual(status, 202, data)
        name, _, query = json.loads(data)["data"]["fileName"].partition("?")
        q = urllib.parse.parse_qs(query)
        exp, sig = q["exp"][0], q["sig"][0]
        self.assertEqual(sig, file_sig(name, int(exp)))

        def get(e, g):
            return request(self.chatd.port, "GET", "/uploads/%s?exp=%s&sig=%s" % (name, e, g))[0]

        self.assertEqual(get(exp, sig), 200)
        self.assertEqual(get(exp, sig.upper()), 404)
        self.assertEqual(get("0" + exp, sig), 404)
        self.assertEqual(get("+" + exp, sig), 404)
        self.assertEqual(request(self.chatd.port, "GET", "/uploads/%s?sig=%s&exp=%s" % (name, sig, exp))[0], 200)
        self.assertEqual(request(self.chatd.port, "GET",
                                 "/uploads/%s?exp=%s&sig=%s&sig=%s" % (name, exp, sig, sig))[0], 404)


class Wire(StackCase):
    DB_PREFIX = "chatd_outside_wire"

    def setUp(self):
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def test_an_integer_past_64_bits_is_a_bad_field(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        r = self.c.req_raw('{"type": 9, "data": {"user_id": "%s", "session_id": "%s", "before": %s}}'
                           % (uid, sid, "9" * 30))
        self.assertEqual((r["code"], r["error"]), (17, "Invalid field 'before': integer out of range"), r)
        r = self.c.req_raw('{"type": 1%s, "data": {}}' % ("0" * 25))
        self.assertEqual(r["code"], 17, r)
        self.assertEqual(self.c.req(6, {"user_id": uid})["type"], 6)

    def test_session_names_without_hidden_characters(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        for bad in ("abc\u202efdp.exe", "a\u2066b\u2069", "a\u200bb", "\ufeffname", "x\u202a", "\u3000",
                    "\u00a0 \u2003"):
            r = self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": bad})
            self.assertEqual(r.get("code"), 17, (bad, r))
        r = self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": "\u3000Trip \u00a0"})
        self.assertEqual(r["type"], 10, r)
        self.assertEqual(self.db.one("select session_name from chat_sessions where session_id = %s", (sid,)),
                         "Trip")

    def test_echo_gives_several_lines_back_exactly(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        msg = "Look:\n```c\nint  main(void)\n{\n\treturn 0;\n}\n```\n- one\n-  two"
        for stream in (False, True):
            self.c.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, message=msg, session_prompt="",
                                file_name="", stream=stream))
            r = self.c.recv()
            while r.get("type") == 7:
                r = self.c.recv()
            self.assertEqual(r["type"], 3, r)
            self.assertEqual(r["data"]["message"].split("\n[history=")[0], "echo:\n" + msg)
        r = self.c.chat(uid, sid, "one line")
        self.assertTrue(r["data"]["message"].startswith("echo: one line [history="), r)


if __name__ == "__main__":
    unittest.main()
