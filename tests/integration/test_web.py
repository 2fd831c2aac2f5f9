"""Issue 14: how chatd serves its page, over plain HTTP (the browser tests
are test_page.py): content types, validators and 304s, the
Content-Security-Policy, the libraries from Debian's directories, names
that must never reach the file system, no directory listing, WEB_DIR=
turning the page off, /client-config (and its token check), and code 5's
"mine"."""

import http.client
import json
import os
import re
import shutil
import tempfile
import unittest

from harness import SOURCE_DIR, Chatd, StackCase, cleanup
from test_auth import SECRET, token
from test_http import request


class Served(StackCase):
    DB_PREFIX = "chatd_web"

    def get(self, path, headers=None, port=None):
        return request(port or self.chatd.port, "GET", path, headers=headers)

    def test_page_and_its_types(self):
        for path, ctype, needle in (
                ("/", "text/html; charset=utf-8", b"<!doctype html>"),
                ("/js/app.js", "text/javascript; charset=utf-8", b"import"),
                ("/style.css", "text/css; charset=utf-8", b"prefers-color-scheme"),
                ("/icon.svg", "image/svg+xml", b"<svg"),
                ("/lib/marked/marked.min.js", "text/javascript; charset=utf-8", b"marked"),
                ("/lib/dompurify/purify.min.js", "text/javascript; charset=utf-8", b"DOMPurify"),
                ("/lib/highlight/highlight.min.js", "text/javascript; charset=utf-8", b"hljs"),
                ("/lib/highlight/styles/a11y-dark.css", "text/css; charset=utf-8", b"hljs")):
            status, h, body = self.get(path)
            self.assertEqual(status, 200, path)
            self.assertEqual(h["content-type"], ctype, path)
            self.assertIn(needle, body, path)
            self.assertEqual(h["cache-control"], "no-cache", path)
            self.assertRegex(h["etag"], r'^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$', path)
            self.assertEqual(h["x-content-type-options"], "nosniff", path)
        with open(os.path.join(SOURCE_DIR, "web", "index.html"), "rb") as f:
            self.assertEqual(self.get("/")[2], f.read())

    def test_revalidation_is_a_304_without_a_body(self):
        status, h, _ = self.get("/js/app.js")
        etag = h["etag"]
        for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
            status, h2, body = self.get("/js/app.js", {"If-None-Match": inm})
            self.assertEqual(status, 304, inm)
            self.assertEqual(body, b"")
            self.assertEqual(h2["etag"], etag)
        status, _, body = self.get("/js/app.js", {"If-None-Match": '"stale"'})
        self.assertEqual(status, 200)
        self.assertGreater(len(body), 1000)

    def test_policy_allows_only_the_page_itself(self):
        status, h, _ = self.get("/", {"Host": "chat.example.org:8443"})
        self.assertEqual(status, 200)
        csp = [v.strip() for k, v in request_headers_all(self.chatd.port, "/", "chat.example.org:8443")
               if k == "content-security-policy"]
        ours = [p for p in csp if "ws://chat.example.org:8443" in p]
        self.assertEqual(len(ours), 1, csp)
        p = ours[0]
        self.assertIn("script-src 'self';", p)
        self.assertIn("style-src 'self';", p)
        self.assertIn("connect-src 'self' ws://chat.example.org:8443 wss://chat.example.org:8443;", p)
        self.assertIn("frame-ancestors 'none'", p)
        self.assertNotIn("unsafe", " ".join(csp))
        # No inline script or style in the page: the policy would block it.
        html = self.get("/")[2].decode()
        self.assertIsNone(re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html))
        self.assertNotIn("<style", html)
        self.assertNotIn(" style=", html)
        self.assertNotIn(" on", re.sub(r"<!--.*?-->", "", html).replace(" only-narrow", ""))

    def test_names_that_never_reach_the_file_system(self):
        for path in ("/../README.md", "/js/../../README.md", "/%2e%2e/README.md",
                     "/.gitignore", "/js/", "/js", "/lib/", "/lib/marked/", "/lib/marked/../../../../etc/passwd",
                     "/lib/nope/x.js", "/lib/marked/%2e%2e%2f%2e%2e%2fpasswd",
                     "/web/index.html", "/missing.js", "/js\\app.js", "/..%5c..%5cREADME.md"):
            status, h, body = self.get(path)
            self.assertEqual(status, 404, path)
            self.assertEqual(json.loads(body), {"message": "Not Found", "data": None}, path)
        # A NUL: libwebsockets drops the connection before chatd sees it.
        try:
            status = self.get("/index.html%00.js")[0]
        except (ConnectionError, OSError, http.client.HTTPException):
            status = None
        self.assertNotEqual(status, 200)
        # libwebsockets resolves dot segments before chatd sees the path, so
        # one that stays inside is simply that file.
        self.assertEqual(self.get("/js/%2e%2e/index.html")[2], self.get("/")[2])
        # Only GET reads the page.
        status, h, _ = request(self.chatd.port, "POST", "/js/app.js", body=b"x")
        self.assertEqual(status, 405)
        self.assertEqual(h["allow"], "GET, OPTIONS")

    def test_client_config(self):
        status, h, body = self.get("/client-config")
        self.assertEqual(status, 200)
        c = json.loads(body)
        self.assertEqual(c["auth_mode"], "none")
        self.assertEqual(c["default_user"], "")
        self.assertEqual(c["max_file_bytes"], 10 * 1024 * 1024)
        self.assertIn("png", c["upload_types"])

    def test_code_5_mine_lists_the_users_models(self):
        uid = self.db.add_user(models=(5, 8))
        c = self.chatd.client()
        try:
            everything = c.req(5, {"user_id": uid})["data"]["models"]
            self.assertGreater(len(everything), 2)
            mine = c.req(5, {"user_id": uid, "mine": True})["data"]
            names = sorted(r[0] for r in self.db.query(
                "select model_name from model_details where model_id in (5, 8)"))
            self.assertEqual(mine, {"models": names, "mine": True})
            self.assertEqual(c.req(5, {"user_id": uid, "mine": False})["data"]["models"], everything)
            bad = c.req(5, {"user_id": uid, "mine": "yes"})
            self.assertEqual(bad["code"], 17)
            self.assertIn("mine", bad["error"])
            self.assertEqual(c.req(5, {"user_id": "00000000-0000-4000-8000-000000000000", "mine": True})["code"], 3)
            # An admin's change is seen at once.
            self.db.query("update user_data set models = '{4}' where user_id = %s", (uid,))
            self.assertEqual(c.req(5, {"user_id": uid, "mine": True})["data"]["models"],
                             [self.db.one("select model_name from model_details where model_id = 4")])
        finally:
            c.close()


