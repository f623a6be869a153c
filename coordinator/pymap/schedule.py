"""Which call runs on which worker, and what to do when one ends: ``mu.map``'s scheduler.

Sans-I/O like the roster and the machines: the driver reports what happened (calls were
submitted, a worker became ready, a reply came, a worker went away, time passed) and carries
out what comes back (frames to send to a worker, an outcome for a call). Every rule is a
plain unit test (``tests/pymap/test_schedule.py``).

The rules:

- **Dynamic load balancing.** Each worker has at most ``window`` attempts in flight (sent and
  not yet answered); whenever one ends, the next queued call goes to that worker. A worker
  gets a function (``py_function``) once, just before its first call of it.
- **Exactly once.** A call's first result (a value or a raised exception) is its outcome;
  later results of other attempts are ignored and those attempts are cancelled.
- **Retries** (``retries``): an attempt that fails without a result (the process exited or was
  killed, ran out of time or memory, its worker went away) is tried again, first in the queue,
  up to ``retries`` more times; then the call fails with the last reason. An exception the
  function raised is a result, not a failure: it is not retried.
- **Speculation** (``speculate`` percent): once that share of a map's calls is done, each of
  its calls still running gets one duplicate attempt on another worker (ahead of the queue);
  the first attempt to finish wins.
- A function that cannot be loaded fails all of its calls with the worker's reason.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lambda_worker.pycall import protocol as p


@dataclass(frozen=True)
class CallSpec:
    """One call as submitted: ``index`` is unique in the executor, ``group`` is its map."""

    index: int
    fn: str
    args: p.Payload
    timeout: float | None = None
    memory_mb: int | None = None
    group: int = 0


@dataclass(frozen=True)
class Send:
    worker: int
    frame: bytes


@dataclass(frozen=True)
class Outcome:
    """How a call ended. ``what``: ``result``, ``raised``, ``failed`` or ``unloadable``."""

    index: int
    what: str
    payload: p.Payload | None = None
    kind: str = ""
    text: str = ""
    worker: int | None = None
    attempts: int = 1


Action = Send | Outcome


@dataclass
class CallState:
    spec: CallSpec
    submitted: float
    attempts: int = 0  # attempts started (duplicates included)
    failures: int = 0
    live: dict[str, int] = field(default_factory=dict)  # attempt id -> worker
    done: bool = False
    speculated: bool = False
    started: float | None = None
    finished: float | None = None
    worker: int | None = None  # the worker whose attempt decided it
    last_failure: str = ""
    outcome: str = ""  # "result", "raised", "failed", "unloadable"; "cancelled" by the caller


@dataclass
class WorkerState:
    id: int
    functions: set[str] = field(default_factory=set)  # sent to it
    running: set[str] = field(default_factory=set)  # attempt ids in flight
    calls_done: int = 0


@dataclass
class Group:
    total: int = 0
    done: int = 0


class Scheduler:
    def __init__(
        self,
        window: int = 2,
        retries: int = 0,
        speculate: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.retries = retries
        self.speculate = speculate
        self.clock = clock
        self.functions: dict[str, tuple[str, p.Payload]] = {}  # hash -> (mode, package payload)
        self.unloadable: dict[str, str] = {}  # hash -> why
        self.calls: dict[int, CallState] = {}
        self.queue: deque[int] = deque()
        self.duplicates: deque[int] = deque()  # calls waiting for a speculative attempt
        self.workers: dict[int, WorkerState] = {}
        self.groups: dict[int, Group] = {}
        self.unresolved = 0

    # -- what the driver reports ------------------------------------------------------------

    def add_function(self, fn_hash: str, mode: str, package: p.Payload) -> None:
        self.functions.setdefault(fn_hash, (mode, package))

    def submit(self, specs: Iterable[CallSpec]) -> list[Action]:
        now = self.clock()
        actions: list[Action] = []
        for spec in specs:
            if spec.index in self.calls:
                raise ValueError(f"call {spec.index} was submitted twice")
            if spec.fn not in self.functions:
                raise ValueError(f"call {spec.index} names function {spec.fn}, which was not added")
            self.calls[spec.index] = CallState(spec, now)
            self.groups.setdefault(spec.group, Group()).total += 1
            self.unresolved += 1
            if spec.fn in self.unloadable:
                actions += self._resolve(
                    spec.index, Outcome(spec.index, "unloadable", text=self.unloadable[spec.fn])
                )
            else:
                self.queue.append(spec.index)
        return actions + self._feed_all()

    def worker_ready(self, worker: int) -> list[Action]:
        """A worker connected and may run calls."""
        self.workers[worker] = WorkerState(worker)
        return self._feed(self.workers[worker])

    def worker_gone(self, worker: int, why: str) -> list[Action]:
        """A worker disconnected, died or was told to stop: its attempts failed."""
        state = self.workers.pop(worker, None)
        if state is None:
            return []
        actions: list[Action] = []
        # Latest first: each retry goes to the front of the queue, so they keep their order.
        for ident in sorted(state.running, key=lambda i: int(i.partition(".")[0]), reverse=True):
            actions += self._attempt_failed(ident, "worker", why, feed=False)
        return actions + self._feed_all()

    def cancel(self, index: int) -> list[Action]:
        """The caller cancelled the call: it is dropped from the queue, or its attempts are
        stopped; no outcome is reported for it."""
        call = self.calls.get(index)
        if call is None or call.done:
            return []
        if index in self.queue:
            self.queue.remove(index)
        call.done = True
        call.outcome = "cancelled"
        call.finished = self.clock()
        self.unresolved -= 1
        self.groups[call.spec.group].done += 1
        return self._stop_attempts(call)

    def reply(self, worker: int, reply: p.Reply) -> list[Action]:
        state = self.workers.get(worker)
        if reply.what == "define_failed":
            return self._unloadable(reply.ident, reply.text)
        if reply.what in ("defined", "cancelled") or state is None:
            return []
        if reply.ident not in state.running:
            return []  # an attempt cancelled or already counted
        state.running.discard(reply.ident)
        if reply.what == "failed":
            return self._attempt_failed(reply.ident, reply.kind, reply.text)
        call = self._call_of(reply.ident)
        call.live.pop(reply.ident, None)
        state.calls_done += 1
        actions: list[Action] = []
        if not call.done:
            call.worker = worker
            outcome = Outcome(
                call.spec.index, reply.what, reply.payload, worker=worker, attempts=call.attempts
            )
            actions += self._resolve(call.spec.index, outcome)
        return actions + self._feed(state)

    def fail_waiting(self, why: str) -> list[Action]:
        """No worker is left or can still come: every call not yet decided fails with ``why``."""
        actions: list[Action] = []
        for index, call in list(self.calls.items()):
            if not call.done:
                reason = f"{call.last_failure}; then {why}" if call.last_failure else why
                actions += self._resolve(
                    index, Outcome(index, "failed", kind="worker", text=reason, attempts=call.attempts)
                )
        self.queue.clear()
        self.duplicates.clear()
        return actions

    # -- queries ------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Every submitted call has its outcome."""
        return self.unresolved == 0

    def busy_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.running)

    # -- internals ----------------------------------------------------------------------------

    def _call_of(self, ident: str) -> CallState:
        return self.calls[int(ident.partition(".")[0])]

    def _resolve(self, index: int, outcome: Outcome) -> list[Action]:
        call = self.calls[index]
        call.done = True
        call.outcome = outcome.what
        call.finished = self.clock()
        self.unresolved -= 1
        group = self.groups[call.spec.group]
        group.done += 1
        return [outcome, *self._stop_attempts(call), *self._maybe_speculate(call.spec.group)]

    def _stop_attempts(self, call: CallState) -> list[Action]:
        """Cancel the attempts of a decided call still running on workers, and refill them."""
        actions: list[Action] = []
        for ident, worker in call.live.items():
            state = self.workers.get(worker)
            if state is not None and ident in state.running:
                state.running.discard(ident)
                actions.append(Send(worker, p.cancel_command(ident)))
                actions += self._feed(state)
        call.live.clear()
        return actions

    def _attempt_failed(self, ident: str, kind: str, why: str, feed: bool = True) -> list[Action]:
        call = self._call_of(ident)
        worker = call.live.pop(ident, None)
        actions: list[Action] = []
        if not call.done:
            call.failures += 1
            call.last_failure = why
            if call.live:
                pass  # a duplicate still runs it
            elif call.failures > self.retries:
                tried = f" (after {call.attempts} attempts)" if call.attempts > 1 else ""
                outcome = Outcome(
                    call.spec.index,
                    "failed",
                    kind=kind,
                    text=why + tried,
                    worker=worker,
                    attempts=call.attempts,
                )
                actions += self._resolve(call.spec.index, outcome)
            else:
                self.queue.appendleft(call.spec.index)
        if feed:
            actions += (
                self._feed_all()
                if worker is None or worker not in self.workers
                else self._feed(self.workers[worker]) + self._feed_all()
            )
        return actions

    def _unloadable(self, fn_hash: str, why: str) -> list[Action]:
        if fn_hash in self.unloadable:
            return []
        self.unloadable[fn_hash] = why
        actions: list[Action] = []
        for index, call in list(self.calls.items()):
            if call.spec.fn == fn_hash and not call.done:
                if index in self.queue:
                    self.queue.remove(index)
                actions += self._resolve(
                    index, Outcome(index, "unloadable", text=why, attempts=call.attempts)
                )
        return actions + self._feed_all()

    def _maybe_speculate(self, group_id: int) -> list[Action]:
        if not self.speculate:
            return []
        group = self.groups[group_id]
        if group.done < math.ceil(group.total * self.speculate / 100.0):
            return []
        for index, call in self.calls.items():
            if call.spec.group == group_id and call.live and not call.done and not call.speculated:
                call.speculated = True
                self.duplicates.append(index)
        return self._feed_all()

    def _feed_all(self) -> list[Action]:
        actions: list[Action] = []
        for state in sorted(self.workers.values(), key=lambda w: len(w.running)):
            if not self.queue and not self.duplicates:
                break
            actions += self._feed(state)
        return actions

    def _feed(self, state: WorkerState) -> list[Action]:
        """Fill ``state``'s window: speculative duplicates first, then the queue in order."""
        actions: list[Action] = []
        while len(state.running) < self.window:
            index = self._next_for(state)
            if index is None:
                break
            actions += self._start(state, index)
        return actions

    def _next_for(self, state: WorkerState) -> int | None:
        for _ in range(len(self.duplicates)):
            index = self.duplicates.popleft()
            call = self.calls[index]
            if call.done:
                continue
            if state.id in call.live.values():
                self.duplicates.append(index)  # another worker should run its duplicate
                continue
            return index
        while self.queue:
            index = self.queue.popleft()
            if not self.calls[index].done:
                return index
        return None

    def _start(self, state: WorkerState, index: int) -> list[Action]:
        call = self.calls[index]
        spec = call.spec
        actions: list[Action] = []
        if spec.fn not in state.functions:
            mode, package = self.functions[spec.fn]
            state.functions.add(spec.fn)
            actions.append(Send(state.id, p.define_command(spec.fn, mode, package)))
        ident = p.call_id(index, call.attempts)
        call.attempts += 1
        call.live[ident] = state.id
        if call.started is None:
            call.started = self.clock()
        state.running.add(ident)
        actions.append(
            Send(state.id, p.call_command(ident, spec.fn, spec.timeout, spec.memory_mb, spec.args))
        )
        return actions
