"""The call runner: loads each function once, then runs every call in a forked child.

``python -m lambda_worker.pycall.runner SLOTS WORKDIR`` is started by the worker the first
time a job sends a Python function. It reads commands from stdin and writes replies to
stdout, both framed as mu frames them (``protocol`` lists them). Loading a function (its
module imports, which may take seconds for a big library) happens once, here; each call then
runs in a child forked from this process, so it starts in about a millisecond with everything
already imported, and whatever it does to itself (a crash, ``os._exit``, a leak, a call that
never returns) ends with that child: the runner reports it for that call and goes on.

At most SLOTS children run at once; later calls wait in order. Each child is watched: past
its timeout, or with more resident memory than its limit, it is killed (SIGKILL) and the
call reported as ``timeout`` or ``memory``. The watch reads ``/proc/PID/statm`` every
``WATCH_INTERVAL``; a child's resident memory starts as its share of the runner's pages.

The runner has no threads, so forking it is safe; it never writes to stdout except replies
(its own and its children's prints go to stderr, the worker's log). Stdlib only: cloudpickle
is imported when a function needs it (it is the function's pickle that names it).
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import selectors
import signal
import sys
import time
import traceback
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_worker.wire import Decoder, ProtocolError, encode

WATCH_INTERVAL = 0.01  # seconds between two looks at the running children
READ_SIZE = 1 << 20
REAP_WAIT = 2.0  # seconds a child that closed its pipe has to exit before it is killed
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
RESULT, RAISED, EXITED = b"R", b"E", b"X"  # what a child writes first, then 8 length bytes
PICKLE_PROTOCOL = 5  # every Python mu supports on either end (3.8 and later) reads it
MISSING_HINT = (
    "the worker has no module {name!r}. If it belongs to a package from PyPI, add that package "
    "to a requirements file and deploy the workers with it (make deploy CDK_ARGS='-c "
    "requirements=requirements.txt'); local workers import what the environment running mu has "
    "(pip install it there). If it is a module of your project, import it at the top of the "
    "function's module so that it ships with the function"
)


def missing_module_hint(exc: BaseException) -> str | None:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return MISSING_HINT.format(name=exc.name.split(".")[0])
    return None


def describe_exception(exc: BaseException) -> str:
    hint = missing_module_hint(exc)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text}; {hint}" if hint else text


def error_record(exc: BaseException, dumps: Callable[[Any], bytes]) -> bytes:
    """What the caller re-raises: the exception itself when it survives pickling, and always its
    type, message and the traceback as text (``mu.RemoteError`` is made from those)."""
    hint = missing_module_hint(exc)
    if hint and hint not in getattr(exc, "__notes__", ()):
        with contextlib.suppress(Exception):
            exc.add_note(f"mu: {hint}")
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # the runner's own frames say nothing about the call
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    blob: bytes | None
    try:
        blob = dumps(exc)
        pickle.loads(blob)  # an exception that cannot be rebuilt travels as text only
    except Exception:
        blob = None
    cls = type(exc)
    record = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": text,
        "exception": blob,
        "notes": list(getattr(exc, "__notes__", ())),
    }
    return pickle.dumps(record, protocol=PICKLE_PROTOCOL)


@dataclass
class Function:
    call: Callable[..., Any]
    mode: str

    def dumps(self, value: Any) -> bytes:
        if self.mode == "cloudpickle":
            import cloudpickle

            return bytes(cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL))
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)


@dataclass
class Pending:
    ident: str
    fn: str
    timeout: float | None
    memory_mb: int | None
    data: bytes


@dataclass
class Child:
    pid: int
    ident: str
    fd: int
    started: float
    deadline: float | None
    memory_mb: int | None
    buf: bytearray = field(default_factory=bytearray)
    stopped: tuple[str, str] | None = None  # (kind, why) once the runner killed it
    cancelled: bool = False


class Runner:
    def __init__(self, slots: int, workdir: str, out_fd: int, in_fd: int = 0) -> None:
        self.slots = max(1, slots)
        self.workdir = workdir
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.functions: dict[str, Function] = {}
        self.queue: deque[Pending] = deque()
        self.children: dict[int, Child] = {}  # by pipe fd
        self.selector = selectors.DefaultSelector()
        self.decoder = Decoder()
        self.open = True
        self.exiting: list[int] = []  # children that answered and are on their way out

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> None:
        self.selector.register(self.in_fd, selectors.EVENT_READ)
        while self.open or self.children or self.exiting:
            timeout = WATCH_INTERVAL if self.children or self.exiting else None
            for key, _ in self.selector.select(timeout):
                if key.fd == self.in_fd:
                    self._read_commands()
                else:
                    self._read_child(self.children[key.fd])
            self._watch()
            self._collect()
            self._start_queued()

    def _read_commands(self) -> None:
        data = os.read(self.in_fd, READ_SIZE)
        if not data:  # the worker is gone or closed us: stop everything
            self.open = False
            self.selector.unregister(self.in_fd)
            self.queue.clear()
            for child in self.children.values():
                self._kill(child)
            return
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:
            print(f"mu call runner: bad frame from the worker ({exc}); stopping", file=sys.stderr)
            self.open = False
            return
        for msg in messages:
            self._command(msg)

    def _send(self, body: bytes) -> None:
        view = memoryview(encode(body))
        try:
            while view:
                view = view[os.write(self.out_fd, view) :]
        except OSError:  # the worker is gone; what is running is killed once stdin closes
            self.open = False

    def _command(self, msg: bytes) -> None:
        name, _, rest = msg.partition(b":")
        if name == b"define":
            fn_hash, _, rest = rest.partition(b":")
            mode, _, data = rest.partition(b":")
            self._define(fn_hash.decode(), mode.decode(), data)
        elif name == b"call":
            ident, fn_hash, timeout, memory, data = rest.split(b":", 4)
            self.queue.append(
                Pending(
                    ident.decode(),
                    fn_hash.decode(),
                    float(timeout) if timeout else None,
                    int(memory) if memory else None,
                    data,
                )
            )
        elif name == b"cancel":
            self._cancel(rest.decode())
        else:
            print(f"mu call runner: unknown message {msg[:40]!r}", file=sys.stderr)

    # -- functions ------------------------------------------------------------------------------

    def _define(self, fn_hash: str, mode: str, package: bytes) -> None:
        if fn_hash in self.functions:
            self._send(f"defined:{fn_hash}".encode())
            return
        try:
            where = os.path.join(self.workdir, fn_hash)
            with zipfile.ZipFile(io.BytesIO(package)) as archive:
                archive.extractall(where)
            source = os.path.join(where, "src")
            if os.path.isdir(source) and source not in sys.path:
                sys.path.insert(0, source)
            with open(os.path.join(where, "function.pkl"), "rb") as f:
                fn = pickle.load(f)
            if not callable(fn):
                raise TypeError(f"the function package holds a {type(fn).__name__}, not a callable")
            if mode == "cloudpickle":
                import cloudpickle  # noqa: F401 - here, once, rather than in every call's process
        except BaseException as exc:  # an import may raise anything, SystemExit included
            trace = "".join(traceback.format_exception(exc)).rstrip()
            print(f"mu call runner: cannot load function {fn_hash}\n{trace}", file=sys.stderr)
            self._send(
                f"define_failed:{fn_hash}:cannot load the function: {describe_exception(exc)}".encode()
            )
            return
        self.functions[fn_hash] = Function(fn, mode)
        gc.freeze()  # what is loaded now stays untouched by the calls' collections: fewer copied pages
        self._send(f"defined:{fn_hash}".encode())

    # -- calls ----------------------------------------------------------------------------------

    def _cancel(self, ident: str) -> None:
        for pending in list(self.queue):
            if pending.ident == ident:
                self.queue.remove(pending)
        for child in self.children.values():
            if child.ident == ident:
                child.cancelled = True
                self._kill(child)

    def _start_queued(self) -> None:
        while self.queue and len(self.children) < self.slots and self.open:
            self._start(self.queue.popleft())

    def _start(self, call: Pending) -> None:
        fn = self.functions.get(call.fn)
        if fn is None:
            self._send(f"failed:{call.ident}:bad:function {call.fn} was not loaded on this worker".encode())
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            read_end, write_end = os.pipe()
        except OSError as exc:
            self._send(f"failed:{call.ident}:runner:cannot start the call: {exc}".encode())
            return
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            self._send(f"failed:{call.ident}:runner:cannot start the call's process: {exc}".encode())
            return
        if pid == 0:  # the child: run the call, write its outcome, and leave without cleanup
            code = 0
            try:
                os.close(read_end)
                self._child(fn, call.data, write_end)
            except BaseException:
                code = 70
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        now = time.monotonic()
        child = Child(
            pid,
            call.ident,
            read_end,
            now,
            None if call.timeout is None else now + call.timeout,
            call.memory_mb,
        )
        self.children[read_end] = child
        self.selector.register(read_end, selectors.EVENT_READ)

    def _child(self, fn: Function, data: bytes, out: int) -> None:
        """In the forked child. Nothing of the runner's is left to write to or read from."""
        for fd in (self.in_fd, self.out_fd, *self.children):
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        try:
            args, kwargs = pickle.loads(data)
        except BaseException as exc:
            self._write(out, RAISED, error_record(exc, fn.dumps))
            return
        try:
            value = fn.call(*args, **kwargs)
        except SystemExit as exc:
            self._write(out, EXITED, repr(exc.code).encode())
            return
        except BaseException as exc:
            self._write(out, RAISED, error_record(exc, fn.dumps))
            return
        try:
            body = fn.dumps(value)
        except BaseException as exc:
            wrapped = TypeError(f"the call's result ({type(value).__name__}) cannot be pickled: {exc}")
            self._write(out, RAISED, error_record(wrapped, fn.dumps))
            return
        self._write(out, RESULT, body)

    @staticmethod
    def _write(fd: int, kind: bytes, body: bytes) -> None:
        view = memoryview(kind + len(body).to_bytes(8, "big") + body)
        while view:
            view = view[os.write(fd, view) :]

    def _read_child(self, child: Child) -> None:
        try:
            chunk = os.read(child.fd, READ_SIZE)
        except OSError:
            chunk = b""
        if chunk:
            child.buf += chunk
            return
        self.selector.unregister(child.fd)
        os.close(child.fd)
        del self.children[child.fd]
        answer = None if child.cancelled else self._answer(child)
        if answer is not None:  # the call returned: no need to wait for its process to go
            self._send(answer)
            self.exiting.append(child.pid)
            return
        status = self._reap(child)
        if not child.cancelled:
            self._send(self._ended(child, status))

    def _answer(self, child: Child) -> bytes | None:
        """The reply for a child that wrote its whole outcome, else None."""
        buf, ident = child.buf, child.ident
        if len(buf) < 9 or len(buf) != 9 + int.from_bytes(buf[1:9], "big"):
            return None
        kind, body = bytes(buf[:1]), bytes(buf[9:])
        if kind == RESULT:
            return f"result:{ident}:".encode() + body
        if kind == RAISED:
            return f"raised:{ident}:".encode() + body
        why = f"the call exited the interpreter (sys.exit({body.decode(errors='replace')}))"
        return f"failed:{ident}:exit:{why}".encode()

    def _ended(self, child: Child, status: int) -> bytes:
        """The reply for a child that ended without writing its outcome."""
        ident = child.ident
        if child.stopped is not None:
            kind_text, why = child.stopped
            return f"failed:{ident}:{kind_text}:{why}".encode()
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            why = f"the call's process was killed by {name} (a crash in native code, or a signal it got)"
            return f"failed:{ident}:signal:{why}".encode()
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        why = f"the call's process exited with status {code} before returning (os._exit, or a crash)"
        return f"failed:{ident}:exit:{why}".encode()

    def _reap(self, child: Child) -> int:
        end = time.monotonic() + REAP_WAIT
        while True:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid:
                return status
            if time.monotonic() > end:
                self._kill(child)
                return os.waitpid(child.pid, 0)[1]
            time.sleep(0.001)

    def _collect(self) -> None:
        """Reap children that answered and have since exited."""
        if self.exiting:
            self.exiting = [pid for pid in self.exiting if not os.waitpid(pid, os.WNOHANG)[0]]

    def _kill(self, child: Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.stopped is not None or child.cancelled:
                continue
            if child.deadline is not None and now > child.deadline:
                limit = child.deadline - child.started
                child.stopped = (
                    "timeout",
                    f"the call ran longer than its timeout of {limit:g} s and was stopped",
                )
                self._kill(child)
                continue
            if child.memory_mb is None:
                continue
            resident = _resident_mib(child.pid)
            if resident is not None and resident > child.memory_mb:
                child.stopped = (
                    "memory",
                    f"the call's process reached {resident:.0f} MiB of resident memory, "
                    f"over its limit of {child.memory_mb} MiB, and was stopped",
                )
                self._kill(child)


def _resident_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE / MIB
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: python -m lambda_worker.pycall.runner SLOTS WORKDIR", file=sys.stderr)
        return 2
    out_fd = os.dup(1)
    os.dup2(2, 1)  # whatever prints (an import, a call) goes to the worker's log, never to the replies
    os.makedirs(argv[1], exist_ok=True)
    Runner(int(argv[0]), argv[1], out_fd).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
