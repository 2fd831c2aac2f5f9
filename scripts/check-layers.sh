#!/usr/bin/env bash
# check-layers.sh - the layer rule of src/, checked over the #include lines
# (run by `make test` as the CTest test lint.layers; docs/ARCHITECTURE.md).
#
#   net/   -> work/ store/ agent/ wire/ lib/
#   work/  -> store/ agent/ wire/ lib/
#   store/ -> lib/          agent/ -> lib/          wire/ -> lib/
#   lib/   -> (nothing of chatd's)
#   chat-agent/ -> lib/ (it is another program; it shares only the helpers)
#
# Each layer may include its own headers and those of the layers below it,
# never one above or beside it. Project headers are named with their
# directory ("store/pg.h"); a bare name must be a system or generated
# header (<...>, or the protobuf-c output "*.pb-c.h"), or a header of the
# same directory (chat-agent only). Within a directory, modules (a .c and
# its .h) may include each other only one way: a cycle between them (a.c
# includes b.h, b.c includes a.h, or a longer ring) is refused too, since
# neither can then be read, tested or replaced without the other. Prints
# every offending line or cycle and exits 1 if there is one.
set -euo pipefail
# CHECK_LAYERS_SRC: another tree to check (tests/lint/layers_selftest.sh).
cd "${CHECK_LAYERS_SRC:-$(dirname "${BASH_SOURCE[0]}")/../src}"

allowed() {
    case $1 in
    net) echo "net work store agent wire lib" ;;
    work) echo "work store agent wire lib" ;;
    store) echo "store lib" ;;
    agent) echo "agent lib" ;;
    wire) echo "wire lib" ;;
    lib) echo "lib" ;;
    chat-agent) echo "lib" ;;
    *) echo "" ;;
    esac
}

bad=0
checked=0
for dir in net work store agent wire lib chat-agent; do
    [[ -d $dir ]] || continue
    ok=" $(allowed "$dir") "
    while IFS= read -r -d '' f; do
        checked=$((checked + 1))
        n=0
        while IFS= read -r line; do
            n=$((n + 1))
            [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
            inc=${BASH_REMATCH[1]}
            if [[ $inc == */* ]]; then
                top=${inc%%/*}
                if [[ $ok != *" $top "* ]]; then
                    echo "src/$f:$n: $dir/ may not include $inc (allowed: $(allowed "$dir"))"
                    bad=1
                fi
            elif [[ $inc == *.pb-c.h ]]; then
                :
            elif [[ $dir == chat-agent && -f $dir/$inc ]]; then
                :
            else
                echo "src/$f:$n: \"$inc\": name a project header with its directory (e.g. \"lib/$inc\")"
                bad=1
            fi
        done <"$f"
    done < <(find "$dir" -name '*.[ch]' -print0)
done
# Cycles between the modules of one directory: tsort names a loop's members.
shopt -s nullglob
for dir in net work store agent wire lib chat-agent; do
    [[ -d $dir ]] || continue
    edges=$(
        for f in "$dir"/*.[ch]; do
            from=$(basename "${f%.[ch]}")
            echo "$from $from"
            sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
                while read -r inc; do
                    [[ $inc == "$dir"/* ]] || [[ $dir == chat-agent && $inc != */* && -f $dir/$inc ]] ||
                        continue
                    to=$(basename "${inc%.h}")
                    [[ $to != "$from" ]] && echo "$from $to"
                done
        done
    )
    loops=$(tsort <<<"$edges" 2>&1 >/dev/null) || true
    if [[ -n $loops ]]; then
        echo "src/$dir/: modules include each other in a cycle:" \
            "$(sed -n 's/^tsort: \([^-][^:]*\)$/\1/p' <<<"$loops" | sort -u | tr '\n' ' ')"
        bad=1
    fi
done
# main.c wires the layers together and may include any of them.
if [[ $bad -ne 0 ]]; then
    echo "check-layers: FAILED (the rule is at the top of scripts/check-layers.sh)"
    exit 1
fi
echo "check-layers: $checked files, every include looks down, no module cycle"
