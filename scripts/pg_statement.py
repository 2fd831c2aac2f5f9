#!/usr/bin/python3
"""pg_statement.py NAME - prints the SQL of statement NAME of
src/store/pg.c's table, as chatd prepares it: the string pieces joined,
comments dropped, PG_TURN_STORE_TAIL(...) expanded. The benchmark
(scripts/bench.sh) and the tests that drive chatd's own statements by hand
(tests/integration/test_instances.py) read them here, so they can never
drift from what chatd runs."""

import os
import re
import sys

LIT = r'"(?:[^"\\]|\\.)*"'
PG_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "store", "pg.c")


def strings(text):
    """The C string literals of text, joined, with \\" unescaped."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', text)).replace('\\"', '"')


def statement_sql(name, path=PG_C):
    with open(path) as f:
        src = f.read()
    args = r"%s(?:\s*,\s*%s)*" % (LIT, LIT)
    m = re.search(r'\{"%s",\s*\d+,\s*((?:/\*.*?\*/\s*|%s\s*|PG_TURN_STORE_TAIL\(\s*%s\s*\)\s*)+)\}'
                  % (re.escape(name), LIT, args), src, re.S)
    if m is None:
        raise KeyError("statement %s not found in src/store/pg.c" % name)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    # The one macro the statements use: its pieces, with its arguments
    # (strings) where its body names its parameters.
    tail = re.search(r"#define PG_TURN_STORE_TAIL\(([^)]*)\)((?:.*\\\n)*.*\n)", src)
    if tail is not None:
        params = [p.strip() for p in tail.group(1).split(",")]
        pieces = tail.group(2).replace("\\\n", "\n")

        def expand(call):
            out = pieces
            for param, arg in zip(params, re.findall(LIT, call.group(1))):
                out = out.replace(" %s " % param, " " + arg + " ")
            return out
        body = re.sub(r"PG_TURN_STORE_TAIL\(\s*(%s)\s*\)" % args, expand, body)
    return strings(body)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pg_statement.py NAME")
    try:
        print(statement_sql(sys.argv[1]))
    except KeyError as e:
        sys.exit(str(e))
