"""Issue 6: per-user rate limits (RATE_LIMIT_PER_MINUTE, DAILY_MESSAGE_LIMIT),
counted in Redis across chatd instances, re-seeded from PostgreSQL after a
flush, and not enforced (fail open) while Redis is down.

Each class runs its own redis-server: these tests read the counters, flush
and stop Redis, and other modules flush the shared one at any moment."""

import re
import time
import unittest

from harness import Agent, Chatd, Database, RedisServer, StackCase, cleanup

MINUTE_RE = re.compile(r"^Too Many Messages: try again in (\d+) seconds$")
DAY_RE = re.compile(r"^Daily Message Limit Reached: try again in (\d+) seconds$")


def fresh_window(need=10.0):
    """Sleeps into the next UTC minute when fewer than need seconds are left
    in this one, so that a test's turns all fall into one minute window (and
    one day: a day ends with a minute)."""
    left = 60 - time.time() % 60
    if left < need:
        time.sleep(left + 0.2)


def seconds_left(window):
    return window - time.time() % window


def process_calls(agent):
    return len([r for r in agent.requests() if r["method"] in ("Process", "ProcessStream")])


def user_turns(db, uid):
    return db.one("select count(*) from chat_messages m join chat_sessions s using (session_id)"
                  " where s.user_id = %s and m.role = 'user'", (uid,))


def balance(db, uid):
    return db.one("select balance from user_data where user_id = %s", (uid,))


def rl_keys(r, uid, kind):
    return [k.decode() for k in r.keys("chatd:{u:%s}:rl:%s:*" % (uid, kind))]



def ledger_turns(db, uid, sid, seqs, kind="turn", age=None, since_midnight=None):
    """Stored turns as the ledger holds them (what the rate limits are
    re-seeded from): one row per seq, now, age ago, or at UTC midnight
    plus since_midnight."""
    when = "clock_timestamp()"
    if age is not None:
        when = "clock_timestamp() - interval '%s'" % age
    if since_midnight is not None:
        when = ("date_trunc('day', now() at time zone 'utc') at time zone 'utc' + interval '%s'"
                % since_midnight)
    for seq in seqs:
        db.query("insert into usage_ledger (user_id, session_id, seq, kind, model_id, model_name, cost,"
                 " created_at) values (%%s, %%s, %%s, %%s, 8, 'llama3.1:8b', 0, %s)" % when,
                 (uid, sid, seq, kind))

class LimitCase(StackCase):
    """A StackCase whose chatd uses a private Redis (cls.redis, cls.r) and
    the limits in LIMITS."""

    LIMITS = {}
    # The turns' charges are what these tests compare; a new session's
    # title is charged after its reply, whenever it comes.
    AGENT_ENV = dict(AGENT_DISABLE="Title")

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.r = cls.redis.client()
        cls.CHATD_ENV = dict(cls.LIMITS, REDIS_PORT=cls.redis.port)
        try:
            super().setUpClass()
        except BaseException:
            cls.redis.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.r.close()
        try:
            super().tearDownClass()
        finally:
            cls.redis.stop()

    def assert_limited(self, r, regex=MINUTE_RE, code=27, window=60):
        self.assertEqual(set(r), {"error", "code", "type"}, r)
        self.assertEqual((r["code"], r["type"]), (code, 3), r)
        m = regex.match(r["error"])
        self.assertIsNotNone(m, r["error"])
        n = int(m.group(1))
        self.assertTrue(1 <= n <= window, n)
        self.assertLessEqual(abs(n - seconds_left(window)), 2, (n, seconds_left(window)))
        return n


