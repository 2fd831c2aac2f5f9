"""Issue 25: data that leaves when it should and money that never
overspends. Temporary chats (code 3 temporary, code 25 keep) and retention
are deleted by the sweeper, run here as `chatd retention` with the
sweeper's clock moved ahead by its test setting (SWEEP_CLOCK_OFFSET_SECONDS),
never by waiting; erasure (`chatd erase-user`, chatd_erase_user()) leaves no
text, file or key of the user anywhere; budgets are reserved with the
turn's lease, so that concurrent turns on several instances never spend
past a cap or below a zero balance."""

import concurrent.futures
import io
import json
import os
import subprocess
import unittest
import uuid
import zipfile
from decimal import Decimal

from harness import (CHATD_BIN, MODEL, Agent, Chatd, ClientCase, Database, cleanup, redis_client,
                     wait_for)
from test_http import multipart, request

DAY = 86400
LLAMA = 8  # MODEL's id


def upload(port, uid, sid, name, data):
    """POST /upload as the client does: the stored file's name."""
    body, ctype = multipart({"user_id": uid, "session_id": sid, "model_name": MODEL,
                             "session_prompt": ""}, (name, data, "text/plain"))
    status, _, out = request(port, "POST", "/upload", body, {"Content-Type": ctype})
    assert status == 202, (status, out)
    return json.loads(out)["data"]["fileName"]


def admin(chatd, *args, **env):
    """Runs `chatd <args>` with chatd's own settings (plus env): its
    exit status and output."""
    e = dict(chatd.env)
    e.update({k: str(v) for k, v in env.items()})
    p = subprocess.run([CHATD_BIN] + list(args), env=e, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


class LifecycleCase(ClientCase):
    DB_PREFIX = "chatd_life"

    def sessions(self, uid, **flt):
        d = {"user_id": uid}
        if flt:
            d["filter"] = flt
            d["limit"] = 100
        r = self.c.req(1, d)
        self.assertEqual(r["type"], 1, r)
        return [s["session_id"] for s in r["data"]["session_info"]]

    def exists(self, sid):
        return self.db.one("select count(*) from chat_sessions where session_id = %s", (sid,)) == 1


class Temporary(LifecycleCase):
    def test_temporary_chat_is_hidden_and_kept_on_request(self):
        uid = self.db.add_user()
        ordinary = self.c.chat(uid, "NEW", "an ordinary chat")["data"]["session_id"]
        r = self.c.chat(uid, "NEW", "a secret plan zebra", temporary=True)
        self.assertEqual(r["type"], 3, r)
        self.assertIs(r["data"]["temporary"], True)
        tmp = r["data"]["session_id"]
        self.assertEqual(self.c.chat(uid, tmp, "more zebra")["type"], 3)
        # not listed, not searched, not in the jsonl export; code 9 says so
        self.assertEqual(self.sessions(uid), [ordinary])
        self.assertEqual(self.sessions(uid, temporary=True), [tmp])
        hits = self.c.req(11, {"user_id": uid, "query": "zebra"})["data"]["hits"]
        self.assertEqual(hits, [])
        page = self.c.req(9, {"user_id": uid, "session_id": tmp})["data"]
        self.assertIs(page["temporary"], True)
        self.assertIs(self.c.req(9, {"user_id": uid, "session_id": ordinary})["data"]["temporary"],
                      False)
        status, _, body = request(self.chatd.port, "GET", "/export?user_id=%s&format=jsonl" % uid)
        self.assertEqual(status, 200)
        self.assertNotIn(b"zebra", body)
        self.assertIn(b"an ordinary chat", body)
        # only a new session can be temporary
        r = self.c.chat(uid, ordinary, "x", temporary=True)
        self.assertError(r, 17, "Invalid field")
        # kept: an ordinary session from now on
        r = self.c.req(25, {"user_id": uid, "session_id": tmp})
        self.assertEqual(r["data"], {"user_id": uid, "session_id": tmp, "temporary": False})
        self.assertEqual(sorted(self.sessions(uid)), sorted([ordinary, tmp]))
        hits = self.c.req(11, {"user_id": uid, "query": "zebra"})["data"]["hits"]
        self.assertTrue(hits)
        self.assertEqual({h["session_id"] for h in hits}, {tmp})
        # someone else's session is not found
        other = self.db.add_user()
        self.assertError(self.c.req(25, {"user_id": other, "session_id": ordinary}), 18)

    def test_temporary_chat_goes_after_its_hours_with_its_file(self):
        uid = self.db.add_user()
        tmp = self.c.chat(uid, "NEW", "to forget", temporary=True)["data"]["session_id"]
        # a file in it, on disk
        name = upload(self.chatd.port, uid, tmp, "notes.txt", b"temporary notes")
        self.assertEqual(self.c.chat(uid, tmp, "with the file", file_name=name)["type"], 3)
        path = os.path.join(self.chatd.env["PUBLIC_DIR"], name)
        self.assertTrue(os.path.exists(path))
        kept = self.c.chat(uid, "NEW", "to keep", temporary=True)["data"]["session_id"]
        self.c.req(25, {"user_id": uid, "session_id": kept})
        # an hour short of TEMPORARY_CHAT_HOURS (24): nothing is due
        rc, out = admin(self.chatd, "retention", "--dry-run", SWEEP_CLOCK_OFFSET_SECONDS=23 * 3600)
        self.assertEqual(rc, 0, out)
        self.assertNotIn(tmp, out)
        # a day later: exactly the temporary chat
        rc, out = admin(self.chatd, "retention", "--dry-run", SWEEP_CLOCK_OFFSET_SECONDS=DAY + 60)
        self.assertEqual(rc, 0, out)
        self.assertIn("%s\tuser=%s\treason=temporary" % (tmp, uid), out)
        self.assertNotIn(kept, out)
        self.assertTrue(self.exists(tmp))  # a dry run deletes nothing
        rc, out = admin(self.chatd, "retention", SWEEP_CLOCK_OFFSET_SECONDS=DAY + 60)
        self.assertEqual(rc, 0, out)
        self.assertFalse(self.exists(tmp))
        self.assertTrue(self.exists(kept))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.db.one("select count(*) from uploaded_files where stored_name = %s",
                                     (name,)), 0)
        self.assertError(self.c.req(9, {"user_id": uid, "session_id": tmp}), 18)


