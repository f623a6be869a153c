"""A launch the launcher knows has failed costs its seat at once, not --connect-timeout.

``mu run --backend aws`` against tests/fake_lambda.py answering 403, and against an endpoint
nothing listens on; a spare or a retry makes up for a refused invocation. Every run here has a
--connect-timeout far beyond the test's own time limit, so waiting it out would fail the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.local.demo import encode_png, frame_rgb, to_uint16
from coordinator.local.locals3 import free_port
from tests.fake_lambda import CREDS, FakeLambda

PATIENT = "900"  # --connect-timeout: longer than the test may take


@pytest.fixture(scope="module")
def endpoint_keys():
    return make_job_keys(hosts=("127.0.0.1",))


@pytest.fixture(scope="module")
def frames(s3):
    """Four 16x8 frames in a bucket of their own: two png2y4m chunks of two frames."""
    bucket = "failed-launches"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for frame in (1, 2, 3, 4):
        body = encode_png(to_uint16(frame_rgb(frame, 16, 8)))
        client.put_object(Bucket=bucket, Key=f"v-png16/{frame:08d}.png", Body=body)
    return bucket


def env_for(bundle: str | None = None) -> dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": CREDS.access_key, "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
           "AWS_SESSION_TOKEN": CREDS.token, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    if bundle:
        env["AWS_CA_BUNDLE"] = bundle
    return env


def mu_run(s3, bucket: str, endpoint: str, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "2", "-f", "2", "-v", "v", "-b", bucket,
         "--backend", "aws", "--function", "mu-w", "--regions", "us-east-1", "--lambda-endpoint", endpoint,
         "--advertise", "127.0.0.1", "--host", "127.0.0.1", "-t", "0", "--s3-endpoint", s3.endpoint,
         "--connect-timeout", PATIENT, *extra],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def against_fake(s3, frames, endpoint_keys, tmp_path, script, *extra: str):
    """``mu run`` against a fake Lambda that answers ``script(function, worker, attempt)`` and runs
    each event it accepts as a real local worker."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)

    async def scenario():
        async with FakeLambda(endpoint_keys, script, run_workers=True) as fake:
            env = env_for(str(bundle))
            proc = await asyncio.to_thread(mu_run, s3, frames, fake.url, *extra, env=env)
            return proc, fake

    return asyncio.run(scenario())


def refuse_worker_0(function: str, worker: int, attempt: int) -> int:
    return 403 if worker == 0 else 202


def test_refused_invocations_fail_their_actors_at_once_with_lambdas_reason(
    s3, frames, endpoint_keys, tmp_path
):
    proc, fake = against_fake(s3, frames, endpoint_keys, tmp_path, lambda f, w, a: 403)
    assert proc.returncode == 1, proc.stderr
    assert "launch: 0 invoked, 0 retried, 2 failed" in proc.stderr
    assert "2 of 2 workers failed" in proc.stderr
    for actor in (0, 1):
        line = next(x for x in proc.stderr.splitlines() if x.strip().startswith(f"actor {actor} "))
        assert "its invocation failed: function 'mu-w' in us-east-1: HTTP 403 AccessDeniedException" in line
        assert "these credentials may not invoke it" in line
        assert "--connect-timeout" not in line
    assert fake.seen == []


def test_an_unreachable_lambda_endpoint_fails_the_job_after_launch_deadline(s3, frames):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = mu_run(s3, frames, closed, "--launch-deadline", "2", env=env_for())
    assert proc.returncode == 1, proc.stderr
    assert "2 of 2 workers failed" in proc.stderr
    assert "its invocation failed: function 'mu-w' in us-east-1: still failing after" in proc.stderr
    assert f"when --launch-deadline passed: connection to {closed} failed" in proc.stderr
    assert "no worker connected within" not in proc.stderr


def test_a_spare_takes_the_seat_of_a_refused_invocation(s3, frames, endpoint_keys, tmp_path):
    """The refused invocation is worker 0's, but workers take actors when they connect: the
    two that run play actors 0 and 1, and nothing fails."""
    proc, fake = against_fake(s3, frames, endpoint_keys, tmp_path, refuse_worker_0, "--spares", "1")
    assert proc.returncode == 0, proc.stderr
    assert "launch: 2 invoked, 0 retried, 1 failed" in proc.stderr
    assert "all 2 workers finished" in proc.stdout
    assert sorted(s.event["worker"] for s in fake.seen) == [1, 2]


def test_a_refused_invocation_spends_a_retry_and_the_replacement_plays_the_actor(
    s3, frames, endpoint_keys, tmp_path
):
    proc, fake = against_fake(s3, frames, endpoint_keys, tmp_path, refuse_worker_0, "--retries", "1")
    assert proc.returncode == 0, proc.stderr
    assert "all 2 workers finished" in proc.stdout and "1 worker relaunched" in proc.stdout
    assert "actor 1: its invocation failed: function 'mu-w' in us-east-1: HTTP 403" in proc.stderr
    assert "launching a replacement" in proc.stderr
    assert sorted(s.event["worker"] for s in fake.seen) == [1, 2]  # worker 2 is the replacement
