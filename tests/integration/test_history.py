"""Issue 12 (part): history people can work with. Code 9 (a page of a
session's messages), code 10 (rename), code 12 (rate a reply), with their
bad inputs, on real PostgreSQL, Redis, chat-agent and chatd. Codes 0-8 are
unchanged (the other modules prove it)."""

import json
import os
import re
import time
import unittest
import uuid
import urllib.request

from harness import SOURCE_DIR, ClientCase, explain, redis_client

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class History(ClientCase):
    DB_PREFIX = "chatd_history"

    def session(self, uid, n, name="Long"):
        """A session of n messages (user/assistant pairs), made by SQL."""
        sid = self.db.add_session(uid, name=name)
        self.db.query("insert into chat_messages(session_id, seq, role, content)"
                      " select %s, g, case when g %% 2 = 0 then 'user' else 'assistant' end, 'm' || g"
                      " from generate_series(0, %s - 1) g", (sid, n))
        self.db.query("update chat_sessions set next_seq = %s where session_id = %s", (n, sid))
        return sid

    def page(self, uid, sid, **kw):
        d = {"user_id": uid, "session_id": sid}
        d.update(kw)
        return self.c.req(9, d)

    # ------------------------------------------------- code 1, paged (opt-in)

    def test_session_list_pages(self):
        uid = self.db.add_user()
        sids = [self.db.add_session(uid, name="s%d" % i) for i in range(7)]
        # four sessions created in the same microsecond: the id orders them,
        # and pages of 3 cut through them
        self.db.query("update chat_sessions set created_at = (select created_at from chat_sessions"
                      " where session_id = %s) where session_id = any(%s::uuid[])", (sids[2], sids[2:6]))
        whole = self.c.req(1, {"user_id": uid})
        self.assertEqual(set(whole["data"]), {"user_id", "session_info"})  # unchanged without limit
        want = [x["session_id"] for x in whole["data"]["session_info"]]
        self.assertEqual(sorted(want), sorted(sids))
        got, before, pages = [], None, 0
        while True:
            d = {"user_id": uid, "limit": 3}
            if before is not None:
                d["before"] = before
            data = self.c.req(1, d)["data"]
            pages += 1
            got += [x["session_id"] for x in data["session_info"]]
            if not data["has_more"]:
                self.assertIsNone(data["next_before"])
                break
            before = data["next_before"]
        self.assertEqual((got, pages), (want, 3))  # the same order, each once
        # a new session while paging appears on page one, not again later
        data = self.c.req(1, {"user_id": uid, "limit": 2})["data"]
        self.assertEqual(len(data["session_info"]), 2)
        for d, why in [({"limit": 0}, "'limit'"), ({"limit": 201}, "'limit'"), ({"before": "yesterday"}, "'before'"),
                       ({"before": "1:not-a-uuid"}, "'before'"), ({"before": 5}, "'before': expected a string")]:
            with self.subTest(d=d):
                q = {"user_id": uid}
                q.update(d)
                self.assertError(self.c.req(1, q), 17, why)
        # unknown user: as without paging
        self.assertError(self.c.req(1, {"user_id": str(uuid.uuid4()), "limit": 5}), 3)

    # ------------------------------------------------------------- code 9

    def test_pages_walk_the_whole_session_back(self):
        uid = self.db.add_user()
        sid = self.session(uid, 125)
        r = self.page(uid, sid)
        self.assertEqual(r["type"], 9, r)
        d = r["data"]
        self.assertEqual((d["user_id"], d["session_id"], d["session_name"]), (uid, sid, "Long"))
        self.assertEqual([m["seq"] for m in d["messages"]], list(range(75, 125)))  # default 50, newest
        self.assertEqual((d["has_more"], d["next_before"]), (True, 75))
        m = d["messages"][0]
        self.assertEqual(set(m), {"seq", "role", "content", "created_at", "parent_seq", "siblings",
                                  "sibling_index"})
        self.assertEqual((m["role"], m["content"]), ("assistant", "m75"))
        self.assertRegex(m["created_at"], RFC3339)
        seen, before = [], None
        while True:
            kw = {"limit": 40}
            if before is not None:
                kw["before"] = before
            d = self.page(uid, sid, **kw)["data"]
            seen = [x["seq"] for x in d["messages"]] + seen
            if not d["has_more"]:
                self.assertIsNone(d["next_before"])
                break
            before = d["next_before"]
        self.assertEqual(seen, list(range(125)))  # every message once, in order
        # before past the start and an empty session
        d = self.page(uid, sid, before=0)["data"]
        self.assertEqual((d["messages"], d["has_more"], d["next_before"]), ([], False, None))
        empty = self.db.add_session(uid, name="Empty")
        d = self.page(uid, empty)["data"]
        self.assertEqual((d["messages"], d["has_more"]), ([], False))

    def test_page_limits_and_bad_input(self):
        uid = self.db.add_user()
        sid = self.session(uid, 4)
        self.assertEqual(len(self.page(uid, sid, limit=1)["data"]["messages"]), 1)
        self.assertEqual(len(self.page(uid, sid, limit=200)["data"]["messages"]), 4)
        for kw, why in [({"limit": 0}, "'limit': out of range"), ({"limit": 201}, "'limit': out of range"),
                        ({"limit": "5"}, "'limit': expected an integer"), ({"limit": 2.5}, "'limit'"),
                        ({"before": -1}, "'before': out of range"), ({"before": "x"}, "'before'"),
                        ({"session_id": "NEW"}, "'session_id'"), ({"session_id": 5}, "'session_id'")]:
            with self.subTest(kw=kw):
                self.assertError(self.page(uid, sid, **kw), 17, why)
        # someone else's session answers exactly like a missing one
        other = self.db.add_user()
        a = self.page(other, sid)
        b = self.page(other, str(uuid.uuid4()))
        self.assertError(a, 18)
        self.assertEqual(a, b)

    def test_page_shows_ratings_and_file_links(self):
        uid = self.db.add_user(balance=100)
        r = self.c.chat(uid, "NEW", "hello")
        sid = r["data"]["session_id"]
        self.db.query("insert into uploaded_files(session_id, user_id, stored_name, original_name, content_type,"
                      " size_bytes) values (%s, %s, %s, 'photo.png', 'image/png', 3)",
                      (sid, uid, "0123456789abcdef0123456789abcdef.png"))
        self.db.query("insert into chat_messages(session_id, seq, role, content) values (%s, 2, 'file', %s)",
                      (sid, "0123456789abcdef0123456789abcdef.png"))
        self.db.query("update chat_sessions set next_seq = 3 where session_id = %s", (sid,))
        self.assertEqual(self.c.req(12, {"user_id": uid, "session_id": sid, "seq": 1, "rating": 1})["type"], 12)
        msgs = self.page(uid, sid)["data"]["messages"]
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "file"])
        self.assertNotIn("rating", msgs[0])
        self.assertEqual(msgs[1]["rating"], 1)
        f = msgs[2]
        self.assertEqual((f["content"], f["content_type"], f["size"], f["original_name"]),
                         ("0123456789abcdef0123456789abcdef.png", "image/png", 3, "photo.png"))
        self.assertEqual(f["url"], "http://127.0.0.1:%d/uploads/%s" % (self.chatd.port, f["content"]))

    def test_a_page_costs_the_same_in_a_long_session(self):
        # The plan, not the time: chatd's own statement walks the active
        # path up from where the page starts, one probe of the primary key
        # per message, the page's rows and one more, in a session of 20,000
        # messages.
        uid = self.db.add_user()
        sid = self.session(uid, 20000)
        self.db.query("analyze chat_messages")
        for before in ("null", "15000"):
            # (the ids are UUIDs this test made: safe to write into the text)
            plan = explain(self.db, "history_page", ["'%s'" % uid, "'%s'" % sid, before, "50"])
            self.assertIn("Index Scan using chat_messages_pkey on chat_messages m", plan)
            self.assertRegex(plan, r"Recursive Union \(actual time=[\d.]+\.\.[\d.]+ rows=51 loops=1\)")
            self.assertNotIn("Seq Scan on chat_messages", plan)
        self.assertEqual(len(self.page(uid, sid)["data"]["messages"]), 50)

    # ------------------------------------------------------------ code 10

    def test_rename(self):
        uid = self.db.add_user()
        sid = self.session(uid, 2, name="Old")
        self.assertEqual(self.c.req(1, {"user_id": uid})["data"]["session_info"][0]["session_name"], "Old")
        r = self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": "  Trip to Lisbon  "})
        self.assertEqual(r, {"type": 10, "data": {"user_id": uid, "session_id": sid, "session_name": "Trip to Lisbon"}})
        self.assertEqual(self.db.one("select session_name from chat_sessions where session_id = %s", (sid,)),
                         "Trip to Lisbon")
        # the cached list shows it at once, and so do codes 9 and 3
        self.assertEqual(self.c.req(1, {"user_id": uid})["data"]["session_info"][0]["session_name"], "Trip to Lisbon")
        self.assertEqual(self.page(uid, sid)["data"]["session_name"], "Trip to Lisbon")
        self.assertEqual(self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": "é" * 100})["type"], 10)

    def test_rename_bad_names_and_someone_elses_session(self):
        uid = self.db.add_user()
        sid = self.session(uid, 2, name="Keep")
        for name, why in [("", "must not be empty"), ("   ", "must not be empty"), ("a\nb", "one line"),
                          ("tab\there", "control"), ("\u0085x", "control"), ("x\u2028y", "one line"),
                          ("é" * 101, "longer than 100"), (5, "expected a string"), (None, "'session_name'")]:
            with self.subTest(name=name):
                r = self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": name})
                self.assertError(r, 17, why)
        other = self.db.add_user()
        a = self.c.req(10, {"user_id": other, "session_id": sid, "session_name": "Mine now"})
        self.assertError(a, 18)
        self.assertEqual(self.db.one("select session_name from chat_sessions where session_id = %s", (sid,)), "Keep")

    # ------------------------------------------------------------ code 11

    def search(self, uid, query, **kw):
        d = {"user_id": uid, "query": query}
        d.update(kw)
        return self.c.req(11, d)

    def test_search_finds_own_messages_and_names_best_first(self):
        uid, other = self.db.add_user(), self.db.add_user()
        mine = self.db.add_session(uid, name="Kayak trip planning")
        self.db.query("insert into chat_messages(session_id, seq, role, content) values"
                      " (%s, 0, 'user', 'Where can I rent a kayak near Porto?'),"
                      " (%s, 1, 'assistant', 'Kayak rentals: kayak kayak on the Douro river.'),"
                      " (%s, 2, 'file', '0123456789abcdef0123456789abcdef.txt')", (mine, mine, mine))
        theirs = self.db.add_session(other, name="Kayak secrets")
        self.db.query("insert into chat_messages(session_id, seq, role, content) values"
                      " (%s, 0, 'user', 'my private kayak notes')", (theirs,))
        r = self.search(uid, "kayak")
        self.assertEqual(r["type"], 11, r)
        d = r["data"]
        self.assertEqual((d["user_id"], d["query"], d["has_more"]), (uid, "kayak", False))
        hits = d["hits"]
        self.assertEqual({h["session_id"] for h in hits}, {mine})  # never someone else's
        self.assertEqual(sorted((h["role"], h["seq"]) for h in hits),
                         [("assistant", 1), ("session", None), ("user", 0)])
        self.assertEqual(hits[0]["role"], "session")  # a matching name ranks first
        for h in hits:
            self.assertEqual(h["session_name"], "Kayak trip planning")
            self.assertRegex(h["created_at"], RFC3339)
            self.assertTrue(any(p["hit"] and p["text"].lower() == "kayak" for p in h["snippet"]), h)
            self.assertEqual("".join(p["text"] for p in h["snippet"]).count("\ue000"), 0)
        # the other user finds only theirs
        self.assertEqual({h["session_id"] for h in self.search(other, "kayak")["data"]["hits"]}, {theirs})

    def test_search_syntax_never_errors_and_marks_cannot_be_forged(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, name="Hostile")
        hostile = "fake \ue000marked\ue001 word and <img src=x onerror=alert(1)> zebra"
        self.db.query("insert into chat_messages(session_id, seq, role, content) values (%s, 0, 'user', %s)",
                      (sid, hostile))
        for q in ['"unbalanced', "-", "or or or", "!!!", "&|:*", "zebra -", "'; drop table chat_messages; --",
                  "\\", "()", "a" * 500]:
            with self.subTest(q=q):
                r = self.search(uid, q)
                self.assertEqual(r["type"], 11, r)
        hits = self.search(uid, "zebra")["data"]["hits"]
        self.assertEqual(len(hits), 1)
        parts = hits[0]["snippet"]
        self.assertEqual([p["text"] for p in parts if p["hit"]], ["zebra"])  # "marked" is not a hit
        text = "".join(p["text"] for p in parts)
        self.assertNotIn("\ue000", text)
        self.assertIn("<img src=x onerror=alert(1)>", text)  # plain text, for the client to show as text
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 1)

    def test_search_pages_and_bad_input(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, name="Many")
        self.db.query("insert into chat_messages(session_id, seq, role, content)"
                      " select %s, g, 'user', 'needle number ' || g from generate_series(0, 24) g", (sid,))
        first = self.search(uid, "needle", limit=10)["data"]
        second = self.search(uid, "needle", limit=10, offset=10)["data"]
        third = self.search(uid, "needle", limit=10, offset=20)["data"]
        self.assertEqual((first["has_more"], second["has_more"], third["has_more"]), (True, True, False))
        seqs = [h["seq"] for h in first["hits"] + second["hits"] + third["hits"]]
        self.assertEqual(sorted(seqs), list(range(25)))  # each once
        for kw, why in [({"query": ""}, "'query': must not be empty"), ({"query": "   "}, "must not be empty"),
                        ({"query": 5}, "'query': expected a string"), ({"query": "x" * 501}, "longer than 500"),
                        ({"limit": 0}, "'limit'"), ({"limit": 51}, "'limit'"), ({"offset": -1}, "'offset'")]:
            with self.subTest(kw=kw):
                d = {"user_id": uid, "query": "needle"}
                d.update(kw)
                self.assertError(self.c.req(11, d), 17, why)

    def test_search_is_the_same_after_flushall_and_a_restart(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, name="Persistent")
        self.db.query("insert into chat_messages(session_id, seq, role, content) values"
                      " (%s, 0, 'user', 'quokka facts'), (%s, 1, 'assistant', 'the quokka smiles')", (sid, sid))
        before = self.search(uid, "quokka")["data"]
        redis_client().flushall()
        self.assertEqual(self.search(uid, "quokka")["data"], before)
        self.c.close()
        self.chatd.stop()
        self.chatd.start()
        self.c = self.chatd.client()
        self.assertEqual(self.search(uid, "quokka")["data"], before)
        self.assertEqual(len(before["hits"]), 2)

    # ------------------------------------------------------------ code 12

    def feedback(self, uid, sid, seq, rating, **kw):
        d = {"user_id": uid, "session_id": sid, "seq": seq, "rating": rating}
        d.update(kw)
        return self.c.req(12, d)

    def metric(self, rating):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.chatd.port, timeout=10) as resp:
            text = resp.read().decode()
        return int(re.search(r'^chatd_feedback_total\{rating="%s"\} (\d+)$' % rating, text, re.M).group(1))

    def test_rate_change_and_clear(self):
        uid = self.db.add_user()
        sid = self.session(uid, 4)
        good = self.metric("good")
        r = self.feedback(uid, sid, 1, 1, comment="spot on")
        self.assertEqual(r, {"type": 12, "data": {"user_id": uid, "session_id": sid, "seq": 1, "rating": 1}})
        self.assertEqual(self.db.query("select rating, comment from message_feedback where session_id = %s", (sid,)),
                         [(1, "spot on")])
        self.assertEqual(self.metric("good"), good + 1)
        self.feedback(uid, sid, 1, -1)
        self.assertEqual(self.db.query("select rating, comment from message_feedback where session_id = %s", (sid,)),
                         [(-1, "")])
        self.assertEqual(self.page(uid, sid)["data"]["messages"][1]["rating"], -1)
        self.feedback(uid, sid, 1, 0)
        self.assertEqual(self.db.one("select count(*) from message_feedback where session_id = %s", (sid,)), 0)
        self.assertNotIn("rating", self.page(uid, sid)["data"]["messages"][1])
        # ratings go with their session
        self.feedback(uid, sid, 3, 1)
        self.assertEqual(self.c.req(4, {"user_id": uid, "session_id": sid})["type"], 4)
        self.assertEqual(self.db.one("select count(*) from message_feedback where session_id = %s", (sid,)), 0)

    def test_feedback_bad_input(self):
        uid = self.db.add_user()
        sid = self.session(uid, 4)
        self.assertError(self.feedback(uid, sid, 0, 1), 17, "only assistant messages")
        self.assertError(self.feedback(uid, sid, 9, 1), 17, "no such message")
        for kw, why in [({"rating": 2}, "'rating': out of range"), ({"rating": "1"}, "'rating': expected"),
                        ({"rating": None}, "'rating': missing"), ({"seq": -1}, "'seq': out of range"),
                        ({"seq": None}, "'seq': missing"), ({"comment": "x" * 1025}, "'comment'"),
                        ({"comment": 7}, "'comment': expected a string")]:
            with self.subTest(kw=kw):
                d = {"user_id": uid, "session_id": sid, "seq": 1, "rating": 1}
                d.update(kw)
                if kw.get("rating", 0) is None:
                    del d["rating"]
                if "seq" in kw and kw["seq"] is None:
                    del d["seq"]
                self.assertError(self.c.req(12, d), 17, why)
        other = self.db.add_user()
        a = self.feedback(other, sid, 1, 1)
        b = self.feedback(other, str(uuid.uuid4()), 1, 1)
        self.assertError(a, 18)
        self.assertEqual(a, b)
        self.assertEqual(self.db.one("select count(*) from message_feedback"), 0)


