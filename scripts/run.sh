#!/usr/bin/env bash
# run.sh - `make run`: from a fresh clone to a running chatd in one command.
# Installs missing packages, builds, starts a private PostgreSQL and Redis
# (data under .data/, or CHATD_DATA_DIR), applies migrations, seeds the demo
# user, starts the reference chat-agent and runs chatd in the foreground.
# Ctrl-C stops everything this script started; the data stays for next time.
#
#   scripts/run.sh          run as above
#   scripts/run.sh stop     stop the PostgreSQL and Redis of `make run`
#                           (after a run that was killed without cleanup)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { echo "run: $*" >&2; }

# Reads KEY=VALUE lines the way chatd's own .env loader does (src/lib/config.c):
# blank lines and # comments skipped, optional "export ", one pair of matching
# quotes stripped, and a variable already in the environment wins. Sourcing
# the file instead would let it override the environment and would read
# shell syntax that chatd itself does not.
load_env_file() {
    local file=$1 line key val
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        [[ -z "$line" || "$line" == \#* ]] && continue
        [[ "$line" == export\ * ]] && line="${line#export }"
        [[ "$line" == *=* ]] || { say "$file: ignoring line without '=': $line"; continue; }
        key="${line%%=*}"
        val="${line#*=}"
        key="${key%"${key##*[![:space:]]}"}"
        val="${val#"${val%%[![:space:]]*}"}"
        if [[ ${#val} -ge 2 && ( "$val" == \"*\" || "$val" == \'*\' ) ]]; then
            val="${val:1:${#val}-2}"
        fi
        [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { say "$file: bad variable name '$key'"; continue; }
        if [[ -z "${!key+set}" ]]; then
            export "$key=$val"
        fi
    done <"$file"
}

# .env holds the developer's settings; without one, .env.sample's values are
# the defaults (they match chatd's built-in defaults).
if [[ -f .env ]]; then
    load_env_file .env
elif [[ -f .env.sample ]]; then
    load_env_file .env.sample
fi
: "${DB_HOST:=127.0.0.1}" "${DB_PORT:=5433}" "${DB_USER:=chatd}" "${DB_PASSWORD:=chatd}"
: "${DB_NAME:=chatd}" "${REDIS_PORT:=6380}" "${AI_SERVER_HOST:=127.0.0.1}"
: "${AI_SERVER_PORT:=50051}" "${SHUTDOWN_GRACE_SECONDS:=30}"
# The page at / signs in as the demo user unless told otherwise, and the
# echo agent takes a moment per reply, so that streaming can be seen.
: "${WEB_DEFAULT_USER:=bdff475a-a7f7-4590-9595-15fd8e6c7d0c}" "${AGENT_DELAY_MS:=1200}"
export DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME REDIS_PORT AI_SERVER_HOST AI_SERVER_PORT
export WEB_DEFAULT_USER AGENT_DELAY_MS

DATA=${CHATD_DATA_DIR:-$REPO/.data}

if [[ "${1:-}" == stop ]]; then
    exec "$REPO/scripts/services.sh" stop "$DATA"
elif [[ $# -ne 0 ]]; then
    echo "usage: $0 [stop]" >&2
    exit 2
fi

"$REPO/scripts/install-deps.sh"

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"${JOBS:-2}"

CHATD_PID=
AGENT_PID=
OWN_SERVICES=0

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    # chatd first (it may still be finishing turns with the agent and
    # writing them to the database), then the agent, then the stores.
    stop_child chatd "$CHATD_PID" $((SHUTDOWN_GRACE_SECONDS + 5))
    stop_child chat-agent "$AGENT_PID" 10
    if [[ $OWN_SERVICES == 1 ]]; then
        "$REPO/scripts/services.sh" stop "$DATA" || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Services somebody else already had running (another `make run`, or ones
# left on deliberately) are reused and left running at exit.
if ! "$REPO/scripts/services.sh" status "$DATA" 2>/dev/null; then
    OWN_SERVICES=1
fi
"$REPO/scripts/services.sh" start "$DATA" "$DB_PORT" "$REDIS_PORT"

say "applying migrations"
build/chatd migrate

# The user the existing client is configured with, so a fresh clone can chat
# at once. "on conflict do nothing" keeps its balance across runs.
PGPASSWORD="$DB_PASSWORD" psql -X -q -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME" \
    -v ON_ERROR_STOP=1 -c "insert into user_data(user_id, username, models, balance)
        values ('bdff475a-a7f7-4590-9595-15fd8e6c7d0c', 'Demo User', array[4,5,8], 10)
        on conflict (user_id) do nothing;"

# Children run in their own session (setsid): a Ctrl-C in the terminal then
# reaches only this script, which stops them once, in order, with SIGTERM.
# (A background job of a script also starts with SIGINT ignored, so SIGINT
# could not be relied on to reach them anyway.)
if [[ -x build/chat-agent ]]; then
    say "starting chat-agent on $AI_SERVER_HOST:$AI_SERVER_PORT"
    AGENT_HOST=$AI_SERVER_HOST AGENT_PORT=$AI_SERVER_PORT setsid build/chat-agent &
    AGENT_PID=$!
    # chatd copes with an agent that is not up yet, but a port clash or a
    # crash at start-up is clearer reported here.
    for ((i = 0; i < 50; i++)); do
        kill -0 "$AGENT_PID" 2>/dev/null || { say "chat-agent exited at start-up"; exit 1; }
        (exec 3<>"/dev/tcp/$AI_SERVER_HOST/$AI_SERVER_PORT") 2>/dev/null && break
        sleep 0.1
    done
else
    say "no build/chat-agent; chatd will report the agent as unreachable"
fi

say "starting chatd (Ctrl-C stops it and everything above)"
say "open http://localhost:${SERVER_PORT:-8000}/ in a browser"
setsid build/chatd &
CHATD_PID=$!
rc=0
wait "$CHATD_PID" || rc=$?
CHATD_PID=
exit "$rc"
