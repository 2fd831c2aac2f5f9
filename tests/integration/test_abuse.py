"""Protocol abuse (issue text: "binary frames, fragmented frames, 10 MB
frames, invalid UTF-8, deeply nested JSON, numbers as strings, nulls
everywhere, SQL fragments and control characters in every string field,
10,000 unknown-code frames in a row. Each gets an error reply or a close;
chatd keeps serving other clients; PostgreSQL holds nothing it should not").

test_protocol.py has the basic cases (bad JSON, wrong types, binary, 200 KB
and fragmented frames, 2,000 unknown codes, \\u0000, invalid UTF-8); this
module is the rest, table-driven. Every case names the exact answer it
expects (an error code, a close status, or a reply of its type), and after
every case a bystander on another connection must still be served, with the
abuser's balance unchanged. Every test ends by comparing PostgreSQL with a
snapshot taken before it: the only rows that may appear are the sessions
and messages of the turns the test expected to be accepted, stored byte for
byte as sent; no user row, model row or file row may change.

Also here, over HTTP: POST /upload bodies shaped to overrun lws_spa's field
storage (the crash fuzz/fuzz_multipart.c found) and an over-long
Content-Type."""

import json
import os
import socket
import threading
import unittest

import websocket

from harness import MODEL, StackCase
from test_http import parse_response, read_until_close

LIMIT = 4096  # MAX_CHAT_MESSAGE_BYTES for these tests
CODES = (0, 1, 2, 3, 4, 5, 6, 8)
UUID_FIELDS = {0: ("user_id",), 1: ("user_id",), 2: ("user_id", "session_id"), 3: ("user_id",),
               4: ("user_id", "session_id"), 5: ("user_id",), 6: ("user_id",), 8: ("user_id", "session_id")}
CHAT_TEXT_FIELDS = ("model_name", "message", "session_prompt", "file_name")

SQL = [
    "'; drop table user_data; --",
    "' or '1'='1",
    "\" or 1=1 --",
    "1; update user_data set balance = 1e9 where true; --",
    "'); delete from chat_messages; --",
    "$$ || pg_sleep(5) || $$",
    "' union select user_id::text, username from user_data --",
    "%_\\' E'\\x27' \\\\",
    "select * from chat_sessions",
]
CONTROL = [
    "".join(chr(i) for i in range(1, 32)),
    "line\u2028sep\u2029para",
    "\u202eright-to-left override\u202c and \u2066isolate\u2069",
    "\ufeffbyte order mark, \u200bzero width, \u00adsoft hyphen",
    "del\x7f nel\u0085 c1\u009b",
    "tab\there\nnew line\r\ncr lf",
    "emoji \U0001F44D\U0001F3FD family \U0001F468\u200D\U0001F469\u200D\U0001F467",
    "a literal \\u0000 and %s %n %x",
]
NASTY = SQL + CONTROL


def frame(type_, data, ascii=False):
    """A frame as UTF-8 (as browsers send it) or with every non-ASCII
    character escaped; control characters are escaped either way, as JSON
    requires."""
    return json.dumps({"type": type_, "data": data}, ensure_ascii=ascii)


