#!/usr/bin/env bash
# test.sh - `make test` (and CI through .ci/run): installs missing packages,
# builds a release tree (build/) and a sanitizer tree (build-asan/), starts a
# throw-away PostgreSQL and Redis, and runs CTest on both trees:
#   build/       every test (unit and integration)
#   build-fuzz/  libFuzzer targets, FUZZ_SECONDS each (clang)
#   build-asan/  the tests labelled $ASAN_LABELS (default "unit|integration"; a CTest -L
#                regex such as "unit|integration"; empty runs every test)
# Exits non-zero if either run has a failure.
#
# Knobs: TEST_PG_PORT (55433), TEST_REDIS_PORT (56380), JOBS (2),
# KEEP_TEST_DATA=1 (keep the temp dir with the pg/redis logs for a post-mortem).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { echo "test: $*" >&2; }

ASAN_LABELS=${ASAN_LABELS-unit|integration}
JOBS=${JOBS:-2}

"$REPO/scripts/install-deps.sh"

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$JOBS"
# "asan" is a build type defined in CMakeLists.txt (ASan + UBSan, all fatal).
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=asan
cmake --build build-asan -j"$JOBS"
# libFuzzer targets need clang; FUZZ_SECONDS bounds each run (0 skips them).
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
if [[ "$FUZZ_SECONDS" != 0 ]]; then
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCHATD_FUZZ=ON -DFUZZ_SECONDS="$FUZZ_SECONDS"
    cmake --build build-fuzz -j"$JOBS" --target fuzz_proto fuzz_multipart fuzz_import
fi

# A fresh temp dir and non-default ports keep tests away from the data and
# services of `make run` (.data/, 5433, 6380), which may be running meanwhile.
# /tmp rather than the checkout: as root, PostgreSQL runs as 'postgres', which
# may not be able to enter the checkout (e.g. under /root); mktemp makes the
# dir 700, so open it up for the same reason.
DATA=$(mktemp -d /tmp/chatd-test.XXXXXX)
chmod 755 "$DATA"

# Ends the processes still in the process group of the last ctest run.
kill_ctest_group() {
    local pgid
    pgid=$(cat "$DATA/ctest.pgid" 2>/dev/null || true)
    rm -f "$DATA/ctest.pgid"
    [[ "$pgid" =~ ^[0-9]+$ ]] || return 0
    if kill -0 -- "-$pgid" 2>/dev/null; then
        say "ending processes the tests left running (process group $pgid)"
        kill -TERM -- "-$pgid" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    kill_ctest_group
    "$REPO/scripts/services.sh" stop "$DATA" || true
    if [[ "${KEEP_TEST_DATA:-0}" == 1 ]]; then
        say "kept $DATA"
    else
        rm -rf "$DATA"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The tests get their database and cache only through these variables;
# nothing comes from a developer's .env (CHATD_ENV_FILE=/dev/null stops a
# chatd started by a test from reading ./.env). Integration tests may create
# more databases with this superuser.
export DB_HOST=127.0.0.1
export DB_PORT=${TEST_PG_PORT:-55433}
export DB_USER=chatd DB_PASSWORD=chatd DB_NAME=chatd
export REDIS_HOST=127.0.0.1
export REDIS_PORT=${TEST_REDIS_PORT:-56380}
export REDIS_PASSWORD='' REDIS_DB=0
export CHATD_ENV_FILE=/dev/null

CHATD_PG_FAST=1 "$REPO/scripts/services.sh" start "$DATA" "$DB_PORT" "$REDIS_PORT"

# Runs ctest with the given arguments, its output also kept in a log so the
# summaries can be repeated together at the end.
failed=0
passed_total=0
failed_total=0
summaries=()
run_ctest() {
    local name=$1 log="$DATA/ctest-$1.log" rc
    shift
    say "ctest $name: $*"
    rc=0
    # ctest runs in a session of its own, so that whatever a test started and
    # left behind (say a chat-agent of a test CTest killed on timeout) can be
    # ended afterwards by that session's process group, and nothing else.
    # Being in another session, it no longer gets the terminal's Ctrl-C, so it
    # runs in the background and we `wait`: unlike a foreground command,
    # `wait` lets the INT/TERM traps run at once, and cleanup ends the group.
    (
        setsid -w bash -c 'echo $$ >"$0"; exec ctest "$@"' "$DATA/ctest.pgid" "$@" 2>&1 |
            tee "$log"
        exit "${PIPESTATUS[0]}"
    ) &
    wait $! || rc=$?
    kill_ctest_group
    [[ $rc -eq 0 ]] || failed=1
    # CTest's closing line: "N% tests passed, F tests failed out of T".
    local line f t
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
    if [[ -n "$line" ]]; then
        f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
        t=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
        passed_total=$((passed_total + t - f))
        failed_total=$((failed_total + f))
        summaries+=("$name: $line (exit $rc)")
        # ...and which ones, so the end of the output says it all.
        while IFS= read -r f; do
            summaries+=("    ${f#"${f%%[![:space:]]*}"}")
        done < <(sed -n '/^The following tests FAILED:/,/^Errors while running CTest/p' "$log" |
            grep -E '^[[:space:]]+[0-9]+ - ' || true)
    elif grep -q 'No tests were found' "$log"; then
        summaries+=("$name: no tests found (exit $rc)")
    else
        summaries+=("$name: no CTest summary (exit $rc)")
        [[ $rc -ne 0 ]] || { failed=1; failed_total=$((failed_total + 1)); }
    fi
}

run_ctest build --test-dir build --output-on-failure -j"$JOBS"

asan_args=(--test-dir build-asan --output-on-failure -j1)
[[ -z "$ASAN_LABELS" ]] || asan_args+=(-L "$ASAN_LABELS")
# Sanitizer reports are fatal and leaks count: a test must not pass with one.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    run_ctest build-asan "${asan_args[@]}"

# The fuzz targets run on their own (no services), bounded by FUZZ_SECONDS.
# A crash leaves its input in build-fuzz/ as crash-*: add it to
# fuzz/corpus/ and a unit test, then fix it.
[[ "$FUZZ_SECONDS" == 0 ]] || run_ctest build-fuzz --test-dir build-fuzz --output-on-failure -L fuzz

# Stop now rather than in the trap, so the summary really is the last output.
"$REPO/scripts/services.sh" stop "$DATA"

echo
echo "==== test summary ===="
printf '%s\n' "${summaries[@]}"
# One plain closing line over both runs.
echo "tests: $passed_total passed, $failed_total failed"
exit "$failed"
