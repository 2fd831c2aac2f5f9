#!/usr/bin/env bash
# services.sh - a private PostgreSQL and Redis for chatd, with all their state
# under one directory, so `make run` and `make test` never touch (or need) a
# system-wide database.
#
#   services.sh start  DIR PG_PORT REDIS_PORT   start both (or reuse running ones)
#   services.sh stop   DIR                      stop both; fine when nothing runs
#   services.sh status DIR                      exit 0 if both run on DIR
#   services.sh restart-pg DIR PG_PORT          restart PostgreSQL only, with the
#                                               current CHATD_PG_FAST (the benchmark
#                                               runs with fsync on and off)
#
# Layout: DIR/pg (cluster), DIR/pgsock (its Unix socket), DIR/pg.log,
# DIR/redis (Redis working dir), DIR/redis.log, DIR/redis.pid.
# Both listen on 127.0.0.1 only.
#
# Environment: DB_USER, DB_PASSWORD, DB_NAME (default chatd each): the
# superuser created by initdb and the database created for chatd.
# REDIS_PASSWORD: when non-empty, Redis requires it. CHATD_PG_FAST=1: turn off
# fsync and friends (for throw-away test clusters; never for data you keep).
set -euo pipefail

DB_USER=${DB_USER:-chatd}
DB_PASSWORD=${DB_PASSWORD:-chatd}
DB_NAME=${DB_NAME:-chatd}
REDIS_PASSWORD=${REDIS_PASSWORD:-}

die() { echo "services: $*" >&2; exit 1; }
say() { echo "services: $*" >&2; }

usage() {
    echo "usage: $0 start DIR PG_PORT REDIS_PORT | stop DIR | status DIR | restart-pg DIR PG_PORT" >&2
    exit 2
}

# Newest installed PostgreSQL server: Debian puts each major version in
# /usr/lib/postgresql/N/bin, and only psql/pg_ctlcluster wrappers on PATH.
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$dir" && -x "$dir/pg_ctl" ]] ||
        die "no PostgreSQL server found under /usr/lib/postgresql (run scripts/install-deps.sh)"
    echo "$dir"
}

# PostgreSQL refuses to run as root, so as root every server-side command runs
# as the unprivileged 'postgres' user that Debian's postgresql package creates.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_running() {
    [[ -f "$DIR/pg/PG_VERSION" ]] && as_pg "$PGBIN/pg_ctl" status -D "$DIR/pg" >/dev/null 2>&1
}

# Line 4 of postmaster.pid is the port the running server listens on.
pg_running_port() {
    sed -n 4p "$DIR/pg/postmaster.pid" 2>/dev/null || true
}

redis_cli() {
    # REDISCLI_AUTH instead of -a keeps the password off the command line
    # (and out of `ps`), and silences redis-cli's warning about -a.
    REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 "$@"
}

