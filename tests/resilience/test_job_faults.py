"""Replacement and speculative workers, driven in-process with real local worker processes.

Each job here misbehaves on purpose, on an actor's first attempt only: a marker directory
made atomically by the worker's shell records that the attempt happened, so the replacement
(a new process with no memory, in a new sandbox) behaves. The markers live in a host folder
shared into every worker's sandbox at ``MARKS``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from coordinator.core.job import Job
from coordinator.core.runner import run_job
from coordinator.core.server import JobResult, ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import make_job_keys
from coordinator.jobs import scan
from coordinator.launch.local import LocalLauncher
from coordinator.launch.sandbox import Sandbox
from tests.helpers import scan_input, scan_reference, scripted_job

MARKS = "/mnt/marks"  # the markers folder inside each sandbox


def run(job: Job, tmp_path, **options) -> tuple[JobResult, dict]:
    timing = tmp_path / f"timing-{uuid.uuid4().hex[:6]}.json"
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=30, connect_timeout=30, timing_log=str(timing),
                         **options)  # fmt: skip
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    sandbox = Sandbox(shared={MARKS: marks})
    launcher = LocalLauncher(tmp_path / "logs", concurrency=job.workers * 2, isolation=sandbox)
    status = Status(job.name, job.workers, tty=False)
    result = asyncio.run(asyncio.wait_for(run_job(job, launcher, make_job_keys(), opts, status), 60))
    return result, json.loads(timing.read_text())


def misbehaving(tmp_path, workers: int, victims: tuple[int, ...], bad: str, good: str = "true") -> Job:
    """Victims misbehave on their first attempt only."""
    return scripted_job(workers, good, victims, bad, MARKS)


def test_a_worker_that_replies_fail_is_replaced(tmp_path):
    result, log = run(misbehaving(tmp_path, 3, (1,), bad="exit 3"), tmp_path, retries=1)
    assert result.ok, result.describe()
    assert result.relaunched == 1
    attempts = [(r["actor"], r["ok"]) for r in log["records"] if r["actor"] == 1]
    assert attempts == [(1, False), (1, True)]
    assert "RETVAL(3)" in next(r["error"] for r in log["records"] if r["actor"] == 1 and not r["ok"])


def test_a_worker_that_dies_mid_command_is_replaced(tmp_path):
    result, _ = run(misbehaving(tmp_path, 3, (0, 2), bad="kill -9 $PPID; sleep 5"), tmp_path, retries=1)
    assert result.ok and result.relaunched == 2, result.describe()


def test_retries_run_out_with_a_clear_reason(tmp_path):
    job = misbehaving(tmp_path, 2, (), bad="", good="echo broken input >&2; exit 7")
    job.info["victims"] = []
    result, log = run(job, tmp_path, retries=2)
    assert not result.ok and result.relaunched == 4  # two actors, two replacements each
    assert set(result.failures) == {"actor 0", "actor 1"}
    for why in result.failures.values():
        assert "RETVAL(7)" in why and "broken input" in why and why.endswith("(after 2 retries)")
    assert len(log["records"]) == 6


def test_speculation_races_a_duplicate_against_a_straggler(tmp_path):
    # Actor 0's first worker takes 30 s; once half the actors are done it gets a duplicate,
    # which finishes at once; the straggler is told to quit and the job does not wait for it.
    job = misbehaving(tmp_path, 4, (0,), bad="sleep 30", good="sleep 0.2")
    result, log = run(job, tmp_path, speculate=50)
    assert result.ok, result.describe()
    actor0 = [r for r in log["records"] if r["actor"] == 0]
    assert [(r["duplicate"], r["superseded"]) for r in actor0] == [(False, True), (True, False)]
    # The straggler was stopped when the duplicate won (superseded), and is not a failure.
    assert actor0[1]["ok"] and actor0[0]["error"] is None


def test_the_deadline_stops_a_job_that_cannot_finish(tmp_path):
    job = misbehaving(tmp_path, 2, (), bad="", good="sleep 60")
    result, _ = run(job, tmp_path, deadline=2)
    assert not result.ok and result.succeeded == 0
    for why in result.failures.values():
        assert why == "job --deadline 2 s passed in Scripted (Run one scripted shell command, step 2 of 2)"


# -- a relay partner lost in the middle of a chain --------------------------------------------


class LoseOnceCombine(scan.ScanCombineState):
    """The victim dies right after the relay delivered its predecessor's state to it."""

    @staticmethod
    def plan(info: dict[str, Any], i: int) -> list[Any]:
        steps = scan.ScanCombineState.plan(info, i)
        if i not in info["victims"]:
            return steps
        die = f"run:mkdir {info['marks']}/actor-{i} 2>/dev/null && kill -9 $PPID; true"
        return [(None, die), ("OK:RETVAL(0)", steps[0][1]), *steps[1:]]


class LoseOnceWait(scan.ScanWaitState):
    nextState = LoseOnceCombine


class LoseOnceBranch(scan.ScanBranchState):
    consequentState = LoseOnceCombine
    alternativeState = LoseOnceWait


class LoseOnceConfig(scan.ScanConfigState):
    nextState = LoseOnceBranch


def test_a_relay_partner_lost_mid_chain_is_replaced_and_gets_its_state(s3, tmp_path, png2y4m):
    n = 4
    bucket, chunks = scan_input(s3, "in/", n)
    client = s3.client()
    info = {
        "bucket": bucket,
        "input": "in/",
        "output": "out/",
        "workers": n,
        "victims": [2],
        "marks": MARKS,
    }
    job = Job(
        "scan", LoseOnceConfig, workers=n, info=info, bucket=bucket, s3_endpoint=s3.endpoint, relay=True
    )
    result, log = run(job, tmp_path, retries=1)
    assert result.ok and result.relaunched == 1, result.describe()
    victim = [r for r in log["records"] if r["actor"] == 2]
    assert [r["ok"] for r in victim] == [False, True]
    assert victim[0]["error"].startswith("sock closed (in LoseOnceCombine")
    got = [
        client.get_object(Bucket=bucket, Key=scan.report_key("out/", i))["Body"].read().decode()
        for i in range(n)
    ]
    assert got == scan_reference(chunks)  # the replacement got state.1 again and passed state.2 on
