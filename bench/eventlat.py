#!/usr/bin/python3
"""eventlat.py - how long an event takes from one chatd to a connection on
another (issue 13): a client on instance A renames a session (code 10)
while a client on instance B, subscribed (code 14), waits for the
session_renamed event. Prints one line of figures; asserts nothing.

  eventlat.py ws://127.0.0.1:PORT_A/ws ws://127.0.0.1:PORT_B/ws USER SESSION [N]
"""

import json
import sys
import time

import websocket


def main():
    url_a, url_b, user, session = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    a = websocket.create_connection(url_a, timeout=10)
    b = websocket.create_connection(url_b, timeout=10)
    b.send(json.dumps({"type": 14, "data": {"user_id": user}}))
    json.loads(b.recv())
    lat = []
    for i in range(n):
        name = "latency %d" % i
        t0 = time.perf_counter()
        a.send(json.dumps({"type": 10, "data": {"user_id": user, "session_id": session, "session_name": name}}))
        while True:
            m = json.loads(b.recv())
            if m.get("type") == 15 and m["data"].get("session_name") == name:
                lat.append(time.perf_counter() - t0)
                break
        json.loads(a.recv())  # the rename's own reply
    lat.sort()
    us = [int(x * 1e6) for x in lat]
    print("events=%d p50_us=%d p99_us=%d max_us=%d" % (n, us[n // 2], us[min(n - 1, int(n * 0.99))], us[-1]))


if __name__ == "__main__":
    main()
