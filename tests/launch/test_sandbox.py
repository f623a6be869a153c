"""Local workers in bubblewrap: real jobs, real sandboxes, checked from the host through /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from coordinator.core.runner import run_job
from coordinator.core.server import JobResult, ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import make_job_keys
from coordinator.launch.local import QUIT_GRACE, LocalLauncher
from coordinator.launch.sandbox import NoSandbox, Sandbox, SandboxError
from coordinator.local.demo import encode_png, frame_rgb, to_uint16
from tests.helpers import scripted_job
from tests.resilience.chaos import (
    MarkedMu,
    alive,
    descendants,
    processes_with,
    processes_with_env,
    worker_pids,
)

SHARED = "/mnt/out"  # a host folder shared into every sandbox, for the commands' findings


def run(job, tmp_path, isolation=None, during=None) -> JobResult:
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=60, connect_timeout=60)
    launcher = LocalLauncher(tmp_path / "logs", concurrency=job.workers, isolation=isolation)

    async def scenario():
        task = asyncio.create_task(run_job(job, launcher, make_job_keys(), opts, Status("t", 1, tty=False)))
        if during is not None:
            await during(task, launcher)
        return await asyncio.wait_for(task, 120)

    return asyncio.run(scenario())


def marker() -> str:
    """A sleep duration no other process on the machine uses, to find ours in /proc."""
    return f"{random.randint(300, 399)}.{random.randint(10**6, 10**7 - 1)}"


def test_each_worker_has_a_private_tmp_and_rm_rf_tmp_touches_only_its_own(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="mu-sentinel-") as sentinel:
        # Every worker leaves a file in /tmp, waits until all three have, lists /tmp, wipes it
        # as mu jobs do (`rm -rf /tmp/*`), and lists it again.
        cmd = (
            f"me=$(hostname); touch /tmp/own-$me; touch {SHARED}/ready-$me; "
            f"for i in $(seq 300); do [ $(ls {SHARED} | grep -c ready-) -ge 3 ] && break; sleep 0.05; done; "
            f"ls -A /tmp > {SHARED}/before-$me; rm -rf /tmp/*; ls -A /tmp > {SHARED}/after-$me"
        )
        result = run(scripted_job(3, good=cmd), tmp_path, Sandbox(shared={SHARED: out}))
        assert result.ok, result.describe()
        assert Path(sentinel.name).exists()  # the host's /tmp is untouched
    names = sorted(p.name.removeprefix("before-") for p in out.glob("before-*"))
    assert len(names) == 3
    for me in names:
        before = (out / f"before-{me}").read_text().split()
        assert f"own-{me}" in before
        assert [f for f in before if f.startswith("own-")] == [f"own-{me}"]  # nobody else's
        assert len([f for f in before if f.startswith("mu-")]) <= 1  # the worker's ##TMPDIR##
        assert [f for f in before if not f.startswith(("own-", "mu-"))] == []  # nothing of the host
        assert (out / f"after-{me}").read_text().split() == []
    assert not list(Path("/tmp").glob("own-mu-worker-*"))


def test_commands_cannot_read_aws_keys_through_proc(tmp_path, monkeypatch):
    """Issue 12: a run: command gets no AWS keys, and cannot take them from /proc either: the
    worker (its parent) is undumpable, so its environ and memory are closed to it, and no
    process of the sandbox (bwrap's init included) was started with the keys in its
    environment: the launcher hands them to the worker on stdin."""
    out = tmp_path / "out"
    out.mkdir()
    secret = f"mu-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", f"{secret}-token")
    (out / "needle").write_text(secret)  # not in the command line, which /proc shows too
    cmd = (
        f"for f in /proc/$PPID/environ /proc/self/../$PPID/environ /proc/$PPID/task/$PPID/environ "
        f"/proc/$PPID/mem; do head -c 1 $f >/dev/null 2>> {SHARED}/denied && echo $f >> {SHARED}/read; done; "
        f"{{ env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline; }} 2>/dev/null | tr '\\0' '\\n' "
        f"| grep -c -F -f {SHARED}/needle > {SHARED}/found; "
        f"echo $PPID $(ls -d /proc/[0-9]* | wc -l) > {SHARED}/seen"
    )
    result = run(scripted_job(1, good=cmd), tmp_path, Sandbox(shared={SHARED: out}))
    assert result.ok, result.describe()
    assert not (out / "read").exists(), (out / "read").read_text()
    denied = (out / "denied").read_text().splitlines()
    assert len(denied) == 4 and all(line.endswith("Permission denied") for line in denied), denied
    assert (out / "found").read_text().strip() == "0"
    ppid, processes = map(int, (out / "seen").read_text().split())
    assert ppid == 2 and processes >= 4  # it looked at the worker, bwrap's init and itself


def test_bundled_binaries_run_from_the_working_directory(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "frame.png").write_bytes(encode_png(to_uint16(frame_rgb(1, 32, 16))))
    cmd = (
        "pwd > /mnt/in/pwd; echo $MU_BIN_DIR >> /mnt/in/pwd; "
        "./png2y4m -o /tmp/f.y4m /mnt/in/frame.png && head -c 9 /tmp/f.y4m > /mnt/in/result"
    )
    result = run(scripted_job(1, good=cmd), tmp_path, Sandbox(shared={"/mnt/in": inputs}))
    assert result.ok, result.describe()
    assert (inputs / "pwd").read_text().split() == ["/var/task", "/var/task"]
    assert (inputs / "result").read_bytes() == b"YUV4MPEG2"


def test_the_sandbox_is_read_only_outside_tmp_and_hides_the_host(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    probes = {
        "task": "touch /var/task/x",
        "code": "touch /opt/mu/lambda_worker/x",
        "usr": "touch /usr/x",
        "checkout": f"ls {Path(__file__).resolve().parents[2]}",
        "host_tmp": f"ls {tmp_path}",
        "shadow": "cat /etc/shadow",
    }
    cmd = "; ".join(
        f"{{ {probe}; }} >/dev/null 2>&1; echo $? > {SHARED}/{name}" for name, probe in probes.items()
    )
    result = run(scripted_job(1, good=cmd), tmp_path, Sandbox(shared={SHARED: out}))
    assert result.ok, result.describe()
    refused = {name: (out / name).read_text().strip() != "0" for name in probes}
    assert refused == dict.fromkeys(probes, True)


def test_a_worker_killed_mid_run_leaves_no_process_behind(tmp_path):
    mark = marker()
    # The command starts children three ways, one of them a daemon that leaves the tree.
    cmd = f"sleep {mark} & setsid sleep {mark} & (sleep {mark} &); sleep {mark}"

    sandbox: list[int] = []

    async def kill_the_worker(task, launcher):
        end = time.monotonic() + 60
        while len(processes_with(f"sleep {mark}")) < 5:  # the shell and its four sleeps
            assert time.monotonic() < end and not task.done(), "the command never started"
            await asyncio.sleep(0.05)
        monitor = launcher._procs[0].pid  # bwrap, outside the sandbox
        [worker] = worker_pids(monitor)
        sandbox.extend(descendants(monitor))
        os.kill(worker, signal.SIGKILL)

    result = run(scripted_job(1, good=cmd), tmp_path, during=kill_the_worker)
    assert not result.ok and "sock closed" in result.failures["actor 0"]
    assert processes_with(f"sleep {mark}") == []
    assert len(sandbox) >= 6 and [p for p in sandbox if alive(p)] == []


def test_a_job_past_its_deadline_kills_its_workers_without_a_grace(tmp_path):
    """Workers busy in a long command when --deadline passes are killed at once: the launcher
    is closed with no grace for them to quit on their own (it once waited 5 s first)."""
    mark = marker()
    graces: list[float] = []

    class Recording(LocalLauncher):
        async def close(self, grace: float = QUIT_GRACE) -> None:
            graces.append(grace)
            await super().close(grace)

    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=60, connect_timeout=60, deadline=2)
    launcher = Recording(tmp_path / "logs", concurrency=2)
    job = scripted_job(2, good=f"sleep {mark}")
    result = asyncio.run(
        asyncio.wait_for(run_job(job, launcher, make_job_keys(), opts, Status("t", 2, tty=False)), 120)
    )
    assert not result.ok and graces == [0]
    assert processes_with(f"sleep {mark}") == []


def test_a_worker_that_ends_takes_its_daemons_with_it(tmp_path):
    mark = marker()
    result = run(scripted_job(2, good=f"setsid sleep {mark} > /dev/null 2>&1 < /dev/null &"), tmp_path)
    assert result.ok, result.describe()
    assert processes_with(f"sleep {mark}") == []


def running(program: str, mark: str) -> list[int]:
    """Processes running ``program`` (its argv[0]) with ``mark`` among its arguments."""
    found = []
    for pid in processes_with(mark):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == program.encode():
                found.append(pid)
    return found


def test_killing_mu_itself_leaves_nothing_of_the_job(tmp_path, s3):
    mark = marker()
    bucket = f"die-{random.randint(0, 10**9)}"
    s3.client().create_bucket(Bucket=bucket)
    for i in range(2):
        s3.client().put_object(Bucket=bucket, Key=f"in/{i}", Body=b"x")
    mu = MarkedMu(tmp_path, "map", "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out/",
                  "--command", f"sleep {mark}", "-t", "0", "--s3-endpoint", s3.endpoint)  # fmt: skip
    mu.wait_for(lambda: len(running("sleep", mark)) == 2, 60, "both commands to run")
    mu.proc.kill()
    mu.finish()
    end = time.monotonic() + 10
    while mu.leftovers() and time.monotonic() < end:
        time.sleep(0.05)
    assert mu.leftovers() == []
    # Nothing could remove the log folder: it stays, as the README says, with the workers' logs.
    [kept] = mu.tmpdir.glob("mu-logs-*")
    assert sorted(p.name for p in kept.iterdir()) == ["worker-0.log", "worker-1.log"]


def test_die_with_parent_ends_a_sandbox_whose_launcher_dies(tmp_path):
    """A worker still waiting for its event (its stdin open, held by this test) can only end
    through --die-with-parent when the process that started its sandbox is killed."""
    mark = uuid.uuid4().hex
    read_end, write_end = os.pipe()
    starter = (
        "import os, subprocess, sys, time\n"
        "from coordinator.launch.sandbox import Sandbox\n"
        "argv, env = Sandbox().command(0, os.environ)\n"
        "subprocess.Popen(argv, env=env, stdin=int(sys.argv[1]), pass_fds=(int(sys.argv[1]),))\n"
        "time.sleep(600)\n"
    )
    try:
        launcher = subprocess.Popen([sys.executable, "-c", starter, str(read_end)], pass_fds=(read_end,),
                                    env={**os.environ, "MU_TEST_MARK": mark})  # fmt: skip
        os.close(read_end)
        end = time.monotonic() + 60
        while not [p for p in processes_with_env("MU_TEST_MARK", mark) if p in worker_pids(launcher.pid)]:
            assert time.monotonic() < end and launcher.poll() is None, "the worker never started"
            time.sleep(0.05)
        sandbox = [p for p in processes_with_env("MU_TEST_MARK", mark) if p != launcher.pid]
        assert len(sandbox) >= 3  # bwrap's monitor, the sandbox's init, the worker
        launcher.kill()
        launcher.wait()
        end = time.monotonic() + 10
        while processes_with_env("MU_TEST_MARK", mark) and time.monotonic() < end:
            time.sleep(0.05)
        assert processes_with_env("MU_TEST_MARK", mark) == []
    finally:
        os.close(write_end)


def test_without_a_sandbox_a_killed_worker_still_takes_its_commands(tmp_path):
    mark = marker()
    isolation = NoSandbox()

    async def kill_the_job(task, launcher):
        end = time.monotonic() + 60
        while len(processes_with(f"sleep {mark}")) < 2:
            assert time.monotonic() < end and not task.done(), "the command never started"
            await asyncio.sleep(0.05)
        task.cancel()

    with pytest.raises(asyncio.CancelledError):
        run(scripted_job(1, good=f"sleep {mark} & sleep {mark}"), tmp_path, isolation, kill_the_job)
    left = processes_with(f"sleep {mark}")
    assert left == [], [Path(f"/proc/{p}/stat").read_text() for p in left]
    assert isolation._scratch is None  # its scratch TMPDIR is gone


def test_no_bwrap_is_a_clear_refusal(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxError, match=r"not installed.*apt-get install bubblewrap.*no-sandbox"):
        Sandbox()


def test_a_sandbox_that_cannot_start_is_a_clear_refusal(tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxError, match=r"No permissions.*user namespaces.*--no-sandbox"):
        Sandbox(bwrap=str(fake))


def test_mu_refuses_local_jobs_without_a_sandbox_unless_told(tmp_path, s3):
    bucket = f"nobwrap-{random.randint(0, 10**9)}"
    s3.client().create_bucket(Bucket=bucket)
    s3.client().put_object(Bucket=bucket, Key="in/0", Body=b"x")
    env = {**os.environ, "PATH": str(tmp_path), "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "coordinator", "map", "--input", f"s3://{bucket}/in/", "--output",
           f"s3://{bucket}/out/", "--command", "echo done > ##OUTFILE##", "-t", "0",
           "--s3-endpoint", s3.endpoint]  # fmt: skip
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "'bwrap' is not installed" in refused.stderr and "--no-sandbox" in refused.stderr
    assert "Traceback" not in refused.stderr
    unisolated = subprocess.run([*cmd, "--no-sandbox"], env=env, capture_output=True, text=True, timeout=120)
    assert unisolated.returncode == 0, unisolated.stderr
    assert "--no-sandbox: local workers share this machine's /tmp" in unisolated.stderr
    assert s3.client().get_object(Bucket=bucket, Key="out/00000000")["Body"].read() == b"done\n"
    assert list(tmp_path.iterdir()) == []  # no log folder, no scratch folder left
