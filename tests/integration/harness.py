"""Integration-test harness: real PostgreSQL, Redis, chat-agent and chatd.

scripts/test.sh starts one PostgreSQL and exports DB_*; CTest exports
CHATD_BIN, CHAT_AGENT_BIN and CHATD_SOURCE_DIR. Each test module gets its
own database and its own Redis (module_redis), so that modules can run in
parallel, and starts its own chat-agent and chatd processes on free
loopback ports.
"""

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import psycopg2
import redis
import websocket

SOURCE_DIR = os.environ.get("CHATD_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_DIR, "scripts"))
import pg_statement  # noqa: E402  (scripts/pg_statement.py: chatd's statements, for EXPLAIN)

CHATD_BIN = os.environ.get("CHATD_BIN", os.path.join(SOURCE_DIR, "build", "chatd"))
AGENT_BIN = os.environ.get("CHAT_AGENT_BIN", os.path.join(SOURCE_DIR, "build", "chat-agent"))

PG = dict(
    host=os.environ.get("DB_HOST", "127.0.0.1"),
    port=int(os.environ.get("DB_PORT", "55433")),
    user=os.environ.get("DB_USER", "chatd"),
    password=os.environ.get("DB_PASSWORD", "chatd"),
)

MODEL = "llama3.1:8b"  # id 8, the client's default


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log_path, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s:\n%s" % (proc.returncode, read(log_path)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open:\n%s" % (port, read(log_path)))


def wait_for(fn, what, tries=400, delay=0.05):
    """Polls fn() until it returns something true, and returns that. The
    bound only keeps a broken build from hanging: it is not a timed
    assertion (the tests never assert how fast something happens)."""
    for _ in range(tries):
        v = fn()
        if v:
            return v
        time.sleep(delay)
    raise AssertionError("never happened: " + what)


