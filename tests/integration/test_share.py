"""Issue 24: share links (codes 21-23, GET /s/<id>, fork from a link) and
organizing (code 24, code 1's filter, code 9's state, code 11's
qualifiers). A link is a snapshot: later turns never show in it; every
view is counted once across instances, and a link that cannot be viewed
(unknown, revoked, expired, used up, its session gone) is one 404.
Another user's session or link is answered as a missing one."""

import concurrent.futures
import json
import os
import re
import unittest
import uuid

from harness import Chatd, ClientCase
from test_http import PNG, request
from test_live import drain_until, events_of

NOT_FOUND = {"message": "Not Found", "data": None}
SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")


class ShareCase(ClientCase):
    DB_PREFIX = "chatd_share"

    def get(self, path, port=None):
        status, headers, body = request(port or self.chatd.port, "GET", path)
        return status, headers, body

    def get_json(self, path, port=None):
        status, headers, body = self.get(path, port)
        return status, json.loads(body)

    def share(self, uid, sid, c=None, **kw):
        d = dict(user_id=uid, session_id=sid)
        d.update(kw)
        return (c or self.c).req(21, d)

    def chat_session(self, uid, n=2):
        """A session with n turns made through chatd: its id."""
        r = self.c.chat(uid, "NEW", "first question")
        self.assertEqual(r["type"], 3, r)
        sid = r["data"]["session_id"]
        for i in range(1, n):
            self.assertEqual(self.c.chat(uid, sid, "question %d" % i)["type"], 3)
        return sid