class Retention(LifecycleCase):
    def test_retention_deletes_exactly_what_it_should_under_concurrent_turns(self):
        default, short, forever = (self.db.add_user(balance=100) for _ in range(3))
        self.db.query("update user_data set retention_days = 7 where user_id = %s", (short,))
        self.db.query("update user_data set retention_days = 0 where user_id = %s", (forever,))
        old = {u: self.db.add_session(u, messages=[("user", "old"), ("assistant", "reply")])
               for u in (default, short, forever)}
        pinned = self.db.add_session(default, messages=[("user", "pinned")])
        self.db.query("update chat_sessions set pinned = true where session_id = %s", (pinned,))
        # last activity 40 days ago for these; RETENTION_DAYS is 30
        self.db.query("update chat_sessions set updated_at = now() - interval '40 days'"
                      " where session_id = any(%s::uuid[])", (list(old.values()) + [pinned],))
        recent_short = self.db.add_session(short, messages=[("user", "ten days")])
        self.db.query("update chat_sessions set updated_at = now() - interval '10 days'"
                      " where session_id = %s", (recent_short,))
        busy = [self.db.add_session(default, messages=[("user", "busy")]) for _ in range(4)]
        env = dict(RETENTION_DAYS=30)
        rc, out = admin(self.chatd, "retention", "--dry-run", **env)
        self.assertEqual(rc, 0, out)
        due = {old[default], old[short], recent_short}
        self.assertEqual({line.split("\t")[0] for line in out.splitlines() if "\t" in line}, due, out)
        self.assertIn("would delete 3 sessions", out)

        # turns go on in other sessions while the sweep runs
        def turns(i):
            c = self.chatd.client()
            try:
                return [c.chat(default, busy[i], "turn %d" % k)["type"] for k in range(5)]
            finally:
                c.close()
        with concurrent.futures.ThreadPoolExecutor(5) as ex:
            running = [ex.submit(turns, i) for i in range(4)]
            rc, out = admin(self.chatd, "retention", **env)
            results = [f.result() for f in running]
        self.assertEqual(rc, 0, out)
        self.assertIn("deleted 0 temporary and 3 expired sessions", out)
        self.assertEqual(results, [[3] * 5] * 4)
        for sid in due:
            self.assertFalse(self.exists(sid))
        for sid in [old[forever], pinned] + busy:
            self.assertTrue(self.exists(sid))
        # the money stays on the books
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id = %s",
                                     (default,)), 20)

    def test_the_server_sweeps_and_counts(self):
        uid = self.db.add_user()
        sid = self.db.add_session(uid, messages=[("user", "stale")])
        self.db.query("update chat_sessions set updated_at = now() - interval '3 days'"
                      " where session_id = %s", (sid,))
        chatd = Chatd(self.db, agent_port=self.agent.port, RETENTION_DAYS=2, SWEEP_SECONDS=1)
        self.addCleanup(cleanup, chatd)
        wait_for(lambda: not self.exists(sid), "the sweeper deletes the stale session")

        def counted():
            _, _, m = request(chatd.port, "GET", "/metrics")
            return b'chatd_retention_deleted_total{reason="retention"} 1' in m
        wait_for(counted, "the deletion is counted")
        # the sweep's line comes once the whole sweep is over (the count, at once)
        wait_for(lambda: "event=sweep ok=1 temporary=0 retention=1" in chatd.logs(), "the sweep logged")


