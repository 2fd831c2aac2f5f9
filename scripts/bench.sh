#!/usr/bin/env bash
# bench.sh - chatd's benchmarks in one command: builds (RelWithDebInfo, in
# build-bench/), starts a throw-away PostgreSQL + Redis on free loopback
# ports, migrates, seeds a bench user, starts chat-agent (echo back end) and
# chatd, and prints:
#   a. codes 0, 1, 5, 6 at 1/16/64 connections next to redis-benchmark GET
#   b. chatd's resident memory idle and with 1,000 idle WebSocket connections
#   c. chat turns through chatd vs direct gRPC calls to the same agent
#   e. appending a turn to a session of 10 vs 10,000 messages
#   i. an event from one chatd to a subscribed connection on another, and
#      1,000 subscribers of 100 users over two instances
#   h. code 9 pages of a 10 vs 100,000-message session, code 11 over
#      1,000,000 messages of 1,000 users, export of 100,000 messages
#      (`BENCH_SEARCH_USERS=10000 scripts/bench.sh search` runs only the
#      search, over 1,000 users and then 10,000: 10,000,000 messages)
#   h2. codes 9 and 2 and a turn's round trips (codes 3, 17, 18) in a
#      session of 100,000 messages on 1,000 branches vs a linear one
#      (`scripts/bench.sh tree` runs only this)
#   h3. POST /import of a 100 MB ChatGPT export vs COPY of the same rows,
#      chatd's memory through it (`scripts/bench.sh import` runs only this)
#   c2. a turn's PostgreSQL round trips, and the store beside pgbench (chatd's
#      own statements, and the least a turn must write), with
#      and without the budget reservation (`scripts/bench.sh turns` runs only
#      this)
#   d. 2,000 turns in flight at once against an agent that takes 2 s
#   k. start-up time with 100,000 sessions vs an empty database
#   j. 2,000 streamed replies at once, 20 deltas/s each, delivery lag, with
#      RESUMABLE_STREAMS=0 and 1 (`scripts/bench.sh streams` runs only this)
#   `scripts/bench.sh failover` (not part of "all"): turns/s around failovers
#      of PostgreSQL (Patroni) and Redis (Sentinel), errors, time to recover
# (d and j run last because they restart the agent, and j chatd, with other settings.) Everything
# stops at the end, also on failure or Ctrl-C. Traffic stays on 127.0.0.1.
# Figures are printed, never asserted: this is not part of `make test`.
#
# `scripts/bench.sh soak` runs the soak instead (issue 6): SOAK_CLIENTS
# (1000) WebSocket clients of SOAK_USERS (100) seeded users mix every code
# for SOAK_SECONDS (600) against chat-agent with AGENT_DELAY_MS=SOAK_DELAY_MS
# (200), thinking SOAK_THINK_MIN..SOAK_THINK_MAX (0.5..1.5) s between
# requests, while chatd's RSS and descriptors are sampled every 10 s
# (bench/soak.c); SOAK_IDLE (0) more connections only hold meanwhile
# (SOAK_IDLE=9000: ten thousand connections, a thousand of them active). Exits 1 if any request failed or chatd's descriptors did
# not come back to their baseline.
#
# Knobs: BENCH_SECONDS (5) per measurement, BENCH_WARMUP (1),
# BENCH_IDLE_CONNS (1000), BENCH_BURST (2000), BENCH_WORKERS (4: chatd's
# WORKER_THREADS), BENCH_BUILD_DIR (build-bench),
# BENCH_NO_BUILD=1 (run what build-bench already holds), BENCH_PIN=1
# (PostgreSQL on CPU 0, the rest on CPU 1; pin_cores), BENCH_LIMIT_S (840,
# the whole run's time limit), KEEP_BENCH_DATA=1 (keep the temp dir with
# every log for a post-mortem).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$REPO/build-bench}
SECS=${BENCH_SECONDS:-5}
WARM=${BENCH_WARMUP:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-1000}
BURST=${BENCH_BURST:-2000}
JOBS=${JOBS:-2}

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

SCENARIO=${1:-all}
case $SCENARIO in
all | soak | streams | tree | import | turns | search | failover) ;;
*) die "usage: scripts/bench.sh [soak | streams | tree | import | turns | search | failover]" ;;
esac
SOAK_CLIENTS=${SOAK_CLIENTS:-1000}
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_USERS=${SOAK_USERS:-100}
SOAK_DELAY_MS=${SOAK_DELAY_MS:-200}
SOAK_THINK_MIN=${SOAK_THINK_MIN:-0.5}
SOAK_THINK_MAX=${SOAK_THINK_MAX:-1.5}
SOAK_IDLE=${SOAK_IDLE:-0} # more connections that only hold (issue 15: 9000 beside 1000 active)

# ------------------------------------------------------------------ build
if [[ "${BENCH_NO_BUILD:-0}" == 1 ]]; then
    say "BENCH_NO_BUILD=1: using the binaries already in $BUILD"
else
    say "building $BUILD (RelWithDebInfo)"
    cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j"$JOBS" >/dev/null
fi
for b in chatd chat-agent wsbench grpcbench soak; do
    [[ -x "$BUILD/$b" ]] || die "$BUILD/$b was not built"
done

# `scripts/bench.sh failover`: turns/s before, during and after a SIGKILL
# of the PostgreSQL primary, a planned switchover and a SIGKILL of the
# Redis master, on the topology of scripts/ha.sh (scripts/bench_failover.py;
# it starts and stops everything itself).
if [[ $SCENARIO == failover ]]; then
    "$REPO/scripts/install-deps.sh"
    exec env CHATD_BIN="$BUILD/chatd" CHAT_AGENT_BIN="$BUILD/chat-agent" CHATD_SOURCE_DIR="$REPO" \
        /usr/bin/python3 "$REPO/scripts/bench_failover.py"
fi

# 2,000 connections need ~2,000 descriptors in chatd and as many in
# wsbench; both inherit this limit.
need=$(((BURST > IDLE_CONNS ? BURST : IDLE_CONNS) + 512))
[[ $SCENARIO != soak ]] || need=$((SOAK_CLIENTS + 512))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[[ $(ulimit -n) -ge $need ]] ||
    die "open-file limit $(ulimit -n) is below $need; raise the hard limit or lower BENCH_BURST"

# ------------------------------------------------------------- processes
# /tmp rather than the checkout: PostgreSQL runs as 'postgres' when we are
# root and must be able to enter the directory.
DATA=$(mktemp -d /tmp/chatd-bench.XXXXXX)
chmod 755 "$DATA"
AGENT_PID= CHATD_PID= CHATD2_PID= BG_PID= IDLE_PID= WATCHDOG_PID=

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    [[ -z "$WATCHDOG_PID" ]] || kill "$WATCHDOG_PID" 2>/dev/null || true
    stop_child load "$BG_PID" 10
    stop_child idle "$IDLE_PID" 10
    stop_child chatd "$CHATD_PID" 10
    stop_child chatd "$CHATD2_PID" 10
    stop_child chat-agent "$AGENT_PID" 10
    "$REPO/scripts/services.sh" stop "$DATA" >/dev/null 2>&1 || true
    if [[ "${KEEP_BENCH_DATA:-0}" == 1 || $rc -ne 0 ]]; then
        say "logs kept in $DATA"
    else
        rm -rf "$DATA"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The whole run is bounded: a hang anywhere ends in the cleanup above.
# (Normally it takes about 2.5 minutes.)
BENCH_LIMIT_S=${BENCH_LIMIT_S:-$([[ $SCENARIO == soak ]] && echo $((SOAK_SECONDS + 300)) || echo 840)}
# The sleep is the watchdog's child: its trap kills it, so nothing lingers.
(
    sleep "$BENCH_LIMIT_S" &
    sp=$!
    trap 'kill $sp 2>/dev/null; exit 0' TERM
    wait "$sp" && echo "bench: over ${BENCH_LIMIT_S} s, giving up" >&2 && kill -TERM $$
) &
WATCHDOG_PID=$!

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port pid name
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$2" 2>/dev/null || die "$3 exited at start-up (log in $DATA)"
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$3 did not open port $1 within 20 s"
}

PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
AGENT_PORT=$(free_port)
CHATD_PORT=$(free_port)
URL="ws://127.0.0.1:$CHATD_PORT/ws"

export DB_HOST=127.0.0.1 DB_PORT=$PG_PORT DB_USER=chatd DB_PASSWORD=chatd DB_NAME=chatd
export REDIS_HOST=127.0.0.1 REDIS_PORT=$REDIS_PORT REDIS_PASSWORD= REDIS_DB=0
export CHATD_ENV_FILE=/dev/null

say "PostgreSQL on $PG_PORT and Redis on $REDIS_PORT (CHATD_PG_FAST=1: fsync off)"
CHATD_PG_FAST=1 "$REPO/scripts/services.sh" start "$DATA" "$PG_PORT" "$REDIS_PORT" 2>"$DATA/services.log" ||
    { cat "$DATA/services.log" >&2; die "services did not start"; }

# BENCH_PIN=1: PostgreSQL (the postmaster and the backends it forks) on CPU 0,
# everything else (this script and what it starts: chatd, the agent, the
# clients, pgbench's client, Redis) on CPU 1. On a 2-core machine it says
# which side bounds a turn: the database with a core of its own, or the rest
# with the other. Again after each restart of PostgreSQL.
pin_cores() {
    [[ ${BENCH_PIN:-0} == 1 ]] || return 0
    local pm
    pm=$(head -n 1 "$DATA/pg/postmaster.pid")
    taskset -a -cp 0 "$pm" >/dev/null
    for p in $(ps -o pid= --ppid "$pm"); do taskset -a -cp 0 "$p" >/dev/null 2>&1 || true; done
    taskset -cp 1 $$ >/dev/null
    taskset -a -cp 1 "$(cat "$DATA/redis.pid")" >/dev/null
}
pin_cores
[[ ${BENCH_PIN:-0} != 1 ]] || say "BENCH_PIN=1: PostgreSQL on CPU 0, everything else on CPU 1"

psql_q() { PGPASSWORD=chatd psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U chatd -d chatd -v ON_ERROR_STOP=1 "$@"; }

