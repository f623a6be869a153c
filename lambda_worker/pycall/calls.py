"""The worker's side of ``mu.map``: the Python-call commands of one session.

The session hands every ``py_*`` command here. Functions and calls are passed on, in the order
they arrived, to the call runner (``runner.py``, one child process of the worker that forks a
grandchild per call); payloads held in the job's bucket are fetched first and results larger
than the job's inline limit are stored there before their reply is sent. A call's reply goes
back whenever its call ends, so several calls may be under way (the coordinator keeps a small
window of them in flight to hide the round trip).

If the runner itself dies (a native crash while a function's modules were imported, the
kernel's OOM killer), the calls it held fail with ``runner`` and the next command starts a new
one, which loads the functions the old one had again: the coordinator need not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lambda_worker.commands import CommandError, s3_reason
from lambda_worker.wire import Decoder, ProtocolError, encode

from . import protocol as p

READ_SIZE = 1 << 20
DEFAULT_LOCAL_MEMORY_MB = 2048  # per call, when the job gives no limit and this is not Lambda
LAMBDA_RESERVE_MB = 200  # of the function's memory, kept for the worker and the runner
STOP_WAIT = 1.0  # seconds the runner has to exit once its stdin is closed


@dataclass(frozen=True)
class Settings:
    """The event's ``pymap`` section."""

    slots: int = 1
    inline_limit: int = p.DEFAULT_INLINE_LIMIT
    prefix: str = "mu-pymap/"
    memory_mb: int | None = None

    @classmethod
    def from_event(cls, section: dict[str, Any]) -> Settings:
        return cls(
            slots=int(section.get("slots", 1)),
            inline_limit=int(section.get("inline_limit", p.DEFAULT_INLINE_LIMIT)),
            prefix=str(section.get("prefix", "mu-pymap/")),
            memory_mb=None if section.get("memory_mb") is None else int(section["memory_mb"]),
        )


