"""One worker's connection to its coordinator: read frames, run commands, write replies.

All protocol decisions live in ``wire`` and ``commands``; this module only moves bytes and
schedules the slow commands, inline or (with ``nonblock``) in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import commands as cmds
from .commands import CommandError
from .event import WorkerEvent
from .tlsconf import SERVER_NAME
from .wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode

READ_SIZE = 256 * 1024


def binary_dirs() -> list[str]:
    """Where bundled static tools live: the Lambda package root, or binaries/bin in a checkout."""
    here = Path(__file__).resolve().parent
    dirs = [os.environ.get("MU_BIN_DIR", ""), str(here.parent / "bin"), str(here.parent / "binaries" / "bin")]
    return [d for d in dirs if d and os.path.isdir(d)]


def _truthy(value: Any) -> bool:
    return str(value).strip() not in ("", "0", "None", "False", "false")


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
        self.vals = cmds.default_vals(
            bucket=event.bucket, region=event.region, command=event.command, nonblock=event.nonblock
        )
        self.commands_served = 0
        self._writer: asyncio.StreamWriter | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._last_activity = time.monotonic()
        self._s3: Any = None
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mu-s3")
        self._peer: tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]] | None = None
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*binary_dirs(), env.get("PATH", "/usr/bin:/bin")])
        env["TMPDIR"] = tmpdir
        self._env = env

    def log(self, text: str) -> None:
        print(f"mu worker {self.event.worker} ({self.event.job}): {text}", file=sys.stderr, flush=True)

    # -- connection -------------------------------------------------------------------------

    async def run(self) -> str:
        """Serve until the coordinator says quit, goes away, or stays silent too long."""
        ev = self.event
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(ev.host, ev.port, ssl=self.ssl_context, server_hostname=SERVER_NAME),
                timeout=min(60.0, ev.idle_timeout),
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ConnectionError(
                f"cannot reach coordinator {ev.coordinator} over TLS: {exc or type(exc).__name__}"
            ) from exc
        self._writer = writer
        try:
            await self.send(b"OK:HELLO")
            if self.deadline_ms is not None:
                await self.send(f"INFO:deadline_ms:{self.deadline_ms}".encode())
            return await self._serve(reader)
        finally:
            await self._shutdown()

    async def _serve(self, reader: asyncio.StreamReader) -> str:
        decoder = Decoder(self.max_frame)
        while True:
            remaining = self._last_activity + self.event.idle_timeout - time.monotonic()
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout=max(remaining, 0.01))
            except TimeoutError:
                if self._background:
                    continue
                if time.monotonic() - self._last_activity >= self.event.idle_timeout:
                    self.log(f"no command for {self.event.idle_timeout:g} s and nothing running; exiting")
                    return "idle_timeout"
                continue
            except (ConnectionError, ssl.SSLError) as exc:
                self.log(f"connection to coordinator lost: {exc}")
                return "disconnected"
            if not data:
                return "disconnected"
            self._last_activity = time.monotonic()
            try:
                messages = decoder.feed(data)
            except ProtocolError as exc:
                self.log(f"protocol error from coordinator, closing the connection: {exc}")
                return "protocol_error"
            for msg in messages:
                self.commands_served += 1
                if not await self.dispatch(msg):
                    return "quit"

    async def send(self, body: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        writer.write(encode(body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _shutdown(self) -> None:
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._close_peer()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), timeout=2)

    # -- commands ---------------------------------------------------------------------------

    async def dispatch(self, msg: bytes) -> bool:
        """Handle one command; returns False when the worker should stop."""
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
                await self.send(await self._send_to_peer(arg))
            else:
                shown = msg[:80].decode(errors="replace")
                raise CommandError(f"no such command '{shown}'")
        except CommandError as exc:
            await self.send(cmds.fail(str(exc)))
        return True

    async def _slow(self, name: str, arg: bytes) -> None:
        if name == "run":
            cmd = cmds.command_for(self.vals, arg, self.tmpdir)
            wait = cmds.waitfile_for(self.vals, self.tmpdir)
            self.vals.pop("waitfile", None)  # it applies to this run only
            job, detail = self._run(cmd, wait), cmd
        else:
            transfer = cmds.transfer_for(name, self.vals, arg, self.tmpdir)
            action = cmds.do_retrieve if name == "retrieve" else cmds.do_upload
            job, detail = self._in_thread(action, transfer), transfer.where
        if not _truthy(self.vals.get("nonblock")):
            await self.send(await self._outcome(job))
            return
        await self.send(cmds.pending_reply(name, detail))
        task = asyncio.get_running_loop().create_task(self._finish_later(job))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_later(self, job: Any) -> None:
        reply = await self._outcome(job)
        self._last_activity = time.monotonic()
        await self.send(reply)

    @staticmethod
    async def _outcome(job: Any) -> bytes:
        try:
            return await job
        except CommandError as exc:
            return cmds.fail(str(exc))

    async def _in_thread(self, action: Any, transfer: cmds.Transfer) -> bytes:
        s3 = self._s3_client()
        return await asyncio.get_running_loop().run_in_executor(self._pool, action, s3, transfer)

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3  # deferred: most of a cold start is importing boto3
            from botocore.config import Config

            self._s3 = boto3.session.Session().client(
                "s3",
                region_name=self.event.region,
                endpoint_url=self.event.s3_endpoint,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
            )
        return self._s3

    async def _run(self, cmd: str, wait: tuple[str, float] | None = None) -> bytes:
        if wait is not None:
            path, timeout = wait
            deadline = time.monotonic() + timeout
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise CommandError(f"RETVAL(-1):OUTPUT(no {path} within {timeout:g} s):COMMAND({cmd})")
                await asyncio.sleep(0.02)
        try:
            proc = await asyncio.create_subprocess_shell(
                cmd, cwd=self.tmpdir, env=self._env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise CommandError(f"RETVAL(-1):OUTPUT(cannot start shell: {exc}):COMMAND({cmd})") from exc
        self._procs.add(proc)
        try:
            output, _ = await proc.communicate()
        finally:
            self._procs.discard(proc)
        return cmds.run_reply(cmd, proc.returncode if proc.returncode is not None else -1, output)

    # -- peer connection (through the relay) -------------------------------------------------

    async def _connect(self, arg: bytes) -> bytes:
        host, sep1, rest = arg.partition(b":")
        port, sep2, hello = rest.partition(b":")
        if not (sep1 and sep2 and host and port.isdigit()):
            raise CommandError(f"connect needs 'connect:HOST:PORT:MSG', got 'connect:{arg[:80]!r}'")
        target = f"{host.decode()}:{int(port)}"
        await self._close_peer()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host.decode(), int(port), ssl=self.ssl_context, server_hostname=SERVER_NAME
                ),
                timeout=30,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise CommandError(f"CONNECT({target}): {exc or type(exc).__name__}") from exc
        writer.write(encode(hello))
        await writer.drain()
        task = asyncio.get_running_loop().create_task(self._peer_reader(reader))
        self._peer = (reader, writer, task)
        return f"OK:CONNECT({target})".encode()

    async def _peer_reader(self, reader: asyncio.StreamReader) -> None:
        decoder = Decoder(self.max_frame)
        while True:
            try:
                data = await reader.read(READ_SIZE)
                messages = decoder.feed(data) if data else []
            except (ConnectionError, ssl.SSLError, ProtocolError) as exc:
                self.log(f"peer connection ended: {exc}")
                return
            if not data:
                return
            for msg in messages:
                self._last_activity = time.monotonic()
                await self.send(self._peer_message(msg))

    def _peer_message(self, msg: bytes) -> bytes:
        """``FILE:NAME:`` + bytes lands atomically in the temp dir; anything else is reported."""
        if msg.startswith(b"FILE:"):
            name_b, sep, payload = msg[5:].partition(b":")
            name = name_b.decode(errors="replace")
            if not sep or not name or "/" in name or name in (".", ".."):
                return f"INFO:peer_error:bad FILE message name {name!r}".encode()
            path = os.path.join(self.tmpdir, name)
            partial = f"{path}.part"
            with open(partial, "wb") as f:
                f.write(payload)
            os.replace(partial, path)
            return f"INFO:file:{name}".encode()
        return b"INFO:peer:" + msg

    async def _send_to_peer(self, arg: bytes) -> bytes:
        name, path = cmds.send_path(arg, self.tmpdir)
        if self._peer is None:
            raise CommandError("send: no peer connection; use connect:HOST:PORT:HELLO first")
        with open(path, "rb") as f:
            payload = f.read()
        writer = self._peer[1]
        writer.write(encode(b"FILE:" + name.encode() + b":" + payload))
        try:
            await writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            raise CommandError(f"send: peer connection failed: {exc}") from exc
        return f"OK:SEND({name})".encode()

    async def _close_peer(self) -> None:
        if self._peer is None:
            return
        _, writer, task = self._peer
        self._peer = None
        task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), timeout=2)
