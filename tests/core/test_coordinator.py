"""The coordinator end to end: real TLS, real worker processes, S3 on moto's server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import uuid

import pytest

from coordinator.core.job import Job
from coordinator.core.runner import run_job
from coordinator.core.server import ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import SERVER_NAME, make_job_keys, worker_context
from coordinator.jobs import png2y4m
from coordinator.launch.local import LocalLauncher
from coordinator.local.demo import encode_png, frame_rgb, to_uint16, verify_chunk
from lambda_worker.wire import encode
from tests.helpers import scripted_job


def test_png2y4m_through_the_cli(s3, tmp_path):
    bucket, video, frames, workers, w, h = f"mu-{uuid.uuid4().hex[:10]}", "clip", 3, 4, 64, 36
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    offset = 1  # skip the first chunk, as mu's -o does
    for frame in range(1, frames * (workers + offset) + 1):
        png = encode_png(to_uint16(frame_rgb(frame, w, h)))
        client.put_object(Bucket=bucket, Key=png2y4m.input_key(video, "png16", frame), Body=png)
    timing = tmp_path / "timing.json"
    cmd = [
        sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", str(workers), "-f", str(frames),
        "-o", str(offset), "-v", video, "-b", bucket, "-t", "0", "-O", str(timing), "-m", "60",
        "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"all {workers} workers finished" in proc.stdout
    for chunk in range(offset, offset + workers):
        body = client.get_object(Bucket=bucket, Key=png2y4m.output_key(video, frames, chunk))["Body"].read()
        assert verify_chunk(body, chunk, frames, w, h) == []
    log = json.loads(timing.read_text())
    assert len(log["records"]) == workers
    states = [s["state"].split()[0] for s in log["records"][0]["states"]]
    assert states[0] == "PNG2Y4MConfigState" and states[-1] == "FinalState"
    assert states.count("PNG2Y4MRetrieveAndRunState") == frames


def run_local(job: Job, tmp_path, hostile=None, concurrency=None, status_class=Status):
    keys = make_job_keys()
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=30, connect_timeout=60)
    launcher = LocalLauncher(tmp_path / "logs", concurrency=concurrency or job.workers)

    async def scenario():
        status = status_class(job.name, job.workers, tty=False)
        task = asyncio.create_task(run_job(job, launcher, keys, opts, status))
        extra = await hostile(keys) if hostile else None
        return await asyncio.wait_for(task, 120), extra

    return asyncio.run(scenario())


def test_a_killed_worker_is_reported_and_the_job_does_not_hang(tmp_path):
    job = scripted_job(3, good="sleep 0.5", victims=(0,), bad="kill -9 $PPID; sleep 5")
    result, _ = run_local(job, tmp_path)
    assert not result.ok and result.succeeded == 2
    assert list(result.failures) == ["actor 0"]
    why = result.failures["actor 0"]
    assert why.startswith("sock closed (in Scripted (Run one scripted shell command, step 2 of 2)")
    assert "actor 0: sock closed" in result.describe()


class StateFailsForActor1(Status):
    """A progress display with a bug that shows when actor 1 changes state."""

    def state(self, actor, state):
        if actor == 1:
            raise RuntimeError("the display broke")
        super().state(actor, state)


def test_an_exception_in_a_status_call_fails_that_actor_and_the_job_ends(tmp_path):
    job = scripted_job(3, good="sleep 0.3")
    result, _ = asyncio.run(asyncio.wait_for(asyncio.to_thread(
        run_local, job, tmp_path, status_class=StateFailsForActor1), 90))  # fmt: skip
    assert result.succeeded == 2 and list(result.failures) == ["actor 1"]
    assert result.failures["actor 1"].startswith("RuntimeError in the coordinator: the display broke")
    assert result.fault is None


class FinishedLineFails(Status):
    """A display that fails after an actor's outcome is booked: nothing is left to fail."""

    def event(self, text):
        if text.endswith(" finished"):
            raise OSError("display gone")
        super().event(text)


def test_an_exception_after_the_outcome_is_reported_and_changes_no_outcome(tmp_path):
    result, _ = run_local(scripted_job(2), tmp_path, status_class=FinishedLineFails)
    assert result.ok and result.succeeded == 2
    assert result.fault == "OSError while showing how actor 0 ended: display gone" or (
        result.fault == "OSError while showing how actor 1 ended: display gone"
    )
    assert "coordinator fault (no actor's outcome depended on it): OSError" in result.describe()