start_agent() { # delay_ms [VAR=value ...]
    local delay=$1
    shift
    env AGENT_HOST=127.0.0.1 AGENT_PORT="$AGENT_PORT" AGENT_BACKEND=echo AGENT_DELAY_MS="$delay" \
        AGENT_LOG_LEVEL=warn "$@" "$BUILD/chat-agent" >>"$DATA/agent.log" 2>&1 &
    AGENT_PID=$!
    wait_port "$AGENT_PORT" "$AGENT_PID" chat-agent
}

# Passed with env(1) rather than through a shell function, so that $! is
# chatd's own pid (a backgrounded function would be a subshell).
CHATD_VARS=(SERVER_HOST=127.0.0.1 SERVER_PORT="$CHATD_PORT"
    AI_SERVER_HOST=127.0.0.1 AI_SERVER_PORT="$AGENT_PORT"
    MIGRATIONS_DIR="$REPO/migrations" PUBLIC_DIR="$DATA/public"
    PUBLIC_BASE_URL="http://127.0.0.1:$CHATD_PORT"
    WORKER_THREADS="${BENCH_WORKERS:-4}" LOG_LEVEL=warn
    # The load generators are one user on one address by design.
    RATE_LIMIT_PER_MINUTE=0 DAILY_MESSAGE_LIMIT=0
    MAX_CONNECTIONS_PER_IP=100000 MAX_CONNECTIONS=100000)

mkdir -p "$DATA/public"
env "${CHATD_VARS[@]}" "$BUILD/chatd" migrate >>"$DATA/chatd.log" 2>&1 || { cat "$DATA/chatd.log" >&2; die "migrate failed"; }

# The bench user, with ten small sessions so code 1 lists something.
USER_ID=$(psql_q -tAc "insert into user_data(username, models, balance) values ('Bench', array[4,5,8], 1000000) returning user_id" | head -n 1)
psql_q -c "
with s as (
  insert into chat_sessions(user_id, session_name, model_id, next_seq)
  select '$USER_ID', 'bench session ' || g, 8, 2 from generate_series(1, 10) g
  returning session_id)
insert into chat_messages(session_id, seq, role, content)
select session_id, r.seq, r.role, 'seeded ' || r.role || ' message'
  from s, (values (0, 'user'), (1, 'assistant')) r(seq, role)" >/dev/null

start_chatd() { # [VAR=value ...]
    env "${CHATD_VARS[@]}" "$@" "$BUILD/chatd" >>"$DATA/chatd.log" 2>&1 &
    CHATD_PID=$!
    wait_port "$CHATD_PORT" "$CHATD_PID" chatd
    [[ "$(cat "/proc/$CHATD_PID/comm")" == chatd ]] || die "pid $CHATD_PID is not chatd"
}

# One NEW turn, again until one succeeds (20 tries, a second apart): after
# chatd or the agent restarts, chatd's channel to the agent may still be
# reconnecting with back-off. FAILED_TURNS: the failed tries before it.
first_turn() { # timeout_s
    local out
    for ((FAILED_TURNS = 0; FAILED_TURNS < 20; FAILED_TURNS++)); do
        out=$(timeout -k 5 30 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session NEW \
            --conns 1 --once --timeout "$1" 2>>"$DATA/client.err") || true
        [[ $(field "$out" errors) == 0 && $(field "$out" requests) == 1 ]] && return 0
        sleep 1
    done
    return 1
}

start_agent "$([[ $SCENARIO == soak ]] && echo "$SOAK_DELAY_MS" || echo 0)"
start_chatd

# A field of /proc/PID/status (VmRSS, VmHWM in KiB; Threads).
status_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# The value of key=value in a client's result line.
field() { sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p; s/^$2=\([^[:space:]]*\).*/\1/p" <<<"$1" | head -n 1; }
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) of the given pids; a pid gone meanwhile counts 0.
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
# CPU ticks of a chatd's threads: "cq svc rest", the agent's completion-queue
# thread (named agent-cq), the service thread (the process's first), the rest.
thread_ticks() {
    local t cq=0 svc=0 rest=0 v
    for t in /proc/"$1"/task/*; do
        v=$(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)
        if [[ $(cat "$t/comm" 2>/dev/null) == agent-cq ]]; then
            cq=$((cq + v))
        elif [[ ${t##*/} == "$1" ]]; then
            svc=$((svc + v))
        else
            rest=$((rest + v))
        fi
    done
    echo "$cq $svc $rest"
}
# PostgreSQL's CPU ticks so far: the postmaster's own and those of its
# children that have ended (it waits for them: cutime, cstime), and the
# running children's, so that backends of a pgbench run that come and go
# within a measurement count too.
pg_total_ticks() {
    local reaped
    reaped=$(awk '{ print $16 + $17 }' "/proc/$(head -n 1 "$DATA/pg/postmaster.pid")/stat" 2>/dev/null || echo 0)
    echo $((reaped + $(cpu_ticks $(pg_pids))))
}
pg_children() { ps -o pid= --ppid "$(head -n 1 "$DATA/pg/postmaster.pid")" | wc -l; }
pg_pids() { # the postmaster and its children (chatd's backends among them)
    local pm
    pm=$(head -n 1 "$DATA/pg/postmaster.pid")
    echo "$pm" $(ps -o pid= --ppid "$pm")
}
host_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
pct_of() { # ticks0 ticks1 t0 t1 -> percent of one core
    awk -v a="$1" -v b="$2" -v s="$3" -v e="$4" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.0f", (b - a) / hz / (e - s) * 100 }'
}
# run_cpu CMD...: runs a client, sets OUT to its result line, and CHATD_CPU,
# PG_CPU, REDIS_CPU, AGENT_CPU, CLIENT_CPU to the percent of one core each
# used meanwhile (connects and warm-up included), and HOST_CPU to the whole
# machine's busy time: well above the sum of ours means someone else's load.
run_cpu() {
    local c0 c1 p0 p1 r0 r1 a0 a1 h0 h1 t0 t1 pgp rp
    pgp=$(pg_pids)
    rp=$(cat "$DATA/redis.pid")
    c0=$(cpu_ticks "$CHATD_PID") p0=$(cpu_ticks $pgp) r0=$(cpu_ticks "$rp") a0=$(cpu_ticks "$AGENT_PID")
    h0=$(host_ticks)
    t0=$(date +%s.%N)
    OUT=$("$@" 2>>"$DATA/client.err") || say "client exited with status $?: $*"
    t1=$(date +%s.%N)
    chatd_alive
    c1=$(cpu_ticks "$CHATD_PID") p1=$(cpu_ticks $pgp) r1=$(cpu_ticks "$rp") a1=$(cpu_ticks "$AGENT_PID")
    h1=$(host_ticks)
    echo "$OUT" >>"$DATA/raw.txt"
    CHATD_CPU=$(pct_of "$c0" "$c1" "$t0" "$t1")
    PG_CPU=$(pct_of "$p0" "$p1" "$t0" "$t1")
    REDIS_CPU=$(pct_of "$r0" "$r1" "$t0" "$t1")
    AGENT_CPU=$(pct_of "$a0" "$a1" "$t0" "$t1")
    HOST_CPU=$(pct_of "$h0" "$h1" "$t0" "$t1")
    CLIENT_CPU=$(awk -v c="$(field "$OUT" cpu_s)" -v s="$t0" -v e="$t1" \
        'BEGIN { printf "%.0f", c / (e - s) * 100 }')
}
chatd_alive() { kill -0 "$CHATD_PID" 2>/dev/null || die "chatd died (log: $DATA/chatd.log)"; }
log_count() { grep -c "$1" "$DATA/chatd.log" 2>/dev/null || true; }