class MinuteLimit(LimitCase):
    DB_PREFIX = "chatd_limits_min"
    LIMITS = dict(RATE_LIMIT_PER_MINUTE=3)

    def setUp(self):
        fresh_window()
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def test_fourth_turn_in_a_minute_is_refused_and_leaves_no_trace(self):
        uid = self.db.add_user(balance=1)
        sid = self.c.chat(uid, "NEW", "one")["data"]["session_id"]
        for text in ("two", "three"):
            self.assertEqual(self.c.chat(uid, sid, text)["type"], 3)
        calls, money, turns = process_calls(self.agent), balance(self.db, uid), user_turns(self.db, uid)
        sessions = self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,))
        self.assert_limited(self.c.chat(uid, sid, "four"))
        self.assert_limited(self.c.chat(uid, "NEW", "five"))
        self.assertEqual(process_calls(self.agent), calls)  # the agent was not called
        self.assertEqual(balance(self.db, uid), money)  # nothing charged
        self.assertEqual(user_turns(self.db, uid), turns)  # nothing stored
        self.assertEqual(self.db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), sessions)
        # the connection goes on serving other requests
        self.assertAlmostEqual(self.c.req(6, {"user_id": uid})["data"]["balance"], float(money), places=9)
        # refused turns are not counted: the counter stays at the limit
        keys = rl_keys(self.r, uid, "m")
        self.assertEqual(len(keys), 1, keys)
        self.assertEqual(int(self.r.get(keys[0])), 3)
        self.assertEqual(rl_keys(self.r, uid, "d"), [])  # DAILY_MESSAGE_LIMIT=0: no day counter
        self.assertLessEqual(self.r.ttl(keys[0]), 120)

    def test_another_user_is_not_affected(self):
        a = self.db.add_user(balance=1)
        b = self.db.add_user(balance=1)
        for i in range(3):
            self.assertEqual(self.c.chat(a, "NEW", "a%d" % i)["type"], 3)
        self.assert_limited(self.c.chat(a, "NEW", "a3"))
        for i in range(3):
            self.assertEqual(self.c.chat(b, "NEW", "b%d" % i)["type"], 3)
        self.assert_limited(self.c.chat(b, "NEW", "b3"))

    def test_requests_refused_for_other_reasons_do_not_count(self):
        uid = self.db.add_user(models=(4,), balance=1)
        for _ in range(4):
            self.assertEqual(self.c.chat(uid, "NEW", "no access")["code"], 7)
            self.assertEqual(self.c.chat(uid, "NEW", "unknown", model="nope")["code"], 24)
        for i in range(3):
            self.assertEqual(self.c.chat(uid, "NEW", "ok %d" % i, model="gpt-4-turbo")["type"], 3)
        self.assert_limited(self.c.chat(uid, "NEW", "over", model="gpt-4-turbo"))

    def test_flushall_does_not_reset_the_count(self):
        uid = self.db.add_user(balance=1)
        for i in range(2):
            self.assertEqual(self.c.chat(uid, "NEW", "before %d" % i)["type"], 3)
        self.r.flushall()
        # seeded from the 2 turns PostgreSQL holds: one more is allowed
        self.assertEqual(self.c.chat(uid, "NEW", "after")["type"], 3)
        self.r.flushall()
        self.assert_limited(self.c.chat(uid, "NEW", "over"))

    def test_turns_stored_earlier_in_the_minute_count(self):
        # e.g. a counter evicted or flushed before this instance saw the user:
        # the turns the ledger holds since the minute began are the count.
        uid = self.db.add_user(balance=1)
        sid = self.db.add_session(uid, messages=[("user", "q1"), ("assistant", "a1"),
                                                 ("user", "q2"), ("assistant", "a2")])
        ledger_turns(self.db, uid, sid, [1, 3])
        # ...but not those of an earlier minute, nor a title's charge
        ledger_turns(self.db, uid, sid, [5], age="61 seconds")
        ledger_turns(self.db, uid, sid, [1], kind="title")
        self.assertEqual(self.c.chat(uid, sid, "third")["type"], 3)
        self.assert_limited(self.c.chat(uid, sid, "fourth"))

    def test_the_next_minute_starts_afresh(self):
        uid = self.db.add_user(balance=1)
        for i in range(3):
            self.assertEqual(self.c.chat(uid, "NEW", "m%d" % i)["type"], 3)
        # keep hammering while limited: the lockout must still end with the minute
        for _ in range(3):
            n = self.assert_limited(self.c.chat(uid, "NEW", "again"))
        # This client reads nothing while it waits, so it would not answer
        # chatd's pings and be hung up (2 x WS_PING_SECONDS): wait without it.
        self.c.close()
        time.sleep(n + 0.3)
        self.c = self.chatd.client()
        self.assertEqual(self.c.chat(uid, "NEW", "next minute")["type"], 3)
        self.assertEqual(sorted(int(self.r.get(k)) for k in rl_keys(self.r, uid, "m")), [1, 3])


class DailyLimit(LimitCase):
    DB_PREFIX = "chatd_limits_day"
    LIMITS = dict(DAILY_MESSAGE_LIMIT=3)

    def setUp(self):
        fresh_window()
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def test_daily_limit(self):
        uid = self.db.add_user(balance=1)
        for i in range(3):
            self.assertEqual(self.c.chat(uid, "NEW", "d%d" % i)["type"], 3)
        calls, money, turns = process_calls(self.agent), balance(self.db, uid), user_turns(self.db, uid)
        self.assert_limited(self.c.chat(uid, "NEW", "over"), DAY_RE, 28, 86400)
        self.assertEqual((process_calls(self.agent), balance(self.db, uid), user_turns(self.db, uid)),
                         (calls, money, turns))
        self.assertEqual(rl_keys(self.r, uid, "m"), [])  # RATE_LIMIT_PER_MINUTE=0: no minute counter
        keys = rl_keys(self.r, uid, "d")
        self.assertEqual(len(keys), 1, keys)
        self.assertTrue(keys[0].endswith(time.strftime(":rl:d:%Y%m%d", time.gmtime())), keys)
        self.assertEqual(int(self.r.get(keys[0])), 3)
        self.assertLessEqual(self.r.ttl(keys[0]), 86400 + 60)

    def test_seeded_from_todays_turns_after_a_flush(self):
        uid = self.db.add_user(balance=1)
        today = self.db.add_session(uid, messages=[("user", "t1"), ("assistant", "a1"), ("file", "f")])
        yesterday = self.db.add_session(uid, messages=[("user", "y1"), ("user", "y2")])
        ledger_turns(self.db, uid, today, [1])
        ledger_turns(self.db, uid, yesterday, [1, 2], since_midnight="-1 second")
        self.r.flushall()
        # 1 turn today (yesterday's do not count)
        self.assertEqual(self.c.chat(uid, today, "t2")["type"], 3)
        self.r.flushall()
        self.assertEqual(self.c.chat(uid, today, "t3")["type"], 3)
        self.r.flushall()
        self.assert_limited(self.c.chat(uid, today, "t4"), DAY_RE, 28, 86400)


