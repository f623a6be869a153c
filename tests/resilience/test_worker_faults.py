"""Workers that die, stall, fail or never arrive: the job still ends correct, or fails fast and clearly.

These run ``mu run`` as a user does and inject faults from outside (see ``chaos.py``).
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid

from coordinator.jobs import png2y4m as job
from coordinator.local.demo import encode_png, frame_rgb, to_uint16
from coordinator.local.locals3 import free_port

from .chaos import MuRun, connected_workers, signal_quietly, worker_pids

VIDEO, FRAMES, W, H = "clip", 6, 320, 180


def _frames_bucket(s3, chunks: int) -> str:
    bucket = f"res-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for frame in range(1, FRAMES * chunks + 1):
        png = encode_png(to_uint16(frame_rgb(frame, W, H)))
        client.put_object(Bucket=bucket, Key=job.input_key(VIDEO, "png16", frame), Body=png)
    return bucket


def _outputs(s3, bucket: str) -> dict[str, bytes]:
    """Every object the job wrote (everything but the input frames), by key."""
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if not k.endswith(".png")}


def _png2y4m(bucket, s3, tmp_path, port, workers, *extra) -> MuRun:
    return MuRun(
        "png2y4m", "-n", str(workers), "-f", str(FRAMES), "-v", VIDEO, "-b", bucket, "-t", str(port),
        "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / f"logs-{port}"),
        "-O", str(tmp_path / f"timing-{port}.json"), *extra,
    )  # fmt: skip


def test_killing_a_fifth_of_the_workers_changes_no_output(s3, tmp_path, png2y4m):
    workers = 10
    bucket = _frames_bucket(s3, workers)
    clean = _png2y4m(bucket, s3, tmp_path, free_port(), workers, "-m", "60")
    assert clean.finish() == 0, clean.stderr
    expected = _outputs(s3, bucket)
    assert sorted(expected) == [job.output_key(VIDEO, FRAMES, c) for c in range(workers)]
    s3.client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in expected]})

    rng = random.Random(20261125)
    port = free_port()
    run = _png2y4m(bucket, s3, tmp_path, port, workers, "-m", "60", "--retries", "3")
    killed: list[int] = []
    # SIGKILL a fifth of the workers, each at a random moment: some before they connect, some
    # in the middle of retrieving, converting or uploading.
    while len(killed) < workers // 5 and run.running():
        time.sleep(rng.uniform(0.05, 0.4))
        alive = [p for p in worker_pids(run.pid) if p not in killed]
        if alive:
            victim = rng.choice(alive)
            if signal_quietly(victim, signal.SIGKILL):
                killed.append(victim)
    code = run.finish()
    assert len(killed) == workers // 5, "the job ended before the faults could be injected"
    assert code == 0, run.stderr
    assert f"all {workers} workers finished" in run.stdout
    assert _outputs(s3, bucket) == expected  # same keys, byte-identical, none extra

    log = json.loads((tmp_path / f"timing-{port}.json").read_text())
    winners = sorted(r["actor"] for r in log["records"] if r["ok"] and not r["superseded"])
    assert winners == list(range(workers))  # every actor finished exactly once
    assert log["relaunched"] >= 1 and "launching a replacement" in run.stderr


def test_a_stalled_worker_is_replaced_after_the_kill_time(s3, tmp_path, png2y4m):
    # -m is mu's kill time: seconds since the worker's first state, whatever it is doing
    workers = 3
    bucket = _frames_bucket(s3, workers)
    port = free_port()
    run = _png2y4m(bucket, s3, tmp_path, port, workers, "-m", "10", "--retries", "1", "--concurrency", "3")
    stalled = run.wait_for(lambda: connected_workers(run.pid, port), 60, "a worker to connect")[0]
    assert signal_quietly(stalled, signal.SIGSTOP)
    try:
        code = run.finish()
    finally:
        signal_quietly(stalled, signal.SIGKILL)
    assert code == 0, run.stderr
    assert "terminated after 10 seconds (in PNG2Y4M" in run.stderr and "launching a replacement" in run.stderr
    assert sorted(_outputs(s3, bucket)) == [job.output_key(VIDEO, FRAMES, c) for c in range(workers)]


def test_without_retries_a_stall_fails_the_job_naming_the_actor_and_state(s3, tmp_path, png2y4m):
    bucket = _frames_bucket(s3, 2)
    port = free_port()
    run = _png2y4m(bucket, s3, tmp_path, port, 2, "-m", "3")
    stalled = run.wait_for(lambda: connected_workers(run.pid, port), 60, "a worker to connect")
    for pid in stalled:
        signal_quietly(pid, signal.SIGSTOP)
    try:
        code = run.finish()
    finally:
        for pid in stalled:
            signal_quietly(pid, signal.SIGKILL)
    assert code == 1
    assert "workers failed" in run.stderr
    assert "terminated after 3 seconds (in PNG2Y4M" in run.stderr
