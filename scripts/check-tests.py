#!/usr/bin/python3
"""check-tests.py - every Python test the suite holds is one unittest runs
(run by `make test` as the CTest test lint.tests).

A test_* function that is not a method of a class at the module's top
level never runs, and says nothing: test_tree's
test_stop_and_resume_a_compare sat, indented, after the return of a
module-level helper for a release and a half. A second method of the same
name in one class hides the first just as quietly. Both are refused here,
read from each file's syntax tree (nothing is imported or run).

    scripts/check-tests.py [FILE ...]     default: tests/**/test_*.py
    scripts/check-tests.py --selftest     the check on known good and bad text

Prints each offence as FILE:LINE: what, exits 1 if there is one."""

import ast
import glob
import os
import sys


def offences(text, name):
    """[(line, what)] for the Python source text."""
    tree = ast.parse(text, filename=name)
    out = []
    placed = set()  # test functions that are methods of a top-level class
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        seen = {}
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                placed.add(item)
                if item.name in seen:
                    out.append((item.lineno, "%s.%s defined again: the one on line %d never runs"
                                % (node.name, item.name, seen[item.name])))
                seen[item.name] = item.lineno
    for node in ast.walk(tree):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
                and node not in placed):
            out.append((node.lineno, "%s is not a method of a top-level class: it never runs" % node.name))
    return sorted(out)


GOOD = '''
import unittest
def helper():
    return 1
class A(unittest.TestCase):
    def test_one(self):
        def inner():
            pass
    def test_two(self):
        pass
'''

BAD = '''
import unittest
class A(unittest.TestCase):
    def test_one(self):
        pass
    def test_one(self):
        pass
def helper():
    return 1

    def test_lost(self):
        pass
def test_loose():
    pass
'''


def selftest():
    assert offences(GOOD, "good") == [], offences(GOOD, "good")
    got = [line for line, _ in offences(BAD, "bad")]
    assert got == [6, 11, 13], offences(BAD, "bad")
    print("check-tests: selftest passed")
    return 0


def main(argv):
    if argv[1:] == ["--selftest"]:
        return selftest()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    files = argv[1:] or sorted(glob.glob(os.path.join(root, "tests", "**", "test_*.py"), recursive=True))
    bad = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line, what in offences(fh.read(), f):
                print("%s:%d: %s" % (os.path.relpath(f), line, what))
                bad += 1
    if bad:
        return 1
    print("check-tests: %d files, every test a method of a top-level class, no name twice" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