class OverBoth(LimitCase):
    DB_PREFIX = "chatd_limits_both"
    LIMITS = dict(RATE_LIMIT_PER_MINUTE=2, DAILY_MESSAGE_LIMIT=2)

    def test_over_both_reports_the_day(self):
        fresh_window()
        c = self.chatd.client()
        uid = self.db.add_user(balance=1)
        for i in range(2):
            self.assertEqual(c.chat(uid, "NEW", "x%d" % i)["type"], 3)
        self.assert_limited(c.chat(uid, "NEW", "over"), DAY_RE, 28, 86400)
        c.close()


class MinuteUnderDay(LimitCase):
    DB_PREFIX = "chatd_limits_minday"
    LIMITS = dict(RATE_LIMIT_PER_MINUTE=1, DAILY_MESSAGE_LIMIT=5)

    def test_minute_refusals_do_not_use_up_the_day(self):
        fresh_window()
        c = self.chatd.client()
        uid = self.db.add_user(balance=1)
        self.assertEqual(c.chat(uid, "NEW", "one")["type"], 3)
        for _ in range(4):
            self.assert_limited(c.chat(uid, "NEW", "over"))
        self.assertEqual(int(self.r.get(rl_keys(self.r, uid, "d")[0])), 1)
        self.assertEqual(int(self.r.get(rl_keys(self.r, uid, "m")[0])), 1)
        c.close()


class Shared(unittest.TestCase):
    """Two chatd instances on one database and one Redis."""

    def test_two_instances_share_the_count(self):
        db = agent = a = b = redis = None
        try:
            db = Database("chatd_limits_two")
            agent = Agent()
            redis = RedisServer()
            a = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port, RATE_LIMIT_PER_MINUTE=3)
            b = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port, RATE_LIMIT_PER_MINUTE=3)
            fresh_window()
            ca, cb = a.client(), b.client()
            uid = db.add_user(balance=1)
            self.assertEqual(ca.chat(uid, "NEW", "a1")["type"], 3)
            self.assertEqual(cb.chat(uid, "NEW", "b1")["type"], 3)
            self.assertEqual(ca.chat(uid, "NEW", "a2")["type"], 3)
            for c in (cb, ca):
                r = c.chat(uid, "NEW", "over")
                self.assertEqual(r.get("code"), 27, r)
                self.assertRegex(r["error"], MINUTE_RE)
            self.assertEqual(user_turns(db, uid), 3)
            ca.close()
            cb.close()
        finally:
            cleanup(a, b, agent, redis, db)


class Off(LimitCase):
    DB_PREFIX = "chatd_limits_off"  # the harness's default: both limits 0

    def test_zero_means_no_limit_and_no_counters(self):
        fresh_window()
        c = self.chatd.client()
        uid = self.db.add_user(balance=1)
        for i in range(8):
            self.assertEqual(c.chat(uid, "NEW", "free %d" % i)["type"], 3)
        self.assertEqual(rl_keys(self.r, uid, "*"), [])
        c.close()


class RedisDown(unittest.TestCase):
    def test_turns_are_served_while_redis_is_down(self):
        db = agent = chatd = redis = None
        try:
            db = Database("chatd_limits_noredis")
            agent = Agent()
            redis = RedisServer()
            # One worker, so the Redis connection that broke is the one the
            # next turn uses (each worker has its own).
            chatd = Chatd(db, agent_port=agent.port, REDIS_PORT=redis.port, WORKER_THREADS=1,
                          RATE_LIMIT_PER_MINUTE=2)
            fresh_window(20)
            c = chatd.client()
            uid = db.add_user(balance=1)
            for i in range(2):
                self.assertEqual(c.chat(uid, "NEW", "up %d" % i)["type"], 3)
            self.assertEqual(c.chat(uid, "NEW", "limited").get("code"), 27)

            redis.kill()  # fail open: served, though over the limit
            for i in range(3):
                r = c.chat(uid, "NEW", "down %d" % i)
                self.assertEqual(r["type"], 3, r)
            self.assertEqual(user_turns(db, uid), 5)
            self.assertIn("event=rate_limit_not_enforced reason=redis", chatd.logs())

            redis.start()  # empty: the count comes back from PostgreSQL
            time.sleep(1.5)  # past cache.c's back-off
            r = c.chat(uid, "NEW", "back")
            self.assertEqual(r.get("code"), 27, r)
            c.close()
        finally:
            cleanup(chatd, agent, redis, db)


if __name__ == "__main__":
    unittest.main()