class LongMessages(ClientCase):
    """A message whose search vector would pass PostgreSQL's 1 MB limit
    (migration 0016): stored whole, searched by its first 100,000
    characters. Before, its INSERT failed ("string is too long for
    tsvector") and the turn with it."""

    DB_PREFIX = "chatd_history_long"
    CHATD_ENV = {"MAX_MESSAGE_BYTES": str(4 << 20), "MAX_CHAT_MESSAGE_BYTES": str(4 << 20)}

    def hits(self, uid, query):
        r = self.c.req(11, {"user_id": uid, "query": query})
        self.assertEqual(r.get("type"), 11, r)
        return sorted((h["role"], h["seq"]) for h in r["data"]["hits"])

    def test_a_message_of_distinct_words_past_the_tsvector_limit_is_stored_whole(self):
        uid = self.db.add_user(balance=5)
        sid = self.db.add_session(uid, name="plain")
        # 160,000 distinct 7-letter words: 1,280,000 characters, whose whole
        # tsvector PostgreSQL refuses (1,920,000 bytes of lexemes and
        # positions, the limit is 1,048,575)
        words = ["w%06x" % i for i in range(160000)]
        text = " ".join(words)
        r = self.c.chat(uid, sid, text)
        self.assertEqual(r.get("type"), 3, str(r)[:300])
        rows = self.db.query("select role, content from chat_messages where session_id = %s order by seq", (sid,))
        self.assertEqual([role for role, _ in rows], ["user", "assistant"])
        self.assertEqual(rows[0][1], text)  # stored whole
        self.assertIn(words[-1], rows[1][1])  # the echoed reply too
        self.assertEqual(self.hits(uid, words[10]), [("assistant", 1), ("user", 0)])
        self.assertEqual(self.hits(uid, words[-1]), [])  # past the first 100,000 characters

if __name__ == "__main__":
    unittest.main()
