"""run: replies whose program the shell could not find (127) or execute (126): counted by the
server per actor, whatever the job's states made of them, and warned about in the summary."""

from __future__ import annotations

import subprocess

import pytest

from coordinator.report.summary import actor_ranges, not_run_warnings
from coordinator.report.timing import ServerBooks
from lambda_worker.commands import run_reply


def reply(shell: str, command: str) -> bytes:
    """What the worker answers for ``command`` run by ``shell`` (dash here, bash on Lambda)."""
    done = subprocess.run([shell, "-c", command], capture_output=True, timeout=10)
    return run_reply(command, done.returncode, done.stdout + done.stderr)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_program_is_named_as_the_shell_named_it(shell):
    books = ServerBooks()
    books.replies([reply(shell, "time ./linpack_bench_d")], actor=0)
    books.replies([reply(shell, "ffmpeg -i x.png"), b"OK:RETVAL(0):OUTPUT():COMMAND(true)"], actor=1)
    books.replies([reply(shell, "./y4m2png"), reply(shell, "true")], actor=2)
    books.replies([reply(shell, "ffmpeg -i y.png"), reply(shell, "exit 127")], actor=3)
    books.replies([reply(shell, "/proc")], actor=4)  # a directory: 126
    books.replies([reply(shell, "echo 'x: y: not found'; exit 3")], actor=5)  # not the shell's 127
    not_run = {(e["status"], e["program"]): e["actors"] for e in books.commands_not_run()}
    assert not_run.pop((127, "./linpack_bench_d")) == [0]
    assert not_run.pop((127, "ffmpeg")) == [1, 3]
    assert not_run.pop((127, "./y4m2png")) == [2]
    assert not_run.pop((127, "exit 127")) == [3]  # the shell named nothing: the command stands in
    assert not_run.pop((126, "/proc")) == [4]
    assert not_run == {}


def test_replies_without_an_actor_and_uploads_are_kept_apart():
    books = ServerBooks()
    books.replies([b"OK:RETVAL(127):OUTPUT(sh: 1: ./x: not found\\n):COMMAND(./x)", b"OK:UPLOAD(b/k)"])
    assert books.commands_not_run() == [] and books.written == {("b", "k")}


def test_one_warning_line_per_program_with_its_actors():
    lines = not_run_warnings([
        {"status": 127, "program": "./ffmpeg", "actors": [0, 1, 2, 3, 7]},
        {"status": 126, "program": "./xc-enc", "actors": [5]},
    ])  # fmt: skip
    assert lines[0].startswith(
        "warning: ./ffmpeg was not found (run: exit status 127) on 5 actors (0-3, 7); "
    )
    assert lines[1].startswith(
        "warning: ./xc-enc could not be executed (not executable, or built for another CPU) "
        "(run: exit status 126) on 1 actor (5); "
    )
    assert all("binaries/bin" in line and "MU_BIN_DIR" in line for line in lines)


def test_actor_ranges():
    assert actor_ranges([3, 0, 1, 2, 9, 10, 12]) == "0-3, 9-10, 12"
    assert actor_ranges(list(range(0, 100, 2))) == ", ".join(str(a) for a in range(0, 24, 2)) + ", ..."
