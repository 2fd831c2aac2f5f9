#!/usr/bin/python3
"""gen_export.py - a ChatGPT-shaped conversations.json of about SIZE_MB
megabytes for the import benchmark (scripts/bench.sh import), and the same
rows as two CSV files for COPY into chat_sessions and chat_messages: the
anchor the import is measured beside.

usage: gen_export.py SIZE_MB OUT_DIR USER_ID MODEL_ID
writes OUT_DIR/conversations.json, sessions.csv, messages.csv; prints
"conversations=N messages=M bytes=B"."""

import csv
import json
import os
import sys
import uuid

size_mb, out, user, model = float(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
PER = 20  # messages per conversation, one path with a branch at the end
TEXT = ("lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor " * 12).strip()
target = int(size_mb * 1024 * 1024)
written = 0
convs = msgs = 0
with open(os.path.join(out, "conversations.json"), "w") as f, \
        open(os.path.join(out, "sessions.csv"), "w", newline="") as fs, \
        open(os.path.join(out, "messages.csv"), "w", newline="") as fm:
    ws, wm = csv.writer(fs), csv.writer(fm)
    f.write("[")
    while written < target:
        t0 = 1700000000 + convs * 60
        mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
        for i in range(PER):
            parent = "root" if i == 0 else "m%d" % (i - 1 if i < PER - 1 else PER - 3)
            mapping["m%d" % i] = {
                "id": "m%d" % i, "parent": parent, "children": [],
                "message": {"id": "m%d" % i, "author": {"role": "user" if i % 2 == 0 else "assistant"},
                            "create_time": t0 + i,
                            "content": {"content_type": "text", "parts": ["%d %d %s" % (convs, i, TEXT)]},
                            "metadata": {}}}
        conv = {"title": "Conversation %d" % convs, "create_time": t0, "update_time": t0 + PER,
                "conversation_id": str(uuid.UUID(int=convs + 1)), "current_node": "m%d" % (PER - 1),
                "mapping": mapping}
        text = json.dumps(conv)
        f.write(("," if convs else "") + text)
        written += len(text) + 1
        # the same rows, as COPY loads them
        sid = str(uuid.uuid4())
        ws.writerow([sid, user, "Conversation %d" % convs, model, PER, PER - 1, "copy:%d" % convs])
        for i in range(PER):
            p = -1 if i == 0 else (i - 1 if i < PER - 1 else PER - 3)
            wm.writerow([sid, i, p, "user" if i % 2 == 0 else "assistant", "%d %d %s" % (convs, i, TEXT)])
        convs += 1
        msgs += PER
    f.write("]")
print("conversations=%d messages=%d bytes=%d" % (convs, msgs, written + 2))
