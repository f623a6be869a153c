"""How a program that uses mu ends: what a failed call says about its worker's log, which logs
are kept, what a Ctrl-C leaves behind (nothing), and mu pymap's line when it is interrupted.

Each runs a real program (a script, or ``mu pymap``) with its own ``$TMPDIR`` and a marker in
its environment, so that every folder and process it leaves can be found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT
from tests.resilience.chaos import processes_with_env

FAILING = """
import json, sys
import mu
from tests.pymap import funcs

how = sys.argv[1]
if how == "executor":
    with mu.Executor(1) as ex:
        future = ex.call_async(funcs.loud_exit, 3)
        future.exception(timeout=60)
    logs = ex.worker_logs
elif how == "call_async":  # what it printed is in its log, but it printed nothing
    future = mu.call_async(funcs.misbehave, 1)
    logs = None
else:
    future = mu.map(funcs.misbehave, [3], workers=1, timeout=1)[0]
    logs = None
exc = future.exception(timeout=60)
print(json.dumps({"type": type(exc).__name__, "message": str(exc), "worker_logs": logs}))
"""


def run_script(script: str, tmp_path, *args: str, marker: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "MU_TEST_MARK": marker}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def nothing_left(tmp_path, marker: str) -> None:
    """No process of the run (its workers end with it; give the kernel a moment), no folder."""
    for _ in range(50):
        if not processes_with_env("MU_TEST_MARK", marker):
            break
        time.sleep(0.1)
    assert processes_with_env("MU_TEST_MARK", marker) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_call_whose_worker_printed_names_its_log_which_is_kept(tmp_path):
    marker = uuid.uuid4().hex
    proc = run_script(FAILING, tmp_path, "executor", marker=marker)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = json.loads(out)
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("mu-logs-") and got["worker_logs"] == str(folder)
    assert got["type"] == "CallError"
    assert got["message"].endswith(f"its worker's log: {folder / 'worker-0.log'}")
    assert "leaving with status 3" in (folder / "worker-0.log").read_text()


@pytest.mark.parametrize(("how", "error"), [("call_async", "CallError"), ("map", "CallTimeoutError")])
def test_a_failed_call_with_nothing_in_its_log_leaves_no_folder_and_names_none(tmp_path, how, error):
    """os._exit, and a call stopped at its timeout: the log holds only the worker's summary."""
    marker = uuid.uuid4().hex
    proc = run_script(FAILING, tmp_path, how, marker=marker)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = json.loads(out)
    assert got["type"] == error and "log" not in got["message"]
    nothing_left(tmp_path, marker)


WAITING = """
import sys, time
import mu

futures = mu.map(time.sleep, [60, 60, 60], workers=2)
print("waiting", flush=True)
futures.results()
"""


def a_call_runs(marker: str) -> None:
    """Until a call's process runs: a call runner's child (the runner forks one per call)."""

    def command(pid: int | str) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read()
        except OSError:
            return b""

    def parent(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            return "0"

    for _ in range(600):
        for pid in processes_with_env("MU_TEST_MARK", marker):
            if b"pycall.runner" in command(pid) and b"pycall.runner" in command(parent(pid)):
                return
        time.sleep(0.1)
    raise AssertionError("no call started within 60 s")


def test_ctrl_c_in_results_shows_the_keyboard_interrupt_alone_and_leaves_nothing(tmp_path):
    """Two SIGINTs at once, as ``timeout -s INT`` sends them (to the process, then its group):
    the second, still pending when the program exits, does not cut its workers' stop short."""
    marker = uuid.uuid4().hex
    proc = run_script(WAITING, tmp_path, marker=marker)
    assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
    a_call_runs(marker)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT, err
    assert err.count("Traceback") == 1 and err.rstrip().endswith("KeyboardInterrupt"), err
    assert "Exception ignored" not in err
    nothing_left(tmp_path, marker)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_mu_pymap_interrupted_says_what_mu_run_says_and_leaves_nothing(tmp_path, sig):
    marker = uuid.uuid4().hex
    items = tmp_path / "items.jsonl"
    items.write_text("60\n60\n60\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "TMPDIR": str(out), "MU_TEST_MARK": marker}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "pymap", "time:sleep", "--items", str(items), "-n", "2",
         "-t", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    connected = 0
    while connected < 2:  # both seats have their worker: "2 running"
        line = proc.stderr.readline()
        assert line, "mu pymap ended before its workers connected"
        connected += " connected from " in line
    a_call_runs(marker)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "interrupted: 0 done, 2 running, 0 not started" in err
    assert "Traceback" not in err and "calls:" not in err
    nothing_left(out, marker)
