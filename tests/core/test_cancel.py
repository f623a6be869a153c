"""Cancellation: SIGINT and SIGTERM to ``mu`` stop a job in order, and a --deadline ends it on time.

Everything runs as a user would run it, and is checked from outside through /proc: every
process ``mu`` started carries a marker in its environment, so whatever is left behind is found
even after it has left ``mu``'s process tree.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid

import pytest
from PIL import Image

from tests.resilience.chaos import MarkedMu as Mu
from tests.resilience.chaos import processes_with


def map_job(s3, tmp_path, seconds: list[str], *extra: str) -> Mu:
    """``mu map`` over one object per worker; worker i sleeps ``seconds[i]``."""
    bucket = f"cancel-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for i, s in enumerate(seconds):
        client.put_object(Bucket=bucket, Key=f"in/{i:02d}", Body=s.encode())
    return Mu(
        tmp_path, "map", "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out/",
        "--command", "sleep $(cat ##INFILE##) && echo done > ##OUTFILE##", "-t", "0",
        "--s3-endpoint", s3.endpoint, "-O", str(tmp_path / "timing.json"), *extra,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_job_in_order(s3, tmp_path, sig):
    long = f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"  # a duration no other process sleeps
    # Actor 0's command ends at once; three more sleep; the fifth worker has no slot yet.
    mu = map_job(s3, tmp_path, ["0", long, long, long, long], "--concurrency", "3")
    mu.wait_for_line("actor 0 finished")
    mu.wait_for_line("actor 3 connected")
    end = time.monotonic() + 30
    while len(processes_with(f"sleep {long}")) < 3:
        assert time.monotonic() < end, mu.stderr
        time.sleep(0.02)
    mu.proc.send_signal(sig)
    assert mu.finish() == 128 + sig
    lines = mu.stderr.splitlines()
    assert [line.split("] ", 1)[1] for line in lines if "interrupted" in line] == [
        "interrupted: 1 done, 3 running, 1 not started"
    ]
    assert "Traceback" not in mu.stderr and mu.stdout == ""
    log = json.loads((tmp_path / "timing.json").read_text())
    outcomes = sorted((r["actor"], r["ok"]) for r in log["records"])
    assert outcomes == [(0, True), (1, False), (2, False), (3, False)]
    assert mu.leftovers() == [] and processes_with(f"sleep {long}") == []
    assert list(mu.tmpdir.iterdir()) == [], mu.stderr  # no log folder, no temp folder


def test_a_failed_worker_keeps_its_logs_and_says_where(s3, tmp_path):
    mu = map_job(s3, tmp_path, ["0", "not-a-number"])
    assert mu.finish() == 1
    [kept] = list(mu.tmpdir.iterdir())
    assert f"worker logs: {kept}" in mu.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["worker-0.log", "worker-1.log"]
    assert mu.leftovers() == []


def test_a_clean_run_leaves_nothing_in_tmp(s3, tmp_path):
    mu = map_job(s3, tmp_path, ["0", "0"])
    assert mu.finish() == 0, mu.stderr
    assert "worker logs" not in mu.stdout + mu.stderr
    assert list(mu.tmpdir.iterdir()) == [] and mu.leftovers() == []


def test_the_deadline_ends_the_job_at_the_deadline(s3, tmp_path):
    long = f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"
    mu = map_job(s3, tmp_path, [long, long], "--deadline", "3")
    mu.wait_for_line("passed; stopping")
    assert mu.finish() == 1
    # That the workers are killed at once, with no grace, is pinned without a clock by
    # tests/launch/test_sandbox.py::test_a_job_past_its_deadline_kills_its_workers_without_a_grace.
    assert "actor 0 (chunk 0: in/00): job --deadline 3 s passed in MapRunState" in mu.stderr, mu.stderr
    assert mu.leftovers() == [] and processes_with(f"sleep {long}") == []


def named_paths(text: str) -> list[str]:
    """The files and folders a demo's output names (``what: PATH`` pairs)."""
    return re.findall(r"(?:timing log|timeline|worker logs|S3 log|S3 server's log): ([^\s;']+)", text)


def test_a_signal_to_the_demo_stops_its_s3_server_and_workers(tmp_path):
    out = tmp_path / "out"
    mu = Mu(tmp_path, "demo", "--workers", "2", "--frames", "30", "--width", "320", "--height", "180",
            "--out", str(out))  # fmt: skip
    mu.wait_for_line("actor 1 connected", timeout=120)
    mu.proc.send_signal(signal.SIGTERM)
    assert mu.finish() == 143
    assert "Traceback" not in mu.stderr
    assert mu.leftovers() == []  # the moto server and every worker
    assert list(mu.tmpdir.iterdir()) == []
    # The interrupted run's files are kept, and every one named is there.
    assert f"the interrupted run is kept in {out}: timing log: {out / 'timing.json'}; timeline: " in mu.stdout
    assert json.loads((out / "timing.json").read_text())["job"] == "png2y4m"
    named = named_paths(mu.stdout)
    assert str(out / "timeline.png") in named and all(os.path.exists(p) for p in named), mu.stdout


def test_a_demo_interrupted_before_its_job_names_no_timing_log(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "timing.json").write_text("{}")  # an earlier run's: never named as this one's
    mu = Mu(tmp_path, "demo", "--workers", "40", "--frames", "40", "--out", str(out))
    log = out / "s3.log"
    mu.wait_for(lambda: log.exists() and b"PUT" in log.read_bytes(), 60, "the first upload")
    mu.proc.send_signal(signal.SIGINT)  # while it generates and uploads 1,600 frames
    assert mu.finish() == 130
    assert "mu demo: interrupted by SIGINT" in mu.stderr and "Traceback" not in mu.stderr
    assert "timing log" not in mu.stdout and not (out / "timing.json").exists()
    assert f"the interrupted run is kept in {out}: S3 log: {out / 's3.log'}" in mu.stdout
    assert mu.leftovers() == [] and list(mu.tmpdir.iterdir()) == []


def test_a_demo_writes_its_timing_log_and_timeline_in_the_current_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    mu = Mu(tmp_path, "demo", "--workers", "2", "--frames", "2", "--width", "64", "--height", "36", cwd=home)
    assert mu.finish(timeout=120) == 0, mu.stderr
    assert "mu demo OK" in mu.stdout
    assert "timing log: mu-demo/timing.json ('mu report mu-demo/timing.json' for the numbers)" in mu.stdout
    assert "timeline: mu-demo/timeline.png" in mu.stdout
    assert Image.open(home / "mu-demo" / "timeline.png").format == "PNG"
    assert json.loads((home / "mu-demo" / "timing.json").read_text())["ok"] is True
    logs = sorted(p.name for p in (home / "mu-demo" / "workers").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]
    assert all((home / p).exists() for p in named_paths(mu.stdout))
    assert list(mu.tmpdir.iterdir()) == [] and mu.leftovers() == []  # nothing in TMPDIR


def test_a_demo_refuses_an_out_folder_it_cannot_make(tmp_path):
    mu = Mu(tmp_path, "demo", "--out", "/etc/hostname/demo")
    assert mu.finish() == 2
    assert "mu demo: error: --out /etc/hostname/demo: /etc/hostname is not a folder" in mu.stderr
