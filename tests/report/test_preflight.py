"""Pre-flight: every bad input is found before any worker starts; --dry-run launches nothing.

"No worker started" is observed from outside: the local launcher makes the worker-log folder
before it starts the first worker process, so that folder must not exist afterwards, and the
coordinator never said it was listening.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.local.locals3 import free_port
from coordinator.preflight import JobIO, PreflightError, run_checks
from tests.fake_lambda import CREDS, FakeLambda
from tests.helpers import scan_input
from tests.report.runs import frames_bucket, local, mu


@pytest.fixture(scope="module")
def bucket(s3):
    return frames_bucket(s3, frames=6)  # png2y4m -f 3: input for two workers


def assert_refused(proc, logs, *phrases, status=1):
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mu: "), proc.stderr  # one line, no usage text
    for phrase in phrases:
        assert phrase in lines[0]
    assert "listening on" not in proc.stderr
    assert not logs.exists(), "a worker was started"


def png2y4m(s3, bucket, logs, *extra, env=None):
    return mu(
        "run",
        "png2y4m",
        "-f",
        "3",
        "-v",
        "clip",
        "-b",
        bucket,
        *local(s3, str(logs)),
        *extra,
        env=env,
    )


def test_missing_bucket(s3, tmp_path):
    logs = tmp_path / "logs"
    assert_refused(
        png2y4m(s3, "no-such-bucket-here", logs), logs, "bucket 'no-such-bucket-here' does not exist"
    )


def test_unknown_video(s3, bucket, tmp_path):
    logs = tmp_path / "logs"
    proc = png2y4m(s3, bucket, logs, "-v", "sintel-typo", "-n", "2")
    assert_refused(
        proc, logs, "6 of 6 input objects are missing", "sintel-typo-png16/00000001.png", "check -v/--video"
    )


def test_more_workers_than_input(s3, bucket, tmp_path):
    logs = tmp_path / "logs"
    proc = png2y4m(s3, bucket, logs, "-n", "3")
    assert_refused(
        proc,
        logs,
        "3 of 9 input objects are missing",
        "clip-png16/00000007.png",
        "-n 3 asks for more than the input holds: it is enough for -n 2",
    )


def test_output_overlapping_the_input(s3, tmp_path):
    data, _ = scan_input(s3, "scan-in/", 2)
    logs = tmp_path / "logs"
    proc = mu(
        "run",
        "scan",
        "-n",
        "2",
        "-b",
        data,
        "--output",
        "scan-in/reports/",
        *local(s3, str(logs)),
    )
    assert_refused(proc, logs, "overlaps the input prefix", f"s3://{data}/scan-in/")
    proc = mu(
        "map",
        "--input",
        f"s3://{data}/scan-in/",
        "--output",
        f"s3://{data}/scan-in/out/",
        "--command",
        "cat ##INFILE## > ##OUTFILE##",
        *local(s3, str(logs)),
    )
    assert_refused(proc, logs, "overlaps the input prefix")


def test_no_credentials(s3, bucket, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    logs = tmp_path / "logs"
    proc = mu(
        "run",
        "png2y4m",
        "-b",
        bucket,
        *local(s3, str(logs)),
        env=env,
    )
    assert_refused(proc, logs, "no AWS credentials found", "AWS_ACCESS_KEY_ID", status=2)  # configuration


def test_unreachable_endpoint(bucket, tmp_path):
    logs = tmp_path / "logs"
    dead = f"http://127.0.0.1:{free_port()}"
    proc = mu("run", "png2y4m", "-b", bucket, "-t", "0", "--s3-endpoint", dead, "--log-dir", str(logs))
    assert_refused(proc, logs, f"cannot reach S3 at {dead}", "--s3-endpoint")


def test_dry_run_prints_the_plan_and_launches_nothing(s3, bucket, tmp_path):
    logs = tmp_path / "logs"
    proc = png2y4m(s3, bucket, logs, "-n", "2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run, nothing launched" in proc.stdout
    assert "workers: 2, local processes" in proc.stdout
    assert f"reads:   6 objects from s3://{bucket}/clip-png16/ (all present" in proc.stdout
    assert f"writes:  2 objects to s3://{bucket}/clip-y4m_03/" in proc.stdout
    assert "actor 1: reads clip-png16/00000004.png .. clip-png16/00000006.png" in proc.stdout
    assert "estimated cost:" in proc.stdout
    assert not logs.exists() and "listening on" not in proc.stderr


def aws_run(s3, bucket, tmp_path, *extra, env=None):
    """png2y4m on the aws backend against a fake Lambda that would run what it is sent."""
    keys = make_job_keys(hosts=("127.0.0.1",))
    bundle = tmp_path / "ca.pem"
    bundle.write_text(keys.ca_cert)

    async def scenario():
        async with FakeLambda(keys, run_workers=True) as fake:
            full = {**os.environ, "AWS_ACCESS_KEY_ID": CREDS.access_key,
                    "AWS_SECRET_ACCESS_KEY": CREDS.secret_key, "AWS_SESSION_TOKEN": CREDS.token,
                    "AWS_CA_BUNDLE": str(bundle)}  # fmt: skip
            full.pop("ECS_CONTAINER_METADATA_URI_V4", None)
            proc = await asyncio.to_thread(
                png2y4m, s3, bucket, tmp_path / "logs", "-n", "2", "--backend", "aws",
                "--function", "mu-worker", "--lambda-endpoint", fake.url, *extra, env=full | (env or {}),
            )  # fmt: skip
            return proc, fake

    return asyncio.run(scenario())


def test_aws_dry_run_invokes_nothing(s3, bucket, tmp_path):
    """A dry run may read Lambda's concurrency settings (a pre-flight check), never invoke."""
    proc, fake = aws_run(s3, bucket, tmp_path, "--dry-run", "--advertise", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    assert fake.seen == []  # no invocation
    assert "workers: 2, Lambda invocations at 3008 MB" in proc.stdout
    assert "workers dial: 127.0.0.1 on a free port (--advertise)" in proc.stdout
    assert "for 2 invocations" in proc.stdout and "per minute the workers run" in proc.stdout
    assert (
        "checked: credentials, the bucket and every input (S3), the worker functions and the account's "
        "Lambda concurrency; not done: opening the port, finding the address, launching"
    ) in proc.stdout


def test_aws_dry_run_without_advertise_prints_the_plan_and_looks_no_address_up(s3, bucket, tmp_path):
    """Outside a task the address cannot be found: the plan says so and warns, exit 0. In a task
    it says the address will be found at launch; task metadata (a dead URL here) is not read."""
    proc, fake = aws_run(s3, bucket, tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "workers dial: unknown: no --advertise, and not in an ECS task" in proc.stdout
    assert "warning: the job itself would stop here: ECS_CONTAINER_METADATA_URI_V4 is not set" in proc.stderr
    assert "--advertise" in proc.stderr and "reads:   6 objects" in proc.stdout
    assert fake.seen == []
    in_task = {"ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{free_port()}/v4/dead"}
    proc, fake = aws_run(s3, bucket, tmp_path, "--dry-run", env=in_task)
    assert proc.returncode == 0, proc.stderr
    assert "workers dial: this Fargate task's public IP on a free port, found from its network" in proc.stdout
    assert "warning" not in proc.stderr and fake.seen == []


def test_aws_run_outside_a_task_without_advertise_stops_before_any_aws_call(s3, bucket, tmp_path):
    proc, fake = aws_run(s3, bucket, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "mu: ECS_CONTAINER_METADATA_URI_V4 is not set, so this is not an ECS task: say which address workers "
        "dial with --advertise"
    )
    assert fake.settings_reads == [] and fake.seen == []


def test_local_workers_far_above_the_cores_warn_and_say_how_to_override():
    found = run_checks(None, region="us-east-1", endpoint=None, backend="local", workers_at_once=64, cores=2)
    assert len(found.warnings) == 1
    assert "64 local worker processes at once on a 2-core machine" in found.warnings[0]
    assert "--concurrency N" in found.warnings[0]
    assert not run_checks(
        None, region="us-east-1", endpoint=None, backend="local", workers_at_once=16, cores=2
    ).warnings
    assert not run_checks(
        None, region="us-east-1", endpoint=None, backend="aws", workers_at_once=5000, cores=2
    ).warnings


def test_warning_through_the_cli(s3, tmp_path):
    cores = os.cpu_count() or 1
    if cores > 8:
        pytest.skip("needs more than 64 inputs to exceed 8 processes per core here")
    n = 8 * cores + 1
    data, _ = scan_input(s3, "scan-in/", n, size=10)
    proc = mu(
        "run",
        "scan",
        "-n",
        str(n),
        "--concurrency",
        str(n),
        "-b",
        data,
        "-t",
        "0",
        "--dry-run",
        "--s3-endpoint",
        s3.endpoint,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {n} local worker processes at once on a {cores}-core machine" in proc.stderr
    assert "--concurrency N" in proc.stderr


def test_overlap_rule_is_by_prefix_and_key(s3):
    data = f"ov-{uuid.uuid4().hex[:10]}"
    other = f"ov-{uuid.uuid4().hex[:10]}"
    for name in (data, other):
        s3.client().create_bucket(Bucket=name)
    for key in ("in/0", "a/0"):
        s3.client().put_object(Bucket=data, Key=key, Body=b"x")

    def check(in_prefix, out_prefix, out_bucket=data):
        io = JobIO(data, in_prefix, [[in_prefix + "0"]], out_bucket, out_prefix, [[out_prefix + "0"]])
        return run_checks(io, region="us-east-1", endpoint=s3.endpoint, backend="local", workers_at_once=1)

    with pytest.raises(PreflightError, match="overlaps the input prefix"):
        check("", "out/")
    with pytest.raises(PreflightError, match="overlaps the input prefix"):
        check("in/", "in/sub/")
    with pytest.raises(PreflightError, match="overwrite its own input"):
        check("a/", "a/")
    assert check("in/", "out/").missing == 0  # sibling prefixes
    assert check("a/", "a/", out_bucket=other).missing == 0  # the same prefix in another bucket


def test_aws_dry_run_lists_only_what_it_could_check(s3, bucket, tmp_path):
    """Lambda's settings unreadable (nothing listens at the endpoint): a warning says so, and the
    plan lists the Lambda checks as not done instead of claiming them."""
    dead = f"http://127.0.0.1:{free_port()}"
    proc, fake = aws_run(
        s3, bucket, tmp_path, "--dry-run", "--advertise", "127.0.0.1", "--lambda-endpoint", dead
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: reading Lambda concurrency in us-east-1" in proc.stderr
    assert (
        "checked: credentials, the bucket and every input (S3); not checked: the worker functions and the "
        "account's Lambda concurrency in us-east-1 (they could not be read: see the warning above); "
        "not done: opening the port, finding the address, launching"
    ) in proc.stdout
    assert fake.seen == []