def redis_values(r):
    """Every key of Redis and its value(s), as bytes."""
    out = []
    for key in r.scan_iter(count=1000):
        t = r.type(key)
        if t == b"string":
            v = [r.get(key) or b""]
        elif t == b"hash":
            v = [b"%s=%s" % kv for kv in r.hgetall(key).items()]
        elif t == b"list":
            v = r.lrange(key, 0, -1)
        elif t == b"set":
            v = list(r.smembers(key))
        elif t == b"zset":
            v = r.zrange(key, 0, -1)
        elif t == b"stream":
            v = [b"%s=%s" % kv for _, f in r.xrange(key) for kv in f.items()]
        else:
            v = []
        out.append((key, b"\n".join(x if isinstance(x, bytes) else str(x).encode() for x in v)))
    return out


class Erasure(LifecycleCase):
    def populate(self, uid, marker):
        """Everything a user can leave: chats (a branch, a rename, a
        rating), a file, a share link, an import; their copies in Redis."""
        sid = self.c.chat(uid, "NEW", "first %s" % marker)["data"]["session_id"]
        self.assertEqual(self.c.chat(uid, sid, "second %s" % marker)["type"], 3)
        self.assertEqual(self.c.req(17, {"user_id": uid, "session_id": sid, "seq": 2,
                                         "message": "edited %s" % marker})["type"], 17)
        self.c.req(10, {"user_id": uid, "session_id": sid, "session_name": "name %s" % marker})
        self.c.req(12, {"user_id": uid, "session_id": sid, "seq": 1, "rating": 1,
                        "comment": "comment %s" % marker})
        name = upload(self.chatd.port, uid, sid, "f.txt", ("file %s" % marker).encode())
        self.assertEqual(self.c.chat(uid, sid, "file %s" % marker, file_name=name)["type"], 3)
        self.assertEqual(self.c.req(21, {"user_id": uid, "session_id": sid})["type"], 21)
        convo = [{"title": "imported %s" % marker, "chat_messages": [
            {"uuid": str(uuid.uuid4()), "sender": "human", "text": "imported %s" % marker,
             "created_at": "2024-01-01T00:00:00Z"}]}]
        body, ctype = multipart({"user_id": uid}, ("claude.json", json.dumps(convo).encode(),
                                                   "application/json"))
        status, _, out = request(self.chatd.port, "POST", "/import", body, {"Content-Type": ctype})
        self.assertEqual(status, 202, out)
        iid = json.loads(out)["data"]["import_id"]
        wait_for(lambda: self.db.one("select status from imports where import_id = %s", (iid,))
                 != "running", "the import ends")
        # copies in Redis: the list, the context of the next turn
        self.c.req(1, {"user_id": uid})
        self.c.req(0, {"user_id": uid})
        return sid, name

    def text_rows(self, marker):
        """(table, count) of rows with marker anywhere in them."""
        tables = [t for (t,) in self.db.query(
            "select table_name from information_schema.tables"
            " where table_schema = 'public' and table_type = 'BASE TABLE'")]
        found = []
        for t in tables:
            n = self.db.one('select count(*) from "%s" x where x::text like %%s' % t, ("%" + marker + "%",))
            if n:
                found.append((t, n))
        return found

    def test_erase_user_leaves_nothing_and_touches_no_one_else(self):
        gone, stays = self.db.add_user(balance=10), self.db.add_user(balance=10)
        m_gone, m_stays = "zqx" + uuid.uuid4().hex[:10], "zqy" + uuid.uuid4().hex[:10]
        sid, fname = self.populate(gone, m_gone)
        sid2, fname2 = self.populate(stays, m_stays)
        ledger = self.db.one("select count(*) from usage_ledger where user_id = %s", (gone,))
        self.assertGreater(ledger, 0)
        before_stays = self.text_rows(m_stays)
        self.assertTrue(self.text_rows(m_gone))
        self.assertTrue(any(m_gone.encode() in v for _, v in redis_values(redis_client())))
        public = self.chatd.env["PUBLIC_DIR"]

        rc, out = admin(self.chatd, "erase-user", gone.upper())
        self.assertEqual(rc, 0, out)
        self.assertIn("erased user %s: 2 sessions, 1 files" % gone, out)
        # nothing of theirs in any table, in Redis or on disk
        self.assertEqual(self.text_rows(m_gone), [])
        self.assertEqual(self.db.one("select count(*) from user_data where user_id = %s", (gone,)), 0)
        for key, value in redis_values(redis_client()):
            self.assertNotIn(m_gone.encode(), value, key)
            self.assertNotIn(gone.encode(), key)
        self.assertFalse(os.path.exists(os.path.join(public, fname)))
        for f in os.listdir(public):
            with open(os.path.join(public, f), "rb") as fh:
                self.assertNotIn(m_gone.encode(), fh.read(), f)
        # the ledger keeps its amounts, without the identity
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id is null"
                                     " and session_id is null and turn_id is null"), ledger)
        # the other user's data is untouched
        self.assertEqual(self.text_rows(m_stays), before_stays)
        self.assertTrue(os.path.exists(os.path.join(public, fname2)))
        self.assertEqual(self.c.req(9, {"user_id": stays, "session_id": sid2})["type"], 9)
        # and the erased one is simply unknown
        self.assertError(self.c.req(0, {"user_id": gone}), 3)
        # again: no such user
        rc, out = admin(self.chatd, "erase-user", gone)
        self.assertEqual(rc, 1)
        self.assertIn("no user", out)

    def lease_and_hold(self, uid, sid, until="now() + interval '1 minute'"):
        turn = str(uuid.uuid4())
        self.db.query("insert into turn_leases (session_id, user_id, turn_id, lease_until)"
                      " values (%s, %s, %s, " + until + ")", (sid, uid, turn))
        self.db.query("insert into budget_holds (hold_id, slot, user_id, model_id, amount, until)"
                      " values (%s, 0, %s, 8, 0.01, " + until + ")", (turn, uid))
        return turn

    def leases_and_holds(self, uid):
        return (self.db.one("select count(*) from turn_leases where user_id = %s", (uid,)),
                self.db.one("select count(*) from budget_holds where user_id = %s", (uid,)))

    def test_a_users_leases_and_holds_go_with_the_user(self):
        """Leases and holds have no foreign key to user_data (migration
        0017: its check locked the user's row for every turn); a user
        deleted by plain SQL or erased takes them along all the same, and
        the other users' stay."""
        by_sql, erased, stays = (self.db.add_user() for _ in range(3))
        for uid in (by_sql, erased, stays):
            self.lease_and_hold(uid, self.db.add_session(uid))
            self.assertEqual(self.leases_and_holds(uid), (1, 1))
        self.db.query("delete from user_data where user_id = %s", (by_sql,))
        self.assertEqual(self.leases_and_holds(by_sql), (0, 0))
        rc, out = admin(self.chatd, "erase-user", erased)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.leases_and_holds(erased), (0, 0))
        self.assertEqual(self.leases_and_holds(stays), (1, 1))

    def test_leases_and_holds_run_out_an_hour_ago_are_purged(self):
        """What a race can leave (a lease taken while its user was deleted,
        or of a session deleted with no next turn) goes with the sweep."""
        uid = self.db.add_user()
        old = self.lease_and_hold(uid, str(uuid.uuid4()), "now() - interval '61 minutes'")
        live = self.lease_and_hold(uid, self.db.add_session(uid))
        rc, out = admin(self.chatd, "retention")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.db.one("select array_agg(turn_id::text) from turn_leases"
                                     " where user_id = %s", (uid,)), [live])
        self.assertEqual(self.db.one("select array_agg(hold_id::text) from budget_holds"
                                     " where user_id = %s", (uid,)), [live])
        self.assertNotEqual(old, live)

    def test_the_sql_function_and_the_server_sweeper(self):
        uid = self.db.add_user()
        marker = "zqz" + uuid.uuid4().hex[:10]
        chatd = Chatd(self.db, agent_port=self.agent.port, SWEEP_SECONDS=1)
        self.addCleanup(cleanup, chatd)
        c = chatd.client()
        self.addCleanup(c.close)
        sid = c.chat(uid, "NEW", "hello %s" % marker)["data"]["session_id"]
        name = upload(chatd.port, uid, sid, "f.txt", marker.encode())
        self.assertEqual(c.chat(uid, sid, "with file", file_name=name)["type"], 3)
        path = os.path.join(chatd.env["PUBLIC_DIR"], name)
        self.assertTrue(os.path.exists(path))
        # an admin with nothing but SQL
        self.assertEqual(self.db.one("select chatd_erase_user(%s)", (uid,)), 1)
        self.assertIsNone(self.db.one("select chatd_erase_user(%s)", (uid,)))
        wait_for(lambda: not os.path.exists(path), "the sweeper removes the file")
        wait_for(lambda: self.db.one("select count(*) from erasure_queue") == 0,
                 "the queue is emptied")
        self.assertEqual(self.text_rows(marker), [])