echo "# chatd benchmarks"
src_state=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- src migrations 2>/dev/null || src_state+=" + uncommitted changes under src/ or migrations/"
[[ "${BENCH_NO_BUILD:-0}" != 1 ]] || src_state+=" (BENCH_NO_BUILD: binaries from $(date -u -r "$BUILD/chatd" '+%H:%M UTC'))"
echo "source: $src_state"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  host: $(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "chatd: WORKER_THREADS=${BENCH_WORKERS:-4} LOG_LEVEL=warn; chat-agent: echo back end; PostgreSQL 15 with CHATD_PG_FAST=1 (fsync, synchronous_commit and full_page_writes off); Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
if [[ $SCENARIO == soak ]]; then
    echo "everything (clients included) shares the same $(nproc) cores; soak: chat-agent AGENT_DELAY_MS=$SOAK_DELAY_MS"
else
    echo "everything (clients included) shares the same $(nproc) cores; ${SECS} s per measurement after ${WARM} s warm-up"
fi
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if awk '{ exit !($1 > 0.5) }' /proc/loadavg; then
    echo "WARNING: the machine was already busy; host% well above the sum of the other CPU columns shows how much"
fi

# ------------------------------------------------------------------ soak
if [[ $SCENARIO == soak ]]; then
    echo
    echo "## soak: $SOAK_CLIENTS clients of $SOAK_USERS users for $SOAK_SECONDS s, every code mixed, think ${SOAK_THINK_MIN}-${SOAK_THINK_MAX} s"
    # Users with every model and a balance no soak can spend.
    psql_q -tAc "insert into user_data(username, models, balance)
                 select 'soak user ' || g, array[4,5,8], 1e9 from generate_series(1, $SOAK_USERS) g
                 returning user_id" | sed '/^$/d' >"$DATA/soak_users.txt"
    [[ $(wc -l <"$DATA/soak_users.txt") == "$SOAK_USERS" ]] || die "seeding the soak users failed"
    # A short warm-up through every path (so chatd's lazily opened
    # connections to PostgreSQL, Redis and the agent exist), then the
    # descriptor baseline is taken by soak itself before its clients connect.
    timeout -k 5 60 "$BUILD/soak" --url "$URL" --users "$DATA/soak_users.txt" --clients 16 --seconds 4 \
        --think-min 0.05 --think-max 0.2 --seed 7 >"$DATA/soak-warmup.out" 2>&1 ||
        { say "WARNING: the soak warm-up reported failures:"; grep -v '^sample' "$DATA/soak-warmup.out" >&2; }
    sleep 2
    if ((SOAK_IDLE > 0)); then
        # Issue 15's ten thousand: SOAK_IDLE more connections that only
        # hold, open for the whole soak, beside the active clients.
        rss_idle0=$(status_of "$CHATD_PID" VmRSS)
        timeout -k 5 $((SOAK_SECONDS + 240)) "$BUILD/wsbench" --url "$URL" --idle "$SOAK_IDLE" \
            --hold $((SOAK_SECONDS + 60)) --ramp 256 >"$DATA/soak-idle.out" 2>>"$DATA/client.err" &
        IDLE_PID=$!
        for ((i = 0; i < 1200; i++)); do
            grep -q '^idle conns=' "$DATA/soak-idle.out" && break
            sleep 0.1
        done
        sleep 2
        rss_idle1=$(status_of "$CHATD_PID" VmRSS)
        echo "idle connections: $(grep '^idle conns=' "$DATA/soak-idle.out")"
        echo "chatd VmRSS before / with them (KiB): $rss_idle0 / $rss_idle1, per idle connection" \
            "$(awk -v a="$rss_idle0" -v b="$rss_idle1" -v n="$SOAK_IDLE" 'BEGIN { printf "%.1f KiB", (b - a) / n }')"
    fi
    warn0=$(log_count 'level=warn')
    err0=$(log_count 'level=error')
    : >"$DATA/soak.out" # exists before tail looks for it
    "$BUILD/soak" --url "$URL" --users "$DATA/soak_users.txt" --pid "$CHATD_PID" \
        --clients "$SOAK_CLIENTS" --seconds "$SOAK_SECONDS" \
        --think-min "$SOAK_THINK_MIN" --think-max "$SOAK_THINK_MAX" >"$DATA/soak.out" 2>&1 &
    BG_PID=$!
    # Background + wait (not a foreground run) so the time limit and
    # Ctrl-C still reach the cleanup.
    tail -n +1 -f --pid="$BG_PID" "$DATA/soak.out" &
    tail_pid=$!
    soak_rc=0
    wait "$BG_PID" || soak_rc=$?
    BG_PID=
    wait "$tail_pid" 2>/dev/null || true
    chatd_alive
    if [[ -n "${IDLE_PID:-}" ]]; then
        echo "chatd VmRSS at the end of the soak (KiB): $(status_of "$CHATD_PID" VmRSS)"
        kill "$IDLE_PID" 2>/dev/null || true
        wait "$IDLE_PID" 2>/dev/null || true
        echo "idle connections at the end: $(grep '^idle_done' "$DATA/soak-idle.out" || echo "(held until killed)")"
    fi
    echo "chatd log warn/error lines added: $(($(log_count 'level=warn') - warn0)) / $(($(log_count 'level=error') - err0))"
    if grep -q 'level=warn\|level=error' "$DATA/chatd.log"; then
        echo "chatd log warnings/errors (first lines):"
        grep 'level=warn\|level=error' "$DATA/chatd.log" | head -n 20 | sed 's/^/    /'
    fi
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit "$soak_rc"
fi

# ------------------------------------------ j. thousands of live streams (issue 15)
section_streams() {
STREAMS=${BENCH_STREAMS:-2000}
STREAM_WORDS=${BENCH_STREAM_WORDS:-200}
echo
echo "## j. $STREAMS streamed replies at once, 20 deltas/s each for $((STREAM_WORDS / 20)) s (chat-agent AGENT_DELTA_MS=50 AGENT_STAMP_DELTAS=1 AGENT_DELTA_PHASE=aligned|random)"
# One user per stream: a subscriber gets its own user's events, as in life.
psql_q -tAc "insert into user_data(username, models, balance)
             select 'stream ' || g, array[4,5,8], 1000 from generate_series(1, $STREAMS) g
             returning user_id" | sed '/^$/d' >"$DATA/stream_users.txt"
echo "(resumable 0: each delta goes to its connection only; 1: it is also appended to the session's"
echo " Redis stream for code 16, and published on the session's turn channel once a connection resumes"
echo " the turn (none does here); sub: each stream's user"
echo " also has code 14 on its connection; pieces: the agent's words, each stamped with its send time"
echo " and checked in order (the agent may send several in one message when its socket is busy:"
echo " frames <= pieces); lag: receive time minus"
echo " that stamp, one clock; steady: the words sent 2 s or more after the turns, past the burst of"
echo " 2,000 turns starting at once; the last word of each reply comes with its end, unstamped; CPU per"
echo " 1,000 pieces is chatd's)"
echo " by chatd's threads: cq, the agent's completion-queue thread (gRPC reads); svc, the service"
echo " thread (WebSocket frames); rest, the workers and the Redis threads; each in ms per 1,000 pieces)"
printf '%-34s %6s %9s %9s %8s %6s %5s %6s %10s %10s %10s %10s %10s %6s %7s %9s %5s %7s %7s %7s %6s %6s %6s %7s\n' what turns pieces expected frames order dups wrong lag_p50_us lag_p99_us lag_max_us steady_p50 steady_p99 errors chatd% cpu/1k pg% redis% agent% client% host% cq/1k svc/1k rest/1k
# RESUMABLE_STREAMS=0 first (each delta only to its connection), then 1 (each
# also appended to the session's Redis stream and published on its turn
# channel, for code 16), then 1 with every stream's user also subscribed
# (code 14). chatd is restarted for each setting; one turn first, so its
# lazily opened connections to PostgreSQL, Redis and the agent exist.
# The agent's pace: "aligned", every stream's words on the same 50 ms grid
# (streams begun together send in step, the worst case), or "random", each
# stream at its own offset within the 50 ms, as independent streams are.
# BENCH_STREAM_ROWS replaces the rows: "streams resumable pace mode" specs
# separated by ";", e.g. "2000 0 random plain;2000 1 random plain" twice
# over, to see a change beside the run-to-run noise.
resumable= phase= specs=()
if [[ -n ${BENCH_STREAM_ROWS:-} ]]; then
    IFS=';' read -r -a specs <<<"$BENCH_STREAM_ROWS"
else
    specs=("$((STREAMS / 2)) 0 aligned plain" "$STREAMS 0 aligned plain"
        "$((STREAMS / 2)) 0 random plain" "$STREAMS 0 random plain"
        "$((STREAMS / 2)) 1 random plain" "$STREAMS 1 random plain" "$STREAMS 1 random subscribed")
fi
for spec in "${specs[@]}"; do
    read -r n res ph mode <<<"$spec"
    if [[ $ph != "$phase" ]]; then
        stop_child chat-agent "$AGENT_PID" 10
        AGENT_PID=
        start_agent 0 AGENT_DELTA_MS=50 AGENT_STAMP_DELTAS=1 AGENT_DELTA_PHASE="$ph"
        phase=$ph
        resumable= # (a new agent: chatd's channel to it starts over too)
    fi
    if [[ $res != "$resumable" ]]; then
        stop_child chatd "$CHATD_PID" 30
        start_chatd RESUMABLE_STREAMS="$res"
        resumable=$res
        first_turn 30 || say "WARNING: chatd's turns still fail after its restart (see $DATA/chatd.log)"
    fi
    flag=
    [[ $mode == subscribed ]] && flag=--resume
    c0=$(cpu_ticks "$CHATD_PID") th0=$(thread_ticks "$CHATD_PID")
    run_cpu timeout -k 5 300 "$BUILD/streambench" --url "$URL" --users "$DATA/stream_users.txt" \
        --conns "$n" --words "$STREAM_WORDS" --timeout 200 --ramp 256 $flag
    c1=$(cpu_ticks "$CHATD_PID") th1=$(thread_ticks "$CHATD_PID")
    d=$(field "$OUT" pieces)
    printf '%-34s %6s %9s %9s %8s %6s %5s %6s %10s %10s %10s %10s %10s %6s %7s %9s %5s %7s %7s %7s %6s %6s %6s %7s\n' \
        "$n, $ph, resumable $res$([[ $mode == subscribed ]] && echo ", sub")" \
        "$(field "$OUT" turns_done)" "$d" "$(field "$OUT" pieces_expected)" "$(field "$OUT" frames)" \
        "$(field "$OUT" out_of_order)" "$(field "$OUT" duplicates)" "$(field "$OUT" wrong_words)" \
        "$(field "$OUT" lag_p50_us)" "$(field "$OUT" lag_p99_us)" "$(field "$OUT" lag_max_us)" \
        "$(field "$OUT" steady_p50_us)" "$(field "$OUT" steady_p99_us)" \
        "$(field "$OUT" errors)" "$CHATD_CPU" \
        "$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v d="${d:-0}" 'BEGIN { printf "%.1f ms", (d > 0 ? t / hz / d * 1e6 : 0) }')" \
        "$PG_CPU" "$REDIS_CPU" "$AGENT_CPU" "$CLIENT_CPU" "$HOST_CPU" \
        $(awk -v a="$th0" -v b="$th1" -v hz="$CLK_TCK" -v d="${d:-0}" 'BEGIN {
            split(a, x, " "); split(b, y, " ")
            for (i = 1; i <= 3; i++) printf "%.1f ", (d > 0 ? (y[i] - x[i]) / hz / d * 1e6 : 0) }')
done
printf '%-40s %s\n' "chatd VmRSS after (KiB)" "$(status_of "$CHATD_PID" VmRSS)"
# The anchor: the same agent's deltas read with nothing else to do, by
# grpcbench --stream (gRPC C core and chatd's own agent code, src/agent/),
# at each stream count above: what reading a delta costs any process here,
# beside chatd's cq/1k.
echo
echo "(anchor: grpcbench --stream $STREAM_WORDS, the same agent's streamed replies read and dropped, as many"
echo " calls at once as the rows' streams; CPU of the whole grpcbench process per 1,000 deltas)"
printf '%-34s %9s %10s\n' what deltas cpu/1k
for n in $(for spec in "${specs[@]}"; do echo "${spec%% *}"; done | sort -un); do
    g=$(timeout -k 5 120 "$BUILD/grpcbench" --target "127.0.0.1:$AGENT_PORT" --conc "$n" --seconds 8 \
        --warmup 2 --stream "$STREAM_WORDS" 2>>"$DATA/client.err") || say "grpcbench exited with status $?"
    echo "$g" >>"$DATA/raw.txt"
    printf '%-34s %9s %7s ms\n' "direct gRPC, $n streams" "$(field "$g" deltas)" "$(field "$g" cpu_ms_per_1k)"
done
}

report_tail() {
echo
echo "raw result lines:"
[[ -f "$DATA/raw.txt" ]] && sed 's/^/    /' "$DATA/raw.txt"
if [[ -s "$DATA/client.err" ]]; then
    echo "client diagnostics (first lines):"
    head -n 20 "$DATA/client.err" | sed 's/^/    /'
fi
if grep -q 'level=warn\|level=error' "$DATA/chatd.log"; then
    echo "chatd log warnings/errors (first lines):"
    grep 'level=warn\|level=error' "$DATA/chatd.log" | head -n 20 | sed 's/^/    /'
fi
}

# --------------------------------- h2. the conversation tree (issue 22)
# A session of 100,000 messages on 1,000 branches: branch b holds messages
# 100b..100b+99, each under the one before, and every branch after the
# first starts under message 49; the active path (to message 99,999) is
# 150 messages. Beside it a linear session of 150 messages. Codes 9 and 2
# read the active path of each, and turns on each (codes 3, 17 on a user
# message of the path, 18 on an answer of it) are counted in PostgreSQL
# round trips.
section_tree() {
echo
echo "## h2. the conversation tree: a session of 100,000 messages on 1,000 branches vs a linear one"
local user bushy linear
tree_row() { # label
    printf '%-52s %5s %8s %8s %8s %6s %6s %4s\n' "$1" "$(field "$OUT" conns)" "$(field "$OUT" rps)" \
        "$(field "$OUT" p50_us)" "$(field "$OUT" p99_us)" "$(field "$OUT" errors)" "$CHATD_CPU" "$PG_CPU"
}
tree_metric() { # exact metric name with labels -> value (0 when absent)
    curl -s "http://127.0.0.1:$CHATD_PORT/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
}
user=$(psql_q -tAc "insert into user_data(username, models, balance) values ('Tree', array[4,5,8], 1000000) returning user_id" | head -n 1)
bushy=$(psql_q -tAc "insert into chat_sessions(user_id, session_name, model_id, next_seq, active_leaf)
                     values ('$user', 'bushy', 8, 100000, 99999) returning session_id" | head -n 1)
psql_q -c "insert into chat_messages(session_id, seq, parent_seq, role, content)
           select '$bushy', g, case when g = 0 then -1 when g % 100 = 0 then 49 else g - 1 end,
                  case when g % 2 = 0 then 'user' else 'assistant' end,
                  'message ' || g || ' ' || repeat('lorem ipsum ', 10)
             from generate_series(0, 99999) g" >/dev/null
linear=$(psql_q -tAc "insert into chat_sessions(user_id, session_name, model_id, next_seq)
                      values ('$user', 'linear', 8, 150) returning session_id" | head -n 1)
psql_q -c "insert into chat_messages(session_id, seq, role, content)
           select '$linear', g, case when g % 2 = 0 then 'user' else 'assistant' end,
                  'message ' || g || ' ' || repeat('lorem ipsum ', 10)
             from generate_series(0, 149) g" >/dev/null
psql_q -c "vacuum analyze chat_messages" -c "vacuum analyze chat_sessions" >/dev/null
echo "active path: $(psql_q -tAc "select count(*) from chat_messages where session_id = '$bushy' and (seq < 50 or seq >= 99900)") messages of $(psql_q -tAc "select count(*) from chat_messages where session_id = '$bushy'") in the bushy session, 150 in the linear one"
printf '%-52s %5s %8s %8s %8s %6s %6s %4s\n' "read the active path" conns per_s p50_us p99_us errors chatd% pg%
for c in 1 16; do
    for s in linear bushy; do
        sid=$linear
        [[ $s == bushy ]] && sid=$bushy
        run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$user" --code 9 --session "$sid" \
            --extra '"limit":50' --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
        tree_row "code 9 newest page of 50, $s"
        run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$user" --code 2 --session "$sid" \
            --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
        tree_row "code 2, the 150-message path, $s"
    done
done
printf '%-52s %s\n' "PostgreSQL round trips per turn (one connection)" "linear / bushy"
local code extra line
for code in 3 17 18; do
    line=""
    for s in linear bushy; do
        sid=$linear
        [[ $s == bushy ]] && sid=$bushy
        case $code in
        3) extra="" ;;
        17) extra='"seq":148,"message":"bench edit"' ;;  # a user message of both paths
        18) extra='"seq":149,"model_name":"llama3.1:8b"' ;;
        esac
        [[ $s == bushy && $code == 17 ]] && extra='"seq":99998,"message":"bench edit"'
        [[ $s == bushy && $code == 18 ]] && extra='"seq":99999,"model_name":"llama3.1:8b"'
        local ok_name="chatd_requests_total{code=\"$code\",outcome=\"ok\"}" rt0 ok0 rt1 ok1
        rt0=$(tree_metric chatd_pg_roundtrips_total) ok0=$(tree_metric "$ok_name")
        timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$user" --code "$code" --session "$sid" \
            ${extra:+--extra "$extra"} --conns 1 --seconds "$SECS" --warmup 0 --timeout 20 >>"$DATA/tree_rt.out" 2>>"$DATA/client.err" || true
        rt1=$(tree_metric chatd_pg_roundtrips_total) ok1=$(tree_metric "$ok_name")
        line+="$(awk -v r=$((rt1 - rt0)) -v t=$((ok1 - ok0)) 'BEGIN { printf "%.2f (%d turns)", (t > 0 ? r / t : 0), t }')  "
    done
    printf '%-52s %s\n' "code $code" "$line"
done
# Exports: the active path is read as runs of consecutive seqs, each page
# one range of the key (a linear session is one run), the whole tree as
# one range.
local long
long=$(psql_q -tAc "insert into chat_sessions(user_id, session_name, model_id, next_seq)
                    values ('$user', 'long linear', 8, 100000) returning session_id" | head -n 1)
psql_q -c "insert into chat_messages(session_id, seq, role, content)
           select '$long', g, case when g % 2 = 0 then 'user' else 'assistant' end,
                  'message ' || g || ' ' || repeat('lorem ipsum ', 10)
             from generate_series(0, 99999) g" -c "vacuum analyze chat_messages" >/dev/null
printf '%-52s %9s %9s %9s\n' "export, format=json" seconds MiB messages
local what sid q out
for what in "linear, 100,000 messages:$long:" "bushy, its 150-message path:$bushy:" \
            "bushy, the whole tree (branches=all):$bushy:&branches=all"; do
    IFS=: read -r label sid q <<<"$what"
    out=$(curl -s -w '\n%{http_code} %{time_total} %{size_download}' \
        "http://127.0.0.1:$CHATD_PORT/sessions/$sid/export?format=json&user_id=$user$q")
    read -r code secs bytes <<<"$(tail -n 1 <<<"$out")"
    [[ $code == 200 ]] || say "export answered $code"
    printf '%-52s %9s %9s %9s\n' "$label" "$secs" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$(head -n -1 <<<"$out" | grep -o '"seq"' | wc -l)"
done
}

# ------------------------------------------------ h3. import (issue 24)
# A ChatGPT-shaped conversations.json of BENCH_IMPORT_MB (100) megabytes,
# 20 messages a conversation (one path, a branch at its end), imported
# through POST /import; beside it COPY loading the same rows into the same
# tables (chat_sessions, chat_messages, their indexes and triggers) for
# another user. chatd's resident memory is sampled through the import: it
# must stay flat (streamed parsing, one conversation at a time).
section_import() {
echo
local mb=${BENCH_IMPORT_MB:-100}
echo "## h3. import of a ${mb} MB ChatGPT export vs COPY of the same rows"
local user copier dir info t0 t1 id state rss0 rss peak import_s copy_s convs msgs
user=$(psql_q -tAc "insert into user_data(username, models, balance) values ('Importer', array[4,5,8], 1) returning user_id" | head -n 1)
copier=$(psql_q -tAc "insert into user_data(username, models, balance) values ('Copier', array[4,5,8], 1) returning user_id" | head -n 1)
dir="$DATA/import"
mkdir -p "$dir"
info=$(/usr/bin/python3 "$REPO/scripts/gen_export.py" "$mb" "$dir" "$copier" 4)
convs=$(field "$info" conversations)
msgs=$(field "$info" messages)
rss0=$(status_of "$CHATD_PID" VmRSS)
peak=$rss0
t0=$(date +%s.%N)
id=$(curl -s -F "user_id=$user" -F "file=@$dir/conversations.json" "http://127.0.0.1:$CHATD_PORT/import" |
     sed -n 's/.*"import_id":"\([^"]*\)".*/\1/p')
[[ -n $id ]] || die "POST /import answered no import_id"
while :; do
    rss=$(status_of "$CHATD_PID" VmRSS)
    ((rss > peak)) && peak=$rss
    state=$(curl -s "http://127.0.0.1:$CHATD_PORT/import/$id?user_id=$user" | tr -d ' ')
    [[ $state == *'"status":"running"'* ]] || break
    sleep 0.2
done
t1=$(date +%s.%N)
import_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
[[ $state == *'"status":"finished"'* ]] || say "import ended: $state"
t0=$(date +%s.%N)
psql_q -c "\\copy chat_sessions (session_id, user_id, session_name, model_id, next_seq, active_leaf, import_source) from '$dir/sessions.csv' csv" \
       -c "\\copy chat_messages (session_id, seq, parent_seq, role, content) from '$dir/messages.csv' csv" >/dev/null
t1=$(date +%s.%N)
copy_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
printf '%-34s %9s %9s %12s %12s\n' "" seconds sessions "messages/s" "chatd RSS KiB"
printf '%-34s %9s %9s %12s %12s\n' "POST /import (chatd)" "$import_s" "$(sed -n 's/.*"sessions":\([0-9]*\).*/\1/p' <<<"$state")" \
    "$(awk -v m="$msgs" -v s="$import_s" 'BEGIN { printf "%.0f", m / s }')" "$rss0 -> peak $peak"
printf '%-34s %9s %9s %12s\n' "COPY, the same rows (anchor)" "$copy_s" "$convs" \
    "$(awk -v m="$msgs" -v s="$copy_s" 'BEGIN { printf "%.0f", m / s }')"
echo "import / COPY rate: $(awk -v a="$copy_s" -v b="$import_s" 'BEGIN { printf "%.2f", a / b }') (goal >= 0.25); $convs conversations, $msgs messages, $(du -m "$dir/conversations.json" | cut -f1) MB"
}

section_c2() {
    echo
    echo "## c2. a turn at the database's pace: round trips, and the store beside pgbench"
    metric_value() { # exact metric name with labels -> value (0 when absent)
        curl -s "http://127.0.0.1:$CHATD_PORT/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
    }
    TURN_OK='chatd_requests_total{code="3",outcome="ok"}'
    # Every worker's connection prepares every statement on its first use:
    # warm them all first (the full run's earlier sections do), so that
    # the count is a turn's own.
    timeout -k 5 60 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session PERCONN --conns 16 --seconds 1 --warmup 0 --timeout 20 >/dev/null 2>>"$DATA/client.err" || true
    rt0=$(metric_value chatd_pg_roundtrips_total) ok0=$(metric_value "$TURN_OK")
    timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session PERCONN --conns 1 --seconds "$SECS" --warmup 0 --timeout 20 >"$DATA/rt.out" 2>>"$DATA/client.err" || true
    rt1=$(metric_value chatd_pg_roundtrips_total) ok1=$(metric_value "$TURN_OK")
    printf '%-58s %s\n' "PostgreSQL round trips per turn (chatd_pg_roundtrips_total)" \
        "$(awk -v r=$((rt1 - rt0)) -v t=$((ok1 - ok0)) 'BEGIN { printf "%.2f over %d turns", (t > 0 ? r / t : 0), t }')"
    psql_q -c "insert into chat_sessions(session_id, user_id, session_name, model_id)
        select ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, '$USER_ID', 'pgbench ' || i, 8
          from generate_series(0, 63) i" >/dev/null
    # Two transactions: chatd's (the turn's money reserved with its lease and
    # settled by its store, issue 25) and the same without a reservation.
    for reserve in 1 0; do
    /usr/bin/python3 - "$REPO/scripts" "$USER_ID" "$reserve" >"$DATA/pgbench_store$reserve.sql" <<'EOF'
import re, sys
sys.path.insert(0, sys.argv[1])
import pg_statement
user = "'%s'" % sys.argv[2]
sid = "('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))"
turn = "('00000000-0000-4000-9000-' || lpad(:client_id::text, 12, '0'))"
def fill(name, vals):
    sql = re.sub(r"\$(\d+)", lambda m: vals[int(m.group(1))], pg_statement.statement_sql(name))
    return " ".join(sql.split()) + ";"
reserve = sys.argv[3] == "1"
print(fill("lease_take", {1: user, 2: sid, 3: turn, 4: "10", 5: "false",
                          6: "'{8}'" if reserve else "null", 7: "2"}))
print(fill("turn_store", {1: user, 2: sid, 3: turn, 4: "2", 5: "'bench message'",
                          6: "'echo: bench message [history=2 summary=0 files=0]'", 7: "''", 8: "''",
                          9: "'turn'", 10: "8", 11: "'llama3.1:8b'", 12: "'0.0001'", 13: "'0'",
                          14: "null", 15: "null", 16: "false", 17: "false", 18: "0",
                          19: "(select coalesce(active_leaf, next_seq - 1) from chat_sessions"
                              " where session_id = %s::uuid)" % sid, 20: "0", 21: "false", 22: "0",
                          23: "null::text"}))
EOF
    done
    # The least a turn must write, as issue 26 states it: lock the session
    # row, insert the two messages (under their parents, with the table's
    # indexes and generated search column, as chatd's are), bump next_seq;
    # one statement, one commit.
    cat >"$DATA/pgbench_storeM.sql" <<'EOF'
with s as (update chat_sessions set next_seq = next_seq + 2
            where session_id = ('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid
           returning session_id, next_seq - 2 as seq)
insert into chat_messages(session_id, seq, parent_seq, role, content)
select s.session_id, s.seq + g, nullif(s.seq + g, 0) - 1, case g when 0 then 'user' else 'assistant' end,
       case g when 0 then 'bench message' else 'echo: bench message [history=2 summary=0 files=0]' end
  from s, generate_series(0, 1) g;
EOF
    pgbench_store() { # reserve (1/0) or M (the minimal turn) -> tps
        # as chatd (application_name): the admin events trigger is not for its writes
        PGAPPNAME=chatd PGPASSWORD=chatd pgbench -n -h 127.0.0.1 -p "$PG_PORT" -U chatd -c 32 -j 2 -T "$SECS" -M prepared \
            -f "$DATA/pgbench_store$1.sql" chatd 2>>"$DATA/pgbench.err" |
            awk '/^tps = / { printf "%d", $3; exit }'
    }
    store_pair() { # label
        local chatd_rps pgb pgb0
        run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session PERCONN --conns 32 --seconds "$SECS" --warmup "$WARM" --timeout 20
        chatd_rps=$(field "$OUT" rps)
        local p50 p99 errs cpu_c cpu_p multi
        p50=$(field "$OUT" p50_us) p99=$(field "$OUT" p99_us) errs=$(field "$OUT" errors) cpu_c=$CHATD_CPU cpu_p=$PG_CPU
        # the same turns from 32 users, one a connection: no two turns share
        # a user's balance, its lock or its reservations
        local th0 th1 ok0 ok1 ag0 ag1 g0 g1
        th0=$(thread_ticks "$CHATD_PID") ok0=$(metric_value "$TURN_OK") ag0=$(cpu_ticks "$AGENT_PID") g0=$(pg_total_ticks)
        timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --users "$DATA/c2_users.txt" --code 3 --session PERCONN --conns 32 --seconds "$SECS" --warmup "$WARM" --timeout 20 >"$DATA/c2_multi.out" 2>>"$DATA/client.err" || true
        th1=$(thread_ticks "$CHATD_PID") ok1=$(metric_value "$TURN_OK") ag1=$(cpu_ticks "$AGENT_PID") g1=$(pg_total_ticks)
        multi=$(field "$(cat "$DATA/c2_multi.out")" rps)
        # CPU per turn of the 32-user run, warm-up included, over every turn
        # it completed (chatd's own count): by chatd's thread, the agent's and
        # PostgreSQL's.
        C2_SPLIT=$(awk -v a="$th0" -v b="$th1" -v n=$((ok1 - ok0)) -v g=$((ag1 - ag0)) -v q=$((g1 - g0)) -v hz="$CLK_TCK" 'BEGIN {
            split(a, x, " "); split(b, y, " "); if (n <= 0) { print "no turns"; exit }
            printf "cq %.3f, svc %.3f, rest %.3f, chatd %.3f, agent %.3f, PostgreSQL %.3f ms (%d turns)",
                (y[1] - x[1]) / hz / n * 1e3, (y[2] - x[2]) / hz / n * 1e3, (y[3] - x[3]) / hz / n * 1e3,
                (y[1] + y[2] + y[3] - x[1] - x[2] - x[3]) / hz / n * 1e3, g / hz / n * 1e3, q / hz / n * 1e3, n }')
        # A B B A: the rows all runs write get slower as their versions pile up,
        # so each kind runs once early and once late.
        local a1 b1 b2 a2 m1 m2 pgm
        local q0 q1 mt0 mt1 kids i
        kids=$(pg_children)
        q0=$(pg_total_ticks) mt0=$(psql_q -tAc "select xact_commit from pg_stat_database where datname = 'chatd'")
        m1=$(pgbench_store M)
        # pgbench's backends count once the postmaster has reaped them
        for ((i = 0; i < 100; i++)); do
            (($(pg_children) <= kids)) && break
            sleep 0.05
        done
        q1=$(pg_total_ticks) mt1=$(psql_q -tAc "select xact_commit from pg_stat_database where datname = 'chatd'")
        a1=$(pgbench_store 1) b1=$(pgbench_store 0) b2=$(pgbench_store 0) a2=$(pgbench_store 1)
        m2=$(pgbench_store M)
        # PostgreSQL's CPU per minimal transaction (its processes' ticks over
        # the commits of the first run): the database's side of the ratio.
        C2_SPLIT+=$(awk -v t=$((q1 - q0)) -v n=$((mt1 - mt0)) -v hz="$CLK_TCK" 'BEGIN {
            printf "; PostgreSQL per minimal transaction %.3f ms", (n > 0 ? t / hz / n * 1e3 : 0) }')
        pgb=$(((${a1:-0} + ${a2:-0}) / 2))
        pgb0=$(((${b1:-0} + ${b2:-0}) / 2))
        pgm=$(((${m1:-0} + ${m2:-0}) / 2))
        printf '%-10s %13s %10s %6s %13s %15s %10s %9s %9s   (chatd p50/p99 %s/%s us, errors %s, chatd%% %s, pg%% %s)\n' "$1" "$chatd_rps" \
            "${pgb:-?}" "$(awk -v a="$chatd_rps" -v b="${pgb:-0}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
            "${pgb0:-?}" "${multi:-?}" "${pgm:-?}" \
            "$(awk -v a="$chatd_rps" -v b="${pgm:-0}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
            "$(awk -v a="${multi:-0}" -v b="${pgm:-0}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
            "$p50" "$p99" "$errs" "$cpu_c" "$cpu_p"
        printf '%-10s CPU per turn, 32 users: %s\n' "" "$C2_SPLIT"
    }
    echo "(pgbench: -c 32 -j 2 -M prepared, a transaction = chatd's lease_take + turn_store statements, $DATA/pgbench_store1.sql;"
    echo " no_reserve: the same statements without the reservation, $DATA/pgbench_store0.sql; each the mean of two runs, A B B A;"
    psql_q -tAc "insert into user_data(username, models, balance)
        select 'C2 ' || i, array[4,5,8], 1000000 from generate_series(1, 32) i returning user_id" |
        grep . >"$DATA/c2_users.txt"
    echo " 32_users: chatd's turns when each connection is another user's, the pgbench figures all one user's;"
    echo " minimal/s: pgbench of the least a turn must write, $DATA/pgbench_storeM.sql (lock the session row,"
    echo " insert the two messages, bump next_seq, one commit), the mean of a run before and one after the others;"
    echo " min_ratio: chatd_turns/s over it, min_ratio32: chatd_32_users/s over it)"
    printf '%-10s %13s %10s %6s %13s %15s %10s %9s %9s\n' fsync chatd_turns/s pgbench/s ratio no_reserve/s chatd_32_users/s minimal/s min_ratio min_ratio32
    store_pair "off"
    say "restarting PostgreSQL with fsync on"
    if CHATD_PG_FAST=0 "$REPO/scripts/services.sh" restart-pg "$DATA" "$PG_PORT" 2>>"$DATA/services.log"; then
        sleep 1
        pin_cores
        store_pair "on"
        CHATD_PG_FAST=1 "$REPO/scripts/services.sh" restart-pg "$DATA" "$PG_PORT" 2>>"$DATA/services.log" ||
            die "PostgreSQL did not come back (see $DATA/services.log)"
        sleep 1
        pin_cores
    else
        say "WARNING: PostgreSQL did not restart with fsync on (see $DATA/services.log)"
    fi
}

# ------------------------------------------------------- h1. search (code 11)
# Users with 10 sessions of 100 messages each: 1,000 of them (1,000,000
# messages), then BENCH_SEARCH_USERS in all (`scripts/bench.sh search`:
# 10,000, 10,000,000 messages), the same queries at each size: a user's
# search must cost what their own matching messages cost, not the table.
# Every message holds "lorem" and one of 1,024 words w0..w1023 (hashed),
# and one of 37 words k0..k36: a rare, a medium and a common query.
hist_row() { # label
    printf '%-52s %5s %8s %8s %8s %6s %6s %4s\n' "$1" "$(field "$OUT" conns)" "$(field "$OUT" rps)" \
        "$(field "$OUT" p50_us)" "$(field "$OUT" p99_us)" "$(field "$OUT" errors)" "$CHATD_CPU" "$PG_CPU"
}
search_seed() { # first last: users "search <first>" .. "search <last>"
    psql_q -tAc "insert into user_data(username, models, balance)
                 select 'search ' || g, array[4,5,8], 1000 from generate_series($1, $2) g
                 returning user_id" | sed '/^$/d' >>"$DATA/search_users.txt"
    psql_q -c "insert into chat_sessions(user_id, session_name, model_id, next_seq)
               select u.user_id, 'topic ' || s, 8, 100
                 from user_data u, generate_series(1, 10) s
                where u.username like 'search %' and substr(u.username, 8)::int between $1 and $2" >/dev/null
    psql_q -c "insert into chat_messages(session_id, seq, role, content)
               select s.session_id, m, case when m % 2 = 0 then 'user' else 'assistant' end,
                      'w' || ((hashtext(s.session_id::text)::bigint + m * 7919) & 1023) || ' lorem ipsum dolor sit amet k' || (m % 37)
                      || ' consectetur adipiscing elit sed do eiusmod tempor'
                 from chat_sessions s join user_data u using (user_id), generate_series(0, 99) m
                where u.username like 'search %' and substr(u.username, 8)::int between $1 and $2" >/dev/null
    psql_q -c "vacuum analyze chat_messages" -c "vacuum analyze chat_sessions" >/dev/null
}

section_search() {
local users=${1:-1000} have=0 n t0 t1
: >"$DATA/search_users.txt"
for n in 1000 "$users"; do
    [[ $n -gt $have ]] || continue
    t0=$(date +%s.%N)
    search_seed $((have + 1)) "$n"
    t1=$(date +%s.%N)
    have=$n
    echo "seeded $(psql_q -tAc "select count(*) from chat_messages m join chat_sessions s using (session_id) join user_data u using (user_id) where u.username like 'search %'") messages of $(wc -l <"$DATA/search_users.txt") users (the last $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s, stored tsvector and GIN index included); $(psql_q -tAc "select count(*) from chat_messages") messages in the table, $(psql_q -tAc "select pg_size_pretty(pg_total_relation_size('chat_messages'))")"
    printf '%-52s %5s %8s %8s %8s %6s %6s %4s\n' "code 11, limit 20, a random user of $(printf "%'d" "$have")" conns per_s p50_us p99_us errors chatd% pg%
    for c in 1 16; do
        for q in "w5:rare word (~1 of 1,024 messages)" "k7:medium word (1 of 37 messages)" "lorem:common word (every message)" "lorem k7 -w5:websearch syntax"; do
            word=${q%%:*}
            run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --users "$DATA/search_users.txt" --code 11 \
                --extra "\"query\":\"$word\"" --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
            hist_row "${q#*:}"
        done
    done
done
}

if [[ $SCENARIO == turns ]]; then
    section_c2
    report_tail
    exit 0
fi
if [[ $SCENARIO == import ]]; then
    section_import
    report_tail
    exit 0
fi
if [[ $SCENARIO == streams ]]; then
    section_streams
    report_tail
    exit 0
fi
if [[ $SCENARIO == tree ]]; then
    section_tree
    report_tail
    exit 0
fi
if [[ $SCENARIO == search ]]; then
    echo
    echo "## h1. search (code 11) over 1,000 and ${BENCH_SEARCH_USERS:-10000} users' messages"
    section_search "${BENCH_SEARCH_USERS:-10000}"
    report_tail
    exit 0
fi

# ---------------------------------------------- a. simple codes vs Redis
echo
echo "## a. request/reply codes vs redis-benchmark GET (closed loop, 1 request in flight per connection)"
declare -A REDIS_RPS REDIS_P50 REDIS_P99
for c in 1 16 64; do
    n=$((c == 1 ? 50000 : 200000))
    # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    line=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t get -c "$c" -n "$n" --csv | grep '^"GET"' | tr -d '"')
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
    REDIS_RPS[$c]=$rps
    REDIS_P50[$c]=$(awk -v v="$p50" 'BEGIN { printf "%d", v * 1000 }')
    REDIS_P99[$c]=$(awk -v v="$p99" 'BEGIN { printf "%d", v * 1000 }')
done
echo "(chatd% pg% redis% client% host%: CPU used during the run in percent of one core, host% the whole machine's; 200 = both cores)"
printf '%-16s %5s %9s %7s %7s %6s %6s %4s %6s %7s %5s | %9s %6s %6s | %5s\n' what conns chatd_rps p50_us p99_us errors chatd% pg% redis% client% host% redis_rps p50_us p99_us ratio
for code in 0 1 5 6; do
    case $code in
    0) what="0 user details" ;;
    1) what="1 sessions" ;;
    5) what="5 models" ;;
    6) what="6 balance" ;;
    esac
    for c in 1 16 64; do
        run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code "$code" --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
        rps=$(field "$OUT" rps)
        ratio=$(awk -v a="$rps" -v b="${REDIS_RPS[$c]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        printf '%-16s %5s %9s %7s %7s %6s %6s %4s %6s %7s %5s | %9s %6s %6s | %5s\n' "$what" "$c" "$rps" \
            "$(field "$OUT" p50_us)" "$(field "$OUT" p99_us)" "$(field "$OUT" errors)" \
            "$CHATD_CPU" "$PG_CPU" "$REDIS_CPU" "$CLIENT_CPU" "$HOST_CPU" "${REDIS_RPS[$c]}" "${REDIS_P50[$c]}" "${REDIS_P99[$c]}" "$ratio"
    done
done

# -------------------------------------------------------- b. idle memory
echo
echo "## b. chatd resident memory with $IDLE_CONNS idle WebSocket connections"
sleep 1
rss0=$(status_of "$CHATD_PID" VmRSS)
timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --idle "$IDLE_CONNS" --hold 6 >"$DATA/idle.out" 2>>"$DATA/client.err" &
BG_PID=$!
for ((i = 0; i < 300; i++)); do
    grep -q '^idle conns=' "$DATA/idle.out" && break
    kill -0 "$BG_PID" 2>/dev/null || break
    sleep 0.1
done
sleep 2 # let chatd settle: the last handshakes' buffers are freed lazily
rss1=$(status_of "$CHATD_PID" VmRSS)
fds=$(ls "/proc/$CHATD_PID/fd" | wc -l)
wait "$BG_PID" || true
BG_PID=
chatd_alive
connected=$(field "$(grep '^idle conns=' "$DATA/idle.out" || true)" connected)
connected=${connected:-0}
printf '%-34s %10s\n' "VmRSS before (KiB)" "$rss0"
printf '%-34s %10s\n' "VmRSS with idle conns (KiB)" "$rss1"
printf '%-34s %10s\n' "connections established" "$connected"
printf '%-34s %10s\n' "chatd open fds during hold" "$fds"
printf '%-34s %10s\n' "per connection (KiB)" "$(awk -v a="$rss0" -v b="$rss1" -v n="$connected" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) / n : 0) }')"
grep '^idle_done' "$DATA/idle.out" | sed 's/^/    /' || true

# ------------------------------------------------ c. chat vs direct gRPC
echo
echo "## c. chat turns through chatd vs direct gRPC to the same echo agent (AGENT_DELAY_MS=0)"
echo "(CPU columns as in a.; chat-agent's own in agent%)"
printf '%-42s %4s %7s %8s %8s %6s %6s %4s %6s %6s %7s %5s\n' what conc per_s p50_us p99_us errors chatd% pg% redis% agent% client% host%
chat_row() { # label
    printf '%-42s %4s %7s %8s %8s %6s %6s %4s %6s %6s %7s %5s\n' "$1" "$(field "$OUT" conns)$(field "$OUT" conc)" \
        "$(field "$OUT" rps)" "$(field "$OUT" p50_us)" "$(field "$OUT" p99_us)" \
        "$(field "$OUT" errors)" "$CHATD_CPU" "$PG_CPU" "$REDIS_CPU" "$AGENT_CPU" "$CLIENT_CPU" "$HOST_CPU"
}
for c in 1 32; do
    run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session PERCONN --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
    chat_row "chatd code 3, one session per connection"
    run_cpu timeout -k 5 120 "$BUILD/grpcbench" --target "127.0.0.1:$AGENT_PORT" --conc "$c" --seconds "$SECS" --warmup "$WARM"
    chat_row "direct gRPC Process"
    run_cpu timeout -k 5 120 "$BUILD/grpcbench" --target "127.0.0.1:$AGENT_PORT" --conc "$c" --seconds "$SECS" --warmup "$WARM" --summarize
    chat_row "direct gRPC Process + Summarize"
done
run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session NEW --conns 32 --seconds "$SECS" --warmup "$WARM" --timeout 20
chat_row "chatd code 3, session NEW every turn"

# ----------------------------- c2. a turn at the database's pace (issue 15)
# Round trips per turn from chatd's own counter; then chatd's turns at 32
# connections beside pgbench running chatd's own lease + store statements
# (scripts/pg_statement.py reads them from src/store/pg.c) at 32 clients, one
# session per client, on the same PostgreSQL: with fsync off (as everything
# above) and again after a restart with fsync on.

section_c2

# ------------------------------------------------------------- e. growth
echo
echo "## e. appending a turn: session of 10 vs 10,000 messages"
GROWTH_USER=$(psql_q -tAc "insert into user_data(username, models, balance) values ('Growth', array[4,5,8], 1000000) returning user_id" | head -n 1)
mk_session() { # messages -> session id
    local sid
    sid=$(psql_q -tAc "insert into chat_sessions(user_id, session_name, model_id, next_seq) values ('$GROWTH_USER', 'growth $1', 8, $1) returning session_id" | head -n 1)
    psql_q -c "insert into chat_messages(session_id, seq, role, content)
               select '$sid', g, case when g % 2 = 0 then 'user' else 'assistant' end,
                      'message ' || g || ' ' || repeat('lorem ipsum ', 10)
                 from generate_series(0, $1 - 1) g" >/dev/null
    echo "$sid"
}
S10=$(mk_session 10)
S10K=$(mk_session 10000)
psql_q -c "vacuum analyze chat_messages" -c "vacuum analyze chat_sessions" >/dev/null

# The statements of a turn, taken from src/store/pg.c itself (so this stays in step
# with chatd) and prepared the way chatd prepares them (PQprepare, no types).
pg_sql() { # statement name, as in pg_statements[] -> its SQL text
    /usr/bin/python3 "$REPO/scripts/pg_statement.py" "$1"
}
SQL_CTX=$(pg_sql session_ctx)
SQL_STORE=$(pg_sql turn_store)
STORE_TURN=$(python3 -c 'import uuid; print(uuid.uuid4())')

# PostgreSQL plans a prepared statement's first executions with the actual
# parameters ("custom" plans) and may then switch to one "generic" plan, so
# session_ctx is shown both ways. Each is run twice; the second (warm) run is
# the one reported. The inserts are rolled back.
explain() { # session next_seq
    psql_q <<SQL
prepare session_ctx as $SQL_CTX;
prepare turn_store as $SQL_STORE;
\\echo @@ ctx20
explain (analyze, buffers, costs off) execute session_ctx('$GROWTH_USER', '$1', 20, $(($2 - 1)));
\\echo @@ ctx20
explain (analyze, buffers, costs off) execute session_ctx('$GROWTH_USER', '$1', 20, $(($2 - 1)));
\\echo @@ ctx0
explain (analyze, buffers, costs off) execute session_ctx('$GROWTH_USER', '$1', 0, $(($2 - 1)));
begin;
insert into turn_leases values ('$1', '$GROWTH_USER', '$STORE_TURN', now() + interval '1 minute');
\\echo @@ store
explain (analyze, buffers, costs off) execute turn_store('$GROWTH_USER', '$1', '$STORE_TURN', 2, 'explain me', 'a reply', '', '', 'turn', 8, 'llama3.1:8b', '0.001', '0', null, null, false, false, 0, $(($2 - 1)), 0, false);
rollback;
begin;
insert into turn_leases values ('$1', '$GROWTH_USER', '$STORE_TURN', now() + interval '1 minute');
\\echo @@ store
explain (analyze, buffers, costs off) execute turn_store('$GROWTH_USER', '$1', '$STORE_TURN', 2, 'explain me', 'a reply', '', '', 'turn', 8, 'llama3.1:8b', '0.001', '0', null, null, false, false, 0, $(($2 - 1)), 0, false);
rollback;
set plan_cache_mode = force_generic_plan;
\\echo @@ ctx20g
explain (analyze, buffers, costs off) execute session_ctx('$GROWTH_USER', '$1', 20, $(($2 - 1)));
\\echo @@ ctx20g
explain (analyze, buffers, costs off) execute session_ctx('$GROWTH_USER', '$1', 20, $(($2 - 1)));
SQL
}
# From the last block of each kind: how chat_messages was read, the top
# node's buffers, the rows the messages scan returned, the execution time.
summarize_plan() { # file label
    awk -v want="$2" '
        /^@@ / { cur = $2; if (cur == want) { buf = ""; rows = ""; t = ""; how = "" } next }
        cur != want { next }
        /Buffers:/ && buf == "" { sub(/^[ ]*Buffers: /, ""); buf = $0 }
        /Recursive Union/ && how == "" { how = "path walk, key probes" }
        /Index Scan Backward using chat_messages/ && how == "" { how = "index backward" }
        /Bitmap Heap Scan on chat_messages/ && how == "" { how = "bitmap + sort" }
        /Seq Scan on chat_messages/ && how == "" { how = "seq scan + sort" }
        /Index (Only )?Scan.*chat_messages/ && rows == "" {
            if ($0 ~ /never executed/) rows = "0 (never run)"
            else { match($0, /rows=[0-9]+/); rows = substr($0, RSTART + 5, RLENGTH - 5) }
        }
        /Execution Time:/ { t = $3 }
        END { printf "%s|%s|%s|%s", how == "" ? "-" : how, buf == "" ? "-" : buf, rows == "" ? "-" : rows, t }' "$1"
}
explain "$S10" 10 >"$DATA/explain10.txt" 2>&1
explain "$S10K" 10000 >"$DATA/explain10k.txt" 2>&1
grep -q '^ERROR' "$DATA/explain10.txt" "$DATA/explain10k.txt" && say "EXPLAIN failed: see $DATA/explain10*.txt"
printf '%-36s %-5s %-15s %-32s %-13s %s\n' statement msgs "messages read" "buffers (whole statement)" rows_scanned exec_ms
for kind in ctx20 ctx20g ctx0 store; do
    case $kind in
    ctx20) what="session_ctx limit 20, custom plan" ;;
    ctx20g) what="session_ctx limit 20, generic plan" ;;
    ctx0) what="session_ctx limit 0 (turn check)" ;;
    store) what="turn_store (the whole store)" ;;
    esac
    for s in 10 10k; do
        IFS='|' read -r how buf rows ms <<<"$(summarize_plan "$DATA/explain$s.txt" "$kind")"
        printf '%-36s %-5s %-15s %-32s %-13s %s\n' "$what" "$s" "$how" "$buf" "$rows" "$ms"
    done
