#!/usr/bin/env python3
"""Checks of bench/report.py: a quick run prints no verdicts, a full run does.

Usage: python3 bench/test_report.py   (.ci/run runs it before the quick benchmark)
"""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = "peer\tcase\tconns\tstatus\trequests\trps\tp50_ms\tp99_ms\trss_mb\tcpu_us_per_req\tstartup_ms\tnon2xx3xx\tsock_errors"
ROWS = [
    "keygate\tvalid\t32\t200\t100\t4000\t1.0\t2.0\t10\t50\t0\t0\t0",
    "nginx\tvalid\t32\t200\t100\t10000\t0.5\t1.0\t5\t20\t0\t0\t0",
    "keygate-nolog\tvalid\t32\t200\t100\t4000\t1.0\t2.0\t10\t50\t0\t0\t0",
    "keygate-log\tvalid\t32\t200\t100\t3900\t1.0\t2.0\t10\t50\t0\t0\t0",
    "keygate-nolog\tvalid\t32\t200\t100\t4000\t1.0\t2.0\t10\t50\t0\t0\t0",
    "keygate-log\tvalid\t32\t200\t100\t3600\t1.0\t2.0\t10\t50\t0\t0\t0",
    "keygate-nolog\tvalid\t32\t200\t100\t4000\t1.0\t2.0\t10\t50\t0\t0\t0",
    "keygate-log\tvalid\t32\t200\t100\t4000\t1.0\t2.0\t10\t50\t0\t0\t0",
]


def report(env):
    with tempfile.TemporaryDirectory() as d:
        tsv, versions = os.path.join(d, "r.tsv"), os.path.join(d, "v.txt")
        with open(tsv, "w") as f:
            f.write("\n".join([HEADER] + ROWS) + "\n")
        with open(versions, "w") as f:
            f.write("mode: test\n")
        return subprocess.run(
            [sys.executable, os.path.join(HERE, "report.py"), tsv, versions, "keygate (10 keys)\t250\t2048"],
            env={**os.environ, **env}, check=True, capture_output=True, text=True).stdout


class Report(unittest.TestCase):
    def test_quick_debug_runs_print_no_verdict(self):
        out = report({"QUICK": "1", "PROFILE": "debug"})
        self.assertIn("(quick, debug build: not a measurement)", out)
        self.assertIn("| valid key, c32: req/s vs nginx | 4,000 | 10,000 | 0.40× |", out)
        for verdict in ("target", "≥", "≤", "| NO |", "| yes |"):
            self.assertNotIn(verdict, out)

    def test_full_runs_judge_against_targets(self):
        out = report({"QUICK": "0", "PROFILE": "release"})
        self.assertNotIn("not a measurement", out)
        self.assertIn("| 0.40× | ≥ 1.10× | NO |", out)
        self.assertIn("| valid key, c32: req/s with the access log on vs off, interleaved (0.90–1.00×, 3 rounds) | 3,900 | 4,000 | 0.97× | ≥ 0.95× | yes |", out)


if __name__ == "__main__":
    unittest.main()