class ExportAll(LifecycleCase):
    def test_everything_of_a_user_in_one_zip(self):
        uid = self.db.add_user(balance=5)
        a = self.c.chat(uid, "NEW", "first chat")["data"]["session_id"]
        self.assertEqual(self.c.chat(uid, a, "second turn")["type"], 3)
        self.assertEqual(self.c.req(17, {"user_id": uid, "session_id": a, "seq": 2,
                                         "message": "second, edited"})["type"], 17)
        b = self.c.chat(uid, "NEW", "other chat")["data"]["session_id"]
        data = os.urandom(150000).hex().encode()  # more than one slice of the file
        name = upload(self.chatd.port, uid, b, "blob.txt", data)
        self.assertEqual(self.c.chat(uid, b, "see the file", file_name=name)["type"], 3)
        self.c.chat(uid, "NEW", "not in any export", temporary=True)
        status, headers, body = request(self.chatd.port, "GET", "/export?user_id=%s&format=zip" % uid)
        self.assertEqual(status, 200, body[:200])
        self.assertEqual(headers["content-type"], "application/zip")
        self.assertIn("chatd-export.zip", headers["content-disposition"])
        z = zipfile.ZipFile(io.BytesIO(body))
        self.assertIsNone(z.testzip())
        names = sorted(z.namelist())
        chats = [n for n in names if n.startswith("chats/")]
        self.assertEqual(len(chats), 2, names)
        self.assertEqual(sorted(n for n in names if not n.startswith("chats/")),
                         ["budget.json", "files/" + name, "usage.json"])
        self.assertEqual(z.read("files/" + name), data)
        trees = {json.loads(z.read(n))["session_id"]: json.loads(z.read(n)) for n in chats}
        self.assertEqual(set(trees), {a, b})
        # the whole tree: both versions of the edited question, with parents
        texts = [m["content"] for m in trees[a]["messages"]]
        self.assertIn("second turn", texts)
        self.assertIn("second, edited", texts)
        self.assertTrue(all("parent_seq" in m for m in trees[a]["messages"]))
        usage = json.loads(z.read("usage.json"))
        self.assertEqual(usage["turns"], 6)  # the temporary chat's turn was spent too
        self.assertEqual(json.loads(z.read("budget.json"))["user_id"], uid)
        # exactly what the session's own export gives
        status, _, one = request(self.chatd.port, "GET",
                                 "/sessions/%s/export?user_id=%s&format=json&branches=all" % (a, uid))
        self.assertEqual(json.loads(one), trees[a])
        # no such user: not found; a bad format: said so
        status, _, _ = request(self.chatd.port, "GET", "/export?user_id=%s&format=zip" % uuid.uuid4())
        self.assertEqual(status, 404)
        status, _, body = request(self.chatd.port, "GET", "/export?user_id=%s&format=tar" % uid)
        self.assertEqual((status, json.loads(body)["message"]), (400, "Unknown format: use jsonl or zip"))