def test_workers_that_never_connect_end_the_job(tmp_path):
    job = scripted_job(2)
    wrong = make_job_keys()
    keys = make_job_keys()
    # Workers get a CA that does not match the coordinator: they cannot connect and exit.
    keys_for_workers = type(keys)(
        wrong.ca_cert, keys.server_cert, keys.server_key, keys.worker_cert, keys.worker_key
    )
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=30, connect_timeout=60)
    launcher = LocalLauncher(tmp_path / "logs", concurrency=2)

    async def scenario():
        from coordinator.core.server import Coordinator
        from coordinator.core.tls import server_context
        from coordinator.launch import make_events

        coord = Coordinator(job, server_context(keys), opts, Status("x", 2, tty=False))
        port = await coord.start()
        await launcher.launch(make_events(job, "j", f"127.0.0.1:{port}", keys_for_workers, 2))
        result = await asyncio.wait_for(coord.wait(launcher), 60)
        await launcher.close()
        return result

    result = asyncio.run(scenario())
    assert not result.ok and result.succeeded == 0
    assert set(result.failures) == {"actor 0", "actor 1"}
    for why in result.failures.values():
        assert "its worker ended without connecting" in why and "exited with status 1" in why


async def _hostile_clients(keys, port_holder):
    """Garbage over TCP, TLS without a client certificate, and one from another CA."""
    await asyncio.sleep(0.3)
    port = port_holder["port"]
    outcomes = {}
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
    await w.drain()
    outcomes["garbage"] = await asyncio.wait_for(r.read(), 15)
    w.close()

    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(cadata=keys.ca_cert)
    foreign = worker_context(make_job_keys())
    foreign.load_verify_locations(cadata=keys.ca_cert)
    for name, ctx in (("no_cert", no_cert), ("foreign_cert", foreign)):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME)
            w.write(encode(b"OK:HELLO"))
            await w.drain()
            outcomes[name] = await asyncio.wait_for(r.read(), 15)  # TLS 1.3 reports the alert on read
        except (ssl.SSLError, ConnectionError) as exc:
            outcomes[name] = exc
    return outcomes


def test_hostile_connections_are_rejected_while_a_job_completes(tmp_path, monkeypatch):
    # Two workers at a time, four in all: the port stays open while the first two work.
    job = scripted_job(4, good="sleep 3")
    port_holder = {}

    # Learn the port the server picked, so the hostile clients can aim at it.
    from coordinator.core import server as server_mod

    start = server_mod.Coordinator.start

    async def spy_start(self):
        port = await start(self)
        port_holder["port"] = port
        return port

    monkeypatch.setattr(server_mod.Coordinator, "start", spy_start)
    result, outcomes = run_local(
        job, tmp_path, hostile=lambda keys: _hostile_clients(keys, port_holder), concurrency=2
    )
    assert result.ok, result.describe()
    assert result.succeeded == 4 and result.rejected == 3
    assert outcomes["garbage"] == b""  # closed without a reply
    for name in ("no_cert", "foreign_cert"):
        assert isinstance(outcomes[name], (ssl.SSLError, ConnectionError)) or outcomes[name] == b"", name


def test_cli_usage_errors():
    def mu(*args):
        return subprocess.run([sys.executable, "-m", "coordinator", *args], capture_output=True, text=True)

    bad = mu("run", "png2y4m", "-b", "bkt", "-n", "0")
    assert bad.returncode == 2 and "--workers must be at least 1" in bad.stderr
    missing = mu("run", "png2y4m")
    assert missing.returncode == 2 and "-b/--bucket" in missing.stderr
    aws = mu("run", "png2y4m", "-b", "bkt", "--backend", "aws", "--function", "")
    assert aws.returncode == 2 and "name at least one worker function with --function" in aws.stderr
    no_addr = mu(
        "run",
        "png2y4m",
        "-b",
        "x",
        "--backend",
        "aws",
        "--function",
        "f",
        "--lambda-endpoint",
        "http://127.0.0.1:9",
    )
    assert no_addr.returncode == 2 and "--advertise" in no_addr.stderr

    unknown = mu("frobnicate")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
    killtime = mu("run", "png2y4m", "-b", "bkt", "-m", "-1")
    assert killtime.returncode == 2 and "must be greater than 0" in killtime.stderr


