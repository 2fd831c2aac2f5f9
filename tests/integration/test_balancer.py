"""Issue 13: three chatd instances on one PostgreSQL and one Redis behind a
real nginx (round robin, no sticky sessions), as docker/nginx.conf runs
them. Any instance serves any request: turns on one session from clients
spread over the instances run in order with the right history; an upload
made through one instance is served and used by the others; an admin's SQL
is seen at once on every instance; FLUSHALL during all of it changes no
answer; behind a trusted proxy the per-address cap counts the client."""

import json
import re
import shutil
import tempfile
import threading
import time
import unittest

import websocket

from harness import MODEL, Agent, Chatd, Database, behind_nginx, cleanup, redis_client, wait_for
from test_http import PNG, multipart, request


def metric(port, name):
    _, _, body = request(port, "GET", "/metrics")
    m = re.search(r"^%s (\d+)" % re.escape(name), body.decode(), re.M)
    return int(m.group(1)) if m else None


class Balancer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = Database("chatd_balancer")
        cls.public = tempfile.mkdtemp(prefix="chatd-shared-public-")
        cls.agent = Agent(AGENT_DELAY_MS=200)
        try:
            # One uploads directory for all, as a shared volume would be.
            cls.chatds, cls.nginx = behind_nginx(cls.db, 3, cls.agent.port, PUBLIC_DIR=cls.public,
                                                 TRUSTED_PROXIES="127.0.0.1",
                                                 MAX_CHAT_HISTORY_CONTEXT=200, TURN_LEASE_SECONDS=4)
        except BaseException:
            cleanup(cls.agent, cls.db)
            shutil.rmtree(cls.public, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cleanup(cls.nginx, *cls.chatds, cls.agent, cls.db)
        finally:
            shutil.rmtree(cls.public, ignore_errors=True)

    def test_round_robin_reaches_every_instance(self):
        clients = [self.nginx.client() for _ in range(9)]
        try:
            uid = self.db.add_user()
            for c in clients:
                self.assertEqual(c.req(0, {"user_id": uid})["type"], 0)
            counts = [metric(c.port, "chatd_connections_open") for c in self.chatds]
            self.assertTrue(all(n >= 1 for n in counts), counts)
            self.assertGreaterEqual(sum(counts), 9)
        finally:
            for c in clients:
                c.close()

    def test_turns_through_the_balancer_run_in_order(self):
        uid = self.db.add_user(balance=10)
        c = self.nginx.client()
        sid = c.chat(uid, "NEW", "turn 0")["data"]["session_id"]
        c.close()
        results, errors = [], []

        def client(i):
            cl = self.nginx.client(timeout=60)  # each lands where nginx sends it
            try:
                for k in range(2):
                    msg = "client %d turn %d" % (i, k)
                    r = cl.chat(uid, sid, msg, stream=(k == 1))
                    while r.get("type") == 7:
                        r = cl.recv()
                    (results if r.get("type") == 3 and "data" in r else errors).append((msg, r))
            finally:
                cl.close()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        rows = self.db.query("select seq, content from chat_messages where session_id = %s order by seq", (sid,))
        self.assertEqual([r[0] for r in rows], list(range(26)))
        calls = [r for r in self.agent.requests()
                 if r["method"] in ("Process", "ProcessStream") and r["session_id"] == sid]
        self.assertEqual(sorted(len(json.loads(p["chat_history"] or "[]")) for p in calls), list(range(0, 26, 2)))
        for p in calls:
            history = json.loads(p["chat_history"] or "[]")
            self.assertEqual([m["content"] for m in history], [r[1] for r in rows[:len(history)]])

    def test_upload_on_one_instance_used_on_the_others(self):
        uid = self.db.add_user(balance=10)
        body, ctype = multipart({"user_id": uid, "session_id": "NEW", "model_name": MODEL, "session_prompt": ""},
                                ("cat.png", PNG, "image/png"))
        st, _, data = request(self.nginx.port, "POST", "/upload", body, {"Content-Type": ctype})
        self.assertEqual(st, 202, data)
        d = json.loads(data)["data"]
        for inst in self.chatds:  # every instance serves it, and takes it in a turn
            st, h, png = request(inst.port, "GET", "/uploads/" + d["fileName"])
            self.assertEqual((st, png), (200, PNG))
            c = inst.client()
            r = c.chat(uid, d["sessionId"], "what is in it?", file_name=d["fileName"])
            self.assertEqual(r["type"], 3, r)
            c.close()
        # and the session exports through nginx, streamed
        st, h, out = request(self.nginx.port, "GET", "/sessions/%s/export?format=json&user_id=%s"
                             % (d["sessionId"], uid))
        self.assertEqual(st, 200)
        self.assertEqual(h.get("transfer-encoding"), "chunked")
        self.assertEqual([m["role"] for m in json.loads(out)["messages"]].count("file"), 3)

    def test_admin_sql_seen_at_once_everywhere(self):
        uid = self.db.add_user(models=(8,), balance=10)
        clients = [inst.client() for inst in self.chatds]
        try:
            for c in clients:  # cached on every instance
                self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "Test User")
                self.assertEqual(c.chat(uid, "NEW", "no", model="gpt-4-turbo")["code"], 7)
            self.db.query("update user_data set models = array[4, 8], username = 'Renamed'"
                          " where user_id = %s", (uid,))
            # No TTL to wait for: each instance hears the commit's NOTIFY
            # (a moment after the commit returns to the admin; a copy in
            # memory answers fast enough to ask within that moment), and
            # from then on never answers the old name. A turn's checks
            # read PostgreSQL itself.
            for c in clients:
                wait_for(lambda: c.req(0, {"user_id": uid})["data"]["username"] == "Renamed", "the new name")
                for _ in range(5):
                    self.assertEqual(c.req(0, {"user_id": uid})["data"]["username"], "Renamed")
                self.assertEqual(c.chat(uid, "NEW", "yes", model="gpt-4-turbo")["type"], 3)
            self.db.query("update user_data set models = array[8] where user_id = %s", (uid,))
            for c in clients:
                self.assertEqual(c.chat(uid, "NEW", "no again", model="gpt-4-turbo")["code"], 7)
            # a session an admin deletes is gone from every instance's list
            sid = self.db.add_session(uid, name="by SQL")
            listed = lambda c: [s["session_id"] for s in c.req(1, {"user_id": uid})["data"]["session_info"]]
            for c in clients:
                wait_for(lambda: sid in listed(c), "the new session listed")
            self.db.query("delete from chat_sessions where session_id = %s", (sid,))
            for c in clients:
                wait_for(lambda: sid not in listed(c), "the deleted session gone")
                for _ in range(5):
                    self.assertNotIn(sid, listed(c))
        finally:
            for c in clients:
                c.close()

    def test_flushall_changes_no_answer(self):
        uid = self.db.add_user(balance=10)
        stop = threading.Event()
        r = redis_client()

        def flusher():
            while not stop.is_set():
                r.flushall()
                time.sleep(0.02)
        f = threading.Thread(target=flusher)
        f.start()
        try:
            c = self.nginx.client()
            sid = c.chat(uid, "NEW", "first")["data"]["session_id"]
            for k in range(8):
                c.close()
                c = self.nginx.client()  # a new instance, likely
                r3 = c.chat(uid, sid, "turn %d" % k)
                self.assertEqual(r3["type"], 3, r3)
                self.assertIn("[history=%d " % (2 * (k + 1)), r3["data"]["message"])
                names = [s["session_id"] for s in c.req(1, {"user_id": uid})["data"]["session_info"]]
                self.assertEqual(names, [sid])
            c.close()
        finally:
            stop.set()
            f.join()