class Budget(ClientCase):
    DB_PREFIX = "chatd_budget"

    def test_caps_are_read_set_and_refuse_with_their_name(self):
        uid = self.db.add_user(balance=10)
        r = self.c.req(26, {"user_id": uid})
        self.assertEqual(r["type"], 26, r)
        d = r["data"]
        self.assertEqual((d["user_id"], d["balance"], d["reserved"], d["caps"]), (uid, 10, 0, []))
        self.assertIsNone(d["monthly_cap"])
        self.assertRegex(d["caps_reset"], r"^\d{4}-\d\d-01T00:00:00Z$")
        # the admin's cap, and a personal one below it
        self.db.query("update user_data set monthly_cap = 5 where user_id = %s", (uid,))
        d = self.c.req(26, {"user_id": uid, "monthly_cap": 2.5})["data"]
        self.assertEqual((d["monthly_cap"], d["personal_cap"]), (5, 2.5))
        self.assertEqual(d["caps"], [{"scope": "user", "name": "personal", "cap": 2.5, "spent": 0,
                                      "reserved": 0, "left": 2.5}])
        d = self.c.req(26, {"user_id": uid, "monthly_cap": None})["data"]
        self.assertEqual(d["caps"][0]["name"], "admin")
        # per model and per group
        self.db.query("insert into user_model_caps values (%s, %s, 0)", (uid, LLAMA))
        r = self.c.chat(uid, "NEW", "hello")
        self.assertError(r, 32, "Spending Limit Reached")
        self.assertIn("model %s" % MODEL, r["detail"])
        self.assertRegex(r["detail"], r"resets \d{4}-\d\d-01T00:00:00Z")
        self.db.query("delete from user_model_caps")
        self.db.query("insert into user_groups values ('research', 0)")
        self.db.query("insert into user_group_members values ('research', %s)", (uid,))
        r = self.c.chat(uid, "NEW", "hello")
        self.assertError(r, 32)
        self.assertIn("group research", r["detail"])
        d = self.c.req(13, {"user_id": uid})["data"]
        self.assertEqual([(x["scope"], x["name"]) for x in d["caps"]],
                         [("user", "admin"), ("group", "research")])
        self.db.query("delete from user_groups")
        self.db.query("update user_data set monthly_cap = 0 where user_id = %s", (uid,))
        r = self.c.chat(uid, "NEW", "hello")
        self.assertError(r, 32)
        self.assertIn("of the user", r["detail"])
        self.db.query("update user_data set monthly_cap = null where user_id = %s", (uid,))
        self.assertEqual(self.c.chat(uid, "NEW", "hello")["type"], 3)
        # a bad cap, and an unknown user
        self.assertError(self.c.req(26, {"user_id": uid, "monthly_cap": -1}), 17)
        self.assertError(self.c.req(26, {"user_id": str(uuid.uuid4())}), 3)
        # nothing is reserved once the turns are over
        wait_for(lambda: self.c.req(26, {"user_id": uid})["data"]["reserved"] == 0,
                 "the title's reservation is settled")