done
for kind in ctx20 ctx20g; do
    echo "plan of session_ctx limit 20 ($([[ $kind == ctx20 ]] && echo custom || echo generic)) on the 10,000-message session:"
    awk -v want="$kind" '/^@@ / { if ($2 == want) { n++; show = (n == 2) } else show = 0; next }
        show { print "    " $0 }' "$DATA/explain10k.txt"
done
chat_messages_stats=$(psql_q -tAc "select reltuples::bigint || ' messages in ' || (select count(*) from chat_sessions) || ' sessions' from pg_class where relname = 'chat_messages'")
echo "table at EXPLAIN time: $chat_messages_stats (after vacuum analyze)"

printf '%-34s %6s %7s %8s %8s %6s %6s %4s\n' "turns through chatd (1 connection)" turns per_s p50_us p99_us errors chatd% pg%
for s in 10 10k; do
    sid=$S10
    [[ $s == 10k ]] && sid=$S10K
    run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$GROWTH_USER" --code 3 --session "$sid" --conns 1 --requests 500 --warmup 0
    printf '%-34s %6s %7s %8s %8s %6s %6s %4s\n' "session starting at $s messages" "$(field "$OUT" requests)" \
        "$(field "$OUT" rps)" "$(field "$OUT" p50_us)" "$(field "$OUT" p99_us)" "$(field "$OUT" errors)" "$CHATD_CPU" "$PG_CPU"
