"""Workers that never arrive: Lambda accepted the invocation, but no worker ever dials back.

The AWS launcher is pointed at a local HTTPS endpoint that accepts Invoke requests and runs
only the events a test chooses, as a Lambda service with lost invocations would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.local.demo import encode_png, frame_rgb, to_uint16
from tests.fake_lambda import CREDS, FakeLambda


@pytest.fixture(scope="module")
def endpoint_keys():
    return make_job_keys(hosts=("127.0.0.1",))


def mu_run_aws(endpoint_keys, s3, tmp_path, run_workers, *extra: str):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)
    bucket = f"lost-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    for frame in range(1, 7):
        s3.client().put_object(Bucket=bucket, Key=f"v-png16/{frame:08d}.png",
                               Body=encode_png(to_uint16(frame_rgb(frame, 16, 8))))  # fmt: skip

    async def scenario():
        async with FakeLambda(endpoint_keys, run_workers=run_workers) as fake:
            env = {
                **os.environ, "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key, "AWS_SESSION_TOKEN": CREDS.token,
                "AWS_CA_BUNDLE": str(bundle),

            }  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "3", "-f", "2", "-v", "v",
                "-b", bucket, "--backend", "aws", "--function", "mu-worker", "--lambda-endpoint", fake.url,
                "--host", "127.0.0.1", "-t", "0", "--s3-endpoint", s3.endpoint, *extra,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode(), fake

    return asyncio.run(scenario())


def test_a_lost_invocation_is_replaced_after_the_connect_timeout(endpoint_keys, s3, tmp_path):
    code, out, err, fake = mu_run_aws(
        endpoint_keys,
        s3,
        tmp_path,
        lambda event: event["worker"] != 1,
        "--connect-timeout",
        "3",
        "--retries",
        "1",
    )
    assert code == 0, err
    assert "all 3 workers finished" in out and "1 worker relaunched" in out
    assert "no worker connected within --connect-timeout 3 s; launching a replacement" in err
    assert sorted(s.event["worker"] for s in fake.seen) == [0, 1, 2, 3]  # the replacement is worker 3


def test_workers_that_never_connect_fail_the_job_at_the_connect_timeout(endpoint_keys, s3, tmp_path):
    code, _out, err, fake = mu_run_aws(endpoint_keys, s3, tmp_path, False, "--connect-timeout", "2")
    assert code == 1 and len(fake.seen) == 3
    assert "3 of 3 workers failed" in err
    for actor in range(3):
        # Failures name the actor's work by its S3 keys.
        chunk = f"actor {actor} (reads v-png16/{2 * actor + 1:08d}.png .. v-png16/{2 * actor + 2:08d}.png"
        chunk += f", writes v-y4m_02/{actor:08d}.y4m)"
        assert f"{chunk}: no worker connected within --connect-timeout 2 s" in err


def test_the_deadline_ends_a_job_whose_workers_never_arrive(endpoint_keys, s3, tmp_path):
    code, _out, err, _fake = mu_run_aws(endpoint_keys, s3, tmp_path, False, "--deadline", "3")
    assert code == 1
    assert "job --deadline 3 s passed; stopping" in err
    for actor in range(3):
        assert ".y4m): job --deadline 3 s passed waiting for a worker to connect" in err
        assert f"actor {actor} (reads v-png16/" in err