class TrustedProxy(unittest.TestCase):
    """X-Forwarded-For counts only from TRUSTED_PROXIES."""

    def setUp(self):
        self.db = Database("chatd_proxy")
        self.trusting = Chatd(self.db, TRUSTED_PROXIES="127.0.0.1", MAX_CONNECTIONS_PER_IP=2)
        self.plain = Chatd(self.db, MAX_CONNECTIONS_PER_IP=2)
        self.addCleanup(cleanup, self.trusting, self.plain, self.db)

    def connect(self, chatd, xff):
        try:
            ws = websocket.create_connection(chatd.url, timeout=10, header=["X-Forwarded-For: " + xff])
        except websocket.WebSocketBadStatusException as e:
            return e.status_code, None
        return 101, ws

    def test_cap_counts_the_forwarded_client(self):
        open_ = []
        try:
            for xff in ("10.0.0.1", "203.0.113.9, 10.0.0.1"):
                st, ws = self.connect(self.trusting, xff)
                self.assertEqual(st, 101)
                open_.append(ws)
            # the same client a third time: its own cap, not the proxy's
            self.assertEqual(self.connect(self.trusting, "10.0.0.1")[0], 503)
            st, ws = self.connect(self.trusting, "10.0.0.2")
            self.assertEqual(st, 101)
            open_.append(ws)
            # garbage is not an address: the proxy's own counts
            st, ws = self.connect(self.trusting, "<script>")
            self.assertEqual(st, 101)
            open_.append(ws)
            # a chatd that trusts no proxy ignores the header
            for xff in ("10.0.0.7", "10.0.0.8"):
                st, ws = self.connect(self.plain, xff)
                self.assertEqual(st, 101)
                open_.append(ws)
            self.assertEqual(self.connect(self.plain, "10.0.0.9")[0], 503)
            self.assertIn("addr=10.0.0.1 reason=max_connections_per_ip", self.trusting.logs())
        finally:
            for ws in open_:
                ws.close()


if __name__ == "__main__":
    unittest.main()