done
# The turns above find the context in Redis after the first, so session_ctx
# (limit 20) runs on PostgreSQL only on a cache miss. Force one per turn:
# delete the session's context key, then run one turn, N times.
printf '%-34s %6s %8s %8s %8s\n' "cache-miss turns (key deleted)" turns p50_us p90_us max_us
for s in 10 10k; do
    sid=$S10
    [[ $s == 10k ]] && sid=$S10K
    : >"$DATA/miss.txt"
    for ((i = 0; i < 30; i++)); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" del "chatd:{s:$sid}:ctx" >/dev/null
        o=$(timeout -k 5 30 "$BUILD/wsbench" --url "$URL" --user "$GROWTH_USER" --code 3 --session "$sid" --conns 1 --once --timeout 10 2>>"$DATA/client.err") || true
        [[ $(field "$o" errors) == 0 ]] && field "$o" p50_us >>"$DATA/miss.txt"
    done
    sort -n "$DATA/miss.txt" | awk -v what="session starting at $s messages" '
        { v[NR] = $1 } END { if (NR == 0) { printf "%-34s %6s\n", what, 0; exit }
        printf "%-34s %6d %8d %8d %8d\n", what, NR, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR] }'
done
echo "messages after: $(psql_q -tAc "select string_agg(session_name || '=' || next_seq, ' ' order by next_seq) from chat_sessions where user_id = '$GROWTH_USER'")"

