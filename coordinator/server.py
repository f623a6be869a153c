"""The coordinator's asyncio mutual-TLS server: a thin shell around one Machine per worker.

Sockets, timeouts and bookkeeping live here; what to send and what a reply means is decided
by the sans-I/O machines, so this module has no job logic at all.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import contextlib
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from lambda_worker.wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode

from .job import Job
from .machine import Machine
from .status import Status

READ_SIZE = 256 * 1024

# asyncio's TLS transport zero-fills a 256 KiB receive buffer for every connection, which is
# most of a connection's memory. TLS records are at most 16 KiB, so 32 KiB loses nothing;
# benchmarks/coordinator_capacity.py measured peak RSS per worker falling about five-fold.
TLS_BUFFER = 32 * 1024


def limit_tls_buffers() -> None:
    sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, TLS_BUFFER)


class LaunchWatch(Protocol):
    """What the server asks of a launcher: can any launched worker still connect?"""

    def all_finished(self, connected: int) -> bool: ...

    def failures(self) -> dict[int, str]: ...


@dataclass
class WorkerRecord:
    actor: int
    peer: str
    machine: Machine
    connected: float
    ended: float | None = None
    error: str | None = None

    def timing(self, t0: float) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "peer": self.peer,
            "connected": round(self.connected - t0, 6),
            "ended": None if self.ended is None else round(self.ended - t0, 6),
            "ok": self.error is None,
            "error": self.error,
            "states": [{"state": name, "t": round(t - t0, 6)} for name, t in self.machine.history],
        }


@dataclass
class JobResult:
    ok: bool
    workers: int
    succeeded: int
    failures: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    rejected: int = 0  # connections turned away: failed TLS, bad first message

    def describe(self) -> str:
        if self.ok:
            return f"all {self.workers} workers finished in {self.elapsed:.2f} s"
        lines = [f"{len(self.failures)} of {self.workers} workers failed:"]
        lines += [f"  {who}: {why}" for who, why in sorted(self.failures.items())]
        return "\n".join(lines)


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 13579
    kill_time: float = 300.0  # longest wait for one reply before the worker counts as failed
    connect_timeout: float = 300.0  # longest wait for the N-th worker to connect
    handshake_timeout: float = 10.0
    hello_timeout: float = 30.0
    max_frame: int = DEFAULT_MAX_FRAME
    timing_log: str | None = None
    spares: int = 0  # extra workers launched; the first N to connect get actors, the rest quit
    relay_port: int = 0  # for jobs that pass data between workers; 0 picks a free port


class Coordinator:
    def __init__(self, job: Job, ssl_context: ssl.SSLContext, options: ServerOptions, status: Status) -> None:
        self.job = job
        self.ssl_context = ssl_context
        self.opts = options
        self.status = status
        self.records: dict[int, WorkerRecord] = {}
        self.rejected = 0
        self._next_actor = 0
        self._spares_seen = 0
        self._finished = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.t0 = time.monotonic()
        self.port = options.port

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the port (useful when asked for port 0)."""
        limit_tls_buffers()
        try:
            self._server = await asyncio.start_server(
                self._on_connect,
                self.opts.host,
                self.opts.port,
                backlog=4096,
            )
        except OSError as exc:
            raise OSError(
                f"cannot listen on {self.opts.host}:{self.opts.port}: {exc.strerror}; "
                "pick another port with --port"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self.t0 = time.monotonic()
        return self.port

    async def wait(self, launcher: LaunchWatch | None = None) -> JobResult:
        """Until every worker's machine has ended, or no missing worker can still arrive."""
        deadline = self.t0 + self.opts.connect_timeout
        missing_reason = ""
        while True:
            if self._finished >= self.job.workers:
                break
            if self._next_actor < self.job.workers:
                if (
                    launcher is not None
                    and launcher.all_finished(self._next_actor)
                    and self._finished == self._next_actor
                ):
                    missing_reason = "every launched worker has ended or connected; this one never will"
                    break
                if time.monotonic() >= deadline:
                    missing_reason = (
                        f"never connected within --connect-timeout {self.opts.connect_timeout:g} s"
                    )
                    break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.5)
        await self.close()
        return self._result(launcher, missing_reason)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.status.close()
        if self.opts.timing_log:
            self.write_timing_log(self.opts.timing_log)

    def _result(self, launcher: LaunchWatch | None, missing_reason: str) -> JobResult:
        label = self.job.actor_label or (lambda actor: "")
        failures = {
            f"actor {a}" + (f" ({label(a)})" if label(a) else ""): r.error
            for a, r in self.records.items()
            if r.error is not None
        }
        missing = self.job.workers - self._next_actor
        if missing > 0:
            launch_failures = launcher.failures() if launcher is not None else {}
            for worker, why in sorted(launch_failures.items())[:missing]:
                failures[f"worker {worker}"] = why
            for i in range(missing - min(missing, len(launch_failures))):
                failures[f"missing worker {i + 1} of {missing}"] = missing_reason or "never connected"
        succeeded = sum(1 for r in self.records.values() if r.ended is not None and r.error is None)
        ok = not failures and succeeded == self.job.workers
        return JobResult(ok, self.job.workers, succeeded, failures, time.monotonic() - self.t0, self.rejected)

    def write_timing_log(self, path: str) -> None:
        doc = {
            "job": self.job.name,
            "workers": self.job.workers,
            "rejected_connections": self.rejected,
            "records": [r.timing(self.t0) for _, r in sorted(self.records.items())],
        }
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)

    # -- one connection ---------------------------------------------------------------------

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
        peer = f"{host}:{port}"
        decoder = Decoder(self.opts.max_frame)
        try:
            # TLS is started here rather than by the listener so that a failed handshake is
            # seen, counted and logged instead of vanishing inside asyncio.
            try:
                await writer.start_tls(self.ssl_context, ssl_handshake_timeout=self.opts.handshake_timeout)
            except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
                self.rejected += 1
                self.status.event(f"rejected connection from {peer}: TLS handshake failed: {exc}")
                return
            first = await self._first_message(reader, decoder, peer)
            if first is None:
                return
            hello, pending = first
            if self._next_actor >= self.job.workers:
                writer.write(encode(b"quit:"))  # a spare: every actor is taken
                self._spares_seen += 1
                self.status.event(f"spare worker from {peer} told to quit")
                self._maybe_stop_listening()
                return
            record = self._admit(peer)
            await self._drive(record, reader, writer, decoder, [hello, *pending])
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2)

    async def _first_message(
        self, reader: asyncio.StreamReader, decoder: Decoder, peer: str
    ) -> tuple[bytes, list[bytes]] | None:
        """A worker earns an actor number only by a valid ``OK:HELLO`` in time."""
        try:
            messages: list[bytes] = []
            async with asyncio.timeout(self.opts.hello_timeout):
                while not messages:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise ConnectionError("closed before saying OK:HELLO")
                    messages = decoder.feed(data)
        except (TimeoutError, ConnectionError, ProtocolError, ssl.SSLError, OSError) as exc:
            self.rejected += 1
            why = str(exc) or f"no OK:HELLO within {self.opts.hello_timeout:g} s"
            self.status.event(f"rejected connection from {peer}: {why}")
            return None
        if messages[0] != b"OK:HELLO":
            self.rejected += 1
            self.status.event(
                f"rejected connection from {peer}: first message {messages[0][:40]!r} is not OK:HELLO"
            )
            return None
        return messages[0], messages[1:]

    def _maybe_stop_listening(self) -> None:
        """Close the port once every actor is taken and every spare has been sent home."""
        full = self._next_actor >= self.job.workers and self._spares_seen >= self.opts.spares
        if full and self._server is not None:
            self._server.close()

    def _admit(self, peer: str) -> WorkerRecord:
        actor = self._next_actor
        self._next_actor += 1
        self._maybe_stop_listening()
        machine = Machine(self.job.initial, actor, info=dict(self.job.info))
        record = WorkerRecord(actor, peer, machine, time.monotonic())
        self.records[actor] = record
        self.status.connected += 1
        self.status.event(f"actor {actor} connected from {peer}")
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
        try:
            self._send(writer, machine.drain())
            for msg in first:
                self._send(writer, machine.receive(msg))
            await writer.drain()
            while not machine.done:
                self.status.state(record.actor, str(machine.state))
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout=self.opts.kill_time)
                except TimeoutError:
                    machine.fail(f"no reply within --kill-time {self.opts.kill_time:g} s in {machine.state}")
                    break
                if not data:
                    machine.fail(f"worker disconnected in {machine.state}")
                    break
                for msg in decoder.feed(data):
                    self._send(writer, machine.receive(msg))
                    if machine.done:
                        break
                await writer.drain()
        except ProtocolError as exc:
            machine.fail(f"protocol error in {machine.state}: {exc}")
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            machine.fail(f"connection lost in {machine.state}: {exc}")
        except asyncio.CancelledError:
            machine.fail(f"job ended while in {machine.state}")
            raise
        finally:
            self._finish(record, writer)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, commands: list[bytes]) -> None:
        if commands:
            writer.write(b"".join(encode(c) for c in commands))

    def _finish(self, record: WorkerRecord, writer: asyncio.StreamWriter) -> None:
        machine = record.machine
        record.ended = time.monotonic()
        record.error = machine.error
        if machine.failed and not writer.is_closing():
            writer.write(encode(b"quit:"))  # let a live worker go home
        self._finished += 1
        self.status.states.pop(record.actor, None)
        if record.error is None:
            self.status.done += 1
            self.status.event(f"actor {record.actor} finished")
        else:
            self.status.failed += 1
            self.status.event(f"actor {record.actor} FAILED: {record.error}")
        self._changed.set()