class AbuseCase(StackCase):
    """Users, a bystander and the database check shared by the tests."""

    DB_PREFIX = "chatd_abuse"
    AGENT_ENV = dict(AGENT_DELAY_MS=0)
    CHATD_ENV = dict(MAX_CHAT_MESSAGE_BYTES=LIMIT)  # MAX_MESSAGE_BYTES stays 1 MiB

    def setUp(self):
        # The abuser gets only requests that must be refused; the legit user
        # the ones that must be accepted, so each user's rows are predictable.
        self.abuser = self.db.add_user("Abuser", balance=5.0)
        self.legit = self.db.add_user("Legit", balance=5.0)
        self.legit_sid = self.db.add_session(self.legit, "legit", messages=[("user", "hi"), ("assistant", "hello")])
        self.before = self.snapshot()
        self.accepted = []  # (session_id, message, session_prompt or None) per accepted chat turn
        self.c = self.chatd.client()
        self.bystander = self.chatd.client()

    def tearDown(self):
        self.c.close()
        self.bystander.close()

    # ------------------------------------------------------------- helpers

    def snapshot(self):
        q = self.db.query
        # Users and the ledger's last entry in one statement: one snapshot.
        rows = q("select user_id::text, username, models, balance,"
                 " (select coalesce(max(entry_id), 0) from usage_ledger) from user_data order by 1")
        return dict(
            users=[tuple(r[:4]) for r in rows],
            ledger=rows[0][4] if rows else 0,
            models=q("select * from model_details order by 1"),
            sessions=set(q("select session_id::text, user_id::text from chat_sessions")),
            messages=q("select count(*) from chat_messages")[0][0],
            files=q("select count(*) from uploaded_files")[0][0],
        )

    def assertServed(self, client=None):
        """The bystander (or client) is answered, and the abuser's balance
        has not moved."""
        c = client or self.bystander
        self.assertEqual(c.req(0, {"user_id": self.legit})["data"]["username"], "Legit")
        self.assertEqual(c.req(6, {"user_id": self.abuser}), {"type": 6, "data": {"balance": 5.0}})

    def assertFreshClientServed(self):
        other = self.chatd.client()
        try:
            self.assertServed(other)
        finally:
            other.close()

    def answer(self, text, want, why):
        """Sends text on self.c; want is an error code (int) or "ok" (a reply
        of the frame's own type). Returns the reply."""
        r = self.c.req_raw(text)
        if want == "ok":
            self.assertNotIn("error", r, "%s: %r" % (why, r))
        else:
            self.assertEqual(r.get("code"), want, "%s: %r" % (why, r))
            self.assertIsInstance(r.get("error"), str, why)
        self.assertServed()
        return r

    def chat_data(self, user, session="NEW", **over):
        d = dict(user_id=user, session_id=session, model_name=MODEL, message="hello", session_prompt="",
                 file_name="")
        d.update(over)
        return d

    def valid_data(self, code, user):
        """Data that would be accepted for code (for the abuser, codes 2, 4
        and 8 name the legit user's session, so they answer 18 or 23)."""
        if code == 3:
            return self.chat_data(user)
        d = {"user_id": user}
        if code in (2, 4, 8):
            d["session_id"] = self.legit_sid
        return d

    def accepted_turn(self, reply, message, prompt=None):
        self.assertEqual(reply.get("type"), 3, reply)
        self.accepted.append((reply["data"]["session_id"], message, prompt))

    def assertDatabaseHoldsOnlyWhatWasAccepted(self):
        after = self.snapshot()
        self.assertEqual(after["models"], self.before["models"])
        self.assertEqual(after["files"], self.before["files"])
        # No user added, removed or changed, but for the legit user's balance
        # (its accepted turns were charged).
        strip = lambda rows: [(u, n, m) for u, n, m, _ in rows]  # noqa: E731
        self.assertEqual(strip(after["users"]), strip(self.before["users"]))
        # Balances. An earlier test's user may still be charged for the
        # title of a session its accepted turn created, which the agent is
        # asked for after the reply and may answer at any time (on a busy
        # machine, after this test's snapshot): such a change must be
        # exactly the title charges in the ledger since the snapshot.
        before_bal = {u: b for u, _, _, b in self.before["users"]}
        for u, _, _, b in after["users"]:
            if u == self.legit:
                self.assertLessEqual(b, before_bal[u])
                continue
            late = self.db.one("select coalesce(sum(cost), 0) from usage_ledger where user_id = %s"
                               " and kind = 'title' and entry_id > %s and entry_id <= %s",
                               (u, self.before["ledger"], after["ledger"]))
            if u == self.abuser:
                late = 0  # never accepted a turn, so never gets a title
            self.assertEqual(b + late, before_bal[u], "balance of %s changed" % u)
        # Sessions: only the new ones of accepted turns on "NEW", all the legit user's.
        new = after["sessions"] - self.before["sessions"]
        self.assertEqual(self.before["sessions"] - after["sessions"], set())
        expected_new = {sid for sid, _, _ in self.accepted if sid != self.legit_sid}
        self.assertEqual({s for s, _ in new}, expected_new)
        self.assertTrue(all(u == self.legit for _, u in new), new)
        # Messages: two per accepted turn, the user's byte for byte.
        self.assertEqual(after["messages"] - self.before["messages"], 2 * len(self.accepted))
        for sid in {s for s, _, _ in self.accepted}:
            sent = [m for s, m, _ in self.accepted if s == sid]
            rows = self.db.query("select role, content from chat_messages where session_id = %s order by seq", (sid,))
            users = [c for r, c in rows if r == "user"]
            if sid == self.legit_sid:
                users = users[1:]  # the "hi" of setUp
            self.assertEqual(users, sent)
            self.assertEqual([r for r, _ in rows].count("assistant"), len(users) + (sid == self.legit_sid))
            # ...and code 2 returns them as stored.
            chat = json.loads(self.c.req(2, {"user_id": self.legit, "session_id": sid})["data"]["chat"])
            got = [m["content"] for m in chat if m["role"] == "user"]
            self.assertEqual(got[1:] if sid == self.legit_sid else got, sent)
        for sid, _, prompt in self.accepted:
            if prompt is not None:
                self.assertEqual(self.db.one("select session_prompt from chat_sessions where session_id = %s", (sid,)),
                                 prompt)


