#!/usr/bin/env bash
# check-format.sh - every C file of the repository is as clang-format makes
# it with the repository's own .clang-format (run by `make test` as the
# CTest test lint.format). Prints each file that differs and how to fix it,
# and exits 1 if there is one.
#
#   scripts/check-format.sh          check
#   scripts/check-format.sh --fix    rewrite the files in place
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The version Debian bookworm ships (scripts/install-deps.sh installs it):
# another version may format some constructs differently.
fmt=$(command -v clang-format-14 || command -v clang-format || true)
if [[ -z $fmt ]]; then
    echo "check-format: clang-format-14 not found (scripts/install-deps.sh installs it)" >&2
    exit 1
fi

mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | sort)
if [[ ${1:-} == --fix ]]; then
    "$fmt" -i --style=file "${files[@]}"
    echo "check-format: formatted ${#files[@]} files"
    exit 0
fi
bad=0
for f in "${files[@]}"; do
    [[ -f $f ]] || continue
    if ! "$fmt" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "$f: not as clang-format makes it"
        bad=1
    fi
done
if [[ $bad -ne 0 ]]; then
    echo "check-format: FAILED (scripts/check-format.sh --fix rewrites them)"
    exit 1
fi
echo "check-format: ${#files[@]} files as clang-format makes them"
