#!/usr/bin/python3
"""Failover figures for docs/BENCHMARKS.md (`scripts/bench.sh failover`).

The topology of scripts/ha.sh (etcd, Patroni with two PostgreSQL 15 nodes
in synchronous mode, Redis master + replica + three Sentinels), two chatd
on it through DATABASE_URL and REDIS_SENTINELS, and 16 clients (one user
each, alternating between the two) sending turns back to back against the
echo agent; a failed turn is sent again under its client_turn_id. For each
of: SIGKILL of the primary's postmaster, `patronictl switchover`, SIGKILL
of the Redis master, it prints turns/s in the 10 s before, in the window,
and in the 10 s after; the errors in the window (by code); seconds from
the action to the new primary (Patroni's view) and to the first turn that
succeeded after it; and the database check of the tests (nothing
acknowledged lost, nothing twice)."""

import os
import signal
import sys
import time
import unittest

SOURCE_DIR = os.environ.get("CHATD_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
os.environ.setdefault("CHATD_ENV_FILE", "/dev/null")

import test_ha  # noqa: E402
from harness import Agent, Chatd, cleanup, wait_for  # noqa: E402

PHASE = 10.0  # seconds measured before and after


def rate(load, t0, t1):
    with load.lock:
        n = sum(1 for (_u, _m, _s, _r, t) in load.ok if t0 <= t < t1)
    return n / (t1 - t0)


def run(case, name, action, settled):
    users = case.users()
    load = test_ha.Load(case.cluster, case.chatds, users)
    try:
        wait_for(lambda: load.successes() >= 50, "warm", tries=2400, delay=0.05)
        time.sleep(PHASE)  # a measurement window, not a wait for an event
        t0 = time.time()
        action()
        wait_for(settled, "the new master", tries=1200, delay=0.05)
        t_new = time.time()
        wait_for(lambda: len(load.successes_after(t0)) == len(users), "every client again", tries=1200, delay=0.05)
        t_all = time.time()
        with load.lock:
            first = min(t for (_u, _m, _s, _r, t) in load.ok if t > t0)
            errors = [(code, t) for (_u, _m, code, t) in load.errors if t >= t0]
        time.sleep(PHASE)
        t_end = time.time()
    finally:
        load.finish()
    case.check(load, users)
    in_window = [c for (c, t) in errors if t <= t_all]
    codes = {c: in_window.count(c) for c in sorted(set(in_window))}
    print("%-26s before %6.1f/s  window %6.1f/s (%.2f s)  after %6.1f/s  errors %s  new master after %.2f s,"
          " first turn after %.2f s, every client after %.2f s; checked: nothing lost or twice" % (
              name, rate(load, t0 - PHASE, t0), rate(load, t0, t_all), t_all - t0,
              rate(load, t_end - PHASE, t_end), codes or "none", t_new - t0, first - t0, t_all - t0), flush=True)


def main():
    test_ha.Failover.setUpClass()
    case = test_ha.Failover("test_1_primary_killed")
    try:
        cl = case.cluster
        print("failover: 2 chatd, 16 clients, echo agent 20 ms, Patroni ttl 20 loop_wait 1,"
              " Sentinel down-after 1000 ms", flush=True)
        for name in ("primary SIGKILL", "switchover"):
            wait_for(cl.healthy, "healthy", tries=1200, delay=0.1)
            leader = cl.role("leader")
            if name == "primary SIGKILL":
                pid = cl.postmaster_pid(leader)
                act = lambda: os.kill(pid, signal.SIGKILL)  # noqa: E731
            else:
                standby = cl.role("sync_standby")
                act = lambda: cl.patronictl("switchover", "--leader", leader["name"],  # noqa: E731
                                            "--candidate", standby["name"], "--force")
            run(case, "PostgreSQL " + name, act,
                lambda: (cl.role("leader") or {}).get("name") not in (None, leader["name"]))
        old = cl.redis_master()
        run(case, "Redis master SIGKILL", lambda: os.kill(cl.redis_pid(old), signal.SIGKILL),
            lambda: cl.redis_master() != old)
    finally:
        test_ha.Failover.tearDownClass()


if __name__ == "__main__":
    main()