# ------------------------------------------------ h. history, search, export
echo
echo "## h. history pages (code 9), search (code 11) and export"
S100K=$(mk_session 100000)
psql_q -c "vacuum analyze chat_messages" >/dev/null
printf '%-52s %5s %8s %8s %8s %6s %6s %4s\n' "code 9, limit 50" conns per_s p50_us p99_us errors chatd% pg%
for c in 1 16; do
    for s in 10 100k; do
        sid=$S10
        [[ $s == 100k ]] && sid=$S100K
        run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$GROWTH_USER" --code 9 --session "$sid" \
            --extra '"limit":50' --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
        hist_row "newest page, session of $s messages"
    done
    run_cpu timeout -k 5 120 "$BUILD/wsbench" --url "$URL" --user "$GROWTH_USER" --code 9 --session "$S100K" \
        --extra '"limit":50,"before":50000' --conns "$c" --seconds "$SECS" --warmup "$WARM" --timeout 20
    hist_row "page before seq 50,000, session of 100k messages"
done

section_search

# Export of the 100,000-message session: time, size, and chatd's memory.
rss_idle=$(status_of "$CHATD_PID" VmRSS)
printf '%-30s %9s %12s %14s %16s %16s\n' "export of 100k messages" seconds MiB "MiB/s" "chatd RSS idle" "chatd RSS peak"
for fmt in json csv md; do
    echo 5 >"/proc/$CHATD_PID/clear_refs" 2>/dev/null || true
    rss_max=0
    curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' \
        "http://127.0.0.1:$CHATD_PORT/sessions/$S100K/export?format=$fmt&user_id=$GROWTH_USER" >"$DATA/export.out" &
    BG_PID=$!
    while kill -0 "$BG_PID" 2>/dev/null; do
        r=$(status_of "$CHATD_PID" VmRSS)
        ((r > rss_max)) && rss_max=$r
        sleep 0.05
    done
    wait "$BG_PID" || true
    BG_PID=
    chatd_alive
    hwm=$(status_of "$CHATD_PID" VmHWM)
    ((hwm > rss_max)) && rss_max=$hwm
    read -r code secs bytes <"$DATA/export.out"
    [[ $code == 200 ]] || say "export $fmt answered $code"
    printf '%-30s %9s %12s %14s %16s %16s\n' "format=$fmt" "$secs" \
        "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? b / 1048576 / s : 0) }')" \
        "$rss_idle KiB" "$rss_max KiB"
