#!/usr/bin/env bash
# ha.sh - the HA topology of docs/OPERATIONS.md on one machine, all on
# loopback and all state under one directory, for tests and for trying
# failover by hand:
#
#   etcd (one member)  <-  Patroni pg1, Patroni pg2 (PostgreSQL 15, one
#                          primary + one synchronous standby)
#   Redis master + one replica, watched by three Sentinels (quorum 2)
#
#   ha.sh start DIR BASE    start everything (ports BASE..BASE+12, below)
#   ha.sh stop DIR          stop everything started on DIR
#   ha.sh env DIR BASE      print DATABASE_URL, DATABASE_READ_URL,
#                           REDIS_SENTINELS, REDIS_MASTER_NAME for chatd
#
# Ports (BASE, e.g. 21000): etcd client BASE, peer BASE+1; PostgreSQL
# BASE+2 (pg1), BASE+3 (pg2); Patroni REST BASE+4, BASE+5; Redis BASE+6
# (first master), BASE+7 (first replica); Sentinels BASE+8..BASE+10.
# Keep BASE below 32768: Linux hands ports of 32768-60999 to outgoing
# connections, and one of those may hold a port before a server binds it.
#
# Environment: DB_USER, DB_PASSWORD, DB_NAME as in services.sh.
set -euo pipefail

DB_USER=${DB_USER:-chatd}
DB_PASSWORD=${DB_PASSWORD:-chatd}
DB_NAME=${DB_NAME:-chatd}
SCOPE=chatd

die() { echo "ha: $*" >&2; exit 1; }
say() { echo "ha: $*" >&2; }
usage() { echo "usage: $0 start DIR BASE | stop DIR | env DIR BASE" >&2; exit 2; }

as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$dir" && -x "$dir/pg_ctl" ]] || die "no PostgreSQL server found (run scripts/install-deps.sh)"
    echo "$dir"
}

