#!/usr/bin/python3
"""pg_statement.py NAME - prints the SQL of statement NAME of
src/store/pg.c's table, as chatd prepares it: the string pieces joined,
its macros expanded. The benchmark
(scripts/bench.sh) and the tests that drive chatd's own statements by hand
(tests/integration/test_instances.py) read them here, so they can never
drift from what chatd runs."""

import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PG_C = os.path.join(ROOT, "src", "store", "pg.c")


def strings(text):
    """The C string literals of text, joined, with \\" unescaped."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', text)).replace('\\"', '"')


def statement_sql(name, path=PG_C):
    # The C preprocessor expands the macros the statements are built
    # with (PG_PATH, PG_TURN_STORE_TAIL, ...) exactly as the compiler does.
    flags = subprocess.run(["pkg-config", "--cflags", "libpq"], capture_output=True, text=True).stdout.split()
    src = subprocess.run(["cc", "-E", "-P", "-I", os.path.join(ROOT, "src")] + flags + [path],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r'\{"%s",\s*\d+,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\}' % re.escape(name), src)
    if m is None:
        raise KeyError("statement %s not found in src/store/pg.c" % name)
    return strings(m.group(1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pg_statement.py NAME")
    try:
        print(statement_sql(sys.argv[1]))
    except KeyError as e:
        sys.exit(str(e))
