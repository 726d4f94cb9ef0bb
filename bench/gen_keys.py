#!/usr/bin/env python3
"""Deterministic benchmark API keys.

Usage: gen_keys.py OUT_DIR COUNT [PLAN_IDS]

Writes into OUT_DIR:
  keys.txt        one 40-character key per line
  valid_key.txt   the key the load runs send (line 5000, mid-list)
  keys.nginx-map  "KEY 1;" lines for nginx's `map`
  keys.csv        AWS's import format (Name,Key,Enabled,UsagePlanIds) for `keygate keys import`
The seed is fixed, so every run and every gateway sees the same keys.
"""
import random
import string
import sys
from pathlib import Path

out = Path(sys.argv[1])
count = int(sys.argv[2])
plans = sys.argv[3] if len(sys.argv) > 3 else ""
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(20241128)
alphabet = string.ascii_letters + string.digits
keys, seen = [], set()
while len(keys) < count:
    k = "".join(rng.choices(alphabet, k=40))
    if k not in seen:
        seen.add(k)
        keys.append(k)
(out / "keys.txt").write_text("\n".join(keys) + "\n")
(out / "valid_key.txt").write_text(keys[min(4999, count - 1)] + "\n")
(out / "keys.nginx-map").write_text("".join(f"{k} 1;\n" for k in keys))
with (out / "keys.csv").open("w") as f:
    f.write("Name,Key,Enabled,UsagePlanIds\n")
    for i, k in enumerate(keys):
        f.write(f'bench-{i:07d},{k},true,"{plans}"\n')
