"""The coordinator's asyncio mutual-TLS server: a thin shell around one Machine per worker.

Sockets, timeouts and bookkeeping live here; what to send and what a reply means is decided
by the sans-I/O machines, and which worker plays which actor by the sans-I/O roster, so this
module has no job logic and no failure policy of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.core.gate import READ_SIZE, Gate, limit_tls_buffers
from coordinator.core.job import Job
from coordinator.core.logsink import deliver, s3_client_factory
from coordinator.core.machine import Machine
from coordinator.core.roster import Action, Relaunch, Roster, StopOthers
from coordinator.core.status import Status
from coordinator.report import timing
from coordinator.report.names import in_words
from lambda_worker.wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode, quote

UNFILLABLE_GRACE = 1.0  # seconds a vacancy must look unfillable before it counts as failed
FLOOD_HEADROOM = 1024


class LaunchWatch(Protocol):
    """What the server asks of a launcher."""

    # How a seat fails when the launch meant for it came to nothing, before the launcher's reason.
    never_connected: str

    def may_connect(self, arrived: int, live: int) -> int | None:
        """How many launched workers may still connect, given that ``arrived`` connections have
        said OK:HELLO so far and ``live`` of them are open; None where unknowable."""

    def failures(self) -> dict[int, str]:
        """Worker number -> why its launch failed or it ended badly, in the order they happened."""


@dataclass(eq=False)
class WorkerRecord:
    actor: int
    peer: str
    machine: Machine
    writer: asyncio.StreamWriter
    connected: float
    duplicate: bool = False
    ended: float | None = None
    error: str | None = None
    superseded: bool = False  # another worker finished this actor first
    # What the worker said about itself (wire.META): its invocation's number, Python, deadline.
    meta: dict[str, Any] = field(default_factory=dict)

    def timing(self, t0: float, t0_wall: float, label: str = "") -> dict[str, Any]:
        """``states``: each state the worker entered, named by ``describe`` (mu's ``str_extra``),
        with its human name; ``mu_timeline``: mu's own log line for the worker, (time, class) of
        every state built."""
        return {
            "actor": self.actor,
            "worker": self.meta.get("worker"),  # the invocation this connection is
            "meta": dict(self.meta),
            "label": label,
            "peer": self.peer,
            "duplicate": self.duplicate,
            "connected": round(self.connected - t0, 6),
            "ended": None if self.ended is None else round(self.ended - t0, 6),
            "ok": self.error is None,
            "superseded": self.superseded,
            "error": self.error,
            "states": timing.state_entries(self.machine.history, t0_wall),
            "mu_timeline": [[round(t - t0_wall, 6), name] for t, name in self.machine.timeline()],
        }


@dataclass
class JobResult:
    ok: bool
    workers: int
    succeeded: int
    failures: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    rejected: int = 0  # connections turned away: failed TLS, bad first message, flood cap
    relaunched: int = 0  # replacement and speculative workers launched
    # actor -> the state its worker ended in (the one that finished, if any): mu's ``states`` list
    final_states: dict[int, Any] = field(default_factory=dict)
    interrupted: signal.Signals | None = None  # the signal that stopped the job early
    timing: dict[str, Any] | None = None  # the timing log's document (coordinator.report.timing)
    timing_places: list[str] = field(default_factory=list)  # where that log was written
    fault: str | None = None  # an exception in the coordinator that no actor answered for

    @property
    def fault_note(self) -> list[str]:
        if self.fault is None:
            return []
        return [f"coordinator fault (no actor's outcome depended on it): {self.fault}"]

    def describe(self) -> str:
        """The end-of-job report. An interrupted job has had its one line already (see
        ``Coordinator.interrupt``); only failures from before the interrupt are added."""
        if self.interrupted is not None:
            if not self.failures:
                return "\n".join(self.fault_note)
            lines = [f"before the interrupt, {len(self.failures)} of {self.workers} workers failed:"]
            lines += [f"  {who}: {why}" for who, why in sorted(self.failures.items())]
            return "\n".join(lines + self.fault_note)
        notes = [_count(self.relaunched, "worker") + " relaunched"] if self.relaunched else []
        notes += [_count(self.rejected, "connection") + " rejected"] if self.rejected else []
        extra = f" ({'; '.join(notes)})" if notes else ""
        if self.ok:
            lines = [f"all {self.workers} workers finished in {self.elapsed:.2f} s{extra}"]
        else:
            lines = [f"{len(self.failures)} of {self.workers} workers failed{extra}:"]
            lines += [f"  {who}: {why}" for who, why in sorted(self.failures.items())]
        return "\n".join(lines + self.fault_note)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 13579
    kill_time: float | None = None  # mu's -m: seconds since a worker's first state before it is ended
    connect_timeout: float = 300.0  # longest wait for a worker to fill an actor
    deadline: float | None = None  # the whole job
    retries: int = 0  # replacement workers per actor
    speculate: float = 0.0  # percent of actors done before stragglers get a duplicate
    hello_timeout: float = 30.0  # for a new connection to finish TLS and say OK:HELLO
    # Connections still in TLS or before OK:HELLO. None: every worker the job launches may be
    # in a burst at once (Lambdas start together), plus FLOOD_HEADROOM for replacements.
    max_pending: int | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    timing_log: str | None = None  # -O FILE
    timing_s3: str | None = None  # s3://BUCKET/KEY
    spares: int = 0  # extra workers launched; the first N to connect get actors, the rest quit
    relay_port: int = 0  # for jobs that pass data between workers; 0 picks a free port
    # The options that set the two ports, named when a port cannot be had (mu job files: -t, -T).
    port_flag: str = "--port"
    relay_port_flag: str = "--relay-port"
    # What the timing log records besides the server's books: backend, job id, cost inputs
    # (see coordinator.report.timing.document); "prices" overrides the cost table.
    meta: dict[str, Any] = field(default_factory=dict)


class Coordinator:
    def __init__(
        self,
        job: Job,
        ssl_context: ssl.SSLContext,
        options: ServerOptions,
        status: Status,
        relaunch: Callable[[int], None] | None = None,
    ) -> None:
        self.job = job
        self.opts = options
        self.status = status
        self.relaunch = relaunch
        self.roster = Roster(
            job.workers, options.retries, options.speculate, options.connect_timeout, order=job.order
        )
        self.records: list[WorkerRecord] = []
        self.playing: dict[int, set[WorkerRecord]] = {}
        self.gate = Gate(
            ssl_context,
            options.hello_timeout,
            options.max_pending or job.workers + options.spares + FLOOD_HEADROOM,
            self._event,
        )
        self._live = 0  # connections past OK:HELLO, open now
        self._arrived = 0  # connections past OK:HELLO, ever
        self._charged: set[int] = set()  # worker numbers whose failed launch has cost a seat
        self._spares_seen = 0
        self._unfillable_since: float | None = None
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.interrupted: signal.Signals | None = None
        self.deadline_passed = False
        self._cut_short: set[int] = set()  # actors left undecided by an interrupt
        self.books = timing.ServerBooks()
        self.launcher: LaunchWatch | None = None
        self.document: dict[str, Any] | None = None
        self.timing_places: list[str] = []  # where the timing log was written (deliver)
        self.fault: str | None = None  # the first exception no worker could answer for (_fault)
        self.t0 = time.monotonic()
        self.t0_wall = time.time()  # mu's timestamps are wall-clock
        self.port = options.port
        if job.driver is not None:
            job.driver.attach(self)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the port (useful when asked for port 0)."""
        limit_tls_buffers()
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.opts.host, self.opts.port, backlog=4096
            )
        except OSError as exc:
            where = f"{self.opts.host}:{self.opts.port}"
            raise OSError(
                f"cannot listen on {where}: {exc.strerror}; pick another port with {self.opts.port_flag}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.roster.restart_clocks()
        return self.port

    async def wait(self, launcher: LaunchWatch | None = None) -> JobResult:
        """Until every actor has an outcome, or the job's deadline passes."""
        self.launcher = launcher
        deadline = None if self.opts.deadline is None else self.t0 + self.opts.deadline
        while not self.roster.done:
            now = time.monotonic()
            if self.interrupted is not None:
                self._stop_now(f"interrupted by {self.interrupted.name}")
                break
            if deadline is not None and now >= deadline:
                self.deadline_passed = True
                self.roster.give_up(self._ended_reason(f"job --deadline {self.opts.deadline:g} s passed"))
                self._event(f"job --deadline {self.opts.deadline:g} s passed; stopping")
                break
            self._apply(self._tick(launcher, now))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.25)
        await self.close()
        return self._result(launcher)

    def _tick(self, launcher: LaunchWatch | None, now: float) -> list[Action]:
        """The roster's clock, with how many open seats the launched workers can still fill.

        A launch that came to nothing (a refused or throttled-out invocation, a process that
        ended without connecting) leaves a seat no worker will fill: it fails at once, or
        spends one of its retries, with the launcher's reason, instead of waiting out
        --connect-timeout. Launches are counted, not matched to seats (a worker takes its
        actor when it connects), so spares and relaunches make up for failed launches first.
        A shortfall must last UNFILLABLE_GRACE: a relaunch is counted once it has started,
        and a process's exit may be seen before its connection's end.
        """
        coming = launcher.may_connect(self._arrived, self._live) if launcher is not None else None
        if coming is None or coming >= self.roster.open_seats:
            self._unfillable_since = None
            return self.roster.tick()
        if self._unfillable_since is None:
            self._unfillable_since = now
        if now - self._unfillable_since < UNFILLABLE_GRACE:
            return self.roster.tick()
        assert launcher is not None
        fresh = [(w, why) for w, why in launcher.failures().items() if w not in self._charged]
        fresh.reverse()  # the latest launch failures are the ones that just left seats empty
        shortfall = self.roster.open_seats - coming
        self._charged.update(w for w, _ in fresh[:shortfall])
        lost = [f"{launcher.never_connected}: {why}" for _, why in fresh[:shortfall]]
        self._unfillable_since = None  # relaunches the roster asks for get their own grace
        return self.roster.tick(coming, lost)

    def _ended_reason(self, why: str) -> Callable[[int], str]:
        def reason(actor: int) -> str:
            live = [r for r in self.playing.get(actor, set()) if r.ended is None]
            where = f"in {in_words(live[0].machine.state)}" if live else "waiting for a worker to connect"
            return f"{why} {where}"

        return reason

    @property
    def ended_early(self) -> bool:
        """The job stopped before every actor had an outcome (deadline or interrupt)."""
        return self.deadline_passed or self.interrupted is not None

    def interrupt(self, sig: signal.Signals) -> None:
        """Cancellation (SIGINT, SIGTERM): ``wait`` ends the job at once; live workers are told
        ``quit:`` as the connections close, and the timing log is written as usual."""
        if self.interrupted is None:
            self.interrupted = sig
            self._changed.set()

    def _stop_now(self, why: str) -> None:
        undecided = [a for a in range(self.job.workers) if a not in self.roster.outcome]
        running = sum(1 for a in undecided if any(r.ended is None for r in self.playing.get(a, ())))
        done = self.job.workers - len(undecided)
        self._event(f"interrupted: {done} done, {running} running, {len(undecided) - running} not started")
        self._cut_short = set(undecided)
        self.roster.give_up(self._ended_reason(why))

    async def close(self) -> None:
        """Stop serving, then write the status and timing log once (wait() and the runner both call this)."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            self.status.close()
        except Exception as exc:
            self._fault("closing the progress display", exc)
        self.document = self.timing_document()
        if self.opts.timing_log or self.opts.timing_s3:
            # A log is a report, not the job: where it cannot go is a warning, never the exit status.
            s3 = s3_client_factory(self.job.region, self.job.s3_endpoint)
            try:
                self.timing_places = await asyncio.to_thread(
                    deliver, self.document, self.opts.timing_log, self.opts.timing_s3, s3
                )
            except Exception as exc:
                self._fault("writing the timing log", exc)

    def _label(self, actor: int) -> str:
        return self.job.actor_label(actor) if self.job.actor_label else ""

    def _failures(self, launcher: LaunchWatch | None) -> dict[str, str]:
        launch_trouble = next(iter(launcher.failures().values()), None) if launcher is not None else None
        failures = {}
        for actor, why in self.roster.failures().items():
            if actor in self._cut_short:
                continue
            if launch_trouble and actor in self.roster.unfilled and launch_trouble not in why:
                why = f"{why}; the launcher reported: {launch_trouble}"
            label = self._label(actor)
            failures[f"actor {actor}" + (f" ({label})" if label else "")] = why
        return failures

    def _result(self, launcher: LaunchWatch | None) -> JobResult:
        failures = self._failures(launcher)
        succeeded = self.roster.succeeded
        final: dict[int, Any] = {}
        for record in self.records:
            if record.actor not in final or (record.error is None and not record.superseded):
                final[record.actor] = record.machine.state
        return JobResult(
            not failures and succeeded == self.job.workers and self.interrupted is None,
            self.job.workers,
            succeeded,
            failures,
            time.monotonic() - self.t0,
            self.rejected,
            self.roster.relaunched,
            final,
            self.interrupted,
            self.document,
            self.timing_places,
            self.fault,
        )

    def timing_document(self) -> dict[str, Any]:
        failures = self._failures(self.launcher)
        times = getattr(self.launcher, "launch_times", None)
        doc = timing.document(
            job=self.job.name,
            workers=self.job.workers,
            t0=self.t0,
            records=[r.timing(self.t0, self.t0_wall, self._label(r.actor)) for r in self.records],
            launches=times() if callable(times) else {},
            books=self.books,
            failures=failures,
            ok=not failures and self.roster.succeeded == self.job.workers,
            relaunched=self.roster.relaunched,
            rejected=self.rejected,
            meta=self.opts.meta,
            prices=self.opts.meta.get("prices"),
        )
        if self.job.driver is not None:
            try:
                doc.update(self.job.driver.timing(self.t0))
            except Exception as exc:
                self._fault("adding the job driver's part of the timing log", exc)
        return doc

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StopOthers):
                for record in list(self.playing.get(action.actor, set())):
                    if record.ended is None:
                        record.superseded = True
                        record.writer.write(encode(b"quit:"))
                        record.writer.close()
                self._event(f"actor {action.actor}: first finisher wins; its duplicate is told to quit")
            elif isinstance(action, Relaunch):
                kind = "a duplicate" if "speculative" in action.why else "a replacement"
                self._event(f"actor {action.actor}: {action.why}; launching {kind}")
                if self.relaunch is not None:
                    try:
                        self.relaunch(action.actor)
                    except Exception as exc:  # its vacancy then fails by --connect-timeout
                        self._fault(f"launching {kind} for actor {action.actor}", exc)
        self._changed.set()

    # -- one connection ---------------------------------------------------------------------

    @property
    def rejected(self) -> int:
        return self.gate.rejected

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.gate.refuse_flood(writer):
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer)
        except Exception as exc:  # before a worker was seated: TLS, hello, a spare; no actor to fail
            self._fault(f"handling a connection from {_peer(writer)}", exc)
            await self._close(writer)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        meta: dict[str, Any] = {}  # what the worker says of itself (META): never a reply a state sees
        decoder = Decoder(self.opts.max_frame, meta=meta)
        first = await self.gate.first_messages(reader, writer, decoder, peer)
        if first is not None and first[0] != b"OK:HELLO":
            self.gate.reject(peer, f"first message {quote(first[0], 40)} is not OK:HELLO")
            first = None
        if first is None:
            await self._close(writer)
            return
        self._live += 1
        self._arrived += 1
        try:
            seat = self.roster.arrive()
            if seat is None:
                writer.write(encode(b"quit:"))  # a spare: every actor is taken
                self._spares_seen += 1
                self._maybe_stop_listening()
                self._event(f"spare worker from {peer} told to quit")
                return
            record = self._admit(peer, writer, *seat)
            record.meta = meta  # the decoder keeps filling it
            drive = self._driven if self.job.driver is not None else self._drive
            await self._play(record, lambda: drive(record, reader, writer, decoder, first))
        finally:
            self._live -= 1
            await self._close(writer)
            self._changed.set()

    async def _play(self, record: WorkerRecord, drive: Callable[[], Awaitable[None]]) -> None:
        """A seated worker's whole life. Whatever goes wrong in it, the progress display, the
        books, the job's own code or this module included, fails this worker and names the
        exception: its actor is then retried or reported, and the job never waits on it."""
        try:
            self.status.connected += 1
            what = "a duplicate of actor" if record.duplicate else "actor"
            self.status.event(f"{what} {record.actor} connected from {record.peer}")
            await drive()
        except asyncio.CancelledError:
            record.machine.fail("job ended")
            raise
        except Exception as exc:
            record.machine.fail(f"{type(exc).__name__} in the coordinator: {exc}")
        finally:
            self._finish(record)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), timeout=2)

    def _maybe_stop_listening(self) -> None:
        """Close the port once no worker can be needed: every actor taken, spares sent home."""
        if (
            not self.roster.may_need_workers
            and self._spares_seen >= self.opts.spares
            and self._server is not None
        ):
            self._server.close()

    def _admit(self, peer: str, writer: asyncio.StreamWriter, actor: int, duplicate: bool) -> WorkerRecord:
        """The books of a seated worker; nothing here calls out (``Machine`` contains a job's
        exceptions), so a seat taken always has a record that ``_finish`` will end."""
        self._maybe_stop_listening()
        group = None if self.job.groups is None else self.job.groups.get(actor)
        machine = Machine(self.job.initial, actor, group, info=self.job.info)
        record = WorkerRecord(actor, peer, machine, writer, time.monotonic(), duplicate)
        self.records.append(record)
        self.playing.setdefault(actor, set()).add(record)
        return record

    async def _drive(
        self,
        record: WorkerRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Decoder,
        first: list[bytes],
    ) -> None:
        machine = record.machine
        kill_time = self.opts.kill_time
        try:
            self._send(writer, machine.drain())
            self.books.replies(first, record.actor)
            self._send(writer, machine.receive(*first))
            await writer.drain()
            while not machine.done:
                self.status.state(record.actor, machine.state)
                # mu checked the kill time on every pass of its loop; here, when it falls due.
                due = None if kill_time is None else machine.state.timestamps[0] + kill_time - time.time()
                try:
                    wait = None if due is None else max(due, 0.01)
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout=wait)
                except TimeoutError:
                    data = None
                if data == b"":
                    machine.fail("sock closed")
                    break
                if data:
                    replies = decoder.feed(data)
                    self.books.replies(replies, record.actor)
                    self._send(writer, machine.receive(*replies))
                machine.tick(time.time(), kill_time, self.job.kill_state)
                await writer.drain()
        except ProtocolError as exc:
            machine.fail(f"protocol error: {exc}")
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            machine.fail(f"connection lost: {exc}")

    async def _driven(
        self,
        record: WorkerRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: Decoder,
        first: list[bytes],
    ) -> None:
        """The job's driver talks to the worker (mu.map); the roster's books are kept here."""
        try:
            await self.job.driver.drive(record, reader, writer, decoder, first)
        except Exception as exc:  # a bug in a driver costs its worker, never the server
            record.machine.fail(f"{type(exc).__name__} in the job's driver: {exc}")

    def stand_down(self) -> None:
        """No more workers are needed: vacancies close and ``wait`` returns once the workers
        still connected have ended."""
        self.roster.stand_down()
        self._changed.set()

    def _send(self, writer: asyncio.StreamWriter, commands: list[bytes]) -> None:
        if commands:
            self.books.commands(commands)
            writer.write(b"".join(encode(c) for c in commands))

    def _finish(self, record: WorkerRecord) -> None:
        """The worker's machine ended. Its connection is closed next, as mu closed an
        ErrorState's socket (a worker sees the close and exits); no ``quit:`` is added.
        The outcome is booked before anything is shown, so a failing display cannot lose it."""
        machine = record.machine
        record.ended = time.monotonic()
        record.error = None if record.superseded else machine.error
        self.playing.get(record.actor, set()).discard(record)
        self.status.states.pop(record.actor, None)
        decided = record.actor in self.roster.outcome
        actions = self.roster.ended(record.actor, record.error)
        try:
            if record.superseded or decided or self.job.driver is not None:  # a driver counts its own work
                pass
            elif record.error is None:
                self.status.done += 1
                self.status.event(f"actor {record.actor} finished")
            elif record.actor in self.roster.outcome:
                self.status.failed += 1
                self.status.event(f"actor {record.actor} FAILED: {self.roster.outcome[record.actor]}")
        except Exception as exc:
            self._fault(f"showing how actor {record.actor} ended", exc)
        self._apply(actions)

    # -- faults outside any worker ------------------------------------------------------------

    def _event(self, text: str) -> None:
        """An event line where no worker's outcome hangs on it: a display that fails is noted."""
        try:
            self.status.event(text)
        except Exception as exc:
            self._fault("showing an event", exc)

    def _fault(self, doing: str, exc: Exception) -> None:
        """An unexpected exception that no worker can answer for (every actor it touched has
        its outcome already). It cannot change an outcome, but it is never silent: the first
        of them is kept for the end-of-job report."""
        if self.fault is None:
            self.fault = f"{type(exc).__name__} while {doing}: {exc}"
            with contextlib.suppress(Exception):
                self.status.event(f"coordinator fault: {self.fault}")


def _peer(writer: asyncio.StreamWriter) -> str:
    host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
    return f"{host}:{port}"