done

section_tree
section_import

# ------------------------------------------------ i. events across instances
echo
echo "## i. an event from one chatd to a subscribed connection on another"
CHATD2_PORT=$(free_port)
env "${CHATD_VARS[@]}" SERVER_PORT="$CHATD2_PORT" "$BUILD/chatd" >>"$DATA/chatd2.log" 2>&1 &
CHATD2_PID=$!
wait_port "$CHATD2_PORT" "$CHATD2_PID" chatd
LIVE_SID=$(psql_q -tAc "select session_id from chat_sessions where user_id = '$USER_ID' limit 1" | head -n 1)
out=$(timeout -k 5 120 /usr/bin/python3 "$REPO/bench/eventlat.py" "$URL" "ws://127.0.0.1:$CHATD2_PORT/ws" \
      "$USER_ID" "$LIVE_SID" 500 2>>"$DATA/client.err") || say "eventlat failed (see $DATA/client.err)"
echo "$out" >>"$DATA/raw.txt"
echo "code 10 on instance A, then its session_renamed event on instance B (500 in a row; a rename"
echo "commits in PostgreSQL, then goes through Redis pub/sub): $out"
# Fan-out (issue 15): 1,000 subscribed connections of 100 users, half on each
# instance; renames on A at a fixed rate; every subscriber of the user gets
# each event, on whichever instance it is.
psql_q -tAc "with u as (insert into user_data(username, models, balance)
                          select 'events ' || g, array[4,5,8], 100 from generate_series(1, 100) g
                          returning user_id)
             insert into chat_sessions(user_id, session_name, model_id)
             select user_id, 'events', 8 from u returning user_id || ' ' || session_id" |
    sed '/^$/d' >"$DATA/event_users.txt"
