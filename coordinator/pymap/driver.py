"""The thin adapter between mu.map's scheduler and the coordinator's server.

The server (``coordinator.core.server``) accepts and admits workers, gives each a seat in its
roster (which relaunches a worker that dies, ``--retries`` times per seat, and fails a seat
no worker fills within ``--connect-timeout``) and hands each connection to this driver
instead of a walk over mu's states. The driver moves bytes: it checks the Python version the
worker reports, tells the scheduler what happened and writes the frames it asks for, fetches
payloads the workers left in the bucket, and hands outcomes to the executor. It decides
nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from coordinator.core.gate import READ_SIZE
from coordinator.core.machine import MachineState, TerminalState
from lambda_worker.pycall import protocol as p
from lambda_worker.wire import Decoder, ProtocolError, encode

from .package import minor
from .schedule import Action, CallSpec, Outcome, Scheduler, Send

VERSION_WAIT = 15.0  # seconds after OK:HELLO for a worker to say which Python it runs


class PythonCalls(MachineState):
    """Running Python calls"""

    extra = "(running Python calls)"


class PythonCallsDone(TerminalState):
    """Finished its Python calls"""

    extra = "(finished its Python calls)"


@dataclass
class WorkerRecordView:
    """What the driver keeps of a connected worker besides the server's record."""

    id: int
    writer: asyncio.StreamWriter
    python: str
    connected: float
    calls: int = 0


