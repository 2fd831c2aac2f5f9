"""Issue 22: the conversation as a tree. Code 17 edits a user message (a
sibling, answered on its own path), 18 regenerates an answer (a sibling to
the same question), 19 switches the active path, 20 forks a session from a
path. Codes 2, 3 and 9 follow the active path, which PostgreSQL keeps; the
agent is given exactly the path a turn continues, with that path's
summary. Bad and foreign seqs change nothing; another user's session is
answered as a missing one. Turns on a branch are stopped and resumed like
code 3's, and edits through two instances land as siblings in lease
order."""

import json
import os
import random
import sys
import threading
import unittest
import urllib.request
import uuid

import psycopg2
import redis

from harness import (MODEL, Agent, Chatd, Database, RedisServer, ClientCase, cleanup, explain, redis_client,
                     run_threads)
from test_http import request
from test_live import drain_until, events_of


def process_requests(agent, sid):
    return [r for r in agent.requests() if r["method"] in ("Process", "ProcessStream")
            and r["session_id"] == sid]


def pairs(history_json):
    return [(m["role"], m["content"]) for m in json.loads(history_json)]


def balance_and_unspent(db, uid, start):
    """The user's balance, and start less what the ledger says was spent,
    read in one snapshot: the session's title is charged on its own after
    the first reply, and a CI run under load saw its charge fall between
    two separate reads of the ledger and the balance."""
    (balance, unspent), = db.query(
        "select balance, %s - coalesce((select sum(cost) from usage_ledger l where l.user_id = u.user_id), 0)"
        "  from user_data u where user_id = %s", (start, uid))
    return balance, unspent


class TreeCase(ClientCase):
    def chats(self, uid, sid, c=None):
        r = (c or self.c).req(2, {"user_id": uid, "session_id": sid})
        self.assertEqual(r["type"], 2, r)
        return [(m["role"], m["content"]) for m in json.loads(r["data"]["chat"])]

    def page(self, uid, sid, **kw):
        d = {"user_id": uid, "session_id": sid}
        d.update(kw)
        r = self.c.req(9, d)
        self.assertEqual(r["type"], 9, r)
        return r["data"]

    def edit(self, uid, sid, seq, message, c=None, **kw):
        d = dict(user_id=uid, session_id=sid, seq=seq, message=message)
        d.update(kw)
        return (c or self.c).req(17, d)

    def regenerate(self, uid, sid, seq, c=None, **kw):
        d = dict(user_id=uid, session_id=sid, seq=seq)
        d.update(kw)
        return (c or self.c).req(18, d)

    def switch(self, uid, sid, seq, c=None):
        return (c or self.c).req(19, dict(user_id=uid, session_id=sid, seq=seq))

    def tree(self, sid):
        return self.db.query("select seq, parent_seq, role, content from chat_messages"
                             " where session_id = %s order by seq", (sid,))

    def leaf(self, sid):
        return self.db.one("select active_leaf from chat_sessions where session_id = %s", (sid,))

    def two_turns(self, uid):
        """A session q1 a1 q2 a2 (seqs 0..3) made by chatd."""
        sid = self.c.chat(uid, "NEW", "first question")["data"]["session_id"]
        self.assertEqual(self.c.chat(uid, sid, "second question")["type"], 3)
        return sid


