"""The worker's META message after OK:HELLO: the server takes it, a job's states never see it,
and the timing log pairs each connection with its own invocation by the number it gives."""

from __future__ import annotations

import asyncio
import platform
from typing import Any

from coordinator.core.job import Job
from coordinator.core.machine import CommandListState, InfoWatcherState, TerminalState
from coordinator.core.runner import run_job
from coordinator.core.server import ServerOptions
from coordinator.core.status import Status
from coordinator.launch import Launcher
from coordinator.report.timing import pair_launches
from lambda_worker.handler import lambda_handler

DEADLINE_MS = 600_000


class Context:
    """Lambda's context object, as far as the handler reads it."""

    def get_remaining_time_in_millis(self) -> int:
        return DEADLINE_MS


class LambdasInThreads(Launcher):
    """Each worker is ``lambda_handler(event, context)`` in a thread, as Lambda runs it, so it
    says everything a Lambda worker says after its hello. Worker w starts ``delay(w)`` s late."""

    def __init__(self, delay: Any = lambda w: 0.0) -> None:
        self.delay = delay
        self.tasks: list[asyncio.Task[dict[str, Any]]] = []

    async def launch(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.mark(event["worker"], "sent")
            self.mark(event["worker"], "accepted")
            self.tasks.append(asyncio.get_running_loop().create_task(self._run(event)))

    async def _run(self, event: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(self.delay(event["worker"]))
        return await asyncio.to_thread(lambda_handler, event, Context())

    def may_connect(self, arrived: int, live: int) -> int | None:
        return max(0, sum(1 for t in self.tasks if not t.done()) - live)

    def failures(self) -> dict[int, str]:
        return {}

    async def close(self) -> None:
        await asyncio.gather(*self.tasks)


def run(job: Job, launcher: Launcher):
    opts = ServerOptions(host="127.0.0.1", port=0, connect_timeout=60, kill_time=60)
    status = Status(job.name, job.workers, tty=False)
    return asyncio.run(asyncio.wait_for(run_job(job, launcher, _keys(), opts, status), 120))


def _keys():
    from coordinator.core.tls import make_job_keys

    return make_job_keys()


# A mu-style job: the watcher waits for the INFO that its predecessor's geti: brings.
class Done(TerminalState):
    extra = "(done)"


class Finish(CommandListState):
    nextState = Done
    commandlist = [("OK:GETI(x)", None), ("OK:ECHO(after-info)", "quit:")]


class Watch(InfoWatcherState):
    nextState = Finish
    command = "echo:after-info"


class Start(CommandListState):
    nextState = Watch
    commandlist = [("OK:HELLO", "seti:x:7"), ("OK:SETI", "run:sleep 0.2"), ("OK:RETVAL(0)", "geti:x")]


def test_a_mu_job_with_an_info_watcher_is_unaffected_by_the_workers_meta():
    """mu's worker sent no INFO of its own, and mu's InfoWatcherState fires on any INFO: what
    the worker says about itself (its deadline, its Python) must reach no state, or a watcher
    waiting at that moment would fire, and the states' info would hold keys mu never put there."""
    result = run(Job("watch", Start, workers=2), LambdasInThreads())
    assert result.ok, result.describe()
    for actor, state in result.final_states.items():
        assert isinstance(state, Done)
        assert state.info == {"x": "7"}, actor  # nothing but the job's own INFO
        assert state.prevState.messages == ["OK:GETI(x)", "OK:ECHO(after-info)"]
    for record in result.timing["records"]:
        assert record["meta"] == {"worker": record["worker"], "python": platform.python_version(),
                                  "deadline_ms": DEADLINE_MS}  # fmt: skip


def test_the_timing_log_pairs_each_connection_with_its_own_invocation():
    """Invocations accepted in the order 0, 1, 2 whose workers connect in the order 2, 1, 0:
    pairing by order would give each worker another's launch."""
    result = run(Job("watch", Start, workers=3), LambdasInThreads(delay=lambda w: 0.4 * (2 - w)))
    assert result.ok, result.describe()
    records = sorted(result.timing["records"], key=lambda r: r["connected"])
    assert [r["worker"] for r in records] == [2, 1, 0]
    for record in records:
        assert record["launch"]["worker"] == record["worker"] == record["meta"]["worker"]
        assert record["launch"]["accepted"] <= record["connected"]
    assert sorted(r["actor"] for r in records) == [0, 1, 2]


def test_pairing_is_by_the_number_the_worker_gave_and_nothing_else():
    launches = {0: {"sent": 1.0, "accepted": 1.1}, 1: {"sent": 1.0, "accepted": 1.2}, 5: {"sent": 2.0}}
    records = [{"worker": 1, "connected": 1.5}, {"worker": 0, "connected": 2.5}, {"connected": 0.5},
               {"worker": 9, "connected": 3.0}]  # fmt: skip
    entries = pair_launches(records, launches, t0=1.0)
    assert [e["worker"] for e in entries] == [0, 1, 5]
    assert [r["launch"] for r in records] == [
        {"worker": 1, "sent": 0.0, "accepted": 0.2},
        {"worker": 0, "sent": 0.0, "accepted": 0.1},
        None,  # a worker that did not say which invocation it is
        None,  # or named one this coordinator never made
    ]