echo "fan-out: 1,000 subscribed connections of 100 users over both instances, code 10 renames on A"
printf '%-14s %8s %10s %9s %10s %10s %10s %10s %6s %6s %6s\n' renames/s renames expected events events/s lag_p50_us lag_p99_us lag_max_us errors chatd% redis%
for rate in 100 500; do
    run_cpu timeout -k 5 120 "$BUILD/eventbench" --url "$URL" --url2 "ws://127.0.0.1:$CHATD2_PORT/ws" \
        --users "$DATA/event_users.txt" --conns 1000 --rate "$rate" --seconds "$SECS"
    printf '%-14s %8s %10s %9s %10s %10s %10s %10s %6s %6s %6s\n' "$rate" "$(field "$OUT" renames)" \
        "$(field "$OUT" events_expected)" "$(field "$OUT" events)" "$(field "$OUT" events_per_s)" \
        "$(field "$OUT" lag_p50_us)" "$(field "$OUT" lag_p99_us)" "$(field "$OUT" lag_max_us)" \
        "$(field "$OUT" errors)" "$CHATD_CPU" "$REDIS_CPU"
done
echo "(chatd% is instance A's only; B delivers half of the events)"
stop_child chatd "$CHATD2_PID" 10
CHATD2_PID=

# ------------------------------------------------- k. start-up vs data size
echo
echo "## k. start-up: from exec to /readyz 200, empty database vs 100,000 sessions"
PGPASSWORD=chatd psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U chatd -d postgres -c "create database chatd_empty" >/dev/null
env "${CHATD_VARS[@]}" DB_NAME=chatd_empty "$BUILD/chatd" migrate >>"$DATA/chatd.log" 2>&1 || die "migrating chatd_empty failed"
have=$(psql_q -tAc "select count(*) from chat_sessions")
if ((have < 100000)); then
    psql_q -c "with u as (insert into user_data(username, models, balance) values ('Startup', array[8], 1) returning user_id)
               insert into chat_sessions(user_id, session_name, model_id)
               select user_id, 'startup ' || g, 8 from u, generate_series(1, 100000 - $have) g" >/dev/null
fi
psql_q -c "vacuum analyze chat_sessions" >/dev/null
startup_ms() { # database -> ms from exec to the first /readyz 200
    local port pid t0 t1 i
    port=$(free_port)
    t0=$(date +%s%N)
    env "${CHATD_VARS[@]}" SERVER_PORT="$port" DB_NAME="$1" "$BUILD/chatd" >>"$DATA/chatd-startup.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 3000; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" 2>/dev/null) == 200 ]] && break
        sleep 0.005
    done
    t1=$(date +%s%N)
    stop_child chatd "$pid" 10
    echo $(((t1 - t0) / 1000000))
}
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
e1=$(startup_ms chatd_empty) e2=$(startup_ms chatd_empty) e3=$(startup_ms chatd_empty)
f1=$(startup_ms chatd) f2=$(startup_ms chatd) f3=$(startup_ms chatd)
em=$(median3 "$e1" "$e2" "$e3") fm=$(median3 "$f1" "$f2" "$f3")
printf '%-40s %s\n' "empty database (ms, 3 runs)" "$e1 $e2 $e3 (median $em)"
printf '%-40s %s\n' "$(psql_q -tAc "select count(*) from chat_sessions") sessions, $(psql_q -tAc "select count(*) from chat_messages") messages (ms)" "$f1 $f2 $f3 (median $fm)"
printf '%-40s %s\n' "ratio" "$(awk -v a="$fm" -v b="$em" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"

# ---------------------------------------------------- d. 2,000 in flight
echo
echo "## d. $BURST turns in flight at once (chat-agent AGENT_DELAY_MS=2000, one NEW turn per connection)"
stop_child chat-agent "$AGENT_PID" 10
AGENT_PID=
start_agent 2000
# chatd's channel saw the agent go away and reconnects with back-off; one
# turn that succeeds shows it is back before the burst starts.
first_turn 10 || say "WARNING: chatd's turns still fail after the agent restart (see $DATA/chatd.log)"
echo "agent restart: first successful turn after $FAILED_TURNS failed attempt(s)"
warn0=$(log_count 'level=warn')
err0=$(log_count 'level=error')
echo 5 >"/proc/$CHATD_PID/clear_refs" 2>/dev/null || say "cannot reset VmHWM; the peak below covers chatd's whole life"
thr0=$(status_of "$CHATD_PID" Threads)
t0=$(date +%s.%N)
timeout -k 5 200 "$BUILD/wsbench" --url "$URL" --user "$USER_ID" --code 3 --session NEW --conns "$BURST" --once --timeout 120 --ramp 256 >"$DATA/burst.out" 2>>"$DATA/client.err" &
BG_PID=$!
thr_max=0 rss_max=0
while kill -0 "$BG_PID" 2>/dev/null; do
    chatd_alive
    t=$(status_of "$CHATD_PID" Threads)
    r=$(status_of "$CHATD_PID" VmRSS)
    ((t > thr_max)) && thr_max=$t
    ((r > rss_max)) && rss_max=$r
    sleep 0.2
done
wait "$BG_PID" || true
BG_PID=
t1=$(date +%s.%N)
chatd_alive
out=$(cat "$DATA/burst.out")
echo "$out" >>"$DATA/raw.txt"
hwm=$(status_of "$CHATD_PID" VmHWM)
printf '%-40s %s\n' "connections / turns sent" "$(field "$out" connected) / $BURST"
printf '%-40s %s\n' "answered" "$(field "$out" requests)"
printf '%-40s %s\n' "errors among answers" "$(field "$out" errors)"
printf '%-40s %s\n' "unanswered at the end" "$(field "$out" unanswered)"
printf '%-40s %s\n' "connect failures / closed by chatd" "$(field "$out" connect_failed) / $(field "$out" closed_by_server)"
printf '%-40s %s\n' "turn latency p50 / p99 / max (us)" "$(field "$out" p50_us) / $(field "$out" p99_us) / $(field "$out" max_us)"
printf '%-40s %s\n' "wall time incl. connects (s)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
printf '%-40s %s\n' "chatd threads before / max during" "$thr0 / $thr_max"
printf '%-40s %s\n' "chatd VmRSS max sampled (KiB)" "$rss_max"
printf '%-40s %s\n' "chatd VmHWM during the burst (KiB)" "$hwm"
printf '%-40s %s\n' "chatd log warn/error lines added" "$(($(log_count 'level=warn') - warn0)) / $(($(log_count 'level=error') - err0))"

section_streams
report_tail