class Driver:
    def __init__(
        self,
        scheduler: Scheduler,
        python: str,
        finish: Callable[[Outcome, bytes | None, BaseException | None], None],
        fetch: Callable[[str], Awaitable[bytes]],
        event: Callable[[str], None],
        state: Callable[[int, str], None],
    ) -> None:
        self.scheduler = scheduler
        self.python = python  # the version the calls were prepared for
        self.finish = finish  # the executor turns an outcome (and its payload's bytes) into a result
        self.fetch = fetch  # bytes of a key in the job's bucket
        self.event = event
        self.state = state  # the progress display's per-worker line
        self.workers: dict[int, WorkerRecordView] = {}
        self.invocations: dict[int, Any] = {}  # each worker's invocation number (its log's name)
        self.refused: list[str] = []  # why workers were turned away (another Python, an old worker)
        self.quitting: set[int] = set()
        self.coordinator: Any = None  # set by the executor once the server exists
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    def attach(self, coordinator: Any) -> None:
        """The server this driver works for (it asks it to stand down at the end)."""
        self.coordinator = coordinator

    # -- from the executor (in the event loop) --------------------------------------------------

    def submit(self, specs: list[CallSpec]) -> None:
        self._idle.clear()
        self.apply(self.scheduler.submit(specs))
        self._check_idle()

    def cancel(self, index: int) -> None:
        self.apply(self.scheduler.cancel(index))
        self._check_idle()

    async def until_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        """Every worker is told ``quit:``; seats still waiting for a worker close."""
        self.closed = True
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        for view in list(self.workers.values()):
            self.quitting.add(view.id)
            with contextlib.suppress(Exception):
                view.writer.write(encode(b"quit:"))
                view.writer.close()
        if self.coordinator is not None:
            self.coordinator.stand_down()

    def job_ended(self, why: str) -> None:
        """The server stopped (no worker left, the deadline, an error): calls still waiting fail."""
        self.apply(self.scheduler.fail_waiting(why))
        self._check_idle()

    # -- one worker (from the server) ---------------------------------------------------------------

    async def drive(
        self,
        record: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Decoder,
        first: list[bytes],
    ) -> None:
        if self.closed:
            writer.write(encode(b"quit:"))
            record.machine.end(PythonCallsDone)
            return
        messages = [m for m in first if m != b"OK:HELLO"]
        try:
            python = await self._python_version(record, reader, decoder, messages)
        except (ConnectionError, ssl.SSLError, OSError, ProtocolError, TimeoutError) as exc:
            record.machine.fail(str(exc) or type(exc).__name__)
            return
        problem = self.version_problem(python)
        if problem is not None:
            self._refuse(record, writer, problem)
            return
        if self.closed:  # the executor shut down while this worker was saying which Python it runs
            writer.write(encode(b"quit:"))
            record.machine.end(PythonCallsDone)
            return
        wid = next(self._ids)
        self.invocations[wid] = record.meta.get("worker")
        view = WorkerRecordView(wid, writer, python, time.monotonic())
        self.workers[wid] = view
        self.state(record.actor, "running Python calls")
        why = "the worker closed its connection"
        try:
            self.apply(self.scheduler.worker_ready(wid))
            self.handle(view, messages)
            while wid in self.workers:
                await writer.drain()
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self.handle(view, decoder.feed(data))
        except ProtocolError as exc:
            why = f"protocol error: {exc}"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            why = f"connection lost: {exc}"
        finally:
            self.workers.pop(wid, None)
            if wid in self.quitting:
                record.machine.end(PythonCallsDone)
            else:
                record.machine.fail(why)
                if not self.closed:
                    self.event(f"worker {wid} (seat {record.actor}) ended: {why}")
            self.apply(self.scheduler.worker_gone(wid, why))
            self._check_idle()

    async def _python_version(
        self, record: Any, reader: asyncio.StreamReader, decoder: Decoder, messages: list[bytes]
    ) -> str:
        """The ``python`` of the worker's ``META:`` message, which follows its OK:HELLO; the
        connection's decoder puts it into the record's ``meta``."""
        deadline = asyncio.get_running_loop().time() + VERSION_WAIT
        while "python" not in record.meta:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"the worker did not say which Python it runs within {VERSION_WAIT:g} s of connecting: "
                    "it predates mu.map; deploy the current worker (make deploy)"
                )
            data = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
            if not data:
                raise ConnectionError("the worker closed its connection before saying which Python it runs")
            messages.extend(decoder.feed(data))
        return str(record.meta["python"])

    def version_problem(self, python: str) -> str | None:
        try:
            there = minor(python)
        except ValueError:
            return f"the worker reported Python version {python[:40]!r}, which is not a version"
        if there != minor(self.python):
            return (
                f"the worker runs Python {python}, but the calls were prepared for Python {self.python} "
                "(the version the workers were expected to run); run the workers on that version, or "
                "pass python='X.Y' to the executor"
            )
        return None

    def _refuse(self, record: Any, writer: asyncio.StreamWriter, problem: str) -> None:
        self.refused.append(problem)
        self.event(f"worker refused: {problem}")
        record.machine.fail(problem)
        writer.write(encode(b"quit:"))

    def handle(self, view: WorkerRecordView, messages: list[bytes]) -> None:
        for msg in messages:
            reply = p.parse_reply(msg)
            if reply is not None:
                if reply.what in ("result", "raised"):
                    view.calls += 1
                self.apply(self.scheduler.reply(view.id, reply))
            elif msg.startswith(b"FAIL("):  # a worker that does not know the Python-call commands
                why = msg[:300].decode("utf-8", "replace")
                problem = f"the worker refused a Python-call command ({why}); deploy the current worker"
                self.refused.append(problem)
                view.writer.close()
                self.workers.pop(view.id, None)
            # anything else (INFO lines) is not the scheduler's business
        self._check_idle()

    # -- carrying out the scheduler's actions --------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                view = self.workers.get(action.worker)
                if view is not None and not view.writer.is_closing():
                    view.writer.write(encode(action.frame))
            else:
                self._outcome(action)

    def _outcome(self, outcome: Outcome) -> None:
        payload = outcome.payload
        if payload is None or payload.key is None:
            self._finish(outcome, None if payload is None else payload.data, None)
            return
        self._tasks.add(asyncio.get_running_loop().create_task(self._fetch_then_finish(outcome, payload.key)))

    async def _fetch_then_finish(self, outcome: Outcome, key: str) -> None:
        problem: BaseException | None = None
        data: bytes | None = None
        try:
            data = await self.fetch(key)
        except Exception as exc:
            problem = exc
        finally:
            # Out of the set before _finish asks whether anything is left: the last outcome of
            # an executor may be one that came through the bucket, and its shutdown waits for idle.
            self._tasks.discard(asyncio.current_task())
        self._finish(outcome, data, problem)

    def _finish(self, outcome: Outcome, data: bytes | None, problem: BaseException | None) -> None:
        try:
            self.finish(outcome, data, problem)
        finally:
            self._check_idle()

    def _check_idle(self) -> None:
        if self.scheduler.idle and not self._tasks:
            self._idle.set()

    # -- the timing log -------------------------------------------------------------------------------

    def timing(self, t0: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 6)

        calls = [
            {
                "call": index,
                "submitted": rel(c.submitted),
                "started": rel(c.started),
                "finished": rel(c.finished),
                "worker": c.worker,
                "attempts": c.attempts,
                "failures": c.failures,
                "outcome": c.outcome,
            }
            for index, c in sorted(self.scheduler.calls.items())
        ]
        return {"calls": calls, "refused_workers": list(self.refused)}
