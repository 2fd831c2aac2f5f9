"""Issue 6: faults, proved by tests.

- chatd killed with SIGKILL in the middle of turns (turns waiting on a slow
  agent, and many fast turns so that some kill lands in the commit): after a
  restart on the same database every turn is stored whole or not at all, and
  nothing is charged twice.
- Redis killed and restarted empty, PostgreSQL stopped (fast, then
  immediate: a crash) and restarted, the agent killed mid-stream, each
  during traffic: every reply is a success or a clear error frame, nothing
  hangs, chatd stays up, full service afterwards, no committed message lost,
  none duplicated, the balance equals what the stored turns cost.
- Disk full during an upload: 507 with a JSON message, no partial or
  temporary file, no row.

"Traffic" is several client threads, each on its own connection, sending
turns (code 3) and codes 0, 1, 2 and 6 one after the other and checking
every reply. After each fault the database is checked turn by turn
(check_store below): what a half-stored turn, a lost acknowledged turn, a
duplicate or a double charge would look like, and whether each stored turn
was given the right context (history and summary) by chatd.

Costs: the echo agent charges AGENT_PRICE_OUT_PER_1K per 1000 tokens of
output, tokens = bytes / 3, and nothing for input here, so a turn costs
(len(reply) + len(new summary)) / 1000 dollars exactly as the agent computes
it; the summary is derived from the Summarize request the agent recorded.
"""

import json
import os
import select
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
from decimal import Decimal

import websocket

from harness import MODEL, Agent, Chatd, Database, PostgresServer, RedisServer, check_sanitizers

PRICES = dict(AGENT_PRICE_IN_PER_1K=0, AGENT_PRICE_OUT_PER_1K=3)
CHATD_ENV = dict(AI_TIMEOUT_SECONDS=20, WORKER_THREADS=4)
RECV_TIMEOUT = 40  # > AI_TIMEOUT_SECONDS: a reply later than this is a hang
START_BALANCE = 1000.0
MAX_CTX = 20  # MAX_CHAT_HISTORY_CONTEXT's default
TURNS_PER_SESSION = 6  # then a client starts a NEW session
VERBOSE = os.environ.get("FAULTS_VERBOSE") == "1"  # counts of what each check saw

# Error codes a request of each type may get while PostgreSQL is down.
PG_DOWN_CODES = {0: {14}, 1: {5}, 2: {9}, 3: {4, 5, 14}, 6: {16}}


# ------------------------------------------------------------- the agent

def agent_priced(db):
    """The agent of these tests charges its own prices (PRICES), far above
    the catalogue's, so the most a turn may cost (what chatd reserves, and
    never charges past: migration 0013) is set to cover them. Call once
    chatd has migrated db."""
    db.query("update model_details set max_turn_cost = 5")


def agent_cost(out_bytes):
    """ca_cost() of src/chat-agent/config.c with AGENT_PRICE_IN_PER_1K=0, as
    chatd takes it: the double field (precise_cost), which the agent sets."""
    return out_bytes / 3.0 / 1000.0 * float(PRICES["AGENT_PRICE_OUT_PER_1K"])


def _utf8_cut(b, n):
    while 0 < n < len(b) and (b[n] & 0xC0) == 0x80:
        n -= 1
    return n


def echo_summary(previous, message):
    """echo_summary_text() of src/chat-agent/echo.c."""
    prev, msg = previous.encode(), message.encode()
    take = len(msg) if len(msg) <= 40 else _utf8_cut(msg, 40)
    out = prev + (b" | " if prev else b"") + msg[:take]
    if len(out) > 1000:
        out = out[:_utf8_cut(out, 1000)]
    return out.decode()


# ----------------------------------------------------------- processes

def kill9(chatd):
    """SIGKILL chatd (no clean-up of any kind runs), then reap it."""
    chatd.proc.send_signal(signal.SIGKILL)
    chatd.proc.wait(30)
    chatd.log.close()
    check_sanitizers(chatd.log_path)  # whatever it said before dying


def restart(chatd, **env):
    """Starts chatd again, same port, same database (and env changes)."""
    chatd.env.update({k: str(v) for k, v in env.items()})
    chatd.start()


def http_get(port, path, timeout=20):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def wait_ready(port, timeout=30):
    """Waits for /readyz 200 (PostgreSQL, Redis and the agent answer)."""
    deadline = time.time() + timeout
    while True:
        try:
            status, body = http_get(port, "/readyz")
        except OSError as e:
            status, body = None, str(e).encode()
        if status == 200:
            return
        if time.time() > deadline:
            raise AssertionError("chatd not ready after %ss: %s %s" % (timeout, status, body))
        time.sleep(0.2)