# Waits up to $1 tenths of a second for the command after it to succeed.
wait_for() {
    local n=$1 i
    shift
    for ((i = 0; i < n; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# Starts "$@" in a session of its own, detached, its pid in $DIR/$name.pid.
spawn() {
    local name=$1
    shift
    setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/$name.pid"
}

start_etcd() {
    mkdir -p "$DIR/etcd"
    chmod 700 "$DIR/etcd"
    say "starting etcd on 127.0.0.1:$BASE"
    spawn etcd etcd --name e1 --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$BASE" \
        --advertise-client-urls "http://127.0.0.1:$BASE" \
        --listen-peer-urls "http://127.0.0.1:$((BASE + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 1))" \
        --initial-cluster "e1=http://127.0.0.1:$((BASE + 1))" \
        --initial-cluster-state new
    wait_for 200 curl -sf "http://127.0.0.1:$BASE/health" || die "etcd did not start (log $DIR/etcd.log)"
}

# The Patroni configuration of node $1 (1 or 2). Timings are short so that
# a failover takes seconds: Patroni checks every loop_wait, a leader key
# lives ttl seconds, primary_start_timeout 0 fails over at once instead of
# restarting a crashed primary in place, and synchronous_mode keeps one
# standby that has every acknowledged commit.
patroni_config() {
    local n=$1 pgport=$((BASE + 1 + $1)) rest=$((BASE + 3 + $1))
    cat <<YAML
scope: $SCOPE
name: pg$n
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
etcd3:
  hosts: 127.0.0.1:$BASE
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    primary_start_timeout: 0
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 200
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
  pg_hba:
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
  post_bootstrap: $DIR/post_bootstrap.sh
postgresql:
  listen: 127.0.0.1:$pgport
  connect_address: 127.0.0.1:$pgport
  data_dir: $DIR/pg$n
  bin_dir: $PGBIN
  pgpass: $DIR/pgpass$n
  use_unix_socket: false
  authentication:
    superuser:
      username: $DB_USER
      password: $DB_PASSWORD
    replication:
      username: replicator
      password: replicator
    rewind:
      username: $DB_USER
      password: $DB_PASSWORD
  basebackup:
    - checkpoint: fast
  parameters:
    unix_socket_directories: ''
YAML
}

start_patroni() {
    local n=$1
    patroni_config "$n" >"$DIR/pg$n.yml"
    touch "$DIR/patroni$n.log"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$DIR/pg$n.yml" "$DIR/patroni$n.log"
    say "starting Patroni pg$n (PostgreSQL on 127.0.0.1:$((BASE + 1 + n)))"
    # Patroni's helpers change back to the directory it started in, which
    # must be one the postgres user can read.
    (cd "$DIR" && spawn "patroni$n" runuser -u postgres -- patroni "$DIR/pg$n.yml")
}

# The node's REST API answers 200 on /primary or /replica once it is one.
patroni_is() { curl -sf "http://127.0.0.1:$((BASE + 3 + $1))/$2" >/dev/null; }

start_pg() {
    PGBIN=$(pg_bindir)
    # The first primary creates chatd's database (bootstrap.users would
    # create roles only).
    cat >"$DIR/post_bootstrap.sh" <<SH
#!/bin/sh
exec psql -X -q -v ON_ERROR_STOP=1 "\$1" -c 'create database "$DB_NAME"'
SH
    chmod 755 "$DIR/post_bootstrap.sh"
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- test -x "$DIR" -a -r "$DIR" ||
            die "the 'postgres' user cannot reach $DIR"
        chown postgres: "$DIR"
    fi
    start_patroni 1
    wait_for 1200 patroni_is 1 primary || die "pg1 did not become primary (log $DIR/patroni1.log)"
    start_patroni 2
    wait_for 1200 patroni_is 2 replica || die "pg2 did not become a replica (log $DIR/patroni2.log)"
    # Wait until pg2 is the synchronous standby: before that, a commit is
    # acknowledged by pg1 alone.
    wait_for 600 sync_ready || die "no synchronous standby (logs $DIR/patroni*.log)"
}

sync_ready() {
    curl -sf "http://127.0.0.1:$((BASE + 4))/cluster" | grep -q '"sync_standby"' ||
        curl -sf "http://127.0.0.1:$((BASE + 5))/cluster" | grep -q '"sync_standby"'
}

start_redis() {
    local m=$((BASE + 6)) r=$((BASE + 7)) s
    mkdir -p "$DIR/redis1" "$DIR/redis2"
    say "starting Redis master 127.0.0.1:$m, replica 127.0.0.1:$r"
    redis-server --bind 127.0.0.1 --port "$m" --dir "$DIR/redis1" --daemonize yes \
        --pidfile "$DIR/redis1.pid" --logfile "$DIR/redis1.log" --save '' --appendonly no >/dev/null
    redis-server --bind 127.0.0.1 --port "$r" --dir "$DIR/redis2" --daemonize yes \
        --pidfile "$DIR/redis2.pid" --logfile "$DIR/redis2.log" --save '' --appendonly no \
        --replicaof 127.0.0.1 "$m" >/dev/null
    wait_for 100 sh -c "redis-cli -p $r info replication | grep -q master_link_status:up" ||
        die "the Redis replica did not connect (log $DIR/redis2.log)"
    for s in 1 2 3; do
        local port=$((BASE + 7 + s))
        # A Sentinel rewrites its own configuration file.
        cat >"$DIR/sentinel$s.conf" <<CONF
bind 127.0.0.1
port $port
daemonize yes
pidfile $DIR/sentinel$s.pid
logfile $DIR/sentinel$s.log
dir $DIR
sentinel monitor $SCOPE 127.0.0.1 $m 2
sentinel down-after-milliseconds $SCOPE 1000
sentinel failover-timeout $SCOPE 5000
sentinel parallel-syncs $SCOPE 1
CONF
        redis-sentinel "$DIR/sentinel$s.conf" >/dev/null
    done
    for s in 1 2 3; do
        # Each Sentinel has found the replica and the other two.
        wait_for 300 sh -c "redis-cli -p $((BASE + 7 + s)) sentinel master $SCOPE | grep -A1 -x num-other-sentinels | tail -1 | grep -qx 2" ||
            die "Sentinel $s did not find the others (log $DIR/sentinel$s.log)"
    done
}

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Stops the process a pid file names (SIGTERM, then SIGKILL after 30 s).
stop_pidfile() {
    local f=$1 pid
    pid=$(cat "$f" 2>/dev/null || true)
    [[ ! "$pid" =~ ^[0-9]+$ ]] || stop_child "$(basename "$f" .pid)" "$pid" 30
    rm -f "$f"
}

stop_all() {
    local f
    for f in "$DIR"/sentinel*.pid "$DIR"/redis*.pid; do
        [[ -e "$f" ]] && stop_pidfile "$f"
    done
    # Patroni stops its PostgreSQL on SIGTERM; a PostgreSQL it left behind
    # (Patroni killed by a test) is stopped by its pid file.
    for f in "$DIR"/patroni*.pid; do
        [[ -e "$f" ]] && stop_pidfile "$f"
    done
    for f in "$DIR"/pg[0-9]; do
        [[ -f "$f/postmaster.pid" ]] || continue
        as_pg "$(pg_bindir)/pg_ctl" stop -D "$f" -m immediate >/dev/null 2>&1 || true
    done
    [[ ! -e "$DIR/etcd.pid" ]] || stop_pidfile "$DIR/etcd.pid"
}

print_env() {
    local h="127.0.0.1"
    echo "DATABASE_URL=postgresql://$DB_USER:$DB_PASSWORD@$h:$((BASE + 2)),$h:$((BASE + 3))/$DB_NAME?target_session_attrs=read-write"
    echo "DATABASE_READ_URL=postgresql://$DB_USER:$DB_PASSWORD@$h:$((BASE + 2)),$h:$((BASE + 3))/$DB_NAME?target_session_attrs=standby"
    echo "REDIS_SENTINELS=$h:$((BASE + 8)),$h:$((BASE + 9)),$h:$((BASE + 10))"
    echo "REDIS_MASTER_NAME=$SCOPE"
}

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$(realpath -m -- "$2")
[[ "$DIR" != *[[:space:]\'\"\\]* ]] || die "DIR must not contain spaces or quotes: $DIR"
case "$cmd" in
start)
    [[ $# -eq 3 && "$3" =~ ^[0-9]+$ ]] || usage
    BASE=$3
    ((BASE + 10 < 32768)) || die "BASE must be below 32758 (see the top of $0)"
    for c in etcd patroni redis-sentinel curl; do
        command -v "$c" >/dev/null || die "$c not found (run scripts/install-deps.sh)"
    done
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    start_etcd
    start_pg
    start_redis
    say "up: $(print_env | tr '\n' ' ')"
    ;;
stop)
    stop_all
    ;;
env)
    [[ $# -eq 3 && "$3" =~ ^[0-9]+$ ]] || usage
    BASE=$3
    print_env
    ;;
*) usage ;;
esac
