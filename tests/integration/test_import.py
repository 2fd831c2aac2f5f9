"""Issue 24: POST /import of ChatGPT's, Claude's, Open WebUI's and chatd's
own exports (tests/fixtures/import/, written from each format's public
description). The answer is 202 at once; the work goes on in the
background and is told as type 15 events and by GET /import/<id>.
Branches stay branches, times are kept, a second import of the same file
creates nothing, and a conversation that cannot be imported (a cycle, a
dangling parent) is skipped with its reason while the others are stored.
A chatd export imported and exported again gives the same messages. Bad
files are refused whole with a clear status: not JSON (400), not a known
format (415), too large (413)."""

import io
import json
import os
import unittest
import uuid
import zipfile

from harness import SOURCE_DIR, Chatd, StackCase
from test_http import multipart, request
from test_live import drain_until

FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures", "import")


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def zipped(files):
    """A zip archive of {name: bytes}, deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


class Import(StackCase):
    DB_PREFIX = "chatd_import"

    def setUp(self):
        self.events = {}

    def tearDown(self):
        for c in self.events.values():
            c.close()

    def post(self, uid, name, data, port=None):
        body, ctype = multipart({"user_id": uid}, (name, data, "application/json"))
        status, _, raw = request(port or self.chatd.port, "POST", "/import", body, {"Content-Type": ctype})
        return status, json.loads(raw)

    def import_file(self, uid, name, data):
        """Imports and waits for import_finished: (its event, GET's state)."""
        if uid not in self.events:  # one connection per user, subscribed
            self.events[uid] = self.chatd.client()
            self.assertEqual(self.events[uid].req(14, {"user_id": uid})["type"], 14)
        status, reply = self.post(uid, name, data)
        self.assertEqual(status, 202, reply)
        iid = reply["data"]["import_id"]
        frames = drain_until(self.events[uid], lambda m: m.get("type") == 15 and m["data"].get("kind") == "import_finished"
                             and m["data"]["import_id"] == iid, limit=5000)
        done = frames[-1]["data"]
        status, state = self.get_state(uid, iid)
        self.assertEqual(status, 200, state)
        return done, state

    def get_state(self, uid, iid):
        status, _, raw = request(self.chatd.port, "GET", "/import/%s?user_id=%s" % (iid, uid))
        return status, json.loads(raw)

    def sessions(self, uid):
        return self.db.query("select session_id::text, session_name, import_source, active_leaf"
                             " from chat_sessions where user_id = %s order by created_at", (uid,))

    def tree(self, sid):
        return self.db.query("select seq, parent_seq, role, content from chat_messages where session_id = %s"
                             " order by seq", (sid,))

    def test_chatgpt_branches_times_and_skips(self):
        uid = self.db.add_user()
        done, state = self.import_file(uid, "conversations.json", fixture("chatgpt.json"))
        self.assertEqual((done["status"], done["sessions"], done["messages"]), ("finished", 1, 5))
        self.assertEqual(sorted((s["title"], s["reason"]) for s in done["skipped"]),
                         [("Cycle", "its messages' parents form a cycle"),
                          ("Dangling", "a message's parent is not in the conversation")])
        self.assertEqual((state["status"], state["format"], state["total"], state["done"], state["sessions"]),
                         ("finished", "chatgpt", 3, 3, 1))
        [(sid, name, source, leaf)] = self.sessions(uid)
        self.assertEqual((name, source), ("Trip to Lisbon", "chatgpt:6631f0a0-1111-4aaa-8bbb-000000000001"))
        self.assertEqual(self.tree(sid), [
            (0, None, "user", "What should I see in Lisbon?"),
            (1, 0, "assistant", "Alfama, Belém and the **trams**."),
            (2, 1, "user", "Where to eat?"),
            (3, 1, "user", "And this photo?"),
            (4, 3, "assistant", "A tram in Alfama.")])
        self.assertEqual(leaf, 4)  # current_node
        self.assertEqual(str(self.db.one("select created_at from chat_messages where session_id = %s and seq = 0",
                                         (sid,))), "2024-05-01 10:00:01+00:00")
        c = self.chatd.client()
        try:
            # the active path, as any session's; searchable; siblings drawn
            chat = json.loads(c.req(2, {"user_id": uid, "session_id": sid})["data"]["chat"])
            self.assertEqual([m["content"] for m in chat][-1], "A tram in Alfama.")
            self.assertEqual(len(chat), 4)
            page = c.req(9, {"user_id": uid, "session_id": sid})["data"]["messages"]
            self.assertEqual([(m["seq"], m["siblings"]) for m in page], [(0, 1), (1, 1), (3, 2), (4, 1)])
            hits = c.req(11, {"user_id": uid, "query": "Alfama"})["data"]["hits"]
            self.assertTrue(any(h["session_id"] == sid for h in hits), hits)
            # and it goes on like any chat
            self.assertEqual(c.chat(uid, sid, "and tomorrow?")["type"], 3)
        finally:
            c.close()
        # the same file again: nothing new
        done, _ = self.import_file(uid, "conversations.json", fixture("chatgpt.json"))
        self.assertEqual(done["sessions"], 0)
        self.assertIn(("Trip to Lisbon", "imported before"), [(s["title"], s["reason"]) for s in done["skipped"]])
        self.assertEqual(len(self.sessions(uid)), 1)

    def test_claude_and_open_webui(self):
        uid = self.db.add_user()
        done, _ = self.import_file(uid, "claude.json", fixture("claude.json"))
        self.assertEqual((done["sessions"], done["messages"], done["skipped"]), (2, 5, []))
        done, state = self.import_file(uid, "openwebui.json", fixture("openwebui.json"))
        self.assertEqual((done["sessions"], done["messages"], state["format"]), (1, 3, "openwebui"))
        by_name = {s[1]: s for s in self.sessions(uid)}
        self.assertEqual(set(by_name), {"Haiku about rain", "Old list export", "Regex help"})
        sid, _, source, leaf = by_name["Regex help"]
        self.assertEqual(source, "openwebui:0b5c5a1e-0000-4000-8000-000000000001")
        self.assertEqual([(s, p) for s, p, _, _ in self.tree(sid)], [(0, None), (1, 0), (2, 0)])
        self.assertEqual(self.tree(sid)[leaf][3], "Try `[^@]+@[^@]+`.")

    def test_chatd_export_round_trip(self):
        owner, other = self.db.add_user(), self.db.add_user()
        c = self.chatd.client()
        try:
            sid = c.chat(owner, "NEW", "first question")["data"]["session_id"]
            c.chat(owner, sid, "second question")
            self.assertEqual(c.req(17, dict(user_id=owner, session_id=sid, seq=2, message="edited second"))["type"],
                             17)
        finally:
            c.close()

        def export(uid, s):
            st, _, raw = request(self.chatd.port, "GET", "/sessions/%s/export?format=json&branches=all&user_id=%s"
                                 % (s, uid))
            self.assertEqual(st, 200)
            return json.loads(raw)

        first = export(owner, sid)
        done, state = self.import_file(other, "session.json", json.dumps(first).encode())
        self.assertEqual((done["sessions"], state["format"]), (1, "chatd"))
        [(copy, name, _, _)] = self.sessions(other)
        again = export(other, copy)
        self.assertEqual(name, first["session_name"])

        def shape(e):
            return [(m["seq"], m.get("parent_seq"), m["role"], m["content"], m["created_at"]) for m in e["messages"]]
        self.assertEqual(shape(again), shape(first))
        # jsonl: every session, one path each
        st, _, raw = request(self.chatd.port, "GET", "/export?format=jsonl&user_id=%s" % owner)
        third = self.db.add_user()
        done, _ = self.import_file(third, "all.jsonl", raw)
        self.assertEqual(done["sessions"], 1)
        [(copy, _, _, _)] = self.sessions(third)
        self.assertEqual([r for _, _, r, _ in self.tree(copy)], ["user", "assistant", "user", "assistant"])

    def test_bad_files_are_refused_whole(self):
        uid = self.db.add_user()
        for name, data, status, text in (
                ("a.json", b"hello", 400, "not an export"),
                ("a.json", b'[{"mapping": {}}, {"mapping": ', 400, "not an export"),
                ("a.json", b'[{"hello": 1}]', 415, "Unsupported Media Type"),
                ("a.txt", b'[]', 415, "import takes"),
                ("a.json", b"[\x00]", 415, "does not match")):
            st, reply = self.post(uid, name, data)
            self.assertEqual((st, text in reply["message"]), (status, True), (name, data, reply))
        self.assertEqual(self.sessions(uid), [])
        self.assertEqual(self.db.one("select count(*) from imports where user_id = %s", (uid,)), 0)
        st, reply = self.post(str(uuid.uuid4()), "a.json", fixture("claude.json"))
        self.assertEqual((st, reply["message"]), (400, "User Does Not Exists"))
        small = Chatd(self.db, agent_port=self.agent.port, IMPORT_MAX_BYTES=2048)
        try:
            st, reply = self.post(uid, "c.json", fixture("chatgpt.json"), port=small.port)
            self.assertEqual(st, 413, reply)
        finally:
            small.stop()

    def test_zip_archives(self):
        uid = self.db.add_user()
        # ChatGPT's export: conversations.json among other files
        done, state = self.import_file(uid, "export.zip", zipped({
            "user.json": b'{"id": "user-x"}', "chat.html": b"<html></html>",
            "conversations.json": fixture("chatgpt.json")}))
        self.assertEqual((done["sessions"], state["format"]), (1, "chatgpt"))
        # several JSON files: each an export of its own
        done, _ = self.import_file(uid, "several.zip", zipped({
            "a/claude.json": fixture("claude.json"), "b/openwebui.json": fixture("openwebui.json")}))
        self.assertEqual(done["sessions"], 3)
        self.assertEqual(len(self.sessions(uid)), 4)
        st, reply = self.post(uid, "none.zip", zipped({"readme.txt": b"hello"}))
        self.assertEqual(st, 415, reply)
        st, reply = self.post(uid, "broken.zip", b"PK\x03\x04" + b"\x00" * 100)
        self.assertEqual(st, 400, reply)
        st, reply = self.post(uid, "bad.zip", zipped({"conversations.json": b"[{\"mapping\": "}))
        self.assertEqual(st, 400, reply)
        self.assertEqual(len(self.sessions(uid)), 4)

    def test_zip_bomb_is_refused_before_inflating(self):
        uid = self.db.add_user()
        small = Chatd(self.db, agent_port=self.agent.port, IMPORT_MAX_BYTES=65536)
        try:
            bomb = zipped({"conversations.json": b"[" + b" " * (64 * 1024 * 1024) + b"]"})
            self.assertLess(len(bomb), 65536)  # the archive itself passes the limit
            body, ctype = multipart({"user_id": uid}, ("bomb.zip", bomb, "application/zip"))
            st, _, raw = request(small.port, "POST", "/import", body, {"Content-Type": ctype})
            self.assertEqual(st, 413, raw)
            self.assertIn(b"inflates to more than 65536 bytes", raw)
        finally:
            small.stop()
        self.assertEqual(self.sessions(uid), [])

    def test_stopped_mid_import_then_imported_again(self):
        """SIGTERM while an import stores: chatd exits 0 at once, the import
        ends (failed, or finished if it won the race), and importing the
        file again stores exactly the rest: every conversation once."""
        uid = self.db.add_user()
        n = 3000
        convs = [{"uuid": "c-%d" % i, "name": "Chat %d" % i, "created_at": "2024-01-01T00:00:00Z",
                  "chat_messages": [{"uuid": "m", "sender": "human", "text": "hello %d" % i}]} for i in range(n)]
        data = json.dumps(convs).encode()
        mine = Chatd(self.db, agent_port=self.agent.port)
        events = mine.client()
        stopped = None
        try:
            self.assertEqual(events.req(14, {"user_id": uid})["type"], 14)
            body, ctype = multipart({"user_id": uid}, ("claude.json", data, "application/json"))
            st, _, raw = request(mine.port, "POST", "/import", body, {"Content-Type": ctype})
            self.assertEqual(st, 202, raw)
            iid = json.loads(raw)["data"]["import_id"]
            drain_until(events, lambda m: m.get("type") == 15 and m["data"].get("kind") in
                        ("import_progress", "import_finished"), limit=100)
            stopped = mine.stop()
        finally:
            events.close()
            if stopped is None:
                mine.stop()
        self.assertEqual(stopped, 0)
        status, error = self.db.query("select status, error from imports where import_id = %s", (iid,))[0]
        self.assertIn(status, ("failed", "finished"))
        if status == "failed":
            self.assertIn("chatd stopped", error)
        done, _ = self.import_file(uid, "claude.json", data)
        self.assertEqual(done["status"], "finished")
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), n)
        self.assertEqual(self.db.one("select count(distinct import_source) from chat_sessions where user_id = %s",
                                     (uid,)), n)

    def test_someone_elses_import_is_not_found(self):
        owner, other = self.db.add_user(), self.db.add_user()
        done, _ = self.import_file(owner, "claude.json", fixture("claude.json"))
        iid = done["import_id"]
        for uid, path in ((other, iid), (owner, str(uuid.uuid4())), (owner, "not-an-id")):
            st, reply = self.get_state(uid, path)
            self.assertEqual((st, reply), (404, {"message": "Not Found", "data": None}))


if __name__ == "__main__":
    unittest.main()