class Concurrent(unittest.TestCase):
    """200 turns at once through three instances."""

    def setUp(self):
        self.db = Database("chatd_budget_many")
        self.agent = Agent(AGENT_COSTS="0.001")
        self.chatds = [Chatd(self.db, agent_port=self.agent.port) for _ in range(3)]
        self.addCleanup(cleanup, *(self.chatds + [self.agent, self.db]))
        # the most a turn is charged: the same 0.001 (summaries included)
        self.db.query("update model_details set max_turn_cost = 0.001")

    def run_turns(self, uid, n):
        sessions = [self.db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
                    for _ in range(n)]

        def turn(i):
            c = self.chatds[i % 3].client()
            try:
                return c.chat(uid, sessions[i], "turn %d" % i)
            finally:
                c.close()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            return list(ex.map(turn, range(n)))

    def test_a_cap_is_never_exceeded(self):
        uid = self.db.add_user(balance=100)
        self.db.query("update user_data set monthly_cap = 0.05 where user_id = %s", (uid,))
        out = self.run_turns(uid, 200)
        ok = [r for r in out if "error" not in r and r.get("type") == 3]
        refused = [r for r in out if r.get("code") == 32]
        self.assertEqual(len(ok) + len(refused), 200, [r for r in out if r not in ok + refused][:3])
        spent = self.db.one("select sum(cost) from usage_ledger where user_id = %s", (uid,))
        self.assertLessEqual(spent, Decimal("0.05"))
        # each charge was its reservation, so the cap allows exactly 50
        self.assertEqual(len(ok), 50)
        self.assertEqual(spent, Decimal("0.050"))
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)),
                         Decimal("99.950"))
        self.assertEqual(self.db.one("select count(*) from budget_holds"), 0)

    def test_the_balance_never_goes_below_zero(self):
        uid = self.db.add_user(balance=0.02)
        out = self.run_turns(uid, 60)
        ok = [r for r in out if "error" not in r and r.get("type") == 3]
        refused = [r for r in out if r.get("code") == 15]
        self.assertEqual(len(ok) + len(refused), 60)
        self.assertEqual(len(ok), 20)
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)),
                         Decimal("0.000"))
        self.assertEqual(self.db.one("select min(balance) from user_data"), Decimal("0.000"))


