# lib.sh - shell helpers shared by run.sh, bench.sh and ha.sh (sourced; each caller
# defines its own say()).

# stop_child NAME PID GRACE: SIGTERM, wait up to GRACE seconds, then SIGKILL;
# reaps the child either way. A PID that is empty or gone is a no-op.
stop_child() {
    local name=$1 pid=$2 grace=$3 i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
