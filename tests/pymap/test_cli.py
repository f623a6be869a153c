"""``mu pymap MODULE:FUNCTION --items FILE.jsonl``: local workers, and Lambda through the fake endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from coordinator.core.tls import make_job_keys
from tests.conftest import ROOT
from tests.fake_lambda import CREDS, FakeLambda


@pytest.fixture(scope="module")
def endpoint_keys():
    """Keys for the fake Lambda endpoint's HTTPS (a certificate naming 127.0.0.1)."""
    return make_job_keys(hosts=("127.0.0.1",))


def mu(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "pymap", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def items_file(tmp_path, *lines: str):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def results(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_results_are_json_lines_in_item_order(tmp_path):
    items = items_file(tmp_path, "1", "", "[2, 3]", '{"a": 4, "c": 5}')
    proc = mu("tests.pymap.funcs:add", "--items", items, "-n", "2", "-t", "0", "--log-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert results(proc.stdout) == [
        {"item": 0, "result": 1},
        {"item": 1, "result": 5},
        {"item": 2, "result": 9},
    ]
    assert "3 calls: 3 returned, 0 failed" in proc.stderr


def test_a_failed_call_is_a_json_error_line_and_exit_1(tmp_path):
    items = items_file(tmp_path, "2", "3", "4")
    out = tmp_path / "out.jsonl"
    proc = mu(
        "tests/pymap/funcs.py:oops",
        "--items",
        items,
        "-n",
        "1",
        "-t",
        "0",
        "-o",
        str(out),
        "--log-dir",
        str(tmp_path),
    )
    assert proc.returncode == 1, proc.stderr
    got = results(out.read_text())
    assert got[0] == {"item": 0, "result": 2} and got[2] == {"item": 2, "result": 4}
    assert got[1] == {"item": 1, "error": {"type": "OopsError", "message": "item 3 is bad"}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.pymap.funcs"], "name the function as MODULE:FUNCTION"),
        (["tests.pymap.nowhere:f"], "cannot import tests.pymap.nowhere"),
        (["tests.pymap.funcs:nothing"], "tests.pymap.funcs has no nothing"),
        (["tests.pymap.funcs:add", "-m", "5"], "-m/--kill-time does not apply to mu pymap: --timeout"),
    ],
)
def test_usage_errors_exit_2_before_anything_starts(tmp_path, args, message):
    proc = mu(*args, "--items", items_file(tmp_path, "1"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "usage: mu pymap" in proc.stderr


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("nowhere/r.jsonl", "the folder {tmp}/nowhere does not exist; create it, or name a file in an"),
        ("adir", "{tmp}/adir is a folder; name a file"),
    ],
)
def test_an_output_that_cannot_be_written_is_a_usage_error_before_any_call_runs(tmp_path, where, problem):
    (tmp_path / "adir").mkdir()
    proc = mu("tests.pymap.funcs:square", "--items", items_file(tmp_path, "1", "2"), "-n", "1",
              "-o", str(tmp_path / where))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "usage: mu pymap" in proc.stderr
    assert f"-o {tmp_path / where}: {problem.format(tmp=tmp_path)}" in proc.stderr
    assert "calls:" not in proc.stderr  # nothing ran: the summary of the calls never came


def test_a_bad_items_line_is_named(tmp_path):
    proc = mu("tests.pymap.funcs:add", "--items", items_file(tmp_path, "1", "{nope"))
    assert proc.returncode == 2 and "line 2 is not JSON" in proc.stderr


def test_dry_run_checks_everything_and_launches_nothing(tmp_path):
    proc = mu("tests.pymap.funcs:add", "--items", items_file(tmp_path, "1", "2"), "-n", "3", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would run 2 calls of tests.pymap.funcs:add on 3 workers: local processes" in proc.stdout


def aws_pymap(
    tmp_path, s3, endpoint_keys, runtime: str, *args: str, architecture: str = "x86_64"
) -> tuple[subprocess.CompletedProcess, FakeLambda]:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": CREDS.access_key,
        "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
        "AWS_SESSION_TOKEN": CREDS.token,
        "AWS_CA_BUNDLE": str(bundle),
    }

    async def scenario():
        fake_lambda = FakeLambda(endpoint_keys, run_workers=True, runtime=runtime, architecture=architecture)
        async with fake_lambda as fake:
            proc = await asyncio.to_thread(
                mu,
                "tests.pymap.funcs:square",
                "--items",
                items_file(tmp_path, *map(str, range(6))),
                "--backend",
                "aws",
                "--function",
                "mu-w1",
                "--regions",
                "us-east-1",
                "--lambda-endpoint",
                fake.url,
                "--advertise",
                "127.0.0.1",
                "--host",
                "127.0.0.1",
                "-t",
                "0",
                "-n",
                "2",
                "--s3-endpoint",
                s3.endpoint,
                "--connect-timeout",
                "60",
                *args,
                env=env,
            )
            return proc, fake

    return asyncio.run(scenario())


def test_lambda_workers_run_the_calls_for_the_functions_runtime(tmp_path, s3, endpoint_keys):
    here = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    log = tmp_path / "timing.json"
    proc, fake = aws_pymap(tmp_path, s3, endpoint_keys, here, "-O", str(log), architecture="arm64")
    assert proc.returncode == 0, proc.stderr
    assert [r["result"] for r in results(proc.stdout)] == [i * i for i in range(6)]
    assert ("GetFunctionConfiguration", "us-east-1") in fake.settings_reads  # read before launching
    assert len(fake.seen) == 2 and all("pymap" in s.event for s in fake.seen)
    # The cost estimate prices the function the configuration describes: 3008 MB of arm64.
    inputs = json.loads(log.read_text())["cost_inputs"]
    assert (inputs["lambda_memory_mb"], inputs["lambda_arch"]) == (3008, "arm64")


def test_lambda_workers_that_run_another_python_are_refused_and_every_call_says_why(
    tmp_path, s3, endpoint_keys
):
    # The function says python3.12 while the workers behind it (this machine's) run another
    # version: the function goes by reference, and the workers' INFO:python gives them away.
    if sys.version_info[:2] == (3, 12):
        pytest.skip("needs the tests to run on a Python other than 3.12")
    proc, _ = aws_pymap(tmp_path, s3, endpoint_keys, "python3.12", "--connect-timeout", "10")
    assert proc.returncode == 1, proc.stderr
    errors = [r["error"]["message"] for r in results(proc.stdout)]
    assert len(errors) == 6 and all("prepared for Python 3.12" in e for e in errors)
    assert "worker refused: the worker runs Python 3." in proc.stderr
