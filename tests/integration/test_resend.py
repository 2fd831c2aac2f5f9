"""Issue 23: a turn sent again under its client_turn_id (codes 3, 17, 18)
is stored and charged once and answered as the first one was: after the
first was stored, and while it still runs (two connections at once); a
name is the user's own; a bad name is a clear error 17."""

import threading
import unittest

from harness import MODEL, ClientCase, wait_for


class Resend(ClientCase):
    DB_PREFIX = "chatd_resend"
    AGENT_ENV = {"AGENT_DELAY_MS": 300}

    def charges(self, uid):
        return self.db.one("select count(*) from usage_ledger where user_id = %s and kind = 'turn'", (uid,))

    def titled(self, uid):
        """Waits until the new session's title is stored and charged: it
        is asked for after the first turn's reply, and reserves and
        charges the budget on its own, so balances and holds are compared
        only after it (a CI run under load once counted its hold)."""
        wait_for(lambda: self.db.one("select count(*) from usage_ledger where user_id = %s and kind = 'title'",
                                     (uid,)) == 1, "the title charged")

    def asked(self, message):
        return sum(1 for r in self.agent.requests() if r.get("chat_message") == message)

    def test_sent_again_after_it_was_stored(self):
        uid = self.db.add_user(balance=5)
        first = self.c.chat(uid, "NEW", "count the moons", client_turn_id="t-1")
        self.assertNotIn("error", first, first)
        self.assertEqual(first["data"]["client_turn_id"], "t-1")
        self.titled(uid)
        balance = self.db.one("select balance from user_data where user_id = %s", (uid,))
        other = self.chatd.client()
        again = other.chat(uid, "NEW", "count the moons", client_turn_id="t-1")
        self.assertEqual(again, first)  # the same session, reply and name
        self.assertEqual(self.charges(uid), 1)
        self.assertEqual(self.asked("count the moons"), 1)
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 1)
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), balance)
        # without a name, the same text is a new turn
        self.assertNotEqual(other.chat(uid, first["data"]["session_id"], "count the moons")["data"]["message"], None)
        self.assertEqual(self.charges(uid), 2)
        other.close()

    def test_sent_twice_at_once_is_stored_once(self):
        uid = self.db.add_user(balance=5)
        sid = self.c.chat(uid, "NEW", "start")["data"]["session_id"]
        self.titled(uid)
        replies = [None, None]

        def send(i):
            c = self.chatd.client()
            try:
                replies[i] = c.chat(uid, sid, "once only", client_turn_id="dup")
            finally:
                c.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in replies:
            self.assertNotIn("error", r, r)
        self.assertEqual(replies[0], replies[1])
        self.assertEqual(self.db.one("select count(*) from chat_messages where session_id = %s and content = %s",
                                     (sid, "once only")), 1)
        self.assertEqual(self.charges(uid), 2)  # "start" and this one
        spent = self.db.one("select sum(cost) from usage_ledger where user_id = %s", (uid,))
        self.assertEqual(self.db.one("select balance from user_data where user_id = %s", (uid,)), 5 - spent)
        self.assertEqual(self.db.one("select count(*) from budget_holds where user_id = %s", (uid,)), 0)

    def test_edit_and_regenerate_answer_again_with_their_seqs(self):
        uid = self.db.add_user(balance=5)
        sid = self.c.chat(uid, "NEW", "question")["data"]["session_id"]
        edit = self.c.req(17, dict(user_id=uid, session_id=sid, seq=0, message="better question",
                                   client_turn_id="e1"))
        self.assertEqual((edit["type"], edit["data"]["seqs"], edit["data"]["parent_seq"]), (17, [2, 3], None))
        self.assertEqual(self.c.req(17, dict(user_id=uid, session_id=sid, seq=0, message="better question",
                                             client_turn_id="e1")), edit)
        regen = self.c.req(18, dict(user_id=uid, session_id=sid, seq=3, client_turn_id="r1"))
        self.assertEqual((regen["type"], regen["data"]["seqs"], regen["data"]["parent_seq"]), (18, [4], 2))
        self.assertEqual(self.c.req(18, dict(user_id=uid, session_id=sid, seq=3, client_turn_id="r1")), regen)
        self.assertEqual(self.charges(uid), 3)

    def test_a_name_is_the_users_own(self):
        a, b = self.db.add_user(balance=5), self.db.add_user(balance=5)
        ra = self.c.chat(a, "NEW", "mine", client_turn_id="same")
        rb = self.c.chat(b, "NEW", "mine", client_turn_id="same")
        self.assertNotIn("error", rb, rb)
        self.assertNotEqual(ra["data"]["session_id"], rb["data"]["session_id"])
        self.assertEqual((self.charges(a), self.charges(b)), (1, 1))

    def test_bad_names_are_refused(self):
        uid = self.db.add_user(balance=5)
        for bad in ("", "x" * 65, "has space", "a#1", 7, ["x"], "é"):
            r = self.c.chat(uid, "NEW", "hello", client_turn_id=bad)
            self.assertError(r, 17, "'client_turn_id'")
        self.assertEqual(self.charges(uid), 0)
        self.assertEqual(self.c.chat(uid, "NEW", "hello", client_turn_id=None)["type"], 3)
        self.assertEqual(self.c.chat(uid, "NEW", "hello", client_turn_id="x" * 64)["data"]["client_turn_id"], "x" * 64)


if __name__ == "__main__":
    unittest.main()