def end_process(proc, sig=None, timeout=10):
    """Sends proc sig (SIGTERM by default) if it is still running, waits up
    to timeout seconds, then SIGKILLs it."""
    if proc.poll() is None:
        proc.send_signal(sig if sig is not None else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_sanitizers(log_path):
    text = read(log_path)
    for mark in SANITIZER_MARKS:
        if mark in text:
            raise AssertionError("sanitizer report in %s:\n%s" % (log_path, text[text.index(mark) - 200:][:4000]))


def explain(db, name, params):
    """EXPLAIN ANALYZE of chatd's statement name (scripts/pg_statement.py
    reads it) with params ($1.. as SQL literals)."""
    sql = pg_statement.statement_sql(name)
    for i in range(len(params), 0, -1):  # $10 before $1
        sql = sql.replace("$%d" % i, params[i - 1])
    return "\n".join(row[0] for row in db.query("explain (analyze, costs off) " + sql))


class Database:
    """A fresh database for one test module, dropped at the end."""

    def __init__(self, prefix):
        self.name = "%s_%s" % (prefix, uuid.uuid4().hex[:8])
        admin = psycopg2.connect(dbname="postgres", **PG)
        admin.autocommit = True
        with admin.cursor() as c:
            c.execute('create database "%s"' % self.name)
        admin.close()
        self.conn = None

    def connect(self):
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(dbname=self.name, **PG)
            self.conn.autocommit = True
        return self.conn

    def query(self, sql, params=None):
        with self.connect().cursor() as c:
            c.execute(sql, params)
            return c.fetchall() if c.description else None

    def one(self, sql, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def add_user(self, name="Test User", models=(4, 5, 8), balance=1.0):
        # The exact statement admins use, plus RETURNING to learn the id.
        return str(self.one("insert into user_data(username, models, balance) values (%s, %s, %s) returning user_id",
                            (name, list(models), balance)))

    def add_session(self, user_id, name="A session", messages=(), model_id=8):
        sid = str(uuid.uuid4())
        self.query("insert into chat_sessions(session_id, user_id, session_name, model_id, next_seq)"
                   " values (%s, %s, %s, %s, %s)", (sid, user_id, name, model_id, len(messages)))
        for i, (role, content) in enumerate(messages):
            self.query("insert into chat_messages(session_id, seq, role, content) values (%s, %s, %s, %s)",
                       (sid, i, role, content))
        return sid

    def drop(self):
        if self.conn is not None:
            self.conn.close()
        admin = psycopg2.connect(dbname="postgres", **PG)
        admin.autocommit = True
        with admin.cursor() as c:
            c.execute('drop database if exists "%s" with (force)' % self.name)
        admin.close()


def read_records(path):
    """The JSON lines of an AGENT_RECORD_FILE. A line still being written
    (no newline yet) is not one yet: a read of a regular file can see part
    of a concurrent write."""
    text = read(path)
    text = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Agent:
    """The reference chat-agent (echo back end) on a free port."""

    def __init__(self, **env):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chat-agent-")
        self.log_path = os.path.join(self.dir, "agent.log")
        self.record = os.path.join(self.dir, "requests.jsonl")
        self.env = dict(os.environ, AGENT_HOST="127.0.0.1", AGENT_PORT=str(self.port),
                        AGENT_RECORD_FILE=self.record, **{k: str(v) for k, v in env.items()})
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([AGENT_BIN], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, self.log_path)

    def stop(self):
        if self.proc:
            end_process(self.proc)
        self.log.close()
        check_sanitizers(self.log_path)

    def requests(self):
        """Every request the agent received, oldest first."""
        return read_records(self.record)

    @contextlib.contextmanager
    def held(self):
        """The agent held still (SIGSTOP) while a test acts on a reply under
        way (resumes it, stops it, reloads the page under it): the reply
        cannot end on its own first, however long the machine takes. chatd's
        call just waits; what came due meanwhile is sent on SIGCONT."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)


class Chatd:
    """A chatd process bound to a free port, on database db."""

    def __init__(self, db, agent_port=None, bin_path=None, **env):
        self.db = db
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatd-")
        self.log_path = os.path.join(self.dir, "chatd.log")
        self.bin = bin_path or CHATD_BIN
        self.env = dict(os.environ)
        self.env.update(
            SERVER_HOST="127.0.0.1", SERVER_PORT=str(self.port),
            DB_HOST=PG["host"], DB_PORT=str(PG["port"]), DB_USER=PG["user"], DB_PASSWORD=PG["password"],
            DB_NAME=db.name, REDIS_HOST="127.0.0.1", REDIS_PORT=str(module_redis().port),
            AI_SERVER_HOST="127.0.0.1", AI_SERVER_PORT=str(agent_port or free_port()),
            MIGRATIONS_DIR=os.path.join(SOURCE_DIR, "migrations"),
            PUBLIC_DIR=os.path.join(self.dir, "public"),
            PUBLIC_BASE_URL="http://127.0.0.1:%d" % self.port,
            LOG_LEVEL="info", CHATD_ENV_FILE="/dev/null",
            WEB_DIR=os.path.join(SOURCE_DIR, "web"),
            # Off unless a test is about them: most tests send many turns
            # for one user from one address.
            RATE_LIMIT_PER_MINUTE="0", DAILY_MESSAGE_LIMIT="0",
        )
        self.env.update({k: str(v) for k, v in env.items()})
        os.makedirs(self.env["PUBLIC_DIR"], exist_ok=True)
        self.proc = None
        self.start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.bin], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, self.log_path)

    def stop(self, sig=None, timeout=30):
        """Stops chatd; returns its exit status. Raises if a sanitizer
        reported anything (the asan build runs this whole suite)."""
        if self.proc is None:
            return None
        end_process(self.proc, sig, timeout)
        self.log.close()
        check_sanitizers(self.log_path)
        return self.proc.returncode

    def logs(self):
        return read(self.log_path)

    def client(self, **kw):
        return Client(self.url, **kw)


class RedisServer:
    """A private redis-server on a free port, so a test can kill and
    restart it (losing its data) without touching anyone else's: every
    module has one (module_redis), and a test may start more."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatd-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.start()

    def start(self):
        """Starts it (again), empty: nothing is saved across restarts."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", self.log_path])
        wait_port(self.port, self.proc, self.log_path)

    def kill(self, hard=False):
        """Stops it: SIGTERM, or with hard SIGKILL (a crash)."""
        if self.proc is not None:
            end_process(self.proc, signal.SIGKILL if hard else None)
        self.proc = None

    def stop(self):
        """For cleanup(): stops it and removes its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port)


NGINX_BIN = os.environ.get("NGINX_BIN", shutil.which("nginx") or "/usr/sbin/nginx")


class Nginx:
    """A real nginx on a free port, round robin over the given chatd
    ports, with docker/nginx.conf's proxy settings (WebSocket upgrade,
    X-Forwarded-For, no buffering)."""

    def __init__(self, upstream_ports):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatd-nginx-")
        self.log_path = os.path.join(self.dir, "error.log")
        servers = "".join("        server 127.0.0.1:%d max_fails=0;\n" % p for p in upstream_ports)
        conf = """
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log info;
daemon off;
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log %(dir)s/access.log;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    upstream chatd {
%(servers)s        keepalive 16;
    }
    map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
    server {
        listen 127.0.0.1:%(port)d;
        client_max_body_size 64m;
        location / {
            proxy_pass http://chatd;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
""" % dict(dir=self.dir, servers=servers, port=self.port)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(self.log_path, "a")
        self.start()

    def start(self):
        self.proc = subprocess.Popen([NGINX_BIN, "-p", self.dir, "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port, self.proc, self.log_path)

    def restart(self):
        """Cuts every connection through it (fast shutdown), then listens
        again on the same port: what a client sees when the proxy or the
        network in front of chatd fails."""
        end_process(self.proc, signal.SIGTERM)
        self.start()

    @property
    def http(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def client(self, **kw):
        return Client(self.url, **kw)

    def stop(self):
        end_process(self.proc, signal.SIGQUIT)  # graceful: finishes open requests
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def behind_nginx(db, n, agent_port, **env):
    """n chatd instances on db (each with env) behind one nginx, as
    docker/nginx.conf runs them: (instances, nginx). If one fails to start,
    those already running are stopped before the error goes on."""
    chatds, nginx = [], None
    try:
        for _ in range(n):
            chatds.append(Chatd(db, agent_port=agent_port, **env))
        nginx = Nginx([c.port for c in chatds])
    except BaseException:
        cleanup(nginx, *chatds)
        raise
    return chatds, nginx


class PostgresServer:
    """A private PostgreSQL (with its own Redis) on free ports, started by
    scripts/services.sh, so a test can stop and restart it without touching
    the one every other test module shares. It has a database name, so it
    can stand where Chatd wants a Database. durable: fsync on (no
    CHATD_PG_FAST), for tests where an immediate stop must not lose an
    acknowledged commit."""

    def __init__(self, name, durable=False):
        self.name = name
        self.base = tempfile.mkdtemp(prefix="chatd-pg-")
        os.chmod(self.base, 0o755)  # PostgreSQL runs as 'postgres' when we are root
        self.port, self.redis_port = free_port(), free_port()
        self.env = dict(os.environ, DB_USER=PG["user"], DB_PASSWORD=PG["password"], DB_NAME=name)
        if durable:
            self.env.pop("CHATD_PG_FAST", None)
        else:
            self.env["CHATD_PG_FAST"] = "1"
        self.start()

    def _services(self, *args, check=True):
        subprocess.run([os.path.join(SOURCE_DIR, "scripts", "services.sh")] + list(args), env=self.env,
                       check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        """Starts it (again) on the same ports and data."""
        self._services("start", self.base, str(self.port), str(self.redis_port))

    def stop_pg(self, mode="fast"):
        """Stops PostgreSQL only: pg_ctl's fast (clean) or immediate (a crash)."""
        version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
        cmd = ["/usr/lib/postgresql/%s/bin/pg_ctl" % version, "stop", "-w", "-m", mode, "-D",
               os.path.join(self.base, "pg")]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, sql, params=None):
        """Rows of sql (None for a statement without any), autocommit."""
        conn = psycopg2.connect(host=PG["host"], port=self.port, user=PG["user"], password=PG["password"],
                                dbname=self.name)
        try:
            conn.autocommit = True
            with conn.cursor() as c:
                c.execute(sql, params)
                return c.fetchall() if c.description else None
        finally:
            conn.close()

    def stop(self):
        """For cleanup(): stops both servers and removes their data."""
        self._services("stop", self.base, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class Client:
    """A WebSocket client that speaks chatd's envelope."""

    def __init__(self, url, timeout=30, **kw):
        self.ws = websocket.create_connection(url, timeout=timeout, **kw)

    def send(self, type_, data):
        self.ws.send(json.dumps({"type": type_, "data": data}))

    def send_raw(self, text):
        self.ws.send(text)

    def req_raw(self, text):
        self.ws.send(text)
        return self.recv()

    def recv(self):
        return json.loads(self.ws.recv())

    def req(self, type_, data):
        self.send(type_, data)
        return self.recv()

    def chat(self, user_id, session_id, message, model=MODEL, **extra):
        data = dict(user_id=user_id, session_id=session_id, model_name=model, message=message,
                    session_prompt="", file_name="")
        data.update(extra)
        self.send(3, data)
        return self.recv()

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


def cleanup(*things):
    """Stops or drops each of things (None is skipped), all of them even if
    one fails, then raises the first failure (e.g. a sanitizer report)."""
    first = None
    for t in things:
        if t is None:
            continue
        try:
            (t.drop if isinstance(t, Database) else t.stop)()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            first = first or e
    if first is not None:
        raise first


class StackCase(unittest.TestCase):
    """A test class with its own database, chat-agent and chatd, shared by
    its tests. Subclasses set DB_PREFIX, AGENT_ENV and CHATD_ENV."""

    DB_PREFIX = "chatd_test"
    AGENT_ENV = {}
    CHATD_ENV = {}

    @classmethod
    def setUpClass(cls):
        cls.db = cls.agent = cls.chatd = None
        try:
            cls.db = Database(cls.DB_PREFIX)
            cls.agent = Agent(**cls.AGENT_ENV)
            cls.chatd = Chatd(cls.db, agent_port=cls.agent.port, **cls.CHATD_ENV)
        except BaseException:
            cleanup(cls.chatd, cls.agent, cls.db)
            raise

    @classmethod
    def tearDownClass(cls):
        cleanup(cls.chatd, cls.agent, cls.db)


class ClientCase(StackCase):
    """A StackCase whose tests each get a client (self.c) of its chatd, and
    the check of an error frame's code (and part of its text)."""

    def setUp(self):
        self.c = self.chatd.client()

    def tearDown(self):
        self.c.close()

    def assertError(self, r, code, text=None):
        self.assertIn("error", r, r)
        self.assertEqual(r["code"], code, r)
        if text is not None:
            self.assertIn(text, r["error"])


_module_redis = None


def module_redis():
    """This test module's own redis-server (each module runs in a process
    of its own), started on first use and stopped when the process ends.
    Several modules run at once, and many FLUSHALL or kill their Redis on
    purpose: one Redis shared by all let a module's FLUSHALL drop another's
    running turn streams, and a page that resumed one was rightly told
    error 30 ("the running turn's frames were lost") in a CI run."""
    global _module_redis
    if _module_redis is None:
        _module_redis = RedisServer()
        atexit.register(_module_redis.stop)
    return _module_redis


def redis_client():
    return redis.Redis(host="127.0.0.1", port=module_redis().port)


def run_threads(n, fn):
    """Runs fn(i) on n threads; re-raises the first failure."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
