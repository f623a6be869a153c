"""A worker's memory stays flat however much a command prints (issue 11): the measurement is
benchmarks/worker_output.py; this asserts a generous bound on its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "worker_output.py"


def test_50_and_100_mb_of_output_leave_the_workers_peak_rss_within_a_few_mb():
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--sizes", "50,100", "--json"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["mb"] for r in rows] == [50, 100]
    for row in rows:
        assert row["growth_kib"] < 8 * 1024, row  # buffering the output grows by twice its size
        assert row["reply_bytes"] < 17 * 1024, row  # the 16 KiB tail, the marker and the command
