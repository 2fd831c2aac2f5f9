"""Issue 2: migrations, the admin SQL, configuration errors, start-up."""

import os
import subprocess
import unittest
from decimal import Decimal

from harness import CHATD_BIN, PG, SOURCE_DIR, Chatd, Database, free_port


def chatd_cmd(db, *args, **env):
    e = dict(os.environ, DB_HOST=PG["host"], DB_PORT=str(PG["port"]), DB_USER=PG["user"],
             DB_PASSWORD=PG["password"], DB_NAME=db.name, CHATD_ENV_FILE="/dev/null",
             MIGRATIONS_DIR=os.path.join(SOURCE_DIR, "migrations"))
    e.update(env)
    return subprocess.run([CHATD_BIN, *args], env=e, capture_output=True, text=True, timeout=60)


class Migrations(unittest.TestCase):
    def setUp(self):
        self.db = Database("chatd_found")

    def tearDown(self):
        self.db.drop()

    def test_apply_then_noop(self):
        r = chatd_cmd(self.db, "migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("event=migration_applied file=0001_init.sql", r.stderr)
        applied = self.db.one("select count(*) from schema_migrations")
        files = [f for f in os.listdir(os.path.join(SOURCE_DIR, "migrations")) if f.endswith(".sql")]
        self.assertEqual(applied, len(files))

        r = chatd_cmd(self.db, "migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("migration_applied", r.stderr)
        self.assertEqual(self.db.one("select count(*) from schema_migrations"), applied)
        self.assertEqual(self.db.one("select count(*) from model_details"), 9)

    def test_concurrent_migrations_take_turns(self):
        env = dict(os.environ, DB_HOST=PG["host"], DB_PORT=str(PG["port"]), DB_USER=PG["user"],
                   DB_PASSWORD=PG["password"], DB_NAME=self.db.name, CHATD_ENV_FILE="/dev/null",
                   MIGRATIONS_DIR=os.path.join(SOURCE_DIR, "migrations"))
        procs = [subprocess.Popen([CHATD_BIN, "migrate"], env=env, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=60)[1] for p in procs]
        self.assertTrue(all(p.returncode == 0 for p in procs), outs)
        # exactly one of them applied the first migration
        self.assertEqual(sum("file=0001_init.sql" in o for o in outs), 1, outs)

    def test_admin_sql_unchanged(self):
        chatd_cmd(self.db, "migrate")
        self.db.query("insert into user_data(username, models, balance) VALUES ('Test User', array[4,5,8], 1);")
        row = self.db.query("select user_id, username, models, balance from user_data")[0]
        self.assertEqual(len(str(row[0])), 36)
        self.assertEqual(row[1:], ("Test User", [4, 5, 8], 1.0))

    def test_catalogue(self):
        chatd_cmd(self.db, "migrate")
        rows = self.db.query("select model_id, model_name, provider, context_length, input_price_per_1k,"
                             " output_price_per_1k from model_details order by model_id")
        self.assertEqual(rows[0], (0, "gpt-3.5-turbo-0125", "openai", 16385, Decimal("0.0005"), Decimal("0.0015")))
        self.assertEqual(rows[8], (8, "llama3.1:8b", "ollama", 4096, Decimal("0.0015"), Decimal("0.002")))
        self.assertEqual(rows[4][1:4], ("gpt-4-turbo", "openai", 128000))

    def test_user_delete_cascades(self):
        chatd_cmd(self.db, "migrate")
        uid = self.db.add_user()
        self.db.add_session(uid, messages=[("user", "a"), ("assistant", "b")])
        self.db.query("delete from user_data where user_id = %s", (uid,))
        self.assertEqual(self.db.one("select count(*) from chat_sessions"), 0)
        self.assertEqual(self.db.one("select count(*) from chat_messages"), 0)


class Config(unittest.TestCase):
    def run_check(self, **env):
        e = dict(os.environ, CHATD_ENV_FILE="/dev/null")
        e.update(env)
        return subprocess.run([CHATD_BIN, "check"], env=e, capture_output=True, text=True, timeout=30)

    def test_malformed_values_name_the_variable(self):
        cases = [
            (dict(SERVER_PORT="eighty"), 'config: SERVER_PORT="eighty" is not an integer'),
            (dict(REDIS_PORT="70000"), "config: REDIS_PORT=70000 is out of range [1, 65535]"),
            (dict(MAX_CHAT_HISTORY_CONTEXT="-1"), "config: MAX_CHAT_HISTORY_CONTEXT=-1 is out of range [0, 10000]"),
            (dict(LOG_LEVEL="chatty"), 'config: LOG_LEVEL="chatty" is not one of debug, info, warn, error'),
        ]
        for env, line in cases:
            r = self.run_check(**env)
            self.assertEqual(r.returncode, 1, env)
            self.assertEqual(r.stderr.strip(), "chatd: " + line)

    def test_env_file(self):
        path = os.path.join(os.path.dirname(__file__), "bad.env.tmp")
        with open(path, "w") as f:
            f.write("SERVER_PORT=12x\n")
        try:
            e = dict(os.environ, CHATD_ENV_FILE=path)
            e.pop("SERVER_PORT", None)
            r = subprocess.run([CHATD_BIN, "check"], env=e, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn("SERVER_PORT", r.stderr)
        finally:
            os.unlink(path)

    def test_good_config(self):
        r = self.run_check(SERVER_PORT="8123")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unknown_subcommand(self):
        r = subprocess.run([CHATD_BIN, "frobnicate"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)


class Startup(unittest.TestCase):
    def test_starts_migrates_and_stops_cleanly(self):
        db = Database("chatd_found")
        try:
            c = Chatd(db)
            self.assertGreater(db.one("select count(*) from schema_migrations"), 0)
            self.assertIn("event=listening", c.logs())
            self.assertEqual(c.stop(), 0)
            self.assertIn("event=shutdown_done", c.logs())
        finally:
            db.drop()

    def test_database_down_is_a_clear_error(self):
        db = Database("chatd_found")
        try:
            r = chatd_cmd(db, "migrate", DB_PORT=str(free_port()))
            self.assertEqual(r.returncode, 1)
            self.assertIn("event=migrate_failed step=connect", r.stderr)
        finally:
            db.drop()


if __name__ == "__main__":
    unittest.main()
