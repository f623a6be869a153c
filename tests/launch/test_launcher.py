"""The aws backend against local HTTPS endpoints that accept Lambda Invoke requests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import subprocess
import sys
import urllib.request
import zipfile
from collections import Counter

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.launch import LaunchError
from coordinator.launch.aws_lambda import LambdaLauncher
from tests.fake_lambda import CREDS, FakeLambda


@pytest.fixture(scope="module")
def endpoint_keys():
    return make_job_keys(hosts=("127.0.0.1",))


def events(n):
    return [{"worker": i, "coordinator": "127.0.0.1:1", "job": "j"} for i in range(n)]


def launcher(fake, endpoint_keys, **kw):
    ctx = ssl.create_default_context(cadata=endpoint_keys.ca_cert)
    opts = {"max_inflight": 16, "deadline": 30, "backoff_base": 0.01, "backoff_cap": 0.1, **kw}
    return LambdaLauncher(
        kw.pop("functions", ["mu-a", "mu-b"]), kw.pop("regions", ["us-east-1", "eu-west-1"]),
        endpoint_url=fake.url, credentials=CREDS, ssl_context=ctx,
        **{k: v for k, v in opts.items() if k not in ("functions", "regions")},
    )  # fmt: skip


def test_every_worker_invoked_once_round_robin_with_throttles_retried(endpoint_keys):
    def script(function, worker, attempt):
        if worker % 5 == 0 and attempt <= 2:
            return 429
        if worker % 7 == 0 and attempt == 1:
            return 500
        return 202

    async def scenario():
        async with FakeLambda(endpoint_keys, script) as fake:
            la = launcher(fake, endpoint_keys)
            await la.launch(events(40))
            await la.close()
            return fake, la

    fake, la = asyncio.run(scenario())
    assert fake.bad_signatures == 0
    assert sorted(s.event["worker"] for s in fake.seen) == list(range(40))  # each exactly once
    assert Counter((s.function, s.region) for s in fake.seen) == {
        (f, r): 10 for f in ("mu-a", "mu-b") for r in ("us-east-1", "eu-west-1")
    }
    assert la.launched == 40 and la.failures() == {}
    assert la.retried == 8 * 2 + 6 - 2  # workers 0,5,...,35 twice; 7,14,21,28 (not 0, 35) once
    assert "40 invoked" in la.report()


def test_missing_function_fails_with_a_clear_message(endpoint_keys):
    def script(function, worker, attempt):
        return 404 if function == "mu-b" else 202

    async def scenario():
        async with FakeLambda(endpoint_keys, script) as fake:
            la = launcher(fake, endpoint_keys, regions=["us-east-1"])
            await la.launch(events(4))
            await la.close()
            return la

    la = asyncio.run(scenario())
    assert la.launched == 2 and sorted(la.failures()) == [1, 3]
    why = la.failures()[1]
    assert "function 'mu-b' in us-east-1: HTTP 404 ResourceNotFoundException" in why
    assert "check --function and --regions" in why
    assert la.running() is None  # Lambda cannot tell; the coordinator relies on --connect-timeout


def test_throttling_past_the_deadline_fails(endpoint_keys):
    async def scenario():
        async with FakeLambda(endpoint_keys, lambda f, w, a: 429) as fake:
            la = launcher(fake, endpoint_keys, deadline=0.3)
            await la.launch(events(2))
            await la.close()
            return la

    la = asyncio.run(scenario())
    assert la.launched == 0 and len(la.failures()) == 2
    assert "when --launch-deadline passed: HTTP 429 TooManyRequestsException" in la.failures()[0]


def test_bad_configuration_is_refused():
    with pytest.raises(LaunchError, match="--function"):
        LambdaLauncher([], ["us-east-1"], credentials=CREDS)
    with pytest.raises(LaunchError, match="bad Lambda endpoint"):
        LambdaLauncher(["f"], ["us-east-1"], endpoint_url="ftp://x", credentials=CREDS)


def test_no_credentials_is_a_clear_error(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(LaunchError, match="no AWS credentials found"):
        LambdaLauncher(["f"], ["us-east-1"])


def test_mu_run_aws_end_to_end_with_spares(endpoint_keys, s3, tmp_path):
    """mu run --backend aws: credentials from the environment, CA bundle and endpoint overrides;
    the fake Lambda starts each accepted event as a real worker; spares are sent home."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)

    async def scenario():
        async with FakeLambda(endpoint_keys, run_workers=True) as fake:
            env = {
                **os.environ, "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
                "AWS_SESSION_TOKEN": CREDS.token, "AWS_CA_BUNDLE": str(bundle),
            }  # fmt: skip
            bucket = "aws-e2e-bucket"
            s3.client().create_bucket(Bucket=bucket)
            from coordinator.local.demo import encode_png, frame_rgb, to_uint16

            for frame in (1, 2, 3, 4):
                s3.client().put_object(Bucket=bucket, Key=f"v-png16/{frame:08d}.png",
                                       Body=encode_png(to_uint16(frame_rgb(frame, 16, 8))))  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "2", "-f", "2", "-v", "v",
                "-b", bucket, "--backend", "aws", "--function", "mu-w1,mu-w2", "--regions", "us-east-1",
                "--lambda-endpoint", fake.url, "--advertise", "127.0.0.1", "--host", "127.0.0.1", "-t", "0",
                "--spares", "1", "--s3-endpoint", s3.endpoint, "--connect-timeout", "60",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode(), fake

    code, out, err, fake = asyncio.run(scenario())
    assert code == 0, err
    assert "all 2 workers finished" in out
    assert "launch: 3 invoked, 0 retried, 0 failed" in err
    assert "spare worker from" in err
    assert sorted(s.event["worker"] for s in fake.seen) == [0, 1, 2]
    assert {s.function for s in fake.seen} == {"mu-w1", "mu-w2"}
    event = fake.seen[0].event
    assert "BEGIN PRIVATE KEY" in event["tls"]["key"] and "server" not in json.dumps(event["tls"]).lower()


def test_invocations_accepted_by_motos_lambda(s3):
    """moto's server mode with a function created there answers 202 to the launcher."""
    iam, lam = s3.client("iam"), s3.client("lambda")
    role = iam.create_role(RoleName="mu-launch-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    config = json.dumps({"lambda": {"use_docker": False}}).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"{s3.endpoint}/moto-api/config", data=config, method="POST")
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    lam.create_function(FunctionName="mu-worker-moto", Runtime="python3.12", Role=role,
                        Handler="handler.handler", Code={"ZipFile": buf.getvalue()})  # fmt: skip

    async def scenario():
        from botocore.credentials import Credentials

        la = LambdaLauncher(["mu-worker-moto"], ["us-east-1"], endpoint_url=s3.endpoint,
                            credentials=Credentials("testing", "testing"))  # fmt: skip
        await la.launch(events(5))
        await la.close()
        return la

    la = asyncio.run(scenario())
    assert la.launched == 5 and la.failures() == {}
