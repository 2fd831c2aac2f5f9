#!/usr/bin/env bash
# layers_selftest.sh - scripts/check-layers.sh itself: it passes a clean
# tree and refuses each kind of fault in a small one made here (an include
# that looks up, one that looks sideways, a bare project header, a cycle
# between two modules of a directory, and a longer ring). CTest
# lint.layers_selftest.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
check=$here/scripts/check-layers.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

clean_tree() {
    rm -rf "$tmp/src"
    mkdir -p "$tmp/src"/{lib,wire,store,agent,work,net}
    printf '#include <stdio.h>\n' >"$tmp/src/lib/util.h"
    printf '#include "lib/util.h"\n' >"$tmp/src/wire/proto.h"
    printf '#include "lib/util.h"\n' >"$tmp/src/store/db.h"
    printf '#include "work/b.h"\n#include "store/db.h"\n' >"$tmp/src/work/a.c"
    printf '#include "wire/proto.h"\n' >"$tmp/src/work/b.h"
    printf '#include "work/a.h"\n' >"$tmp/src/net/server.c"
    printf '\n' >"$tmp/src/work/a.h"
}

fails=0
expect() { # expect pass|fail what [text the refusal must print]
    local want=$1 what=$2 text=${3:-} out rc=0
    out=$(CHECK_LAYERS_SRC="$tmp/src" bash "$check" 2>&1) || rc=$?
    if [[ $want == pass && $rc -ne 0 ]] || [[ $want == fail && $rc -ne 1 ]] ||
        [[ -n $text && $out != *"$text"* ]]; then
        echo "FAIL: $what: expected $want${text:+ naming \"$text\"}, got rc=$rc"
        echo "$out"
        fails=1
    else
        echo "ok: $what (${out##*$'\n'})"
    fi
}

clean_tree
expect pass "a clean tree"
clean_tree
printf '#include "net/server.h"\n' >>"$tmp/src/work/b.h"
expect fail "work/ includes net/ (up)" "src/work/b.h:2: work/ may not include net/server.h"
clean_tree
printf '#include "store/db.h"\n' >>"$tmp/src/wire/proto.h"
expect fail "wire/ includes store/ (sideways)" "src/wire/proto.h:2: wire/ may not include store/db.h"
clean_tree
printf '#include "util.h"\n' >>"$tmp/src/store/db.h"
expect fail "a project header without its directory" "\"util.h\": name a project header with its directory"
clean_tree
printf '#include "work/a.h"\n' >"$tmp/src/work/b.c"
expect fail "work/a and work/b include each other" "src/work/: modules include each other in a cycle: a b"
clean_tree
printf '#include "work/c.h"\n' >"$tmp/src/work/b.c"
printf '#include "work/a.h"\n' >"$tmp/src/work/c.c"
printf '\n' >"$tmp/src/work/c.h"
expect fail "a ring a -> b -> c -> a" "src/work/: modules include each other in a cycle: a b c"
exit $fails
