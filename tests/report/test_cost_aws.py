"""Every job on the aws backend ends with a cost estimate, and ``mu report`` shows it."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.report.cost import DEFAULT_PRICES
from tests.fake_lambda import CREDS, FakeLambda
from tests.report.runs import frames_bucket, mu


def test_aws_run_ends_with_a_cost_estimate_and_report_shows_it(s3, tmp_path):
    endpoint_keys = make_job_keys(hosts=("127.0.0.1",))
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)
    bucket = frames_bucket(s3, frames=4)
    log = tmp_path / "timing.json"

    async def scenario():
        async with FakeLambda(endpoint_keys, run_workers=True) as fake:
            env = {
                **os.environ,
                "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
                "AWS_SESSION_TOKEN": CREDS.token,
                "AWS_CA_BUNDLE": str(bundle),
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "coordinator",
                "run",
                "png2y4m",
                "-n",
                "2",
                "-f",
                "2",
                "-v",
                "clip",
                "-b",
                bucket,
                "--backend",
                "aws",
                "--function",
                "mu-worker",
                "--lambda-endpoint",
                fake.url,
                "--advertise",
                "127.0.0.1",
                "--host",
                "127.0.0.1",
                "-t",
                "0",
                "--s3-endpoint",
                s3.endpoint,
                "--worker-memory",
                "1024",
                "--worker-arch",
                "arm64",
                "-O",
                str(log),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode()

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    assert "estimated cost: $" in out and "Lambda compute $" in out and "S3 requests $" in out
    assert "worker logs: CloudWatch Logs of mu-worker" in out
    doc = json.loads(log.read_text())
    inputs = doc["cost_inputs"]
    assert doc["backend"] == "aws" and inputs["invocations"] == 2 and inputs["lambda_memory_mb"] == 1024
    assert inputs["s3_get"] == 4 and inputs["s3_put"] == 2 and inputs["s3_list"] == 1
    assert 0 < inputs["lambda_seconds"] < 120 and inputs["coordinator_seconds"] >= doc["elapsed"]
    # Lambda bills each worker from its invocation, not from when it reached the coordinator,
    # in whole milliseconds.
    records = doc["records"]
    assert len(records) == 2 and all(r["launch"]["accepted"] is not None for r in records)
    billed = sum(math.ceil(round((r["ended"] - r["launch"]["accepted"]) * 1000, 6)) for r in records) / 1000
    assert inputs["lambda_seconds"] == pytest.approx(billed, abs=1e-9)
    assert inputs["lambda_seconds"] > sum(r["ended"] - r["connected"] for r in records)
    lines = {line["what"]: line["usd"] for line in doc["cost"]["lines"]}
    gb_s = inputs["lambda_seconds"] * 1024 / 1024
    assert inputs["lambda_arch"] == "arm64"
    assert abs(lines["Lambda compute"] - gb_s * DEFAULT_PRICES["lambda_gb_second_arm64"]) < 1e-6
    # The coordinator ran here, not in an ECS task: no Fargate.
    assert inputs["coordinator_on_fargate"] is False and lines["coordinator task"] == 0
    assert doc["cost"]["prices_date"]

    shown = mu("report", str(log))
    assert shown.returncode == 0, shown.stderr
    assert "Estimated cost (us-east-1 list prices of" in shown.stdout and "total" in shown.stdout
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"lambda_request": 1.0}))  # a dollar a request: the total shows it
    dear = mu("report", str(log), "--prices", str(prices))
    assert "Estimated cost (your prices)" in dear.stdout and "$2.00" in dear.stdout