# The pid in DIR/redis.pid, if that process is alive and is a redis-server
# (a stale pid file may name an unrelated process by now).
redis_pid() {
    local pid
    pid=$(cat "$DIR/redis.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]] || return 1
    echo "$pid"
}

start_pg() {
    local port=$1
    mkdir -p "$DIR/pg" "$DIR/pgsock"
    touch "$DIR/pg.log"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 ||
            die "user 'postgres' not found (it comes with Debian's postgresql package)"
        # Every directory above DIR must be searchable by 'postgres', e.g. not
        # a checkout under /root (mode 700). Checking here gives a clear
        # message instead of initdb's "could not change directory".
        if ! runuser -u postgres -- test -x "$DIR" -a -r "$DIR"; then
            die "the 'postgres' user cannot reach $DIR (a parent directory is not" \
                "world-searchable?). Set CHATD_DATA_DIR to a directory it can reach," \
                "e.g. CHATD_DATA_DIR=/var/tmp/chatd-data"
        fi
        chown postgres: "$DIR/pg" "$DIR/pgsock" "$DIR/pg.log"
    fi
    # initdb insists on a private data directory.
    chmod 700 "$DIR/pg"

    if pg_running; then
        local running_port
        running_port=$(pg_running_port)
        [[ "$running_port" == "$port" ]] ||
            die "PostgreSQL on $DIR/pg already runs on port $running_port, not $port;" \
                "run '$0 stop $DIR' first"
        say "PostgreSQL already running on 127.0.0.1:$port (reused)"
    else
        if [[ ! -f "$DIR/pg/PG_VERSION" ]]; then
            local locale=C
            # C.UTF-8 sorts like C but knows UTF-8 characters; glibc spells it
            # C.utf8 in `locale -a`.
            if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
                locale=C.UTF-8
            fi
            # --pwfile keeps the password off the command line; the file must
            # be readable by the user initdb runs as.
            local pwfile="$DIR/.pgpass.tmp"
            (umask 077 && printf '%s\n' "$DB_PASSWORD" >"$pwfile")
            [[ $(id -u) -ne 0 ]] || chown postgres: "$pwfile"
            say "initdb $DIR/pg (superuser $DB_USER, locale $locale)"
            if ! as_pg "$PGBIN/initdb" -D "$DIR/pg" -U "$DB_USER" --pwfile="$pwfile" \
                --auth-local=trust --auth-host=scram-sha-256 \
                -E UTF8 --locale="$locale" >"$DIR/initdb.log" 2>&1; then
                rm -f "$pwfile"
                cat "$DIR/initdb.log" >&2
                die "initdb failed (log above, also in $DIR/initdb.log)"
            fi
            rm -f "$pwfile"
        fi

        local opts="-c listen_addresses=127.0.0.1 -p $port"
        # A socket path longer than sun_path (107 bytes) makes the server
        # refuse to start; a deep DIR then gets TCP only, which is all chatd,
        # psql here and pg_ctl -w need.
        local sock="$DIR/pgsock/.s.PGSQL.$port"
        if [[ ${#sock} -le 100 ]]; then
            opts+=" -c unix_socket_directories=$DIR/pgsock"
        else
            opts+=" -c unix_socket_directories=''"
        fi
        if [[ "${CHATD_PG_FAST:-0}" == 1 ]]; then
            # Tests throw the cluster away; durability only costs them time.
            opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        else
            opts+=" -c fsync=on"
        fi
        say "starting PostgreSQL on 127.0.0.1:$port (log $DIR/pg.log)"
        # pg_ctl detaches the server into its own session, so a Ctrl-C in
        # the terminal that started it does not reach it.
        if ! as_pg "$PGBIN/pg_ctl" start -w -t 60 -D "$DIR/pg" -l "$DIR/pg.log" \
            -o "$opts" >/dev/null; then
            tail -n 20 "$DIR/pg.log" >&2 || true
            die "PostgreSQL did not start (log above, also in $DIR/pg.log;" \
                "is port $port already in use?)"
        fi
    fi

    # Create the application database over TCP, the way chatd will connect,
    # which also proves the password works.
    local exists
    exists=$(PGPASSWORD="$DB_PASSWORD" psql -X -q -h 127.0.0.1 -p "$port" -U "$DB_USER" \
        -d postgres -v ON_ERROR_STOP=1 -tAc \
        "select 1 from pg_database where datname = '${DB_NAME//\'/\'\'}'") ||
        die "cannot connect to PostgreSQL on 127.0.0.1:$port as $DB_USER" \
            "(was $DIR/pg created with another DB_USER/DB_PASSWORD?)"
    if [[ "$exists" != 1 ]]; then
        say "creating database $DB_NAME"
        PGPASSWORD="$DB_PASSWORD" psql -X -q -h 127.0.0.1 -p "$port" -U "$DB_USER" \
            -d postgres -v ON_ERROR_STOP=1 \
            -c "create database \"${DB_NAME//\"/\"\"}\"" >/dev/null
    fi
}

start_redis() {
    local port=$1
    mkdir -p "$DIR/redis"
    if redis_pid >/dev/null; then
        redis_cli -p "$port" ping 2>/dev/null | grep -q PONG ||
            die "a redis-server from $DIR/redis.pid runs but does not answer on port $port;" \
                "run '$0 stop $DIR' first"
        say "Redis already running on 127.0.0.1:$port (reused)"
        return
    fi
    # redis-server daemonizes before it binds, so a port held by someone
    # else would only show in its log; and that other server would answer
    # our ping below. Check first.
    if redis_cli -p "$port" ping >/dev/null 2>&1; then
        die "something already answers on 127.0.0.1:$port; choose another Redis port"
    fi
    local args=(--bind 127.0.0.1 --port "$port" --dir "$DIR/redis"
        --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
        --save '' --appendonly no)
    # Redis is only a cache for chatd: no snapshots, no AOF.
    if [[ -n "$REDIS_PASSWORD" ]]; then
        args+=(--requirepass "$REDIS_PASSWORD")
    fi
    say "starting Redis on 127.0.0.1:$port (log $DIR/redis.log)"
    redis-server "${args[@]}" >/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
        if redis_pid >/dev/null && redis_cli -p "$port" ping 2>/dev/null | grep -q PONG; then
            return
        fi
        sleep 0.1
    done
    tail -n 20 "$DIR/redis.log" >&2 || true
    die "Redis did not answer PING on 127.0.0.1:$port within 10 s (log above)"
}

stop_pg() {
    [[ -d "$DIR/pg" ]] || return 0
    if pg_running; then
        say "stopping PostgreSQL ($DIR/pg)"
        as_pg "$PGBIN/pg_ctl" stop -w -t 60 -m fast -D "$DIR/pg" >/dev/null
    fi
}

stop_redis() {
    local pid i
    pid=$(redis_pid) || { rm -f "$DIR/redis.pid"; return 0; }
    say "stopping Redis (pid $pid)"
    # SIGTERM is Redis's own clean shutdown; with --save '' it writes nothing.
    # A signal needs neither the port nor the password.
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/redis.pid"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/redis.pid"
}

[[ $# -ge 2 ]] || usage
cmd=$1
# Absolute: the server's socket directory and pg_ctl -D must not depend on
# the current directory.
DIR=$(realpath -m -- "$2")
# DIR ends up inside pg_ctl's -o string, which a shell splits.
[[ "$DIR" != *[[:space:]\'\"\\]* ]] || die "DIR must not contain spaces or quotes: $DIR"
PGBIN=$(pg_bindir)

case "$cmd" in
start)
    [[ $# -eq 4 ]] || usage
    pg_port=$3
    redis_port=$4
    [[ "$pg_port" =~ ^[0-9]+$ && "$redis_port" =~ ^[0-9]+$ ]] || usage
    command -v redis-server >/dev/null ||
        die "redis-server not found (run scripts/install-deps.sh)"
    mkdir -p "$DIR"
    start_pg "$pg_port"
    start_redis "$redis_port"
    ;;
restart-pg)
    [[ $# -eq 3 && "$3" =~ ^[0-9]+$ ]] || usage
    stop_pg
    start_pg "$3"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    # Stop both even if the first fails, then report.
    rc=0
    stop_pg || rc=1
    stop_redis || rc=1
    exit $rc
    ;;
status)
    [[ $# -eq 2 ]] || usage
    pg_running && redis_pid >/dev/null
    ;;
*)
    usage
    ;;
esac