def default_memory_mb(slots: int, environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """A call's memory limit when the job sets none: on Lambda its share of the function's
    memory (a call over it would otherwise end the whole worker), elsewhere 2 GiB."""
    size = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if size.isdigit():
        return max(64, (int(size) - LAMBDA_RESERVE_MB) // max(1, slots))
    return DEFAULT_LOCAL_MEMORY_MB


def runner_env(environ: dict[str, str] | os._Environ[str], path: list[str]) -> dict[str, str]:
    """The worker's environment, with its import path: the runner imports what the worker can
    (on Lambda the function's folder and its layers, in the local sandbox /opt/mu)."""
    dirs = [d for d in path if d and os.path.isdir(d)]
    return {**environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(dirs)), "PYTHONUNBUFFERED": "1"}


class PythonCalls:
    def __init__(
        self,
        settings: Settings,
        bucket: str,
        s3_client: Callable[[], Any],
        send: Callable[[bytes], Awaitable[None]],
        tmpdir: str,
        log: Callable[[str], None],
        inflight: dict[int, str],
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.s3_client = s3_client
        self.send = send
        self.tmpdir = tmpdir
        self.log = log
        self.inflight = inflight  # the session's slow work, for the deadline's FAIL and the idle clock
        self.memory_mb = settings.memory_mb or default_memory_mb(settings.slots)
        self.packages: dict[str, tuple[str, bytes]] = {}  # hash -> (mode, zip), to reload a new runner
        self.loaded: set[str] = set()  # functions the current runner has
        self.defining: set[str] = set()
        self.calls: dict[str, int] = {}  # call id -> its token in ``inflight``
        self.cancelled: set[str] = set()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.functions_dir: str | None = None

    # -- commands (from the session) ----------------------------------------------------------

    async def command(self, name: str, arg: bytes) -> None:
        """Handle one ``py_*`` command; its reply is sent now or when the work ends."""
        if name == "py_cancel":
            ident = p.parse_cancel(arg)
            self.cancelled.add(ident)
            self._forget(ident)
            if self.proc is not None and self.proc.returncode is None:
                await self._write(b"cancel:" + ident.encode())
            await self.send(p.cancelled_reply(ident))
            return
        if name == "py_function":
            define = p.parse_define(arg)
            if define.hash in self.packages:
                await self.send(p.defined_reply(define.hash))
                return
            self.defining.add(define.hash)
            self._enqueue("define", define)
        else:
            call = p.parse_call(arg)
            token = id(call)
            self.calls[call.id] = token
            self.inflight[token] = f"PY_CALL({call.id}):deadline"
            self._enqueue("call", call)

    def _enqueue(self, what: str, item: Any) -> None:
        self.queue.put_nowait((what, item))
        if self.forwarder is None or self.forwarder.done():
            self.forwarder = asyncio.get_running_loop().create_task(self._forward())

    async def _forward(self) -> None:
        """Pass commands to the runner in order; a bucket payload is fetched on the way."""
        while not self.queue.empty():
            what, item = self.queue.get_nowait()
            try:
                if what == "define":
                    await self._define(item)
                elif item.id not in self.cancelled:
                    await self._call(item)
            except Exception as exc:  # one bad command must not stop the ones behind it
                self.log("python call: unexpected error: " + repr(exc))
                if what == "define":
                    await self._define_failed(item.hash, f"unexpected {type(exc).__name__}: {exc}")
                else:
                    await self._call_failed(item.id, "runner", f"unexpected {type(exc).__name__}: {exc}")

    async def _define(self, define: p.Define) -> None:
        try:
            package = await self._fetch(define.payload, f"function {define.hash}")
        except CommandError as exc:
            await self._define_failed(define.hash, str(exc))
            return
        self.packages[define.hash] = (define.mode, package)
        if not await self._ensure_runner():
            await self._define_failed(define.hash, "the call runner could not start (see the worker's log)")
            return
        await self._load(define.hash)

    async def _load(self, fn_hash: str) -> None:
        mode, package = self.packages[fn_hash]
        await self._write(f"define:{fn_hash}:{mode}:".encode() + package)

    async def _call(self, call: p.Call) -> None:
        try:
            data = await self._fetch(call.payload, f"the arguments of call {call.id}")
        except CommandError as exc:
            await self._call_failed(call.id, "transfer", str(exc))
            return
        if call.hash not in self.packages:
            await self._call_failed(
                call.id, "bad", f"function {call.hash} was not sent to this worker (py_function first)"
            )
            return
        if not await self._ensure_runner():
            await self._call_failed(
                call.id, "runner", "the call runner could not start (see the worker's log)"
            )
            return
        if call.hash not in self.loaded and call.hash not in self.defining:
            self.defining.add(call.hash)
            await self._load(call.hash)  # a new runner after the last one died
        timeout = "" if call.timeout is None else f"{call.timeout:g}"
        memory = call.memory_mb or self.memory_mb
        await self._write(f"call:{call.id}:{call.hash}:{timeout}:{memory}:".encode() + data)

    # -- the runner ---------------------------------------------------------------------------

    async def _ensure_runner(self) -> bool:
        if self.proc is not None and self.proc.returncode is None:
            return True
        if self.functions_dir is None:
            self.functions_dir = tempfile.mkdtemp(prefix="mu-pymap-")
        try:
            os.makedirs(self.tmpdir, exist_ok=True)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lambda_worker.pycall.runner",
                str(self.settings.slots),
                self.functions_dir,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=self.tmpdir,
                env=runner_env(os.environ, sys.path),
                start_new_session=True,
            )
        except OSError as exc:
            self.log(f"cannot start the call runner: {exc}")
            return False
        self.loaded.clear()
        self.reader = asyncio.get_running_loop().create_task(self._read(self.proc))
        return True

    async def _write(self, body: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # it died; the reader reports what it held
        with contextlib.suppress(ConnectionError, OSError):
            proc.stdin.write(encode(body))
            await proc.stdin.drain()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        decoder = Decoder()
        try:
            while data := await proc.stdout.read(READ_SIZE):
                for msg in decoder.feed(data):
                    await self._runner_says(msg)
        except ProtocolError as exc:
            self.log(f"the call runner wrote a bad frame ({exc}); stopping it")
        code = await self._stop(proc)
        if proc is self.proc:
            await self._runner_died(code)

    async def _runner_says(self, msg: bytes) -> None:
        name, ident, body = p.split_runner_message(msg)
        if name == "defined":
            self.defining.discard(ident)
            self.loaded.add(ident)
            await self.send(p.defined_reply(ident))
        elif name == "define_failed":
            self.defining.discard(ident)
            self.packages.pop(ident, None)
            await self._define_failed(ident, body.decode("utf-8", "replace"))
        elif ident in self.cancelled or ident not in self.calls:
            return
        elif name == "failed":
            kind, _, why = body.partition(b":")
            await self._call_failed(ident, kind.decode(), why.decode("utf-8", "replace"))
        elif name in ("result", "raised"):
            task = asyncio.get_running_loop().create_task(self._finish(ident, name, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _finish(self, ident: str, name: str, body: bytes) -> None:
        payload = p.Payload(body)
        if len(body) + 1 > self.settings.inline_limit and self.bucket:
            call, attempt = (int(n) for n in ident.split("."))
            key = p.object_key(self.settings.prefix, call, "result" if name == "result" else "error", attempt)
            try:
                await self._store(key, body)
            except CommandError as exc:
                await self._call_failed(ident, "transfer", str(exc))
                return
            payload = p.Payload(key=key)
        if ident in self.cancelled or ident not in self.calls:
            return
        self._forget(ident)
        make = p.result_reply if name == "result" else p.raised_reply
        await self.send(make(ident, payload))

    async def _runner_died(self, code: int | None) -> None:
        why = f"the call runner ended (exit status {code}) while the call was under way"
        self.log(why)
        for ident in list(self.calls):
            await self._call_failed(ident, "runner", why)
        for fn_hash in list(self.defining):
            self.packages.pop(fn_hash, None)  # loading it may be what killed the runner
            await self._define_failed(
                fn_hash,
                f"the call runner ended (exit status {code}) while it "
                "loaded the function (a crash in a module it imports?)",
            )
        self.defining.clear()
        self.loaded.clear()

    async def _stop(self, proc: asyncio.subprocess.Process) -> int | None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            return await asyncio.wait_for(proc.wait(), STOP_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return await proc.wait()

    # -- replies and bookkeeping ---------------------------------------------------------------

    def _forget(self, ident: str) -> None:
        token = self.calls.pop(ident, None)
        if token is not None:
            self.inflight.pop(token, None)

    async def _call_failed(self, ident: str, kind: str, why: str) -> None:
        if ident in self.cancelled or ident not in self.calls:
            return
        self._forget(ident)
        await self.send(p.call_failed_reply(ident, kind, why))

    async def _define_failed(self, fn_hash: str, why: str) -> None:
        self.defining.discard(fn_hash)
        self.packages.pop(fn_hash, None)
        await self.send(p.define_failed_reply(fn_hash, why))

    # -- the job's bucket -----------------------------------------------------------------------

    async def _fetch(self, payload: p.Payload, what: str) -> bytes:
        if payload.key is None:
            return payload.data
        if not self.bucket:
            raise CommandError(f"{what} is in the bucket ({payload.key}) but the job names no bucket")

        def get() -> bytes:
            return bytes(self.s3_client().get_object(Bucket=self.bucket, Key=payload.key)["Body"].read())

        try:
            return await asyncio.to_thread(get)
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(
                f"cannot read {what} from {self.bucket}/{payload.key}: {s3_reason(exc)}"
            ) from exc

    async def _store(self, key: str, body: bytes) -> None:
        def put() -> None:
            self.s3_client().put_object(Bucket=self.bucket, Key=key, Body=body)

        try:
            await asyncio.to_thread(put)
        except CommandError:
            raise
        except Exception as exc:
            raise CommandError(
                f"cannot store the call's result in {self.bucket}/{key}: {s3_reason(exc)}"
            ) from exc

    async def close(self) -> None:
        """Stop the runner and every call it runs; remove the loaded functions' files."""
        for task in [self.forwarder, *self.tasks]:
            if task is not None:
                task.cancel()
        proc = self.proc
        self.proc = None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await self._stop(proc)
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if self.functions_dir is not None:
            shutil.rmtree(self.functions_dir, ignore_errors=True)