def wait_until(fn, want, timeout=10):
    """fn() once it returns want, or its last value after timeout."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.05)


def gdb_kill_at(pid, location, log_path):
    """Attaches gdb to pid with a breakpoint at location; when a thread
    hits it, gdb kills the process (SIGKILL). Returns the gdb process once
    the breakpoint is armed, None when gdb cannot attach or set it (the
    log says which)."""
    log = open(log_path, "wb")
    g = subprocess.Popen(["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "break " + location,
                          "-ex", "echo ARMED\\n", "-ex", "continue", "-ex", "bt 4", "-ex", "kill"],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.time() + 60
    while "ARMED" not in read_tail(log_path):
        if g.poll() is not None or time.time() > deadline:
            if g.poll() is None:
                g.kill()
            g.wait()
            return None
        time.sleep(0.05)
    if "Breakpoint 1 at" not in read_tail(log_path):
        g.kill()
        g.wait()
        return None
    time.sleep(0.2)  # "continue" has run: the process goes on
    return g


def read_tail(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def ws_connect(chatd):
    """A WebSocket to chatd on a socket of ours: websocket-client leaks the
    socket of a refused connection (chatd down), and we connect a lot."""
    sock = socket.create_connection(("127.0.0.1", chatd.port), timeout=RECV_TIMEOUT)
    try:
        return websocket.create_connection(chatd.url, timeout=RECV_TIMEOUT, socket=sock)
    except BaseException:
        sock.close()
        raise


# ------------------------------------------------------------- traffic

class Traffic:
    """threads clients, each on its own connection, sending requests one at
    a time in the order OPS (chat turns, and codes 0, 1, 2, 6) until stop()
    or, with count, count requests each. Every reply is checked as it comes
    (check_reply); violations go to self.problems, every turn's outcome to
    self.turns: dict(msg, result: ok | error | lost, code, session)."""

    OPS = (3, 6, 3, 2, 3, 0, 3, 1)

    def __init__(self, chatd, uid, username, threads=6, count=None, stream=False,
                 allowed_errors=None, conn_errors_ok=False, label="t", resume=None):
        self.chatd, self.uid, self.username = chatd, uid, username
        self.n, self.count, self.stream = threads, count, stream
        self.allowed = allowed_errors or {}
        self.conn_errors_ok = conn_errors_ok
        self.label = label
        self.stop_evt = threading.Event()
        self.lock = threading.Lock()
        self.turns, self.problems, self.replies = [], [], []
        # per client: its session ("NEW" before the first turn), turns in
        # it, the acknowledged ones; resume= another Traffic's, to go on
        # in the same sessions (e.g. after chatd was killed)
        self.state = [dict(resume.state[i]) if resume is not None and i < len(resume.state)
                      else dict(sid="NEW", in_session=0, acked_here=[]) for i in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_evt.set()
        return self.join()

    def join(self):
        for t in self.threads:
            t.join(RECV_TIMEOUT + 20)
            if t.is_alive():
                self.problem("a client thread hung (no reply and no timeout)")
        return self

    def problem(self, text):
        with self.lock:
            self.problems.append(text)

    def acked(self):
        with self.lock:
            return sum(1 for t in self.turns if t["result"] == "ok")

    def errors(self):
        with self.lock:
            return [r for r in self.replies if "error" in r]

    def _run(self, i):
        ws = None
        st = self.state[i]
        sid, in_session, acked_here, last_balance = st["sid"], st["in_session"], list(st["acked_here"]), None
        k = 0
        while not self.stop_evt.is_set() and (self.count is None or k < self.count):
            if ws is None:
                try:
                    ws = ws_connect(self.chatd)
                except (OSError, websocket.WebSocketException) as e:
                    if not self.conn_errors_ok:
                        self.problem("client %d: cannot connect: %r" % (i, e))
                        return
                    time.sleep(0.05)
                    continue
            op = self.OPS[k % len(self.OPS)]
            k += 1
            if op == 2 and sid == "NEW":
                op = 1  # no session of ours yet
            turn = None
            if op == 3:
                msg = "%s%d-%d-%s hello there" % (self.label, i, k, uuid.uuid4().hex[:6])
                data = dict(user_id=self.uid, session_id=sid, model_name=MODEL, message=msg,
                            session_prompt="", file_name="")
                stream = self.stream and k % 4 == 1
                if stream:
                    data["stream"] = True
                turn = dict(msg=msg, session=sid, result="lost", code=None, stream=stream)
                with self.lock:
                    self.turns.append(turn)
            elif op == 2:
                data = dict(user_id=self.uid, session_id=sid)
            else:
                data = dict(user_id=self.uid)
            try:
                ws.send(json.dumps({"type": op, "data": data}))
                deltas = []
                while True:
                    r = json.loads(ws.recv())
                    if r.get("type") != 7:
                        break
                    deltas.append(r["data"]["delta"])
            except websocket.WebSocketTimeoutException:
                self.problem("client %d: no reply to type %d within %ds (hang)" % (i, op, RECV_TIMEOUT))
                ws.shutdown()
                ws = None
                continue
            except (OSError, websocket.WebSocketException) as e:
                if not self.conn_errors_ok:
                    self.problem("client %d: connection lost on type %d: %r" % (i, op, e))
                ws.shutdown()  # no closing handshake on a dead connection
                ws = None  # a lost turn may or may not be stored; go on in the session
                continue
            with self.lock:
                self.replies.append(r)
            if "error" in r:
                if not (isinstance(r.get("error"), str) and r["error"] and isinstance(r.get("code"), int)
                        and r.get("type") == op):
                    self.problem("client %d: unclear error frame %r" % (i, r))
                elif r["code"] not in self.allowed.get(op, ()):
                    self.problem("client %d: type %d answered error %r (sent %r)" % (i, op, r, data))
                if turn is not None:
                    turn.update(result="error", code=r.get("code"))
                time.sleep(0.02)  # a client backs off a little after an error
                continue
            err = self.check_reply(op, r, data, sid, acked_here, deltas, last_balance)
            if err:
                self.problem("client %d: %s: %r" % (i, err, r))
                continue
            if op == 6:
                last_balance = r["data"]["balance"]
            if turn is not None:
                turn.update(result="ok", session=r["data"]["session_id"])
                if sid == "NEW":
                    sid, in_session, acked_here = r["data"]["session_id"], 0, []
                acked_here.append(turn["msg"])
                in_session += 1
                if in_session >= TURNS_PER_SESSION:
                    sid = "NEW"
                st.update(sid=sid, in_session=in_session, acked_here=list(acked_here))
        if ws is not None:
            ws.close()

    def check_reply(self, op, r, sent, sid, acked_here, deltas, last_balance):
        """None when r is a right success reply to sent, else what is wrong."""
        if r.get("type") != op:
            return "type %r answered with type %r" % (op, r.get("type"))
        d = r.get("data")
        if not isinstance(d, dict):
            return "no data"
        if op == 0:
            return None if d.get("username") == self.username and d.get("user_id") == self.uid else "bad user"
        if op == 1:
            ok = isinstance(d.get("session_info"), list) and all(
                isinstance(s, dict) and "session_id" in s and "session_name" in s for s in d["session_info"])
            return None if ok else "bad session list"
        if op == 6:
            b = d.get("balance")
            if not isinstance(b, (int, float)):
                return "balance is not a number"
            if last_balance is not None and b > last_balance + 1e-9:
                return "balance went up from %r" % last_balance
            return None
        if op == 2:
            try:
                chat = json.loads(d["chat"])
            except (KeyError, TypeError, ValueError):
                return "chat is not a JSON string"
            users = [m["content"] for m in chat if m.get("role") == "user"]
            roles = [m.get("role") for m in chat]
            if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
                return "chat is not user/assistant pairs"
            missing = [m for m in acked_here if m not in users]
            if missing:
                return "acknowledged turns missing from the chat: %r" % missing
            if len(set(users)) != len(users):
                return "duplicate user message in the chat"
            return None
        # op == 3
        msg = sent["message"]
        if not str(d.get("message", "")).startswith("echo: %s [history=" % msg):
            return "reply is not the echo of %r" % msg
        if sid != "NEW" and d.get("session_id") != sid:
            return "reply for another session"
        if deltas and "".join(deltas) != d["message"]:
            return "stream deltas do not add up to the reply"
        return None


# ------------------------------------------------------ the stored state

def check_store(tc, query, uid, turns, records, allow_error_stored=False, allow_summary_failure=False):
    """Checks every session of uid in PostgreSQL (query(sql, params) ->
    rows) against what the clients saw (turns) and what the agent received
    (records, from AGENT_RECORD_FILE):

    - each session: seq 0..n-1 contiguous, next_seq = n, n even and > 0,
      user/assistant pairs, each reply the echo of its own user message:
      half a turn (a user message without its reply, a session row without
      its turn) fails here;
    - no user message stored twice, none that nobody sent;
    - every turn the client got a type-3 success for is stored, in the
      session the reply named; a turn answered with an error is not stored;
    - each stored turn was given the right context: the history the agent
      got is the session's previous messages, its summary is the one the
      previous turn stored;
    - balance = START_BALANCE - sum of the costs of the stored turns (a
      turn charged twice, or stored without its charge, fails here).
    Returns the number of stored turns."""
    problems = []
    process = {}
    summarize = {}
    for r in records:
        if r["method"] in ("Process", "ProcessStream"):
            process[(r["session_id"], r["chat_message"])] = r
        elif r["method"] == "Summarize":
            summarize[(r["session_id"], r["user_message"])] = r
    outcome = {t["msg"]: t for t in turns}

    rows = query("select s.session_id::text, s.next_seq, s.summary, m.seq, m.role, m.content"
                 " from chat_sessions s left join chat_messages m using (session_id)"
                 " where s.user_id = %s order by s.session_id, m.seq", (uid,))
    sessions = {}
    for sid, next_seq, summary, seq, role, content in rows:
        s = sessions.setdefault(sid, dict(next_seq=next_seq, summary=summary, msgs=[]))
        if seq is not None:
            s["msgs"].append((seq, role, content))

    stored = {}
    charge = 0.0
    for sid, s in sessions.items():
        msgs = s["msgs"]
        if [m[0] for m in msgs] != list(range(len(msgs))):
            problems.append("session %s: seq not contiguous: %r" % (sid, [m[0] for m in msgs]))
        if s["next_seq"] != len(msgs):
            problems.append("session %s: next_seq %s but %d messages" % (sid, s["next_seq"], len(msgs)))
        if not msgs or len(msgs) % 2:
            problems.append("session %s: half a turn: %r" % (sid, [(m[1], m[2]) for m in msgs]))
        pairs = []
        for k in range(0, len(msgs) - 1, 2):
            (_, r1, u), (_, r2, a) = msgs[k], msgs[k + 1]
            if (r1, r2) != ("user", "assistant") or not a.startswith("echo: %s [history=" % u):
                problems.append("session %s seq %d: not a whole turn: %r" % (sid, k, msgs[k:k + 2]))
                continue
            if u in stored:
                problems.append("message %r stored twice (%s, %s)" % (u, stored[u], sid))
            if u not in outcome:
                problems.append("session %s: stored message %r that no client sent" % (sid, u))
            stored[u] = sid
            pairs.append((u, a))

        # context and cost, turn by turn. A turn's Summarize request (as
        # the agent recorded it) gives the summary it produced, hence its
        # cost and what the turn stored.
        summary = ""  # what the previous turn left in chat_sessions.summary
        for k, (u, a) in enumerate(pairs):
            charge += agent_cost(len(a.encode()))
            p = process.get((sid, u))
            if p is None:
                problems.append("session %s: stored turn %r that the agent never got" % (sid, u))
                continue
            history = json.loads(p["chat_history"] or "[]")
            expect = [{"role": m[1], "content": m[2]} for m in msgs[max(0, 2 * k - MAX_CTX):2 * k]]
            if history != expect:
                problems.append("session %s turn %d (%r): the agent got a stale history: %d entries, %d stored"
                                " before it" % (sid, k, u, len(history), 2 * k))
            if p["chat_summary"] != summary:
                problems.append("session %s turn %d (%r): the agent got a stale summary %r, stored was %r"
                                % (sid, k, u, p["chat_summary"], summary))
            sr = summarize.get((sid, u))
            new = echo_summary(sr["previous_summary"], u) if sr is not None else None
            if allow_summary_failure:
                # Summarize may have failed (the agent killed after Process):
                # then the turn kept the summary it got and paid nothing for
                # it. What it stored shows in the next turn, or in the row.
                after = (s["summary"] if k + 1 == len(pairs)
                         else process.get((sid, pairs[k + 1][0]), {}).get("chat_summary"))
                if new is not None and after == new:
                    charge += agent_cost(len(new.encode()))
                summary = after if after is not None else summary
            elif new is None:
                problems.append("session %s turn %d (%r): stored without a summary" % (sid, k, u))
            else:
                charge += agent_cost(len(new.encode()))
                summary = new
        if not allow_summary_failure and pairs and s["summary"] != summary:
            problems.append("session %s: summary %r, the last turn produced %r" % (sid, s["summary"], summary))

    for t in turns:
        if t["result"] == "ok" and stored.get(t["msg"]) != t["session"]:
            problems.append("acknowledged turn %r (session %s) is not stored (found in %s)"
                            % (t["msg"], t["session"], stored.get(t["msg"])))
        if t["result"] == "error" and t["msg"] in stored and not allow_error_stored:
            problems.append("turn %r was answered with error %s but is stored" % (t["msg"], t["code"]))

    # One statement, one snapshot: a title may be charged at any moment.
    balance, turns_spent, titles_spent = query(
        "select u.balance,"
        "       coalesce((select sum(cost) from usage_ledger l"
        "                  where l.user_id = u.user_id and kind = 'turn'), 0),"
        "       coalesce((select sum(cost) from usage_ledger l"
        "                  where l.user_id = u.user_id and kind = 'title'), 0)"
        "  from user_data u where u.user_id = %s", (uid,))[0]
    # exactly: the balance is the start minus the ledger (titles included)
    if balance != Decimal(str(START_BALANCE)) - turns_spent - titles_spent:
        problems.append("balance %s, but start %s minus the ledger (%s + %s) is %s"
                        % (balance, START_BALANCE, turns_spent, titles_spent,
                           Decimal(str(START_BALANCE)) - turns_spent - titles_spent))
    # and the turns' rows are what the agent charged for the stored turns
    if abs(float(turns_spent) - charge) > 1e-7:  # the agent's float costs: rounding only
        problems.append("the ledger charged %.9f for turns, the stored turns cost %.9f (%d stored turns)"
                        % (turns_spent, charge, len(stored)))
    if VERBOSE:
        lost = [t["msg"] for t in turns if t["result"] == "lost"]
        print("check_store: %d sessions, %d stored turns, %d acked, %d errors (%d stored), %d lost (%d stored)"
              % (len(sessions), len(stored), sum(t["result"] == "ok" for t in turns),
                 sum(t["result"] == "error" for t in turns),
                 sum(t["result"] == "error" and t["msg"] in stored for t in turns),
                 len(lost), sum(m in stored for m in lost)), file=sys.stderr)
    if problems:
        tc.fail("%d problem(s) in the stored state:\n  %s" % (len(problems), "\n  ".join(problems[:25])))
    return len(stored)


# ------------------------------------------------------------- the tests

class Faults(unittest.TestCase):
    """Each test runs its own processes: it kills and restarts them."""

    def assertTraffic(self, traffic, what):
        self.assertEqual(traffic.problems, [], "%s:\n  %s" % (what, "\n  ".join(traffic.problems[:20])))

    def full_service(self, chatd, uid, name, label, threads=4, count=16, resume=None):
        """After recovery: every request of every client succeeds."""
        t = Traffic(chatd, uid, name, threads=threads, count=count, label=label, resume=resume).start().join()
        self.assertTraffic(t, "full service after recovery")
        self.assertGreater(t.acked(), 0)
        return t

    # ---------------------------------------------------------- SIGKILL

    def test_sigkill_mid_turn_stores_whole_turns_and_charges_once(self):
        # Clients go on in their sessions after each restart, so a kill
        # between a commit and the Redis rewrite would show as "stale
        # history" / "stale summary" in a later turn (the bug described at
        # test_sigkill_just_after_commit_keeps_the_turn_and_its_context,
        # which this test hit in about half of its runs before the fix).
        slow = Agent(AGENT_DELAY_MS=400, **PRICES)  # turns wait on the agent
        fast = Agent(**PRICES)  # turns back to back: kills land in commits
        db = Database("chatd_faults_kill")
        chatd = None
        try:
            chatd = Chatd(db, agent_port=slow.port, **CHATD_ENV)  # migrates
            agent_priced(db)
            uid = db.add_user("Crash", balance=START_BALANCE)
            turns, t = [], None
            # (agent, seconds of traffic before the kill)
            rounds = [(slow, 1.5), (fast, 0.6), (fast, 1.0), (slow, 0.9), (fast, 0.4), (fast, 0.8)]
            for n, (agent, seconds) in enumerate(rounds):
                if chatd.env["AI_SERVER_PORT"] != str(agent.port):
                    chatd.stop()
                    restart(chatd, AI_SERVER_PORT=agent.port)
                # the clients go on in their sessions after each restart
                t = Traffic(chatd, uid, "Crash", threads=8, conn_errors_ok=True, label="k%d-" % n,
                            resume=t).start()
                deadline = time.time() + 30
                while t.acked() < 4 and time.time() < deadline:
                    time.sleep(0.02)  # traffic is flowing
                time.sleep(seconds)
                in_flight = len(t.turns) - sum(1 for x in t.turns if x["result"] != "lost")
                kill9(chatd)
                t.stop()
                turns += t.turns
                self.assertTraffic(t, "round %d" % n)
                restart(chatd)
                if agent is slow:
                    self.assertGreater(in_flight, 0, "no turn was waiting on the agent at the kill")
                check_store(self, db.query, uid, turns, slow.requests() + fast.requests())
            self.assertGreater(sum(1 for x in turns if x["result"] == "lost"), 0, "no kill hit a turn")

            t = self.full_service(chatd, uid, "Crash", "after-", resume=t)
            turns += t.turns
            n = check_store(self, db.query, uid, turns, slow.requests() + fast.requests())
            self.assertGreater(n, 20)
            self.assertIsNone(chatd.proc.poll())
        finally:
            if chatd is not None:
                chatd.stop()
            slow.stop()
            fast.stop()
            db.drop()

    # ------------------------------------------- SIGKILL at exact points

    def sigkill_at(self, location, sessions, expect_stored):
        """One stored turn, then a turn during which gdb SIGKILLs chatd at
        location (a gdb breakpoint), then a restart and one more turn on
        the session. Checks the whole store with check_store (and so the
        context the last turn was given) and whether the killed turn is
        stored (expect_stored) or absent."""
        if shutil.which("gdb") is None:
            self.skipTest("gdb is not installed: it stops chatd at an exact point")
        agent = Agent(**PRICES)
        db = Database("chatd_faults_point")
        chatd = None
        try:
            chatd = Chatd(db, agent_port=agent.port, **CHATD_ENV)
            agent_priced(db)
            uid = db.add_user("Point", balance=START_BALANCE)
            c = chatd.client(timeout=RECV_TIMEOUT)
            first = c.chat(uid, "NEW", "turn one")
            self.assertEqual(first["type"], 3, first)
            sid = first["data"]["session_id"]
            turns = [dict(msg="turn one", result="ok", session=sid)]
            for n, session in enumerate(sessions):
                session = sid if session == "SID" else session
                gdb_log = os.path.join(chatd.dir, "gdb-%d.log" % n)
                # the session list is cached now: the kill must not leave
                # it stale either
                self.assertEqual(c.req(1, {"user_id": uid})["type"], 1)
                gdb = gdb_kill_at(chatd.proc.pid, location, gdb_log)
                if gdb is None:
                    log = read_tail(gdb_log)
                    if "ptrace" in log or "Operation not permitted" in log:
                        self.skipTest("gdb cannot attach to chatd: %s" % log)
                    self.fail("cannot break at %r (renamed? update this test): %s" % (location, log))
                msg = "killed turn %d" % n
                c.send(3, dict(user_id=uid, session_id=session, model_name=MODEL, message=msg,
                               session_prompt="", file_name=""))
                try:
                    chatd.proc.wait(60)
                except subprocess.TimeoutExpired:
                    gdb.kill()
                    self.fail("the breakpoint %r was never hit: %s" % (location, read_tail(gdb_log)))
                gdb.wait(30)
                self.assertIn("hit Breakpoint 1", read_tail(gdb_log))
                self.assertEqual(chatd.proc.returncode, -signal.SIGKILL)
                c.close()
                chatd.log.close()
                check_sanitizers(chatd.log_path)
                turns.append(dict(msg=msg, result="lost", session=session))
                chatd.start()
                c = chatd.client(timeout=RECV_TIMEOUT)
                stored = db.one("select count(*) from chat_messages where role = 'user' and content = %s", (msg,))
                self.assertEqual(stored, 1 if expect_stored else 0, "the killed turn %r" % msg)
                # the session goes on after the restart
                nxt = c.chat(uid, sid, "after kill %d" % n)
                self.assertEqual(nxt["type"], 3, nxt)
                turns.append(dict(msg="after kill %d" % n, result="ok", session=sid))
                with self.subTest(killed_in=session if session == "NEW" else "a stored session"):
                    listed = sorted(x["session_id"] for x in c.req(1, {"user_id": uid})["data"]["session_info"])
                    self.assertEqual(listed, sorted(r[0] for r in db.query(
                        "select session_id::text from chat_sessions where user_id = %s", (uid,))),
                        "code 1 lists the stored sessions")
                    check_store(self, db.query, uid, turns, agent.requests())
            c.close()
        finally:
            if chatd is not None:
                chatd.stop()
            agent.stop()
            db.drop()

    def test_sigkill_just_before_the_store_stores_nothing(self):
        # The agent has answered and the turn is about to be stored (one
        # statement: session row for NEW, messages, next_seq, summary,
        # charge, lease), which is not sent yet.
        self.sigkill_at("db_turn_store", ["SID", "NEW"], expect_stored=False)

    def test_sigkill_just_after_commit_keeps_the_turn_and_its_context(self):
        # Committed, not yet written to Redis nor answered. The turn must
        # be stored and charged once, the next turn (after the restart)
        # must be given the whole history and the summary that turn stored,
        # and a NEW session so stored must be listed by code 1.
        #
        # This found a real bug: the context in Redis was rewritten only
        # after the commit, so a crash in between left the previous one
        # there, and the next turn got a history without the stored turn
        # (check_store: "stale history", "stale summary"). The turn now drops
        # the context (or, for NEW, the session list) before the commit.
        self.sigkill_at("turn_refresh_cache", ["SID", "NEW"], expect_stored=True)

    # ------------------------------------------------------------- Redis

    def test_redis_killed_and_restarted_empty_during_traffic(self):
        rds = RedisServer()
        agent = Agent(AGENT_DELAY_MS=50, **PRICES)
        db = Database("chatd_faults_redis")
        chatd = None
        try:
            chatd = Chatd(db, agent_port=agent.port, REDIS_PORT=rds.port, **CHATD_ENV)
            agent_priced(db)
            uid = db.add_user("Redis", balance=START_BALANCE)
            # Redis is only a cache: no request may fail because it is gone.
            t = Traffic(chatd, uid, "Redis", threads=6, label="r").start()
            time.sleep(1.0)
            rds.kill(hard=True)  # SIGKILL: the cache is lost
            acked_before = t.acked()
            time.sleep(1.5)
            self.assertGreater(t.acked(), acked_before, "turns went on while Redis was down")
            rds.start()  # empty
            time.sleep(1.5)
            t.stop()
            self.assertTraffic(t, "while Redis died and came back")
            self.assertIsNone(chatd.proc.poll(), "chatd died")

            wait_ready(chatd.port)
            after = self.full_service(chatd, uid, "Redis", "after-", resume=t)
            r = rds.client()
            self.assertTrue(r.keys("chatd:{s:*}:ctx"), "the cache is written again")
            check_store(self, db.query, uid, t.turns + after.turns, agent.requests())
        finally:
            if chatd is not None:
                chatd.stop()
            agent.stop()
            db.drop()
            rds.stop()

    # -------------------------------------------------------- PostgreSQL

    def test_postgres_restarted_and_crashed_during_traffic(self):
        # Durable: an immediate stop must not lose a commit chatd acknowledged.
        pg = PostgresServer("chatd_faults", durable=True)
        agent = Agent(AGENT_DELAY_MS=50, **PRICES)
        chatd = None
        try:
            chatd = Chatd(pg, agent_port=agent.port, DB_PORT=pg.port, REDIS_PORT=pg.redis_port, **CHATD_ENV)
            agent_priced(pg)
            uid = str(pg.query("insert into user_data(username, models, balance) values ('PG', '{8}', %s)"
                               " returning user_id", (START_BALANCE,))[0][0])
            t = Traffic(chatd, uid, "PG", threads=6, allowed_errors=PG_DOWN_CODES, label="p").start()
            for mode in ("fast", "immediate"):  # a clean restart, then a crash
                time.sleep(1.0)
                pg.stop_pg(mode)
                time.sleep(1.5)
                pg.start()
            time.sleep(1.5)
            t.stop()
            self.assertTraffic(t, "while PostgreSQL went down and came back")
            self.assertTrue(t.errors(), "the outage was seen (clear errors while down)")
            self.assertIsNone(chatd.proc.poll(), "chatd died")

            wait_ready(chatd.port)
            after = self.full_service(chatd, uid, "PG", "after-", resume=t)
            # allow_error_stored: a commit whose answer was lost with the
            # connection is stored although chatd answered an error; it
            # must still be whole, charged once, never duplicated, and (the
            # cached context being dropped before every commit) the next
            # turn must still be given its whole history.
            check_store(self, pg.query, uid, t.turns + after.turns, agent.requests(), allow_error_stored=True)
        finally:
            if chatd is not None:
                chatd.stop()
            agent.stop()
            pg.stop()

    # ------------------------------------------------------------- agent

    def test_agent_killed_mid_stream(self):
        agent = Agent(AGENT_DELAY_MS=1500, **PRICES)  # the first of 14 deltas after ~0.1 s
        db = Database("chatd_faults_agent")
        chatd = None
        try:
            chatd = Chatd(db, agent_port=agent.port, **CHATD_ENV)
            agent_priced(db)
            uid = db.add_user("Agent", balance=START_BALANCE)
            c = chatd.client(timeout=RECV_TIMEOUT)
            first = c.chat(uid, "NEW", "first turn, stored")
            self.assertEqual(first["type"], 3, first)
            sid = first["data"]["session_id"]

            def state():
                return (db.one("select count(*) from chat_sessions where user_id = %s", (uid,)),
                        db.one("select count(*) from chat_messages m join chat_sessions s"
                               " using (session_id) where s.user_id = %s", (uid,)),
                        db.one("select balance from user_data where user_id = %s", (uid,)))

            for session in (sid, "NEW"):
                before = state()
                msg = "a long streamed answer %s one two three four five six seven" % session[:4]
                c.send(3, dict(user_id=uid, session_id=session, model_name=MODEL, message=msg,
                               session_prompt="", file_name="", stream=True))
                r = c.recv()
                self.assertEqual(r["type"], 7, r)  # streaming has begun
                agent.proc.kill()
                agent.proc.wait(10)
                while r.get("type") == 7:
                    r = c.recv()
                self.assertEqual((r.get("type"), r.get("code")), (3, 6), r)
                self.assertIsInstance(r.get("error"), str)
                # while the agent is down: turns fail clearly (not after
                # AI_TIMEOUT_SECONDS), everything else is served
                down = c.chat(uid, sid, "while the agent is down")
                self.assertEqual((down.get("type"), down.get("code")), (3, 6), down)
                # refused as unavailable (14), not left to the deadline (4)
                self.assertRegex(chatd.logs(), r"event=agent_call_failed session=%s grpc_status=14 " % sid)
                for op, data in ((0, {"user_id": uid}), (1, {"user_id": uid}), (6, {"user_id": uid}),
                                 (2, {"user_id": uid, "session_id": sid})):
                    r = c.req(op, data)
                    self.assertEqual(r.get("type"), op, r)
                    self.assertNotIn("error", r)
                # nothing of either failed turn stored or charged
                self.assertEqual(state(), before)
                agent.log.close()
                agent.start()
                # agent back: the next turn succeeds (after /readyz says
                # so: gRPC reconnects with back-off)
                wait_ready(chatd.port)
                again = c.chat(uid, sid, "agent is back %s" % session[:4])
                self.assertEqual(again["type"], 3, again)
                self.assertEqual(state()[:2], (before[0], before[1] + 2))
            c.close()

            # the agent killed during traffic (streamed and unary turns)
            uid2 = db.add_user("Agent2", balance=START_BALANCE)
            agent.stop()
            agent.env["AGENT_DELAY_MS"] = "300"
            agent.start()
            wait_ready(chatd.port)
            t = Traffic(chatd, uid2, "Agent2", threads=6, stream=True, allowed_errors={3: {6}}, label="a").start()
            time.sleep(1.2)
            agent.proc.kill()
            agent.proc.wait(10)
            time.sleep(1.0)
            agent.log.close()
            agent.start()
            time.sleep(1.5)
            t.stop()
            self.assertTraffic(t, "while the agent died and came back")
            self.assertTrue(any(x["result"] == "error" for x in t.turns), "some turn saw the agent die")
            self.assertIsNone(chatd.proc.poll(), "chatd died")
            wait_ready(chatd.port)
            after = self.full_service(chatd, uid2, "Agent2", "after-", resume=t)
            check_store(self, db.query, uid2, t.turns + after.turns, agent.requests(), allow_summary_failure=True)
        finally:
            if chatd is not None:
                chatd.stop()
            agent.stop()
            db.drop()

    # --------------------------------------------------------- disk full

    def test_disk_full_upload(self):
        public = tempfile.mkdtemp(prefix="chatd-faults-public-")
        if os.getuid() != 0:
            os.rmdir(public)
            self.skipTest("mounting a small tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", public],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            os.rmdir(public)
            self.skipTest("cannot mount a tmpfs: %s" % r.stdout.decode(errors="replace").strip())
        agent = Agent()
        db = Database("chatd_faults_disk")
        chatd = None
        try:
            chatd = Chatd(db, agent_port=agent.port, PUBLIC_DIR=public, MAX_FILE_SIZE=1)
            agent_priced(db)
            uid = db.add_user("Disk")
            sid = db.add_session(uid)
            big = b"disk full test line\n" * (600 * 1024 // 20)  # 600 KiB: < MAX_FILE_SIZE, > the disk
            for session in (sid, "NEW"):
                status, reply = upload(chatd.port, dict(user_id=uid, session_id=session, model_name=MODEL,
                                                        session_prompt=""), ("notes.txt", big, "text/plain"))
                self.assertEqual(status, 507, reply)
                self.assertIsNone(reply["data"], reply)
                self.assertIn("space", reply["message"], reply)
                # chatd answers, then removes the file (http.c txn_refuse):
                # give it a moment, no more
                self.assertEqual(wait_until(lambda: os.listdir(public), []), [], "no partial or temporary file")
                self.assertEqual(db.one("select count(*) from uploaded_files"), 0)
                self.assertEqual(db.one("select count(*) from chat_sessions where user_id = %s", (uid,)), 1)
                self.assertIsNone(chatd.proc.poll(), "chatd died")
            # the space came back: a file that fits is stored
            status, reply = upload(chatd.port, dict(user_id=uid, session_id=sid, model_name=MODEL,
                                                    session_prompt=""), ("small.txt", big[:8192], "text/plain"))
            self.assertEqual(status, 202, reply)
            self.assertEqual(os.listdir(public), [reply["data"]["fileName"]])
            with open(os.path.join(public, reply["data"]["fileName"]), "rb") as f:
                self.assertEqual(f.read(), big[:8192])
            self.assertEqual(db.one("select count(*) from uploaded_files"), 1)
        finally:
            if chatd is not None:
                chatd.stop()
            agent.stop()
            db.drop()
            subprocess.run(["umount", public], check=False)
            os.rmdir(public)


def upload(port, fields, file):
    """POST /upload (multipart/form-data, fields first, then the file),
    sent in pieces; stops sending once the server answers, as a browser
    does. Returns (status, JSON body)."""
    boundary = "----chatdFaults" + uuid.uuid4().hex[:16]
    head = b"".join(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                     % (boundary, k, v)).encode() for k, v in fields.items())
    fname, data, ctype = file
    head += ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
             "Content-Type: %s\r\n\r\n" % (boundary, fname, ctype)).encode()
    body = head + data + ("\r\n--%s--\r\n" % boundary).encode()
    req = ("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
           "Content-Length: %d\r\n\r\n" % (boundary, len(body))).encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    resp = b""
    try:
        for off in range(0, len(req), 16 * 1024):
            if select.select([s], [], [], 0)[0]:
                break  # answered already
            try:
                s.sendall(req[off:off + 16 * 1024])
            except OSError:
                break  # refused and closed while we were sending
        while b"\r\n\r\n" not in resp or len(resp.partition(b"\r\n\r\n")[2]) < _clen(resp):
            d = s.recv(65536)
            if not d:
                break
            resp += d
    finally:
        s.close()
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body.decode())


def _clen(resp):
    for line in resp.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


if __name__ == "__main__":
    unittest.main()
