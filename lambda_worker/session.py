"""One worker's connection to its coordinator: read frames, run commands, write replies.

What a command means and what to answer is decided in ``commands``; this module does the I/O
and the scheduling. Three tasks run side by side: one reads the coordinator's connection (so a
lost coordinator is noticed at once, even while a command runs), one executes commands in
order (inline, or with ``nonblock`` in the background), and one fires shortly before Lambda's
time limit. Whichever ends first ends the session; stopping kills every process group a
command started and cancels every transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import ssl
import sys
import time
import traceback
from collections.abc import Awaitable
from typing import Any

from . import commands as cmds
from . import files
from .commands import CommandError
from .event import WorkerEvent
from .process import ProcessGroups, bin_dir, command_env
from .pycall import protocol as pycall
from .pycall.calls import PythonCalls, Settings
from .tlsconf import SERVER_NAME
from .transfer import S3Transfers
from .wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode, meta_message, quote

READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 30.0  # seconds to reach the relay for connect:
PEER_SEND_TIMEOUT = 120.0  # seconds the relay may take to accept a message before send: fails
QUEUE_LIMIT = 256 * 1024 * 1024  # bytes of commands read ahead while one runs inline
DEADLINE_MARGIN = 5.0  # stop this long before Lambda's limit (less for a short invocation)


def deadline_margin(remaining_s: float) -> float:
    """Time kept back to reply, kill and clean up: 5 s, or a tenth of a short invocation."""
    return min(DEADLINE_MARGIN, max(0.2, remaining_s / 10))


@dataclasses.dataclass
class Peer:
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None] | None = None
    ended: bool = False

    async def send(self, message: bytes, what: str) -> None:
        if self.ended or self.writer.is_closing():
            raise CommandError(f"{what}: the peer connection has ended; close_connect: and connect: again")
        self.writer.write(encode(message))
        try:
            await asyncio.wait_for(self.writer.drain(), PEER_SEND_TIMEOUT)
        except TimeoutError:
            raise CommandError(f"{what}: the relay took no data for {PEER_SEND_TIMEOUT:g} s") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise CommandError(f"{what}: peer connection failed: {exc or type(exc).__name__}") from exc


class Session:
    def __init__(
        self,
        event: WorkerEvent,
        tmpdir: str,
        ssl_context: ssl.SSLContext,
        deadline_ms: int | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.event = event
        self.tmpdir = tmpdir
        self.ssl_context = ssl_context
        self.deadline_ms = deadline_ms
        self.max_frame = max_frame
        self.vals = cmds.default_vals(event)
        self.templates = event.templates
        binaries = bin_dir()
        self._binaries = binaries
        self.workdir = binaries or tmpdir  # mu ran commands in /var/task, beside its binaries
        self._env = command_env(os.environ, tmpdir, binaries)
        self.commands_served = 0
        self._writer: asyncio.StreamWriter | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._inflight: dict[int, str] = {}  # slow commands under way, for the deadline's FAIL
        self._queued = 0  # bytes of commands read but not yet executed
        self._quit_read = False
        self._room = asyncio.Event()
        self._groups = ProcessGroups()
        self.s3 = S3Transfers(event.region, event.s3_endpoint)
        self._peer: Peer | None = None
        self._python: PythonCalls | None = None
        self._last_activity = time.monotonic()
        self.deadline_at = time.monotonic() + deadline_ms / 1000 if deadline_ms is not None else None

    def log(self, text: str) -> None:
        print(f"mu worker {self.event.worker} ({self.event.job}): {text}", file=sys.stderr, flush=True)

    # -- connection -------------------------------------------------------------------------

    async def run(self) -> str:
        """Serve until the coordinator says quit, goes away, stays silent too long, or time runs out."""
        ev = self.event
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(ev.host, ev.port, ssl=self.ssl_context, server_hostname=SERVER_NAME),
                timeout=min(60.0, ev.idle_timeout),
            )
        except (TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectionError(
                f"cannot reach coordinator {ev.coordinator} over TLS: {exc or type(exc).__name__}"
            ) from exc
        self._writer = writer
        try:
            await self.send(b"OK:HELLO")
            await self.send(meta_message(self.meta()))
            return await self._serve(reader)
        finally:
            await self._shutdown()

    def meta(self) -> dict[str, Any]:
        """What the worker says about itself after OK:HELLO (``wire.META``): its invocation's
        number (so the coordinator pairs its connection with its invocation exactly), the
        Python that would run mu.map's calls, and on Lambda the time the invocation has."""
        fields: dict[str, Any] = {"worker": self.event.worker, "python": platform.python_version()}
        if self.deadline_ms is not None:
            fields["deadline_ms"] = self.deadline_ms
        return fields

    async def _serve(self, reader: asyncio.StreamReader) -> str:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self._read_commands(reader, queue)), loop.create_task(self._execute(queue))}
        if self.deadline_at is not None:
            tasks.add(loop.create_task(self._deadline()))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is None:
                return task.result()
        exc = next(iter(done)).exception()
        self.log("".join(traceback.format_exception(exc)).rstrip())
        return "crashed"

    async def _read_commands(self, reader: asyncio.StreamReader, queue: asyncio.Queue[bytes]) -> str:
        decoder = Decoder(self.max_frame)
        while True:
            if self._queued > QUEUE_LIMIT:  # the coordinator runs far ahead: let TCP hold it back
                self._room.clear()
                await self._room.wait()
            # While something runs the idle clock is stopped; it restarts when that work ends.
            remaining = self._last_activity + self.event.idle_timeout - time.monotonic()
            timeout = self.event.idle_timeout if self._busy() else max(remaining, 0.01)
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout=timeout)
            except TimeoutError:
                if self._busy() or not queue.empty():
                    continue
                if time.monotonic() - self._last_activity >= self.event.idle_timeout:
                    self.log(f"no command for {self.event.idle_timeout:g} s and nothing running; exiting")
                    return "idle_timeout"
                continue
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                self.log(f"connection to coordinator lost: {exc or type(exc).__name__}")
                return "disconnected"
            if not data:
                if self._quit_read:  # it said quit: and closed before the command was taken
                    return "quit"
                if self._busy():
                    self.log("the coordinator closed the connection; stopping what is still running")
                return "disconnected"
            self._touch()
            try:
                messages = decoder.feed(data)
            except ProtocolError as exc:
                self.log(f"protocol error from coordinator, closing the connection: {exc}")
                return "protocol_error"
            for msg in messages:
                self._queued += len(msg)
                self._quit_read = self._quit_read or msg == b"quit:"
                queue.put_nowait(msg)

    async def _execute(self, queue: asyncio.Queue[bytes]) -> str:
        while True:
            msg = await queue.get()
            self._queued -= len(msg)
            if self._queued <= QUEUE_LIMIT:
                self._room.set()
            if not await self.dispatch(msg):
                return "quit"

    async def _deadline(self) -> str:
        assert self.deadline_at is not None
        margin = deadline_margin(self.deadline_at - time.monotonic())
        await asyncio.sleep(max(0.0, self.deadline_at - margin - time.monotonic()))
        why = f"the Lambda invocation reaches its time limit in {margin:.1f} s"
        self.log(f"{why}; stopping and cleaning up")
        for what in list(self._inflight.values()) or ["worker"]:
            await self.send(cmds.fail(f"{what}: {why}; stopped and cleaned up"))
        return "deadline"

    def _busy(self) -> bool:
        return bool(self._inflight or self._background)

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    async def send(self, body: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        if len(body) > self.max_frame:
            body = cmds.fail(f"the reply ({quote(body, 40)}) would be {len(body)} bytes, over the "
                             f"{self.max_frame}-byte message limit")  # fmt: skip
        writer.write(encode(body))
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await writer.drain()

    async def _shutdown(self) -> None:
        self._groups.kill_all()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._groups.kill_all()  # anything a cancelled command started meanwhile
        self.s3.cancel_all()
        if self._python is not None:
            await self._python.close()
        await self._close_peer()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), timeout=2)

    # -- commands ---------------------------------------------------------------------------

    async def dispatch(self, msg: bytes) -> bool:
        """Handle one command; returns False when the worker should stop. Never raises."""
        self.commands_served += 1
        name, arg = cmds.parse_command(msg)
        try:
            if name == "quit":
                return False
            if name in cmds.PURE:
                replies = cmds.PURE[name](self.vals, arg)
                for reply in replies if isinstance(replies, list) else [replies]:
                    await self.send(reply)
            elif name in cmds.SLOW_COMMANDS:
                await self._slow(name, arg)
            elif name == "connect":
                await self.send(await self._connect(arg))
            elif name == "close_connect":
                await self._close_peer()
                await self.send(b"OK:CLOSE_CONNECT")
            elif name == "send":
                await self.send(await self._send_file(arg))
            elif name in pycall.COMMANDS:
                await self._python_calls().command(name, arg)
            else:
                raise cmds.unknown_command(msg)
        except CommandError as exc:
            await self.send(cmds.fail(str(exc)))
        except Exception as exc:  # a bug must cost one command, never the worker
            await self.send(self._internal_error(name or "command", exc))
        return True

    def _python_calls(self) -> PythonCalls:
        if self._python is None:
            self._python = PythonCalls(
                Settings.from_event(self.event.pymap or {}), self.event.bucket, self.s3.client,
                self._reply_after_work, self.tmpdir, self.log, self._inflight,
            )  # fmt: skip
        return self._python

    async def _reply_after_work(self, body: bytes) -> None:
        self._touch()  # the idle clock restarts when a call ends
        await self.send(body)

    def _internal_error(self, what: str, exc: BaseException) -> bytes:
        self.log(f"{what}: unexpected error\n" + "".join(traceback.format_exception(exc)).rstrip())
        return cmds.fail(f"{what}: unexpected {type(exc).__name__}: {exc}; the worker keeps serving")

    async def _slow(self, name: str, arg: bytes) -> None:
        if name == "run":
            cmd = cmds.command_for(self.vals, self.templates, arg, self.tmpdir)
            wait = cmds.waitfile_for(self.vals, self.tmpdir)
            self.vals.pop("waitfile", None)  # it applies to this run only
            label, pending = f"run({cmd[:200]})", cmds.running_reply(cmd)
            job: Awaitable[bytes] = self._run(cmd, wait)
        else:
            transfer = cmds.transfer_for(name, self.vals, arg, self.tmpdir)
            label, pending = f"{name.upper()}({transfer.where})", transfer.pending()
            job = self.s3.run(transfer)
        if not cmds.flag_on(self.vals.get("nonblock")):
            await self.send(await self._outcome(label, job))
            return
        if not cmds.flag_on(self.vals.get("bg_silent")):
            await self.send(pending)
        task = asyncio.get_running_loop().create_task(self._finish_later(label, job))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_later(self, label: str, job: Awaitable[bytes]) -> None:
        await self.send(await self._outcome(label, job))

    async def _outcome(self, label: str, job: Awaitable[bytes]) -> bytes:
        token = id(job)
        self._inflight[token] = label
        try:
            return await job
        except CommandError as exc:
            return cmds.fail(str(exc))
        except Exception as exc:
            return self._internal_error(label, exc)
        finally:
            self._inflight.pop(token, None)
            self._touch()

    async def _run(self, cmd: str, wait: tuple[str, float] | None = None) -> bytes:
        if wait is not None:
            path, timeout = wait
            deadline = time.monotonic() + timeout
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"run: {path} (waitfile) did not appear within {timeout:g} s; the command did not "
                        f"run: {cmd[:300]}"
                    )
                await asyncio.sleep(0.02)
        files.ensure_dir(self.tmpdir)
        tail = cmds.OutputTail()
        status = await self._groups.run(cmd, self.workdir, self._env, tail)
        if status == 127:
            tail.feed(cmds.missing_program_hint(tail.value(), self._binaries, self._programs()))
        if status == 0:
            await self._hand_off(cmd)
        return cmds.run_reply(cmd, status, tail.value())

    def _programs(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._binaries or "") if e.is_file())
        except OSError:
            return []

    async def _hand_off(self, cmd: str) -> None:
        """mu's finished_run, done before the reply so the next command sees its files."""
        try:
            plan = cmds.handoff_for(cmd, self.vals)
        except CommandError as exc:
            await self._statefile_problem(str(exc))
            return
        if plan is None:
            return
        peer = self._peer
        if peer is None:  # mu: no neighbour, nothing to send
            plan = dataclasses.replace(plan, send=None)
        message, problems = files.hand_off(self.tmpdir, plan, self.max_frame)
        if message is not None and peer is not None:
            try:
                await peer.send(message, f"STATE({plan.send})")
            except CommandError as exc:
                problems.append(str(exc))
        for problem in problems:
            await self._statefile_problem(problem)

    async def _statefile_problem(self, text: str) -> None:
        self.log(f"state hand-off: {text}")
        await self.send(f"INFO:statefile_error:{text}".encode())

    # -- peer connection (through the relay) -------------------------------------------------

    async def _connect(self, arg: bytes) -> bytes:
        if self._peer is not None:
            raise CommandError("already connected")  # mu's words; close_connect: first
        target = cmds.connect_for(arg)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host, target.port, ssl=self.ssl_context, server_hostname=SERVER_NAME
                ),
                timeout=CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError, ssl.SSLError, ValueError, UnicodeError) as exc:
            why = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                why = f"no answer within {CONNECT_TIMEOUT:g} s"
            raise CommandError(f"CONNECT({target.target}): {why}") from exc
        peer = Peer(writer)
        if target.hello:
            try:
                await peer.send(target.hello, "connect")
            except CommandError:
                writer.close()
                raise
        self._peer = peer
        peer.reader_task = asyncio.get_running_loop().create_task(self._read_peer(reader, peer))
        return b"OK:CONNECT(" + arg + b")"

    async def _read_peer(self, reader: asyncio.StreamReader, peer: Peer) -> None:
        decoder = Decoder(self.max_frame)
        try:
            while data := await reader.read(READ_SIZE):
                for msg in decoder.feed(data):
                    self._touch()
                    await self._peer_message(msg)
            self.log("the relay closed the peer connection")
        except ProtocolError as exc:
            await self._peer_problem(f"the relay sent a bad frame ({exc}); peer connection closed")
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.log(f"peer connection ended: {exc or type(exc).__name__}")
        except Exception as exc:
            self.log("peer reader: unexpected error\n" + "".join(traceback.format_exception(exc)).rstrip())
            await self._peer_problem(f"unexpected {type(exc).__name__}: {exc}; peer connection closed")
        finally:
            peer.ended = True
            peer.writer.close()

    async def _peer_message(self, msg: bytes) -> None:
        """Store or report one peer message; whatever goes wrong is an INFO, never the reader's end."""
        try:
            action = cmds.peer_message(msg)
            if isinstance(action, cmds.PeerFile):
                files.write_peer_file(self.tmpdir, action.name, action.payload)
                await self.send(f"INFO:file:{action.name}".encode())
            elif isinstance(action, cmds.PeerState):
                files.inflate_state(self.tmpdir, action.number, action.compressed, cmds.MAX_STATE_BYTES)
            else:
                await self.send(action.line)
        except files.FileError as exc:
            await self._peer_problem(str(exc))
        except Exception as exc:
            self.log("peer message: unexpected error\n" + "".join(traceback.format_exception(exc)).rstrip())
            await self._peer_problem(f"unexpected {type(exc).__name__}: {exc}")

    async def _peer_problem(self, text: str) -> None:
        self.log(f"peer: {text}")
        await self.send(cmds.peer_error(text).line)

    async def _send_file(self, arg: bytes) -> bytes:
        """``send:NAME``: ``##TMPDIR##/NAME`` to the peer as ``FILE:NAME:`` + bytes."""
        name = cmds.peer_name(arg.decode("utf-8", "replace"), "send")
        path = os.path.join(self.tmpdir, name)
        try:
            message = files.read_for_peer(path, cmds.file_message_head(name), self.max_frame, "send")
        except (files.FileError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if self._peer is None:
            raise CommandError("send: no peer connection; use connect:HOST:PORT:HELLO first")
        await self._peer.send(message, "send")
        return f"OK:SEND({name})".encode()

    async def _close_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is None:
            return
        if peer.reader_task is not None:
            peer.reader_task.cancel()
            await asyncio.gather(peer.reader_task, return_exceptions=True)
        peer.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.writer.wait_closed(), timeout=2)
