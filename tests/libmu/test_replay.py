"""Replay: the exact commands each actor of an xcenc-shaped job is sent, for scripted replies.

``jobs/encode_job.py`` has xcenc's shape: a pipelined setup that joins the relay (the state
hand-off to the next worker) and fetches the chunk, a ForLoopState over passes whose body
pipelines nonblock commands, a OnePassState that reads the comparison's exit status to decide
convergence, pipelined uploads, and a final state that turns into ErrorState if the worker did
not converge. The streams below were checked against mu's own libmu running the same file.
"""

from __future__ import annotations

import pytest

from coordinator.core.machine import ErrorState, Machine
from coordinator.jobs import load_job_file
from coordinator.libmu import server, util
from tests.libmu.scripted_worker import ScriptedWorker, replay

JOB = "tests/libmu/jobs/encode_job.py"
T = "##TMPDIR##"
SETUP = [
    "connect:127.0.0.1:4000:HELLO_STATE:UUUUUUUUUUUUUUUU:{chunk}:{next}",
    f"retrieve:clip/{{chunk}}.y4m\0{T}/input.y4m",
]
PRE_RUN = [
    "seti:run_iter:{n}",
    "set:cmdquality:{q}",
    "seti:send_statefile:{send}",
    f'run:test ! -f "{T}/final.state" || cp "{T}/final.state" "{T}/prev.state"',
]
ENCODE = f'run:./encode ##QUALITY## -o "{T}/output.ivf" "{T}/input.y4m"'
DUMP = [f'run:./dump "{T}/output.ivf" "{T}/final.state"', f'run:cp "{T}/output.ivf" "{T}/first.ivf"']
REENCODE = f'run:##INSTATEWAIT## ./reencode ##QUALITY## ##INSTATESWITCH## -o "{T}/output.ivf"'
COMPARE = f'run:test ! -f "{T}/prev.state" || ./compare "{T}/prev.state" "{T}/final.state"'
FINISH = [
    f"upload:clip/out/{{chunk}}.ivf\0{T}/output.ivf",
    f"upload:clip/state/{{chunk}}.state\0{T}/final.state",
]


def fill(lines: list[str], **fields: object) -> list[str]:
    return [line.format(**fields) for line in lines]


def expected(actor: int, workers: int = 3) -> list[str]:
    """Pass 0 encodes and dumps; passes 1..actor re-encode from the previous worker's state."""
    chunk, last = f"{actor:08d}", actor == workers - 1
    out = fill(SETUP, chunk=chunk, next=actor + 1)
    for n in range(min(3, actor + 1)):
        send = 0 if last or n == 2 else 1
        out += fill(PRE_RUN, n=n, q=30 if n == 0 else "--refine", send=send)
        out += [ENCODE, *DUMP] if n == 0 else [REENCODE]
    return [*out, COMPARE, *fill(FINISH, chunk=chunk), "quit:"]


@pytest.fixture
def job(monkeypatch):
    monkeypatch.setattr(util, "rand_str", lambda n: "U" * n)
    module = load_job_file(JOB)
    monkeypatch.setattr("sys.argv", [JOB, "-n", "3", "-v", "clip", "-b", "bkt", "-T", "4000"])
    monkeypatch.setattr(server, "server_main_loop", lambda states, constructor, info: None)
    module.main()
    return module, server._RUNS[id(module.ServerInfo)].event


def run_actor(job, actor: int, retval=lambda cmd: 0) -> tuple[list[str], Machine]:
    module, event = job
    machine = Machine(module.SettingsState, actor)
    return replay(machine, ScriptedWorker(event, retval)), machine


def test_the_event_asks_for_background_commands_that_report_only_when_done(job):
    _, event = job
    assert (event["nonblock"], event["bg_silent"], event["expect_statefile"]) == (1, 1, 1)


@pytest.mark.parametrize("actor", [0, 1, 2])
def test_each_actor_gets_exactly_its_command_stream(job, actor):
    sent, machine = run_actor(job, actor)
    assert sent == expected(actor)
    assert machine.done and not machine.failed and machine.info["pass"] == actor


def test_the_convergence_check_fails_only_the_last_pass_worker(job):
    def compare_fails(cmd: str) -> int:
        return 1 if "./compare" in cmd else 0

    for actor in range(3):
        sent, machine = run_actor(job, actor, compare_fails)
        assert sent == expected(actor)  # the same commands: the check reads the last reply
        assert machine.failed == (actor == 2)
    assert isinstance(machine.state, ErrorState) and machine.state.err == "worker 2 did not converge"
    assert machine.info["converged"] is False


def test_a_failed_reencode_ends_the_worker_with_the_reply_quoted(job):
    def reencode_fails(cmd: str) -> int:
        return 2 if "./reencode" in cmd else 0

    sent, machine = run_actor(job, 2, reencode_fails)
    assert sent == expected(2)[: expected(2).index(REENCODE) + 1]  # nothing after the failure
    assert machine.failed and machine.state.err.startswith("OK:RETVAL(2):OUTPUT():COMMAND(##INSTATEWAIT##")
    assert "which expected 'OK:RETVAL(0)'" in (machine.error or "")


def test_pipelined_states_send_their_commands_before_any_reply(job):
    module, _ = job
    machine = Machine(module.SettingsState, 1)
    assert machine.receive(b"OK:HELLO") == [s.encode() for s in fill(SETUP, chunk="00000001", next=2)]
    machine.receive(b"OK:CONNECT(127.0.0.1:4000:HELLO_STATE:UUUUUUUUUUUUUUUU:00000001:2)")
    pre_run = machine.receive(b"OK:RETRIEVE(bkt/clip/00000001.y4m)")
    assert pre_run == [s.encode() for s in fill(PRE_RUN, n=0, q=30, send=1)]