def request_headers_all(port, path, host):
    """Every header of a GET, repeated ones included, as (name, value)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        r.read()
        return [(k.lower(), v) for k, v in r.getheaders()]
    finally:
        conn.close()


class Settings(unittest.TestCase):
    """WEB_DIR= turns the page off; a bad WEB_LIBS stops chatd at start;
    a default user is offered; with AUTH_MODE=jwt, /client-config checks a
    token it is given."""

    @classmethod
    def setUpClass(cls):
        from harness import Database
        cls.db = Database("chatd_web_settings")

    @classmethod
    def tearDownClass(cls):
        cleanup(cls.db)

    def test_page_off(self):
        c = Chatd(self.db, WEB_DIR="")
        try:
            for path in ("/", "/js/app.js", "/lib/marked/marked.min.js"):
                self.assertEqual(request(c.port, "GET", path)[0], 404, path)
            self.assertEqual(request(c.port, "GET", "/healthz")[0], 200)
        finally:
            c.stop()

    def test_bad_libs_refused_at_start(self):
        with self.assertRaises(RuntimeError) as e:
            Chatd(self.db, WEB_LIBS="marked")
        self.assertIn("WEB_LIBS", str(e.exception))

    def test_a_web_dir_of_ones_own(self):
        d = tempfile.mkdtemp(prefix="chatd-web-")
        try:
            with open(os.path.join(d, "index.html"), "w") as f:
                f.write("<p>mine</p>")
            os.symlink("/etc", os.path.join(d, "etc"))
            c = Chatd(self.db, WEB_DIR=d, WEB_DEFAULT_USER="bdff475a-a7f7-4590-9595-15fd8e6c7d0c")
            try:
                self.assertEqual(request(c.port, "GET", "/")[2], b"<p>mine</p>")
                self.assertEqual(request(c.port, "GET", "/etc")[0], 404)  # a directory: never listed
                self.assertEqual(request(c.port, "GET", "/etc/hostname")[0], 404)  # no served type
                cfg = json.loads(request(c.port, "GET", "/client-config")[2])
                self.assertEqual(cfg["default_user"], "bdff475a-a7f7-4590-9595-15fd8e6c7d0c")
            finally:
                c.stop()
        finally:
            shutil.rmtree(d)

    def test_jwt_client_config_checks_the_token(self):
        c = Chatd(self.db, AUTH_MODE="jwt", JWT_SECRET=SECRET, WEB_DEFAULT_USER="bdff475a-a7f7-4590-9595-15fd8e6c7d0c")
        try:
            uid = self.db.add_user()
            status, _, body = request(c.port, "GET", "/client-config")
            self.assertEqual(status, 200)
            cfg = json.loads(body)
            self.assertEqual((cfg["auth_mode"], cfg["default_user"]), ("jwt", ""))  # no user offered
            status, _, body = request(c.port, "GET", "/client-config",
                                      headers={"Authorization": "Bearer " + token(uid)})
            self.assertEqual((status, json.loads(body)["user_id"]), (200, uid))
            for bad in (token(uid, secret="y" * 40), token(uid, exp_in=-60), "garbage"):
                status, h, _ = request(c.port, "GET", "/client-config", headers={"Authorization": "Bearer " + bad})
                self.assertEqual(status, 401, bad)
                self.assertIn("www-authenticate", h)
        finally:
            c.stop()


if __name__ == "__main__":
    unittest.main()