class Share(ShareCase):
    def test_share_is_a_snapshot_of_the_active_path(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 2)
        r = self.share(uid, sid)
        self.assertEqual(r["type"], 21, r)
        d = r["data"]
        self.assertRegex(d["share_id"], SHARE_ID)
        self.assertEqual(d["url"], "%s/s/%s" % (self.chatd.env["PUBLIC_BASE_URL"], d["share_id"]))
        self.assertIsNone(d["expires_at"])
        self.assertIsNone(d["max_views"])
        # a later turn, an edit and a new name do not show in it
        self.assertEqual(self.c.chat(uid, sid, "after the link")["type"], 3)
        self.assertEqual(self.c.req(10, dict(user_id=uid, session_id=sid, session_name="Renamed"))["type"], 10)
        status, snap = self.get_json("/s/%s.json" % d["share_id"])
        self.assertEqual(status, 200, snap)
        stored = self.db.query("select role, content from chat_messages where session_id = %s and seq < 4"
                               " order by seq", (sid,))
        self.assertEqual([(m["role"], m["content"]) for m in snap["messages"]], stored)
        self.assertEqual([m["content"] for m in snap["messages"][0::2]], ["first question", "question 1"])
        self.assertNotEqual(snap["title"], "Renamed")
        # nothing about the owner: no user id, no session id, no balance
        text = json.dumps(snap)
        self.assertNotIn(uid, text)
        self.assertNotIn(sid, text)
        self.assertNotIn("balance", text)

    def test_share_up_to_a_message(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 2)
        r = self.share(uid, sid, seq=1)
        status, snap = self.get_json("/s/%s.json" % r["data"]["share_id"])
        self.assertEqual(status, 200)
        self.assertEqual([m["role"] for m in snap["messages"]], ["user", "assistant"])

    def test_page_is_html_with_its_own_policy_and_escaped_data(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, "</script><script>alert(1)</script>",
                                  messages=[("user", "<img src=x onerror=alert(1)>"), ("assistant", "a & b")])
        share_id = self.share(uid, sid)["data"]["share_id"]
        status, headers, body = self.get("/s/" + share_id)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"), headers)
        csp = headers["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertNotIn("ws:", csp)
        self.assertEqual(headers["cache-control"], "no-store")
        page = body.decode()
        block = re.search(r'<script type="application/json" id="snapshot">(.*?)</script>', page, re.S)
        self.assertIsNotNone(block, page[:500])
        self.assertNotIn("<", block.group(1))  # no text of the chat can close the block
        snap = json.loads(block.group(1))
        self.assertEqual(snap["title"], "</script><script>alert(1)</script>")
        self.assertEqual(snap["messages"][0]["content"], "<img src=x onerror=alert(1)>")
        self.assertNotIn(uid, page)
        self.assertNotIn(sid, page)

    def test_views_are_limited_and_counted_once_across_instances(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 1)
        share_id = self.share(uid, sid, max_views=3)["data"]["share_id"]
        other = Chatd(self.db, agent_port=self.agent.port)
        try:
            ports = [self.chatd.port, other.port] * 6
            with concurrent.futures.ThreadPoolExecutor(12) as ex:
                statuses = list(ex.map(lambda p: self.get("/s/%s.json" % share_id, p)[0], ports))
        finally:
            other.stop()
        self.assertEqual(sorted(statuses), [200] * 3 + [404] * 9)
        shares = self.c.req(22, {"user_id": uid})["data"]["shares"]
        self.assertEqual([(s["share_id"], s["views"], s["max_views"], s["active"]) for s in shares],
                         [(share_id, 3, 3, False)])

    def test_dead_links_are_one_404(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 1)
        revoked = self.share(uid, sid)["data"]["share_id"]
        expired = self.share(uid, sid, expires_in_seconds=60)["data"]["share_id"]
        used_up = self.share(uid, sid, max_views=1)["data"]["share_id"]
        gone_sid = self.chat_session(uid, 1)
        gone = self.share(uid, gone_sid)["data"]["share_id"]
        self.assertEqual(self.c.req(23, {"user_id": uid, "share_id": revoked})["data"]["revoked"], True)
        # time passes, as an admin's clock would say
        self.db.query("update share_links set expires_at = now() - interval '1 second' where share_id = %s",
                      (expired,))
        self.assertEqual(self.get("/s/%s.json" % used_up)[0], 200)
        self.assertEqual(self.c.req(4, {"user_id": uid, "session_id": gone_sid})["type"], 4)
        for link in (revoked, expired, used_up, gone, "A" * 32):
            for suffix in ("", ".json"):
                status, headers, body = self.get("/s/%s%s" % (link, suffix))
                self.assertEqual((status, json.loads(body)), (404, NOT_FOUND), (link, suffix))
        for path in ("/s/", "/s/short", "/s/%s.xml" % revoked, "/s/%s/files/../../etc/passwd" % revoked,
                     "/s/" + "A" * 31 + "!"):
            self.assertEqual(self.get(path)[0], 404, path)
        self.assertEqual(self.db.one("select count(*) from share_links where share_id = %s", (gone,)), 0)

    def test_files_are_served_only_while_the_link_lives(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 1)
        name = uuid.uuid4().hex + ".png"
        with open(os.path.join(self.chatd.env["PUBLIC_DIR"], name), "wb") as f:
            f.write(PNG)
        self.db.query("insert into uploaded_files (session_id, user_id, stored_name, original_name, content_type,"
                      " size_bytes) values (%s, %s, %s, 'photo.png', 'image/png', %s)", (sid, uid, name, len(PNG)))
        self.db.query("insert into chat_messages (session_id, seq, role, content) values (%s, 2, 'file', %s)",
                      (sid, name))
        self.db.query("update chat_sessions set next_seq = 3 where session_id = %s", (sid,))
        share_id = self.share(uid, sid)["data"]["share_id"]
        before = self.share(uid, sid, seq=1)["data"]["share_id"]
        status, snap = self.get_json("/s/%s.json" % share_id)
        f = snap["messages"][-1]
        self.assertEqual((f["role"], f["url"], f["original_name"]), ("file", "/s/%s/files/%s" % (share_id, name),
                                                                    "photo.png"))
        status, headers, body = self.get(f["url"])
        self.assertEqual((status, body), (200, PNG))
        self.assertEqual(headers["content-type"], "image/png")
        # not in that link's snapshot: not served through it
        self.assertEqual(self.get("/s/%s/files/%s" % (before, name))[0], 404)
        self.c.req(23, {"user_id": uid, "share_id": share_id})
        self.assertEqual(self.get(f["url"])[0], 404)

    def test_fork_from_a_link(self):
        owner, viewer = self.db.add_user(), self.db.add_user()
        sid = self.chat_session(owner, 2)
        share_id = self.share(owner, sid, seq=1)["data"]["share_id"]
        shared_as = self.db.one("select session_name from chat_sessions where session_id = %s", (sid,))
        # renamed since: the copy still has the name it was shared under
        self.c.req(10, dict(user_id=owner, session_id=sid, session_name="Private plans"))
        r = self.c.req(20, {"user_id": viewer, "share_id": share_id})
        self.assertEqual(r["type"], 20, r)
        self.assertEqual(r["data"]["forked_from"], {"share_id": share_id})
        self.assertEqual(r["data"]["session_name"], shared_as + " (fork)")
        fork = r["data"]["session_id"]
        chat = json.loads(self.c.req(2, {"user_id": viewer, "session_id": fork})["data"]["chat"])
        self.assertEqual([m["role"] for m in chat], ["user", "assistant"])
        self.assertEqual(self.db.one("select user_id::text from chat_sessions where session_id = %s", (fork,)),
                         viewer)
        # the viewer can go on in the copy
        self.assertEqual(self.c.chat(viewer, fork, "and then?")["type"], 3)
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s", (sid,)), 4)
        self.c.req(23, {"user_id": owner, "share_id": share_id})
        self.assertError(self.c.req(20, {"user_id": viewer, "share_id": share_id}), 31)
        self.assertError(self.c.req(20, {"user_id": viewer, "share_id": "B" * 32}), 31)
        self.assertError(self.c.req(20, {"user_id": str(uuid.uuid4()), "share_id": share_id}), 3)
        self.assertError(self.c.req(20, {"user_id": viewer, "share_id": share_id, "session_id": sid, "seq": 0}),
                         17, "share_id")

    def test_someone_elses_session_and_links(self):
        owner, other = self.db.add_user(), self.db.add_user()
        sid = self.chat_session(owner, 1)
        self.assertError(self.share(other, sid), 18)
        share_id = self.share(owner, sid)["data"]["share_id"]
        self.assertEqual(self.c.req(22, {"user_id": other})["data"]["shares"], [])
        self.assertError(self.c.req(23, {"user_id": other, "share_id": share_id}), 31)
        self.assertEqual(self.get("/s/%s.json" % share_id)[0], 200)  # untouched
        self.assertError(self.c.req(22, {"user_id": str(uuid.uuid4())}), 3)

    def test_bad_share_requests(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 1)
        empty = self.db.add_session(uid)
        self.assertError(self.share(uid, sid, seq=99), 17, "seq")
        self.assertError(self.share(uid, empty), 17, "no messages")
        self.assertError(self.share(uid, sid, expires_in_seconds=10), 17, "expires_in_seconds")
        self.assertError(self.share(uid, sid, expires_in_seconds="soon"), 17, "expires_in_seconds")
        self.assertError(self.share(uid, sid, max_views=0), 17, "max_views")
        self.assertError(self.share(uid, sid, seq=-1), 17, "seq")
        self.assertError(self.share(uid, str(uuid.uuid4())), 18)
        for bad in ("", "x" * 32 + "y", "short", 42, None, "A" * 31 + "="):
            self.assertError(self.c.req(23, {"user_id": uid, "share_id": bad}), 17, "share_id")
        self.assertEqual(self.db.one("select count(*) from share_links where user_id = %s", (uid,)), 0)

    def test_expiry_is_reported(self):
        uid = self.db.add_user()
        sid = self.chat_session(uid, 1)
        d = self.share(uid, sid, expires_in_seconds=3600, max_views=5)["data"]
        self.assertRegex(d["expires_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(d["max_views"], 5)
        listed = self.c.req(22, {"user_id": uid})["data"]["shares"][0]
        self.assertEqual((listed["expires_at"], listed["views"], listed["session_id"], listed["active"]),
                         (d["expires_at"], 0, sid, True))


class Organize(ShareCase):
    def organize(self, uid, sid, c=None, **kw):
        d = dict(user_id=uid, session_id=sid)
        d.update(kw)
        return (c or self.c).req(24, d)

    def test_pin_archive_tag(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, "A", messages=[("user", "q"), ("assistant", "a")])
        r = self.organize(uid, sid, pinned=True, tags=["  Work ", "work", "Ideas", "two words"])
        self.assertEqual(r["data"], {"user_id": uid, "session_id": sid, "pinned": True, "archived": False,
                                     "tags": ["Work", "Ideas", "two words"]})
        r = self.organize(uid, sid, archived=True)
        self.assertEqual((r["data"]["pinned"], r["data"]["archived"], r["data"]["tags"]),
                         (True, True, ["Work", "Ideas", "two words"]))
        page = self.c.req(9, {"user_id": uid, "session_id": sid})["data"]
        self.assertEqual((page["pinned"], page["archived"], page["tags"]), (True, True, ["Work", "Ideas", "two words"]))
        r = self.organize(uid, sid, tags=[], pinned=False)
        self.assertEqual((r["data"]["pinned"], r["data"]["tags"]), (False, []))

    def test_bad_organize_requests_change_nothing(self):
        uid, other = self.db.add_user(), self.db.add_user()
        sid = self.db.add_session(uid, "A")
        self.organize(uid, sid, tags=["keep"])
        for kw, field in ((dict(pinned="yes"), "pinned"), (dict(archived=1), "archived"),
                          (dict(tags="work"), "tags"), (dict(tags=["x"] * 21), "tags"),
                          (dict(tags=["x" * 41]), "tags"), (dict(tags=["a\nb"]), "tags"),
                          (dict(tags=["  "]), "tags"), (dict(tags=[7]), "tags"),
                          (dict(tags=["a\u202eb"]), "tags")):
            self.assertError(self.organize(uid, sid, **kw), 17, field)
        self.assertError(self.organize(other, sid, pinned=True), 18)
        self.assertError(self.organize(uid, str(uuid.uuid4()), pinned=True), 18)
        self.assertEqual(self.db.query("select pinned, archived, tags from chat_sessions where session_id = %s",
                                       (sid,)), [(False, False, ["keep"])])
        self.assertEqual(self.organize(uid, sid, tags=["x" * 40] * 1 + ["y"] * 19)["type"], 24)

    def test_code_1_without_filter_is_unchanged(self):
        uid = self.db.add_user()
        a = self.db.add_session(uid, "A")
        b = self.db.add_session(uid, "B")
        self.organize(uid, a, archived=True, pinned=True, tags=["t"])
        r = self.c.req(1, {"user_id": uid})
        self.assertEqual(sorted(r["data"]["session_info"], key=lambda s: s["session_name"]),
                         [{"session_id": a, "session_name": "A"}, {"session_id": b, "session_name": "B"}])
        paged = self.c.req(1, {"user_id": uid, "limit": 10})["data"]["session_info"]
        self.assertEqual({s["session_id"]: (s["pinned"], s["archived"], s["tags"]) for s in paged},
                         {a: (True, True, ["t"]), b: (False, False, [])})

    def test_filter_pages_pinned_first(self):
        uid = self.db.add_user()
        sids = [self.db.add_session(uid, "S%d" % i) for i in range(7)]
        for i in (1, 4):
            self.organize(uid, sids[i], pinned=True)
        self.organize(uid, sids[2], archived=True, tags=["Old"])
        self.organize(uid, sids[3], tags=["old", "x"])
        newest_first = list(reversed(sids))
        want = [s for s in newest_first if s in (sids[1], sids[4])] + \
               [s for s in newest_first if s not in (sids[1], sids[4], sids[2])]
        got, before = [], None
        while True:
            d = {"user_id": uid, "filter": {}, "limit": 2}
            if before:
                d["before"] = before
            r = self.c.req(1, d)["data"]
            got += [s["session_id"] for s in r["session_info"]]
            if not r["has_more"]:
                break
            before = r["next_before"]
        self.assertEqual(got, want)
        arch = self.c.req(1, {"user_id": uid, "filter": {"archived": True}})["data"]["session_info"]
        self.assertEqual([(s["session_id"], s["archived"]) for s in arch], [(sids[2], True)])
        old = self.c.req(1, {"user_id": uid, "filter": {"tag": "OLD"}})["data"]["session_info"]
        self.assertEqual([s["session_id"] for s in old], [sids[3]])
        pinned = self.c.req(1, {"user_id": uid, "filter": {"pinned": True}})["data"]["session_info"]
        self.assertEqual([s["session_id"] for s in pinned], [sids[4], sids[1]])
        for bad in ({"filter": []}, {"filter": {"archived": "yes"}}, {"filter": {"tag": ""}},
                    {"filter": {}, "before": "123:" + sids[0]}):
            d = {"user_id": uid}
            d.update(bad)
            self.assertError(self.c.req(1, d), 17)

    def test_search_qualifiers(self):
        uid = self.db.add_user()
        a = self.db.add_session(uid, "Alpha", messages=[("user", "banana bread recipe")])
        b = self.db.add_session(uid, "Beta", messages=[("user", "banana smoothie")])
        c = self.db.add_session(uid, "Gamma", messages=[("user", "apple pie")])
        self.organize(uid, a, tags=["Food Ideas"])
        self.organize(uid, b, pinned=True, archived=True)

        def hits(q):
            r = self.c.req(11, {"user_id": uid, "query": q})
            self.assertEqual(r["type"], 11, r)
            return sorted((h["session_id"], h["seq"]) for h in r["data"]["hits"])

        self.assertEqual(hits("banana"), sorted([(a, 0), (b, 0)]))
        self.assertEqual(hits('banana tag:"food ideas"'), [(a, 0)])
        self.assertEqual(hits("banana is:pinned"), [(b, 0)])
        self.assertEqual(hits("IS:ARCHIVED banana"), [(b, 0)])
        self.assertEqual(hits("is:pinned"), [(b, None)])
        self.assertEqual(hits("tag:nothing"), [])
        self.assertEqual(hits("apple"), [(c, 0)])
        self.assertError(self.c.req(11, {"user_id": uid, "query": "tag:\"open"}), 17, "query")
        self.assertError(self.c.req(11, {"user_id": uid, "query": "tag:a tag:b"}), 17, "query")

    def test_changes_reach_other_tabs(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, "A")
        other = self.chatd.client()
        try:
            self.assertEqual(other.req(14, {"user_id": uid})["type"], 14)
            self.organize(uid, sid, pinned=True, tags=["t"])
            frames = drain_until(other, lambda m: m.get("type") == 15
                                 and m["data"].get("kind") == "session_changed")
            self.assertEqual(events_of(frames)[-1], {"kind": "session_changed", "session_id": sid, "pinned": True,
                                                     "archived": False, "tags": ["t"]})
        finally:
            other.close()


if __name__ == "__main__":
    unittest.main()