class Crash(unittest.TestCase):
    def test_a_dead_chatds_reservations_run_out_with_its_lease(self):
        db = Database("chatd_budget_crash")
        slow = Agent(AGENT_DELAY_MS=600000)
        fast = Agent()
        # the lease (and so the reservation) of a dead chatd lasts
        # TURN_LEASE_SECONDS after its last renewal: long enough for the
        # refusal below on a loaded machine, short enough to wait for
        a = Chatd(db, agent_port=slow.port, TURN_LEASE_SECONDS=10)
        b = Chatd(db, agent_port=fast.port, TURN_LEASE_SECONDS=10)
        self.addCleanup(cleanup, b, a, slow, fast, db)
        db.query("update model_details set max_turn_cost = 0.01")
        uid = db.add_user(balance=10)
        db.query("update user_data set monthly_cap = 0.01 where user_id = %s", (uid,))
        s1 = db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
        s2 = db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
        ca = a.client()
        ca.send(3, {"user_id": uid, "session_id": s1, "message": "hangs", "model_name": MODEL})
        wait_for(lambda: db.one("select count(*) from budget_holds") == 1, "the turn reserves")
        a.stop(sig=9)
        cb = b.client()
        self.addCleanup(cb.close)
        # the dead chatd's reservation holds the whole cap ...
        r = cb.chat(uid, s2, "refused")
        self.assertEqual(r.get("code"), 32, r)
        self.assertEqual(cb.req(26, {"user_id": uid})["data"]["reserved"], 0.01)
        # ... until its lease runs out: nothing is spent on its account
        wait_for(lambda: cb.req(26, {"user_id": uid})["data"]["reserved"] == 0,
                 "the reservation runs out", tries=1200)
        self.assertEqual(cb.chat(uid, s2, "now it runs")["type"], 3)
        self.assertIsNone(db.one("select sum(cost) from usage_ledger where session_id = %s", (s1,)))


if __name__ == "__main__":
    unittest.main()