MAP = ["map", "--input", "s3://bkt/i/", "--output", "s3://bkt/o/", "--command", "true"]
FOUND_AFTER_PARSING = [
    (["run", "png2y4m", "-b", "bkt", "-n", "0"], "mu run png2y4m", "--workers must be at least 1"),
    (["run", "png2y4m", "-b", "bkt", "-f", "0"], "mu run png2y4m", "--frames must be at least 1"),
    (["run", "scan", "-b", "bkt", "-n", "5", "--max-workers", "2"], "mu run scan",
     "more than --max-workers 2"),
    ([*MAP[:2], "frames/x", *MAP[3:]], "mu map", "--input must look like s3://BUCKET/PREFIX/"),
    (["run", "png2y4m", "-b", "bkt", "--backend", "aws"], "mu run png2y4m", "name at least one worker"),
    (["run", "png2y4m", "-b", "bkt", "-O", "/nonexistent/t.json"], "mu run png2y4m",
     "-O /nonexistent/t.json: the folder /nonexistent does not exist; create it, or name a file"),
    (["run", "scan", "-b", "bkt", "-P", "/etc/hostname/p.out"], "mu run scan",
     "-P /etc/hostname/p.out: /etc/hostname is not a folder"),
    ([*MAP, "-O", "/"], "mu map", "-O /: / is a folder; name a file"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "usage", "error"), FOUND_AFTER_PARSING)
def test_usage_errors_found_after_parsing_show_the_subcommands_usage(args, usage, error):
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"usage: {usage} [-h]"), proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith(f"{usage}: error: ")]
    assert error in line
    assert "listening on" not in proc.stderr  # found before anything started


def test_a_timing_log_that_fails_at_the_end_is_named_once_where_it_went(s3, tmp_path):
    """-O /dev/full passes the check (a writable file) but every write to it fails."""
    from tests.report.runs import frames_bucket

    bucket = frames_bucket(s3, frames=2)
    cmd = [sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "2", "-f", "1", "-v", "clip",
           "-b", bucket, "-t", "0", "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / "l"),
           "-O", "/dev/full"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    (fallback,) = tmp_path.glob("mu-timing-*.json")
    assert "mu: warning: cannot write the timing log to /dev/full: No space left on device" in proc.stderr
    assert f"mu: warning: the timing log is in {fallback} instead" in proc.stderr
    assert (proc.stdout + proc.stderr).count("timing log: ") == 1
    assert f"timing log: {fallback} (see 'mu report {fallback} --png timeline.png')" in proc.stdout
    assert json.loads(fallback.read_text())["job"] == "png2y4m"


def test_a_timing_log_is_named_once(s3, tmp_path):
    from tests.report.runs import frames_bucket

    bucket, log = frames_bucket(s3, frames=1), tmp_path / "t.json"
    cmd = [sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "1", "-f", "1", "-v", "clip",
           "-b", bucket, "-t", "0", "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / "l"),
           "-O", str(log), "-P", str(tmp_path / "p.out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("timing log: ") == 1 and f"timing log: {log} (see" in proc.stdout
    assert log.exists() and (tmp_path / "p.out").stat().st_size > 0


def test_port_in_use_is_a_clear_error(tmp_path, s3):
    bucket = f"mu-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    for frame in range(1, 7):  # what the pre-flight check wants to see: one chunk of 6 frames
        s3.client().put_object(Bucket=bucket, Key=png2y4m.input_key("sintel-1k", "png16", frame), Body=b"")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "coordinator", "run", "png2y4m", "-b", bucket, "-t", str(port),
             "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / "logs")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr


@pytest.mark.parametrize("workers", [1])
def test_png2y4m_job_options_validate(workers):
    import argparse

    ns = argparse.Namespace(
        workers=workers,
        frames=0,
        offset=0,
        video="v",
        bucket="b",
        in_format="png16",
        region="r",
        s3_endpoint=None,
    )
    with pytest.raises(ValueError, match="--frames must be at least 1"):
        png2y4m.make_job(ns)