class Tree(TreeCase):
    DB_PREFIX = "chatd_tree"

    # ------------------------------------------------------------ the database's rules

    def test_the_database_keeps_the_tree_whole(self):
        uid = self.db.add_user()
        a = self.db.add_session(uid, messages=[("user", "q"), ("assistant", "a")])
        b = self.db.add_session(uid, messages=[("user", "q")])
        # plain SQL without a parent appends, as before the tree
        self.assertEqual([(s_, p) for s_, p, _, _ in self.tree(a)], [(0, None), (1, 0)])
        bad = [("a parent in another session", b, 1, 1),   # b has no message 1
               ("a parent younger than its child", a, 5, 7),
               ("its own parent", a, 6, 6),
               ("no such parent", a, 8, 4)]
        for why, sid, seq, parent in bad:
            with self.subTest(why):
                with self.assertRaises(psycopg2.IntegrityError):
                    self.db.query("insert into chat_messages (session_id, seq, parent_seq, role, content)"
                                  " values (%s, %s, %s, 'user', 'x')", (sid, seq, parent))
        # a parent cannot go while a child hangs under it; the session takes all
        with self.assertRaises(psycopg2.IntegrityError):
            self.db.query("update chat_messages set seq = 9 where session_id = %s and seq = 0", (a,))
        self.db.query("delete from chat_sessions where session_id = %s", (a,))
        self.assertEqual(self.tree(a), [])

    # ------------------------------------------------------------ code 17

    def test_edit_is_a_sibling_answered_on_its_own_path(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        before = process_requests(self.agent, sid)
        r = self.edit(uid, sid, 2, "second question, better")
        self.assertEqual(r["type"], 17, r)
        d = r["data"]
        self.assertEqual((d["seqs"], d["parent_seq"], d["active_leaf"]), ([4, 5], 1, 5))
        self.assertEqual(d["session_id"], sid)
        self.assertTrue(d["message"].startswith("echo: second question, better [history=2 "), d)
        # the agent saw the path up to the edited message's parent, and
        # that path's summary: the one the original second turn was given
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual(rec["chat_message"], "second question, better")
        self.assertEqual(pairs(rec["chat_history"]), pairs(before[1]["chat_history"]))
        self.assertEqual(rec["chat_summary"], before[1]["chat_summary"])
        self.assertNotEqual(rec["chat_summary"],
                            self.db.one("select summary from chat_messages where session_id = %s and seq = 3",
                                        (sid,)))
        self.assertEqual([(s, p, role) for s, p, role, _ in self.tree(sid)],
                         [(0, None, "user"), (1, 0, "assistant"), (2, 1, "user"), (3, 2, "assistant"),
                          (4, 1, "user"), (5, 4, "assistant")])
        self.assertEqual(self.leaf(sid), 5)
        # the existing client's code 2 sees one linear chat: the new path
        self.assertEqual([c for _, c in self.chats(uid, sid)][2], "second question, better")
        self.assertEqual(len(self.chats(uid, sid)), 4)
        # code 9 says where each message hangs and how many versions it has
        msgs = self.page(uid, sid)["messages"]
        self.assertEqual([m["seq"] for m in msgs], [0, 1, 4, 5])
        self.assertEqual([(m.get("parent_seq"), m["siblings"], m["sibling_index"]) for m in msgs],
                         [(None, 1, 0), (0, 1, 0), (1, 2, 1), (4, 1, 0)])
        self.assertEqual((msgs[2]["prev_sibling"], msgs[2].get("next_sibling")), (2, None))
        self.assertNotIn("prev_sibling", msgs[1])
        # code 3 continues the new path
        r = self.c.chat(uid, sid, "third")
        self.assertEqual(r["type"], 3)
        self.assertNotIn("seqs", r["data"])  # the existing client's reply is unchanged
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual([c for _, c in pairs(rec["chat_history"])][2], "second question, better")
        self.assertEqual(self.tree(sid)[6][:3], (6, 5, "user"))
        # each turn charged once: balance = start - ledger
        self.assertEqual(*balance_and_unspent(self.db, uid, 10))
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id = %s and kind = 'turn'",
                                     (uid,)), 4)

    def test_edit_of_the_first_message_is_a_new_root(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        r = self.edit(uid, sid, 0, "first question, again")
        self.assertEqual((r["type"], r["data"]["seqs"], r["data"]["parent_seq"]), (17, [4, 5], None), r)
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual((json.loads(rec["chat_history"]), rec["chat_summary"]), ([], ""))
        self.assertEqual(self.chats(uid, sid), [("user", "first question, again"),
                                                ("assistant", r["data"]["message"])])
        msgs = self.page(uid, sid)["messages"]
        self.assertEqual([(m["seq"], m["siblings"], m["sibling_index"]) for m in msgs], [(4, 2, 1), (5, 1, 0)])
        self.assertIsNone(msgs[0]["parent_seq"])  # a first message hangs under none

    # ------------------------------------------------------------ code 18

    def test_regenerate_answers_the_same_question_again(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        first = process_requests(self.agent, sid)
        r = self.regenerate(uid, sid, 3, model_name="gpt-4-turbo")
        self.assertEqual(r["type"], 18, r)
        self.assertEqual((r["data"]["seqs"], r["data"]["parent_seq"], r["data"]["active_leaf"]), ([4], 2, 4))
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual((rec["chat_message"], rec["model_name"]), ("second question", "gpt-4-turbo"))
        self.assertEqual(pairs(rec["chat_history"]), pairs(first[1]["chat_history"]))
        self.assertEqual(rec["chat_summary"], first[1]["chat_summary"])
        self.assertEqual(self.tree(sid)[4][:3], (4, 2, "assistant"))
        self.assertEqual([r for r, _ in self.chats(uid, sid)], ["user", "assistant", "user", "assistant"])
        self.assertEqual(self.chats(uid, sid)[3][1], r["data"]["message"])
        msgs = self.page(uid, sid)["messages"]
        self.assertEqual([(m["seq"], m["siblings"], m["sibling_index"]) for m in msgs],
                         [(0, 1, 0), (1, 1, 0), (2, 1, 0), (4, 2, 1)])
        ledger = self.db.query("select seq, model_name from usage_ledger where session_id = %s and kind = 'turn'"
                               " order by seq", (sid,))
        self.assertEqual(ledger[-1], (4, "gpt-4-turbo"))
        # the session's model when none is named
        r = self.regenerate(uid, sid, 4)
        self.assertEqual(process_requests(self.agent, sid)[-1]["model_name"], MODEL)
        self.assertEqual(r["data"]["seqs"], [5])

    def test_regenerate_carries_the_questions_file(self):
        uid = self.db.add_user(balance=10)
        sid = self.db.add_session(uid, messages=[("user", "look"), ("assistant", "seen"),
                                                 ("file", "0123456789abcdef0123456789abcdef.png")])
        self.db.query("insert into uploaded_files(session_id, user_id, stored_name, size_bytes)"
                      " values (%s, %s, '0123456789abcdef0123456789abcdef.png', 3)", (sid, uid))
        r = self.regenerate(uid, sid, 1)
        self.assertEqual((r["type"], r["data"]["seqs"]), (18, [3, 4]), r)
        self.assertIn("files=1", r["data"]["message"])
        self.assertEqual(self.chats(uid, sid), [("user", "look"), ("assistant", r["data"]["message"]),
                                                ("file", "0123456789abcdef0123456789abcdef.png")])
        r = self.edit(uid, sid, 0, "look again")
        self.assertIn("files=1", r["data"]["message"])
        self.assertEqual([x for x, _ in self.chats(uid, sid)], ["user", "assistant", "file"])

    def compare(self, c, uid, sid, seq, models, stream=True):
        """Sends code 18 with model_names; returns (deltas, finals) once one
        final reply per model came, or (None, the error) for an error."""
        c.send(18, dict(user_id=uid, session_id=sid, seq=seq, model_names=models, stream=stream))
        frames = []
        while sum(1 for f in frames if f.get("type") == 18) < len(models) and not any("error" in f for f in frames):
            frames.append(c.recv())
        errors = [f for f in frames if "error" in f]
        if errors:
            return None, errors[0]
        return [f["data"] for f in frames if f.get("type") == 7], [f["data"] for f in frames if f.get("type") == 18]

    def test_compare_answers_side_by_side(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        first = process_requests(self.agent, sid)
        models = [MODEL, "gpt-4-turbo", "gpt-4-turbo-2024-04-09"]
        deltas, finals = self.compare(self.c, uid, sid, 3, models)
        self.assertEqual(sorted(f["answer"] for f in finals), [0, 1, 2])
        by = {f["answer"]: f for f in finals}
        for i, m in enumerate(models):
            self.assertEqual(by[i]["model_name"], m)
            self.assertEqual(by[i]["parent_seq"], 2)
            # each answer's deltas are its reply, whatever came between them
            self.assertEqual("".join(d["delta"] for d in deltas if d["answer"] == i), by[i]["message"])
        # one stream: every frame's index once, in order
        self.assertEqual([d["index"] for d in deltas], sorted(d["index"] for d in deltas))
        self.assertEqual(len({d["index"] for d in deltas}), len(deltas))
        seqs = sorted(f["seqs"][0] for f in finals)
        self.assertEqual(seqs, [4, 5, 6])
        rows = {s_: (p, r, c) for s_, p, r, c in self.tree(sid)}
        for f in finals:
            self.assertEqual(rows[f["seqs"][0]], (2, "assistant", f["message"]))
        # each was asked with the question's path, and charged on its own
        recs = process_requests(self.agent, sid)[len(first):]
        self.assertEqual(sorted(r["model_name"] for r in recs), sorted(models))
        for r in recs:
            self.assertEqual((r["chat_message"], pairs(r["chat_history"]), r["chat_summary"]),
                             ("second question", pairs(first[1]["chat_history"]), first[1]["chat_summary"]))
        ledger = self.db.query("select seq, model_name from usage_ledger where session_id = %s and kind = 'turn'"
                               " and seq >= 4 order by seq", (sid,))
        self.assertEqual(sorted(m for _, m in ledger), sorted(models))
        self.assertEqual(*balance_and_unspent(self.db, uid, 10))
        msgs = self.page(uid, sid)["messages"]
        self.assertEqual((msgs[-1]["siblings"], msgs[-1]["sibling_index"]), (4, 3))
        self.assertEqual(self.leaf(sid), 6)
        # the next turn goes on from the active one, and the session is free
        self.assertEqual(self.c.chat(uid, sid, "and then")["type"], 3)
        # without streaming: the finals alone
        deltas, finals = self.compare(self.c, uid, sid, 3, models[:2], stream=False)
        self.assertEqual((deltas, sorted(f["answer"] for f in finals)), ([], [0, 1]))

    def test_compare_checks_every_model_first(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        for models, code in (([MODEL, "gpt-4"], 7), ([MODEL, "no-such-model"], 24), (["gpt-4", MODEL], 7)):
            deltas, err = self.compare(self.c, uid, sid, 3, models)
            self.assertIsNone(deltas)
            self.assertError(err, code)
        self.assertError(self.compare(self.c, uid, sid, 2, [MODEL, "gpt-4-turbo"])[1], 17, "only assistant")
        self.assertEqual(len(self.tree(sid)), 4)

    # ------------------------------------------------------------ code 19

    def test_switch_shows_a_branch_everywhere_and_turns_continue_it(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        self.assertEqual(self.edit(uid, sid, 2, "other second")["type"], 17)       # 4, 5
        sub = self.chatd.client()
        self.assertEqual(sub.req(14, {"user_id": uid})["type"], 14)
        r = self.switch(uid, sid, 2)
        self.assertEqual(r, {"type": 19, "data": {"user_id": uid, "session_id": sid, "active_leaf": 3}})
        ev = events_of(drain_until(sub, lambda m: m.get("type") == 15
                                   and m["data"]["kind"] == "branch_switched"))[-1]
        self.assertEqual(ev, {"kind": "branch_switched", "session_id": sid, "active_leaf": 3})
        sub.close()
        # a reload (another connection) shows the same path
        other = self.chatd.client()
        self.assertEqual([c for _, c in self.chats(uid, sid, c=other)][2], "second question")
        other.close()
        # the next turn continues it, whatever Redis holds of the other path
        self.assertEqual(self.c.chat(uid, sid, "after switch")["type"], 3)
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual([c for _, c in pairs(rec["chat_history"])][2], "second question")
        self.assertEqual(self.tree(sid)[6][:2], (6, 3))
        # a switch to a message shows its newest continuation
        self.assertEqual(self.switch(uid, sid, 1)["data"]["active_leaf"], 7)
        self.assertEqual(self.switch(uid, sid, 4)["data"]["active_leaf"], 5)
        self.assertEqual(self.switch(uid, sid, 7)["data"]["active_leaf"], 7)
        self.assertEqual(self.switch(uid, sid, 0)["data"]["active_leaf"], 7)

    def test_context_is_the_active_path_with_or_without_redis(self):
        # Redis holds the context copy of one path; a switch makes another
        # active: the turn after it must not be given the copy.
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        self.regenerate(uid, sid, 3)                                             # 4
        self.assertEqual(self.switch(uid, sid, 3)["type"], 19)
        self.c.chat(uid, sid, "on the old answer")
        rec = process_requests(self.agent, sid)[-1]
        hist = pairs(rec["chat_history"])
        self.assertEqual(hist[3], ("assistant", self.tree(sid)[3][3]))
        redis_client().flushall()
        self.assertEqual(self.switch(uid, sid, 4)["type"], 19)
        self.c.chat(uid, sid, "on the new answer")
        rec = process_requests(self.agent, sid)[-1]
        self.assertEqual(pairs(rec["chat_history"])[3], ("assistant", self.tree(sid)[4][3]))

    # ------------------------------------------------------------ bad input

    def test_bad_and_foreign_seqs_change_nothing(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        other = self.db.add_user(balance=10)
        theirs = self.c.chat(other, "NEW", "private")["data"]["session_id"]
        # (a new session's title is charged when it comes: turns only here)
        snapshot = lambda: (self.tree(sid), self.tree(theirs), self.leaf(sid), self.leaf(theirs),  # noqa: E731
                            self.db.query("select seq, cost from usage_ledger where kind = 'turn'"
                                          " and user_id in (%s, %s) order by 1, 2", (uid, other)))
        start = snapshot()
        self.assertError(self.edit(uid, sid, 1, "x"), 17, "only user messages are edited")
        self.assertError(self.regenerate(uid, sid, 2), 17, "only assistant messages are regenerated")
        self.assertError(self.edit(uid, sid, 99, "x"), 17, "no such message in this session")
        self.assertError(self.regenerate(uid, sid, 99), 17, "no such message in this session")
        self.assertError(self.switch(uid, sid, 99), 17, "no such message in this session")
        self.assertError(self.c.req(20, dict(user_id=uid, session_id=sid, seq=99)), 17,
                         "no such message in this session")
        lone = self.db.add_session(uid, messages=[("assistant", "hello first")])
        self.assertError(self.regenerate(uid, lone, 0), 17, "no question to answer again")
        self.assertEqual(len(self.tree(lone)), 1)
        self.assertError(self.regenerate(uid, sid, 1, model_name="gpt-4"), 7)
        self.assertError(self.regenerate(uid, sid, 1, model_name="no-such-model"), 24)
        # another user's session, its messages named by their real seqs, and
        # a session that does not exist: the same answer, "Session Not Found"
        for s in (theirs, str(uuid.uuid4())):
            for r in (self.edit(uid, s, 0, "mine now"), self.regenerate(uid, s, 1), self.switch(uid, s, 0),
                      self.c.req(20, dict(user_id=uid, session_id=s, seq=1))):
                self.assertError(r, 18)
        # another session's seq: only this session's messages count
        self.assertError(self.edit(other, theirs, 2, "x"), 17, "no such message")
        self.assertError(self.c.req(17, dict(user_id=uid, session_id=sid, seq=-1, message="x")), 17, "'seq'")
        self.assertError(self.c.req(17, dict(user_id=uid, session_id=sid, seq=0)), 17, "'message'")
        self.assertError(self.c.req(19, dict(user_id=uid, session_id=sid)), 17, "'seq'")
        self.assertEqual(snapshot(), start)
        # no balance: refused before anything runs
        self.db.query("update user_data set balance = 0 where user_id = %s", (uid,))
        self.assertError(self.edit(uid, sid, 2, "x"), 15)
        self.assertEqual(self.tree(sid), start[0])

    # ------------------------------------------------------------ code 20

    def test_fork_copies_the_path_and_leaves_the_original(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        self.edit(uid, sid, 2, "branch two")                                     # 4, 5
        original = (self.tree(sid), self.leaf(sid))
        sub = self.chatd.client()
        self.assertEqual(sub.req(14, {"user_id": uid})["type"], 14)
        r = self.c.req(20, dict(user_id=uid, session_id=sid, seq=4))
        self.assertEqual(r["type"], 20, r)
        fork = r["data"]["session_id"]
        self.assertNotEqual(fork, sid)
        self.assertEqual(r["data"]["session_name"], "first question (fork)")
        self.assertEqual(r["data"]["forked_from"], {"session_id": sid, "seq": 4})
        ev = events_of(drain_until(sub, lambda m: m.get("type") == 15
                                   and m["data"]["kind"] == "session_created"))[-1]
        self.assertEqual(ev["session_id"], fork)
        sub.close()
        self.assertEqual(self.chats(uid, fork), [("user", "first question"), self.chats(uid, sid)[1],
                                                 ("user", "branch two")])
        self.assertEqual([(s, p) for s, p, _, _ in self.tree(fork)], [(0, None), (1, 0), (2, 1)])
        self.assertEqual((self.tree(sid), self.leaf(sid)), original)
        sessions = [s["session_id"] for s in self.c.req(1, {"user_id": uid})["data"]["session_info"]]
        self.assertIn(fork, sessions)
        # the fork goes on by itself, with the path's summary
        self.assertEqual(self.c.chat(uid, fork, "on the fork")["type"], 3)
        rec = process_requests(self.agent, fork)[-1]
        self.assertEqual(len(json.loads(rec["chat_history"])), 3)
        self.assertEqual(rec["chat_summary"],
                         self.db.one("select summary from chat_messages where session_id = %s and seq = 1",
                                     (sid,)))
        named = self.c.req(20, dict(user_id=uid, session_id=sid, seq=0, session_name="  Plan B "))
        self.assertEqual(named["data"]["session_name"], "Plan B")
        self.assertEqual(self.chats(uid, named["data"]["session_id"]), [("user", "first question")])

    def test_a_forks_files_outlive_the_original(self):
        uid = self.db.add_user(balance=10)
        public = self.chatd.env["PUBLIC_DIR"]
        name = "00112233445566778899aabbccddeeff.txt"
        os.makedirs(public, exist_ok=True)
        with open(os.path.join(public, name), "wb") as f:
            f.write(b"the file's bytes")
        sid = self.db.add_session(uid, messages=[("user", "read it"), ("assistant", "read"), ("file", name)])
        self.db.query("insert into uploaded_files(session_id, user_id, stored_name, original_name,"
                      " content_type, size_bytes) values (%s, %s, %s, 'notes.txt', 'text/plain', 16)",
                      (sid, uid, name))
        r = self.c.req(20, dict(user_id=uid, session_id=sid, seq=2))
        self.assertEqual(r["type"], 20, r)
        fork = r["data"]["session_id"]
        copy = self.chats(uid, fork)[2][1]
        self.assertNotEqual(copy, name)
        self.assertEqual(self.db.query("select original_name, content_type, size_bytes from uploaded_files"
                                       " where session_id = %s and stored_name = %s", (fork, copy)),
                         [("notes.txt", "text/plain", 16)])
        self.assertEqual(self.c.req(4, {"user_id": uid, "session_id": sid})["type"], 4)
        self.assertFalse(os.path.exists(os.path.join(public, name)))
        url = "http://127.0.0.1:%d/uploads/%s" % (self.chatd.port, copy)
        with urllib.request.urlopen(url, timeout=10) as resp:
            self.assertEqual((resp.status, resp.read()), (200, b"the file's bytes"))
        msgs = self.page(uid, fork)["messages"]
        self.assertEqual(msgs[2]["original_name"], "notes.txt")

    # ------------------------------------------------------------ exports, search

    def test_exports_follow_the_active_path_or_give_the_whole_tree(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        self.edit(uid, sid, 2, "edited second")                                  # 4, 5
        get = lambda q: request(self.chatd.port, "GET", "/sessions/%s/export?user_id=%s&%s" % (sid, uid, q))  # noqa: E731
        st, _, body = get("format=json")
        self.assertEqual(st, 200, body)
        self.assertEqual([m["seq"] for m in json.loads(body)["messages"]], [0, 1, 4, 5])
        self.assertNotIn("parent_seq", json.loads(body)["messages"][0])
        st, _, body = get("format=json&branches=all")
        self.assertEqual(st, 200, body)
        self.assertEqual([(m["seq"], m["parent_seq"]) for m in json.loads(body)["messages"]],
                         [(0, None), (1, 0), (2, 1), (3, 2), (4, 1), (5, 4)])
        st, _, body = get("format=md")
        self.assertIn(b"edited second", body)
        self.assertNotIn(b"second question", body)
        for q in ("format=md&branches=all", "format=json&branches=some"):
            st, _, body = get(q)
            self.assertEqual(st, 400, (q, body))
            self.assertIn("branches", json.loads(body)["message"])
        st, _, body = request(self.chatd.port, "GET", "/export?format=jsonl&user_id=%s" % uid)
        row = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        self.assertEqual([m["content"] for m in row[0]["messages"] if m["role"] == "user"],
                         ["first question", "edited second"])

    def test_search_finds_every_branch_and_says_which_is_shown(self):
        uid = self.db.add_user(balance=10)
        sid = self.two_turns(uid)
        self.edit(uid, sid, 2, "zebra crossing")                                 # 4, 5
        self.switch(uid, sid, 2)
        self.edit(uid, sid, 2, "zebra stripes")                                  # 6, 7 (active)
        hits = self.c.req(11, {"user_id": uid, "query": "zebra"})["data"]["hits"]
        users = {h["seq"]: h["on_active_path"] for h in hits if h["role"] == "user"}
        self.assertEqual(users, {4: False, 6: True})

    # ------------------------------------------------------------ cost

    def test_paths_cost_the_same_in_a_bushy_session(self):
        # The plan, not the time: 10,000 messages on 100 branches; code 2
        # and a turn's context walk only the active path, one probe of the
        # key per message.
        uid = self.db.add_user()
        sid = self.db.add_session(uid)
        self.db.query("""
            insert into chat_messages (session_id, seq, parent_seq, role, content)
            select %s, g, case when g = 0 then -1 when g %% 100 = 0 then 49 else g - 1 end,
                   case when g %% 2 = 0 then 'user' else 'assistant' end, 'm' || g
              from generate_series(0, 9999) g""", (sid,))
        self.db.query("update chat_sessions set next_seq = 10000, active_leaf = 5099 where session_id = %s", (sid,))
        self.db.query("analyze chat_messages")
        path = self.chats(uid, sid)
        self.assertEqual(len(path), 50 + 100)  # 0..49, then 5000..5099 hangs under 49
        self.assertEqual(path[50], ("user", "m5000"))
        plan = explain(self.db, "chats_get", ["'%s'" % uid, "'%s'" % sid])
        self.assertRegex(plan, r"Recursive Union \(actual time=[\d.]+\.\.[\d.]+ rows=150 loops=1\)")
        self.assertNotIn("Seq Scan on chat_messages", plan)
        plan = explain(self.db, "session_ctx", ["'%s'" % uid, "'%s'" % sid, "20", "5099"])
        self.assertRegex(plan, r"Recursive Union \(actual time=[\d.]+\.\.[\d.]+ rows=20 loops=1\)")
        plan = explain(self.db, "history_page", ["'%s'" % uid, "'%s'" % sid, "5000", "50"])
        self.assertRegex(plan, r"Recursive Union \(actual time=[\d.]+\.\.[\d.]+ rows=50 loops=1\)")
        self.assertNotIn("Seq Scan on chat_messages", plan)
        msgs = self.page(uid, sid, before=5000)["messages"]
        self.assertEqual([m["seq"] for m in msgs], list(range(0, 50)))
        self.assertEqual(msgs[-1]["siblings"], 1)
        self.assertEqual((msgs[-1]["seq"], self.page(uid, sid, before=5001)["messages"][-1]["siblings"]),
                         (49, 100))


DOWN = ("gpt-4-turbo-2024-04-09", "gpt-4")


class TreeLive(unittest.TestCase):
    """Two chatd instances on one database, an agent that takes its time."""

    @classmethod
    def setUpClass(cls):
        cls.db = Database("chatd_tree_live")
        # Two models that are down: every call for them fails at once.
        cls.agent = Agent(AGENT_DELAY_MS=3000, AGENT_FAIL_MODELS=",".join(DOWN))
        cls.chatds = []
        try:
            cls.chatds = [Chatd(cls.db, agent_port=cls.agent.port) for _ in range(2)]
        except BaseException:
            cleanup(*cls.chatds, cls.agent, cls.db)
            raise

    @classmethod
    def tearDownClass(cls):
        cleanup(*cls.chatds, cls.agent, cls.db)

    def tree(self, sid):
        return self.db.query("select seq, parent_seq, role, content from chat_messages"
                             " where session_id = %s order by seq", (sid,))

    def session(self, uid):
        c = self.chatds[0].client()
        sid = c.chat(uid, "NEW", "q one")["data"]["session_id"]
        c.close()
        return sid

    def test_concurrent_edits_on_two_instances_land_as_siblings_in_lease_order(self):
        uid = self.db.add_user(balance=10)
        sid = self.session(uid)
        replies = {}

        def edit(i):
            c = self.chatds[i].client()
            replies[i] = c.req(17, dict(user_id=uid, session_id=sid, seq=0, message="version %d" % i))
            c.close()

        run_threads(2, edit)
        self.assertEqual(sorted(r["type"] for r in replies.values()), [17, 17], replies)
        rows = self.tree(sid)
        self.assertEqual([(s, p, r) for s, p, r, _ in rows],
                         [(0, None, "user"), (1, 0, "assistant"), (2, None, "user"), (3, 2, "assistant"),
                          (4, None, "user"), (5, 4, "assistant")])
        # each reply names its own rows; the later one's is the active leaf
        by_seq = {r["data"]["seqs"][0]: r["data"] for r in replies.values()}
        self.assertEqual(sorted(by_seq), [2, 4])
        for s, d in by_seq.items():
            self.assertEqual(rows[s][3], d["message"].split("echo: ")[1].split(" [")[0])
        self.assertEqual(self.db.one("select active_leaf from chat_sessions where session_id = %s", (sid,)), 5)
        # neither saw the other: both were given an empty path
        recs = process_requests(self.agent, sid)[1:]
        self.assertEqual([json.loads(r["chat_history"]) for r in recs], [[], []])

    def test_an_edit_waits_for_the_running_turn(self):
        uid = self.db.add_user(balance=10)
        sid = self.session(uid)
        a, b = self.chatds[0].client(), self.chatds[1].client()
        a.send(3, dict(user_id=uid, session_id=sid, model_name=MODEL, session_prompt="", file_name="",
                       message="q two", stream=True))
        drain_until(a, lambda m: m.get("type") == 7)  # running
        r = b.req(17, dict(user_id=uid, session_id=sid, seq=0, message="q one, edited"))
        self.assertEqual(r["type"], 17, r)
        self.assertEqual(drain_until(a, lambda m: m.get("type") == 3)[-1]["type"], 3)
        # the edit ran after the turn, beside message 0, and the turn's
        # messages stayed on the old branch
        self.assertEqual([(s, p) for s, p, _, _ in self.tree(sid)],
                         [(0, None), (1, 0), (2, 1), (3, 2), (4, None), (5, 4)])
        a.close()
        b.close()

    def test_stop_and_resume_an_edit(self):
        uid = self.db.add_user(balance=10)
        sid = self.session(uid)
        a = self.chatds[0].client()
        a.send(17, dict(user_id=uid, session_id=sid, seq=0, message="a long edit with many words here",
                        stream=True))
        first = drain_until(a, lambda m: m.get("type") == 7)[-1]
        self.assertEqual(first["data"]["index"], 0)
        # another tab on the other instance follows it from where it is,
        # and a stop from a third stops it
        with self.agent.held():  # still running when the follower and the stop come
            b = self.chatds[1].client()
            b.send(16, dict(user_id=uid, session_id=sid, after=0))
            s = self.chatds[1].client()
            self.assertEqual(s.req(8, dict(user_id=uid, session_id=sid)),
                             {"type": 8, "data": {"user_id": uid, "session_id": sid, "stopped": True}})
        got = drain_until(a, lambda m: m.get("type") == 17 or "error" in m)
        last = got[-1]
        self.assertEqual(last["type"], 17, last)
        self.assertTrue(last["data"]["message"].endswith("[stopped]"), last)
        self.assertEqual(last["data"]["seqs"], [2, 3])
        tail = drain_until(b, lambda m: m.get("type") == 17 or "error" in m)
        self.assertEqual(tail[0]["type"], 16, tail[0])
        self.assertEqual(tail[-1], last)
        self.assertEqual([(s_, p, r) for s_, p, r, _ in self.tree(sid)][2:],
                         [(2, None, "user"), (3, 2, "assistant")])
        self.assertEqual(self.tree(sid)[3][3], last["data"]["message"])
        for x in (a, b, s):
            x.close()

    def test_stop_and_resume_a_compare(self):
        uid = self.db.add_user(balance=10)
        sid = self.session(uid)
        a = self.chatds[0].client()
        a.send(18, dict(user_id=uid, session_id=sid, seq=1, model_names=[MODEL, "gpt-4-turbo"], stream=True))
        drain_until(a, lambda m: m.get("type") == 7)
        with self.agent.held():  # still running when the follower and the stop come
            b = self.chatds[1].client()  # another tab follows both answers
            b.send(16, dict(user_id=uid, session_id=sid, after=0))
            s = self.chatds[1].client()  # and one more stops them, all of them
            self.assertEqual(s.req(8, dict(user_id=uid, session_id=sid))["type"], 8)
        got = []
        while sum(1 for m in got if m.get("type") == 18) < 2:
            got.append(a.recv())
            self.assertNotIn("error", got[-1])
        finals = [m for m in got if m.get("type") == 18]
        self.assertEqual(sorted(f["data"]["answer"] for f in finals), [0, 1])
        for f in finals:
            self.assertTrue(f["data"]["message"].endswith("[stopped]"), f)
        # the follower saw the same two ends, the stream's last one last
        seen = []
        while not seen or seen[-1] != got[-1]:
            seen.append(b.recv())
            self.assertNotIn("error", seen[-1])
        self.assertEqual(seen[0]["type"], 16)
        self.assertEqual(sorted(m["data"]["answer"] for m in seen if m.get("type") == 18), [0, 1])
        self.assertEqual(sorted((p, r) for s_, p, r, c in self.tree(sid) if s_ >= 2), [(0, "assistant")] * 2)
        # the lease is free: the session takes the next turn at once
        self.assertEqual(a.chat(uid, sid, "next")["type"], 3)
        for x in (a, b, s):
            x.close()


    def held_slots(self, uid):
        return {s_ for s_, in self.db.query("select slot from budget_holds where user_id = %s", (uid,))}

    def test_one_answer_side_by_side_fails_and_the_others_go_on(self):
        uid = self.db.add_user(balance=10)
        # (made here, not by a turn: no title is being charged meanwhile)
        sid = self.db.add_session(uid, messages=[("user", "q one"), ("assistant", "a one")])
        a = self.chatds[0].client()
        a.send(18, dict(user_id=uid, session_id=sid, seq=1, model_names=[MODEL, DOWN[0], "gpt-4-turbo"],
                        stream=True))
        got = drain_until(a, lambda m: "error" in m)
        failed = got[-1]
        # The failed answer says which it is; the others stream on.
        self.assertEqual(failed, {"error": "Unable to Receive Response To Query", "code": 6, "type": 18,
                                  "answer": 1, "answers": 3, "model_name": DOWN[0]})
        # Its part of the reservation went back before its error was sent,
        # not when the slowest answer ends.
        self.assertLessEqual(self.held_slots(uid), {0, 2})
        while sum(1 for m in got if m.get("type") == 18 and "data" in m) < 2:
            got.append(a.recv())
            self.assertNotIn("error", got[-1])
        finals = [m["data"] for m in got if m.get("type") == 18 and "data" in m]
        self.assertEqual(sorted((f["answer"], f["answers"], f["model_name"]) for f in finals),
                         [(0, 3, MODEL), (2, 3, "gpt-4-turbo")])
        self.assertNotIn(1, {m["data"]["answer"] for m in got if m.get("type") == 7})
        self.assertEqual(sorted((p, r) for s_, p, r, c in self.tree(sid) if s_ >= 2), [(0, "assistant")] * 2)
        self.assertEqual(self.held_slots(uid), set())
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id = %s", (uid,)), 2)
        self.assertEqual(*balance_and_unspent(self.db, uid, 10))
        # A tab that resumes it later sees the same: the error names its answer.
        b = self.chatds[1].client()
        b.send(16, dict(user_id=uid, session_id=sid))
        seen = drain_until(b, lambda m: m == got[-1])
        self.assertEqual((seen[0]["type"], seen[0]["data"]["active"]), (16, False))
        self.assertEqual([m for m in seen if "error" in m], [failed])
        # The lease is free: the session takes the next turn at once.
        self.assertEqual(a.chat(uid, sid, "next")["type"], 3)
        a.close()
        b.close()

    def test_every_answer_side_by_side_fails(self):
        uid = self.db.add_user(balance=10, models=(4, 5, 6, 8))
        sid = self.db.add_session(uid, messages=[("user", "q one"), ("assistant", "a one")])
        a = self.chatds[0].client()
        a.send(18, dict(user_id=uid, session_id=sid, seq=1, model_names=list(DOWN), stream=True))
        errors = [a.recv(), a.recv()]
        self.assertEqual(sorted((e["answer"], e["answers"], e["model_name"], e["code"], e["type"]) for e in errors),
                         [(0, 2, DOWN[0], 6, 18), (1, 2, DOWN[1], 6, 18)])
        # Nothing stored, nothing charged, nothing held, the session free.
        self.assertEqual(len(self.tree(sid)), 2)
        self.assertEqual(self.held_slots(uid), set())
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), 10)
        self.assertEqual(self.db.one("select count(*) from usage_ledger where user_id = %s", (uid,)), 0)
        self.assertEqual(a.chat(uid, sid, "next")["type"], 3)
        a.close()


SEED = int(os.environ.get("TREE_SEED", "0")) or random.randrange(1, 1 << 30)
HISTORY = 6  # MAX_CHAT_HISTORY_CONTEXT of the randomized run: paths outgrow it


def echo_summary(path):
    """The running summary the echo agent writes along a path: the first
    40 bytes of each question answered on it (src/chat-agent/echo.c)."""
    out = ""
    for role, content in path:
        if role == "user":
            take = content.encode()[:40].decode(errors="ignore")
            out = (out + " | " + take) if out else take
    return out.encode()[:1000].decode(errors="ignore")


class TreeRandom(unittest.TestCase):
    """Random turns, edits, regenerates and switches by one client per
    session, each request on either of two chatd instances, several
    sessions at once, while Redis is flushed, killed and restarted. After
    every stored turn: the agent was given exactly the path the turn
    continues (its newest HISTORY messages) and that path's own summary
    chain, the tree is whole, and balance = start - charges."""

    OPS = 30  # per session

    @classmethod
    def setUpClass(cls):
        cls.rds = cls.agent = cls.db = None
        cls.chatds = []
        try:
            cls.rds = RedisServer()
            cls.agent = Agent()
            cls.db = Database("chatd_tree_random")
            cls.chatds = [Chatd(cls.db, agent_port=cls.agent.port, REDIS_PORT=cls.rds.port,
                                MAX_CHAT_HISTORY_CONTEXT=HISTORY, RATE_LIMIT_PER_MINUTE=1000,
                                AI_TIMEOUT_SECONDS=20) for _ in range(2)]
        except BaseException:
            cleanup(*cls.chatds, cls.agent, cls.db, cls.rds)
            raise

    @classmethod
    def tearDownClass(cls):
        cleanup(*cls.chatds, cls.agent, cls.db, cls.rds)

    def tree(self, sid):
        rows = self.db.query("select seq, parent_seq, role, content from chat_messages where session_id = %s",
                             (sid,))
        return {s: (p, r, c) for s, p, r, c in rows}

    def path(self, tree, end):
        out = []
        while end is not None and end >= 0:
            p, r, c = tree[end]
            out.append((r, c))
            end = p
        return out[::-1]

    def check_whole(self, sid, tree):
        for s, (p, _, _) in tree.items():
            self.assertTrue(p is None or (p in tree and p < s), (sid, s, p))
        leaf = self.db.one("select active_leaf from chat_sessions where session_id = %s", (sid,))
        self.assertIn(leaf, tree)
        return leaf

    def agent_saw(self, sid, n_before):
        recs = [r for r in self.agent.requests() if r["method"] in ("Process", "ProcessStream")
                and r["session_id"] == sid]
        self.assertEqual(len(recs), n_before + 1, "one agent call per turn")
        return recs[-1], len(recs)

    def run_session(self, rnd, uid, done):
        c = [inst.client() for inst in self.chatds]
        sid = c[0].chat(uid, "NEW", "start %d" % rnd.randrange(1000))["data"]["session_id"]
        calls = 1
        for k in range(self.OPS):
            tree = self.tree(sid)
            leaf = self.check_whole(sid, tree)
            users = [s for s, (_, r, _) in tree.items() if r == "user"]
            answers = [s for s, (_, r, _) in tree.items() if r == "assistant"]
            op = rnd.choice((3, 3, 17, 18, 19))
            conn = rnd.choice(c)
            word = "w%d-%d" % (k, rnd.randrange(10 ** 6))
            if op == 3:
                msg, end = word, leaf
                r = conn.chat(uid, sid, msg)
            elif op == 17:
                seq = rnd.choice(users)
                msg, end = word, tree[seq][0]
                r = conn.req(17, dict(user_id=uid, session_id=sid, seq=seq, message=msg))
            elif op == 18:
                seq = rnd.choice(answers)
                q = tree[seq][0]
                msg, end = tree[q][2], tree[q][0]
                r = conn.req(18, dict(user_id=uid, session_id=sid, seq=seq))
            else:
                seq = rnd.choice(list(tree))
                under = {seq}
                for s in sorted(tree):
                    if tree[s][0] in under:
                        under.add(s)
                r = conn.req(19, dict(user_id=uid, session_id=sid, seq=seq))
                self.assertEqual(r, {"type": 19, "data": {"user_id": uid, "session_id": sid,
                                                          "active_leaf": max(under)}})
                continue
            self.assertEqual(r.get("type"), op, (op, r))
            rec, calls = self.agent_saw(sid, calls)
            want = self.path(tree, end)
            self.assertEqual(rec["chat_message"], msg)
            self.assertEqual([(m["role"], m["content"]) for m in json.loads(rec["chat_history"])], want[-HISTORY:],
                             "seed %d: op %d of session %s" % (SEED, op, sid))
            self.assertEqual(rec["chat_summary"], echo_summary(want), "seed %d" % SEED)
            after = self.tree(sid)
            new_leaf = self.check_whole(sid, after)
            if op != 3:
                self.assertEqual(r["data"]["active_leaf"], new_leaf)
            # the new path: the old one (to end), the question, the answer
            self.assertEqual(self.path(after, new_leaf), want + [("user", msg), ("assistant", r["data"]["message"])])
            self.assertEqual(*balance_and_unspent(self.db, uid, 100))
        for x in c:
            x.close()
        done.append(sid)

    def test_random_branching_under_redis_faults(self):
        print("tree: seed %d (TREE_SEED to repeat)" % SEED, file=sys.stderr)
        rnd = random.Random(SEED)
        sessions = 4
        rnds = [random.Random(rnd.randrange(1 << 30)) for _ in range(sessions)]
        users = [self.db.add_user(balance=100) for _ in range(sessions)]
        done, faults = [], []
        stop = threading.Event()

        def fault():
            f = random.Random(rnd.randrange(1 << 30))
            while not stop.wait(f.uniform(0.05, 0.3)):
                kind = f.choice(("flush", "flush", "kill"))
                faults.append(kind)
                if kind == "flush":
                    try:
                        self.rds.client().flushall()
                    except redis.exceptions.ConnectionError:
                        pass
                else:
                    self.rds.kill(hard=True)
                    stop.wait(f.uniform(0.05, 0.3))
                    self.rds.start()

        ft = threading.Thread(target=fault)
        ft.start()
        try:
            run_threads(sessions, lambda i: self.run_session(rnds[i], users[i], done))
        finally:
            stop.set()
            ft.join()
        self.assertEqual(len(done), sessions)
        print("tree: %d sessions x %d operations, faults %s" % (sessions, self.OPS,
              {k: faults.count(k) for k in set(faults)}), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