class Abuse(AbuseCase):

    def test_ten_megabyte_frame_is_refused_and_closed(self):
        payload = frame(0, {"user_id": self.abuser, "pad": "x" * (10 * 1024 * 1024)}).encode()
        self.assertEqual(len(payload) // (1024 * 1024), 10)
        raw = websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 1, payload).format()
        # The server may stop reading once it has seen enough: send from
        # another thread, so the reply and the close are read meanwhile.
        sender = threading.Thread(target=self._send_ignoring_reset, args=(raw,))
        sender.start()
        try:
            r = self.c.recv()
            self.assertEqual(r.get("code"), 19, r)
            self.assertIn("Frame Too Large", r["error"])
            f = self.c.ws.recv_frame()
            self.assertEqual(f.opcode, websocket.ABNF.OPCODE_CLOSE)
            self.assertEqual(int.from_bytes(f.data[:2], "big"), 1009)
        finally:
            sender.join(60)
        self.assertServed()
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def _send_ignoring_reset(self, raw):
        try:
            self.c.ws.sock.sendall(raw)
        except OSError:
            pass  # closed while we were still sending: expected

    def test_deeply_nested_json(self):
        deep = 100000
        cases = [
            ("[" * deep, 0),
            ("[" * deep + "]" * deep, 0),
            ('{"a":' * deep + "1" + "}" * deep, 0),
            ('{"type": 0, "data": {"user_id": "%s", "x": %s}}' % (self.legit, "[" * deep + "]" * deep), 0),
            ('{"type": 3, "data": %s}' % ('{"d":' * deep + "1" + "}" * deep), 0),
            ('{"type": 0, "data": {"user_id": "%s", "x": %s}}' % (self.legit, "[" * 10 + "]" * 10), "ok"),
        ]
        for text, want in cases:
            self.answer(text, want, text[:60])
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_numbers_as_strings_and_strings_as_numbers(self):
        a = self.abuser
        cases = []
        for code in CODES:
            cases += [
                (json.dumps({"type": str(code), "data": self.valid_data(code, a)}), 17, "'type'"),
                (json.dumps({"type": float(code), "data": self.valid_data(code, a)}), 17, "'type'"),
                (json.dumps({"type": True, "data": self.valid_data(code, a)}), 17, "'type'"),
                (json.dumps({"type": code, "data": [self.valid_data(code, a)]}), 17, "'data'"),
                (json.dumps({"type": code, "data": 0}), 17, "'data'"),
            ]
            for field in UUID_FIELDS[code]:
                for bad in (12345, 1.5, -1, True, [a], {"$ne": None}):
                    d = self.valid_data(code, a)
                    d[field] = bad
                    cases.append((frame(code, d), 17, "'%s': expected a string" % field))
                d = self.valid_data(code, a)
                d[field] = "12345"
                cases.append((frame(code, d), 17, "'%s'" % field))
        for field in CHAT_TEXT_FIELDS:
            for bad in (8, 0.5, False, ["x"], {"x": 1}):
                cases.append((frame(3, self.chat_data(a, **{field: bad})), 17, "'%s': expected a string" % field))
        d = self.chat_data(a, session=12)
        cases.append((frame(3, d), 17, "'session_id': expected a string"))
        no_name = self.chat_data(a)
        del no_name["model_name"]
        for bad, why in (("8", "expected an integer"), (8.0, "expected an integer"), (True, "expected an integer"),
                         ([8], "expected an integer"), (-1, "out of range"), (2 ** 31, "out of range"),
                         (2 ** 70, "'model_id': integer out of range")):
            cases.append((frame(3, dict(no_name, model_id=bad)), 17, why))
        cases.append((frame(3, dict(no_name, model_id=99)), 24, "Unknown Model"))
        for bad in ("true", 1, 0, "false", [True]):
            cases.append((frame(3, self.chat_data(a, stream=bad)), 17, "'stream'"))
        for text, code, why in cases:
            r = self.answer(text, code, text[:120])
            if why is not None:
                self.assertIn(why, r["error"], text[:120])
        # The right types still work, model_id included.
        r = self.c.req_raw(frame(3, dict(self.chat_data(self.legit, message="by id"), model_name=None, model_id=8)))
        self.accepted_turn(r, "by id")
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_nulls_everywhere(self):
        a = self.abuser
        cases = [("null", 0), ('{"type": null, "data": null}', 17), (json.dumps({"type": 0, "data": None}), 17),
                 (json.dumps({"type": None, "data": {"user_id": a}}), 17)]
        for code in CODES:
            fields = list(self.valid_data(code, a))
            cases.append((frame(code, {f: None for f in fields}), 17))
            cases.append((json.dumps({"type": code, "data": None}), 17))
            for field in fields:
                d = self.valid_data(code, a)
                d[field] = None
                required = field in ("user_id", "session_id", "message", "model_name")
                if required:
                    cases.append((frame(code, d), 17))
        for text, want in cases:
            r = self.answer(text, want, text)
            self.assertIn("Invalid field" if want == 17 else "JSON Parsing Error", r["error"])
        # Null in an optional field means "absent": these are accepted.
        for field in ("session_prompt", "file_name", "stream", "model_id"):
            msg = "null %s" % field
            r = self.c.req_raw(frame(3, self.chat_data(self.legit, message=msg, **{field: None})))
            self.accepted_turn(r, msg, "" if field == "session_prompt" else None)
            self.assertServed()
        for code in (0, 1, 5, 6):
            self.answer(frame(code, {"user_id": self.legit, "session_id": None, "extra": None}), "ok", code)
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_sql_and_control_characters_in_every_string_field(self):
        a = self.abuser
        for s in NASTY:
            for code in CODES:
                for field in UUID_FIELDS[code]:
                    d = self.valid_data(code, a)
                    d[field] = s
                    self.answer(frame(code, d), 17, "%s %d %r" % (field, code, s))
            self.answer(frame(3, self.chat_data(a, session=s)), 17, "session_id %r" % s)
            self.answer(frame(3, self.chat_data(a, model_name=s)), 24, "model_name %r" % s)
            self.answer(frame(3, self.chat_data(a, file_name=s)), 17, "file_name %r" % s)
            # Text the user may legitimately send: stored and returned as sent,
            # whether it came as UTF-8 or escaped.
            for ascii in (False, True):
                r = self.c.req_raw(frame(3, self.chat_data(self.legit, session=self.legit_sid, message=s), ascii))
                self.accepted_turn(r, s)
                self.assertServed()
            msg = "prompt test"
            r = self.c.req_raw(frame(3, self.chat_data(self.legit, message=msg, session_prompt=s)))
            self.accepted_turn(r, msg, s)
            self.assertServed()
        # A message of every nasty string at once, on a new session (its name
        # is cut from it).
        everything = "".join(NASTY)[:LIMIT]
        r = self.c.req_raw(frame(3, self.chat_data(self.legit, message=everything)))
        self.accepted_turn(r, everything)
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_very_long_strings_around_the_limits(self):
        a = self.abuser
        big = "\u00e9" * (LIMIT // 2)  # LIMIT bytes in 2-byte characters
        self.assertEqual(len(big.encode()), LIMIT)
        cases = [
            (frame(3, self.chat_data(a, message=big + "x")), 20, "'message' exceeds"),
            (frame(3, self.chat_data(a, session_prompt=big + "x")), 20, "'session_prompt' exceeds"),
            (frame(3, self.chat_data(a, message="\u20ac" * (LIMIT // 3 + 1))), 20, "'message' exceeds"),
            (frame(3, self.chat_data(a, file_name="f" * 256)), 17, "longer than 255 bytes"),
            (frame(3, self.chat_data(a, file_name="f" * 255)), 17, "no such file"),
            (frame(3, self.chat_data(a, model_name="m" * 500000)), 24, "Unknown Model"),
            (frame(0, {"user_id": a + "0" * 500000}), 17, "'user_id'"),
            (frame(2, {"user_id": a, "session_id": "s" * 500000}), 17, "'session_id'"),
            (frame(3, self.chat_data(a, message="")), 17, "'message': must not be empty"),
            (frame(3, self.chat_data(a, model_name="")), 17, "'model_name': must not be empty"),
        ]
        for text, code, why in cases:
            r = self.answer(text, code, text[:80])
            if code == 20:
                # the documented text exactly; what exceeded what, in "detail"
                self.assertEqual(r["error"], "Message Too Long", r)
                self.assertIn(why, r["detail"])
            else:
                self.assertIn(why, r["error"])
        # Exactly at the limits: accepted, stored whole.
        r = self.c.req_raw(frame(3, self.chat_data(self.legit, session=self.legit_sid, message=big)))
        self.accepted_turn(r, big)
        r = self.c.req_raw(frame(3, self.chat_data(self.legit, message="at the limit", session_prompt=big)))
        self.accepted_turn(r, "at the limit", big)
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_ten_thousand_unknown_code_frames_in_a_row(self):
        n = 10000
        # 7 is a server-to-client code; the rest never existed.
        types = [7 if i % 1000 == 0 else 9 + i * 97 for i in range(n)]
        replies = []

        def read():
            for _ in range(n):
                replies.append(self.c.recv())

        reader = threading.Thread(target=read)
        reader.start()
        for t in types:
            self.c.send_raw('{"type": %d, "data": {"user_id": "%s"}}' % (t, self.abuser))
        reader.join(120)
        self.assertFalse(reader.is_alive(), "only %d of %d replies arrived" % (len(replies), n))
        self.assertEqual([(r.get("code"), r.get("type")) for r in replies], [(1, t) for t in types])
        self.assertTrue(all(r["error"] == "Unknown Message" for r in replies))
        # The same connection still works, and so do others.
        self.assertServed(self.c)
        self.assertServed()
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()


class Framing(AbuseCase):
    """WebSocket framing abuse, one fresh connection per case. Protocol
    violations lws catches are closed (1002); chatd's own refusals are
    error replies."""

    def connect(self):
        return websocket.create_connection(self.chatd.url, timeout=30)

    def send(self, ws, opcode, payload, fin=1, rsv1=0):
        """One masked client frame, built by hand: websocket-client will not
        build reserved opcodes."""
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        key = os.urandom(4)
        ws.sock.sendall(head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    def outcome(self, ws):
        """("error", code), ("ok", type) or ("close", status)."""
        try:
            while True:
                f = ws.recv_frame()
                if f.opcode == websocket.ABNF.OPCODE_CLOSE:
                    return ("close", int.from_bytes(f.data[:2], "big") if len(f.data) >= 2 else None)
                if f.opcode == websocket.ABNF.OPCODE_TEXT:
                    r = json.loads(f.data)
                    return ("error", r["code"]) if "error" in r else ("ok", r["type"])
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return ("close", None)

    def test_framing_abuse(self):
        T, C, B = websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_CONT, websocket.ABNF.OPCODE_BINARY
        ok = frame(0, {"user_id": self.legit})
        bad = frame(0, {"user_id": self.abuser, "x": "\u00e9"}).encode().replace(b"\xc3\xa9", b"\xc3\x28")
        e_acute = frame(0, {"user_id": self.legit, "x": "\u00e9"}).encode()
        cut = e_acute.index(b"\xc3") + 1

        def fragments(ws, payload, opcode, size):
            parts = [payload[i:i + size] for i in range(0, len(payload), size)]
            for i, p in enumerate(parts):
                self.send(ws, opcode if i == 0 else C, p, fin=int(i == len(parts) - 1))

        def ping_between_fragments(ws):
            self.send(ws, T, ok[:10], fin=0)
            self.send(ws, websocket.ABNF.OPCODE_PING, "are you there")
            self.send(ws, C, ok[10:], fin=1)

        def text_inside_fragmented(ws):
            self.send(ws, T, ok[:10], fin=0)
            self.send(ws, T, ok)

        cases = [
            ("ping between fragments", ping_between_fragments, {("ok", 0)}),
            ("one-byte fragments", lambda ws: fragments(ws, ok.encode(), T, 1), {("ok", 0)}),
            ("utf-8 character split across fragments", lambda ws: (self.send(ws, T, e_acute[:cut], fin=0),
                                                                 self.send(ws, C, e_acute[cut:])), {("ok", 0)}),
            ("invalid utf-8 across fragments", lambda ws: fragments(ws, bad, T, bad.index(b"\xc3") + 1),
             {("error", 0), ("close", 1007)}),
            ("fragmented binary", lambda ws: fragments(ws, ok.encode(), B, 7), {("error", 22)}),
            ("binary 1 MiB", lambda ws: self.send(ws, B, b"\0" * (1024 * 1024)), {("error", 22), ("error", 19)}),
            ("continuation without a start", lambda ws: self.send(ws, C, ok), {("close", 1002)}),
            ("new text frame inside a fragmented one", text_inside_fragmented, {("close", 1002)}),
            # lws drops the connection without a close frame for this one.
            ("control frame over 125 bytes", lambda ws: self.send(ws, websocket.ABNF.OPCODE_PING, "p" * 200),
             {("close", 1002), ("close", None)}),
            ("fragmented control frame", lambda ws: self.send(ws, websocket.ABNF.OPCODE_PING, "p", fin=0),
             {("close", 1002)}),
            ("reserved opcode", lambda ws: self.send(ws, 0x3, ok), {("close", 1002)}),
            ("reserved control opcode", lambda ws: self.send(ws, 0xb, "x"), {("close", 1002)}),
            ("rsv1 without an extension", lambda ws: self.send(ws, T, ok, rsv1=1), {("close", 1002)}),
        ]
        for name, act, allowed in cases:
            ws = self.connect()
            try:
                act(ws)
                got = self.outcome(ws)
            finally:
                ws.close()
            self.assertIn(got, allowed, name)
            self.assertServed()
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()


class UploadAbuse(AbuseCase):
    """POST /upload bodies that target lws_spa's field storage."""

    CHATD_ENV = dict(MAX_CHAT_MESSAGE_BYTES=LIMIT, MAX_FILE_SIZE=1)

    def post(self, ctype, body):
        """(status, JSON body) of a POST /upload over a raw socket."""
        head = ("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n" % (ctype, len(body))).encode()
        s = socket.create_connection(("127.0.0.1", self.chatd.port), timeout=30)
        try:
            try:
                s.sendall(head + body)
            except OSError:
                pass  # refused before the end of the body
            resp = read_until_close(s)
        finally:
            s.close()
        self.assertTrue(resp.startswith(b"HTTP/1.1 "), resp[:200])
        return parse_response(resp)

    def test_field_storage_overrun_is_refused(self):
        # lws_spa (4.1) flushes a field when its storage is full; flushed
        # while a boundary is half matched, it is left without room and
        # writes every later byte past its end. Storage sizes: what chatd
        # used before the fix (MAX_CHAT_MESSAGE_BYTES + 4096) and what it
        # uses now (+ 16 KiB + 4 KiB + 1 KiB).
        b = "XyZb0und"
        public = self.chatd.env["PUBLIC_DIR"]
        for storage in (LIMIT + 4096, LIMIT + 16384 + 4096 + 1024):
            for k in (1, 2, 5, 9):
                for field in ("user_id", "session_prompt"):
                    value = (b"A" * (storage - 1 - k) + ("\r\n--" + b[:-1]).encode() + b"!" + b"x" * 5000)
                    body = (("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (b, field)).encode()
                            + value + ("\r\n--%s--\r\n" % b).encode())
                    status, answer = self.post("multipart/form-data; boundary=" + b, body)
                    why = "storage %d, k %d, %s" % (storage, k, field)
                    self.assertEqual(status, 400, why)
                    self.assertIsNone(answer["data"], why)
                    self.assertServed()
        self.assertEqual([f for f in os.listdir(public)], [])
        self.assertFreshClientServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()

    def test_content_type_lws_cannot_read_is_refused(self):
        # lws_spa reads 204 bytes of Content-Type and parses the body of a
        # longer one as urlencoded.
        b = "q" * 180
        body = ("--%s\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\n%s\r\n--%s--\r\n"
                % (b, self.legit, b)).encode()
        status, answer = self.post("multipart/form-data; boundary=" + b, body)
        self.assertEqual(status, 415, answer)
        self.assertIn("multipart/form-data", answer["message"])
        self.assertServed()
        self.assertDatabaseHoldsOnlyWhatWasAccepted()


if __name__ == "__main__":
    unittest.main()
