"""The progress display under a pseudo-terminal, and plain lines without one."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from coordinator.core.status import Status
from tests.helpers import scan_input
from tests.report.runs import frames_bucket, local, mu

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a 120x40 pseudo-terminal; return its status
    and everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


SCRIPT = r"""
import time
from coordinator.core.status import Status
from coordinator.jobs.map import MapFetchState, MapRunState, MapUploadState

class Unnamed:
    '''Waiting for the relay to hand over the state.

    More words that are not shown.'''

status = Status("map", 4)
status.event("listening; launching 4 workers")
for actor in range(4):
    status.connected += 1
status.state(0, MapFetchState)
status.state(1, MapRunState)
status.state(2, MapUploadState)
status.state(3, Unnamed())
time.sleep(0.8)
status.states.pop(2)
status.done += 1
status.event("actor 2 finished")
time.sleep(0.8)
status.close()
status.event("after the display")
"""


def test_display_under_a_terminal_shows_counts_rate_eta_and_human_state_names():
    code, screen = run_in_pty([sys.executable, "-c", SCRIPT], timeout=60)
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn in place, with cursor movement
    text = ANSI.sub("", screen)
    assert "mu map" in text and "━" in text  # rich's bar
    assert "4 connected, 4 running, 0 done, 0 failed" in text
    assert "4 connected, 3 running, 1 done, 0 failed" in text
    assert "1/4 actors finished" in text and "ETA" in text
    assert re.search(r"\d+\.\d/s", text)  # the rate
    for name in (
        "fetching the chunk",
        "running the command",
        "uploading the output",
        "Waiting for the relay to hand over the state",
    ):
        assert f"{name}: 1" in text, name
    assert "MapFetchState" not in text and "More words" not in text
    assert "listening; launching 4 workers" in text and "actor 2 finished" in text
    assert "after the display" in text


def test_a_real_run_under_a_terminal(s3, tmp_path):
    bucket, _ = scan_input(s3, "scan-in/", 3)
    code, screen = run_in_pty(
        [
            sys.executable,
            "-m",
            "coordinator",
            "run",
            "scan",
            "-n",
            "3",
            "-b",
            bucket,
            *local(s3, str(tmp_path / "l")),
        ]
    )
    assert code == 0, screen
    text = ANSI.sub("", screen)
    assert "━" in text and "3/3 actors finished" in text
    assert "3 connected, 0 running, 3 done, 0 failed" in text
    assert "all 3 workers finished" in text and "wrote 3 objects" in text


def test_without_a_terminal_one_plain_line_per_event(s3, tmp_path):
    bucket, _ = scan_input(s3, "scan-in/", 2)
    proc = mu(
        "run",
        "scan",
        "-n",
        "2",
        "-b",
        bucket,
        *local(s3, str(tmp_path / "l")),
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout and "━" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert all(re.match(r"\[\s*\d+\.\d\ds\] ", line) for line in lines), lines
    assert sum("finished" in line for line in lines) == 2


def test_a_closed_stderr_ends_the_display_quietly_and_the_job_still_finishes(s3, tmp_path):
    """``mu run ... 2>&1 >out | head -1``: the reader of stderr goes away after one line."""
    bucket = frames_bucket(s3, frames=12)
    cmd = [sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "4", "-f", "3", "-v", "clip",
           "-b", bucket, *local(s3, str(tmp_path / "l"))]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        proc.stderr.close()  # as head does after its line
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "listening on 127.0.0.1" in first
    assert proc.returncode == 0, out
    assert "all 4 workers finished" in out and "wrote 4 objects" in out


class Unreadable(io.StringIO):
    """A stream whose reader has gone; counts the writes tried."""

    tries = 0

    def write(self, text):
        self.tries += 1
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("tty", [False, True])
def test_the_display_stops_writing_once_its_stream_is_gone(tty):
    stream = Unreadable()
    status = Status("png2y4m", 2, stream=stream, tty=tty)
    status.event("first")
    tried = stream.tries
    assert tried >= 1 and status.stream.gone
    status.connected += 1
    status.state(0, "retrieving a PNG")
    status.event("second")
    status.done += 1
    status.close()
    status.event("after")
    assert stream.tries == tried  # once gone, never written again


def test_a_closed_stdout_loses_only_the_summary(s3, tmp_path):
    """``mu run ... | head -0``: the job's status is still its exit status, with no traceback."""
    bucket = frames_bucket(s3, frames=2)
    cmd = [sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "2", "-f", "1", "-v", "clip",
           "-b", bucket, *local(s3, str(tmp_path / "l"))]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "actor 1 finished" in err and "Traceback" not in err and "Broken pipe" not in err
