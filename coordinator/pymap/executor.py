"""``mu.Executor``, ``mu.map`` and ``mu.call_async``: plain Python functions on mu's workers.

The executor is a ``concurrent.futures``-style object. Its calls return
``concurrent.futures.Future`` objects, so ``mu.as_completed`` and ``mu.wait`` (the standard
library's) work on them. Behind it a thread runs an event loop holding the job: the
coordinator's server (``coordinator.core``), the launcher, and mu.map's driver and scheduler.
Workers are launched at the first call, once its function has been checked for the workers'
Python version, and serve every later call of the executor until it is shut down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import io
import itertools
import json
import pickle
import platform
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from lambda_worker.pycall import protocol as p

from .errors import CallError, FunctionLoadError, failure, rebuild
from .package import Prepared, call_arguments, pickle_arguments, prepare

DEFAULT_WORKERS = 4
MAX_FRAME_PAYLOAD = 60 * 1024 * 1024  # under the 64 MiB frame limit, headers included
PREFIX = "mu-pymap/"


@dataclass
class Options:
    """Everything an executor is set up with (the keyword arguments of :class:`Executor`)."""

    workers: int = DEFAULT_WORKERS
    backend: str = "local"
    timeout: float | None = None
    memory: int | None = None
    retries: int = 0
    speculate: float = 0.0
    connect_timeout: float = 300.0
    slots: int = 1
    window: int | None = None
    bucket: str | None = None
    region: str | None = None
    s3_endpoint: str | None = None
    inline_limit: int = p.DEFAULT_INLINE_LIMIT
    python: str | None = None
    function: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    lambda_endpoint: str | None = None
    advertise: str | None = None
    host: str | None = None
    port: int = 0
    sandbox: bool = True
    log_dir: str | None = None
    concurrency: int = 64
    timing_log: str | None = None
    timing_s3: str | None = None
    progress: bool | None = None
    job_id: str | None = None
    deadline: float | None = None
    hello_timeout: float = 30.0
    spares: int = 0
    max_inflight: int = 256
    launch_deadline: float = 120.0
    keys: Any = None
    name: str = "pymap"

    def check(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.backend not in ("local", "aws"):
            raise ValueError(f"backend must be 'local' or 'aws', got {self.backend!r}")
        if self.retries < 0 or self.spares < 0:
            raise ValueError(f"retries and spares must be >= 0, got {self.retries} and {self.spares}")
        if not 0 <= self.speculate < 100:
            raise ValueError(f"speculate is a percentage from 0 (off) to below 100, got {self.speculate:g}")
        if self.slots < 1 or (self.window is not None and self.window < 1):
            raise ValueError(f"slots and window must be at least 1, got {self.slots} and {self.window}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a number of seconds above 0, got {self.timeout}")
        if self.memory is not None and self.memory < 1:
            raise ValueError(f"memory is MiB per call, at least 1, got {self.memory}")
        if self.inline_limit < 1:
            raise ValueError(f"inline_limit must be at least 1 byte, got {self.inline_limit}")
        if self.backend == "aws" and not self.function:
            raise ValueError("the aws backend needs the worker function's name: function='MuStack-worker-0'")
        if self.python is not None:
            from .package import minor

            minor(self.python)


class MapFutures(list[Future]):
    """The futures of one map, in item order."""

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every result in item order; the first failed item (in item order) raises its exception."""
        _, not_done = cf.wait(self, timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} of {len(self)} calls were not done within {timeout:g} s")
        return [f.result() for f in self]

    def done(self) -> bool:
        return all(f.done() for f in self)


class _Quiet(io.StringIO):
    """A stream that keeps nothing: the display of an executor asked for none."""

    def write(self, s: str) -> int:
        return len(s)


class Executor:
    """Runs Python functions on mu's workers. Use it as a context manager::

        with mu.Executor(workers=8) as ex:
            futures = ex.map(fn, items)
            print(futures.results())

    Keyword arguments (all optional): ``workers`` (4), ``backend`` (``"local"`` or ``"aws"``),
    ``timeout`` (seconds per call), ``memory`` (MiB of resident memory per call), ``retries``
    (attempts after a call's process or worker fails, and replacement workers per worker),
    ``speculate`` (percent of a map done before its stragglers get a duplicate attempt),
    ``connect_timeout``, ``slots`` (calls at once per worker, 1), ``window`` (calls in flight
    per worker, 2 x slots), ``bucket`` (the job's bucket: payloads over ``inline_limit``
    bytes, 4 MiB, go through it), ``region``, ``s3_endpoint``, ``python`` (the workers'
    Python, by default this one for local workers and the function's runtime on AWS),
    ``function`` / ``regions`` / ``lambda_endpoint`` / ``advertise`` (AWS), ``sandbox``
    (local workers in bubblewrap), ``log_dir``, ``timing_log`` (for ``mu report``),
    ``progress`` (the progress display; by default on a terminal), ``deadline``.
    """

    def __init__(self, workers: int = DEFAULT_WORKERS, backend: str = "local", **options: Any) -> None:
        for name in ("function", "regions"):
            value = options.get(name)
            if isinstance(value, str):
                options[name] = [part.strip() for part in value.split(",") if part.strip()]
        try:
            self.options = Options(workers=workers, backend=backend, **options)
        except TypeError as exc:
            raise TypeError(f"mu.Executor: {exc}") from None
        self.options.check()
        self._lock = threading.Lock()
        self._indices = itertools.count()
        self._groups = itertools.count()
        # Each function is pickled once: by id, holding the function so that its id stays its own.
        self._prepared: dict[int, tuple[Callable[..., Any], Prepared]] = {}
        self._futures: dict[int, Future] = {}
        self._items: dict[int, int] = {}  # call index -> its position in its map
        self._keys: list[str] = []  # objects this executor put in the bucket
        self._engine: _Engine | None = None
        self._python: str | None = None
        self.worker_memory: int | None = None  # MB of the Lambda workers, for the cost estimate
        self.worker_arch: str | None = None  # and their CPU (x86_64, arm64), which sets its price
        self._shut = False
        self._stopped = threading.Event()  # set once shutdown has finished
        self.result: Any = None  # the server's JobResult once shut down
        self.timing: dict[str, Any] | None = None  # the timing log's document once shut down
        self.worker_logs: str | None = None  # where the local workers' logs were kept, if they were

    # -- the API ------------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        timeout: float | None = None,
        memory: int | None = None,
        star: bool = True,
    ) -> MapFutures:
        """Call ``fn`` once per item: a tuple item is its positional arguments, a dict its keyword
        arguments, anything else its one argument (``star=False``: always the one argument).
        Returns the futures in item order as soon as the calls are submitted."""
        prepared = self._prepare(fn)
        group = next(self._groups)
        blobs = [
            pickle_arguments(prepared, *call_arguments(item, star), what=f"item {position}")
            for position, item in enumerate(items)
        ]
        return MapFutures(self._submit(prepared, blobs, group, timeout, memory))

    def call_async(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Call ``fn(*args, **kwargs)`` on a worker; returns its future."""
        prepared = self._prepare(fn)
        blob = pickle_arguments(prepared, args, kwargs, what="the arguments")
        return self._submit(prepared, [blob], next(self._groups), None, None)[0]

    submit = call_async  # the name concurrent.futures.Executor uses

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers. ``wait``: first let every submitted call finish (as
        ``concurrent.futures``); ``cancel_futures``: cancel the calls not yet done."""
        with self._lock:
            first = not self._shut
            self._shut = True
        if not first:  # another thread is stopping it (mu.map's own stop): its end is ours
            self._stopped.wait()
            return
        try:
            if cancel_futures:
                for future in list(self._futures.values()):
                    future.cancel()
            if self._engine is not None:
                self._engine.stop(wait)
                self.result, self.timing = self._engine.result, self._engine.timing
                self.worker_logs = self._engine.worker_logs
            self._remove_objects()
        finally:
            self._stopped.set()

    def _interrupt(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Stop at once, as ``mu run`` stops on SIGINT or SIGTERM: the server's one line
        ``interrupted: X done, Y running, Z not started`` (of the workers), every worker
        killed, the calls not done cancelled."""
        if self._engine is not None:
            self._engine.interrupt(sig)
        self.shutdown(wait=False, cancel_futures=True)

    @property
    def shutting_down(self) -> bool:
        """``shutdown`` has begun (it may not have finished)."""
        return self._shut

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    # -- submitting ---------------------------------------------------------------------------------

    def _worker_python(self) -> str:
        if self._python is None:
            if self.options.python is not None:
                self._python = self.options.python
            elif self.options.backend == "local":
                self._python = platform.python_version()  # local workers run this interpreter
            else:
                from .aws import worker_runtime

                self._python, self.worker_memory, self.worker_arch = worker_runtime(self.options)
        return self._python

    def _prepare(self, fn: Callable[..., Any]) -> Prepared:
        if self._shut:
            raise RuntimeError("this executor has been shut down; make a new one")
        known = self._prepared.get(id(fn))
        if known is not None and known[0] is fn:
            prepared = known[1]
        else:
            prepared = prepare(fn, self._worker_python())  # VersionMismatchError before anything starts
            self._prepared[id(fn)] = (fn, prepared)
        return prepared

    def _submit(
        self, prepared: Prepared, blobs: list[bytes], group: int, timeout: float | None, memory: int | None
    ) -> list[Future]:
        from .schedule import CallSpec

        opts = self.options
        engine = self._start()
        specs, futures = [], []
        timeout = opts.timeout if timeout is None else timeout
        memory = opts.memory if memory is None else memory
        for position, blob in enumerate(blobs):
            index = next(self._indices)
            payload = self._payload(index, blob, position)
            future: Future = Future()
            self._futures[index] = future
            self._items[index] = position
            future.add_done_callback(engine.when_cancelled(index))
            specs.append(CallSpec(index, prepared.hash, payload, timeout, memory, group))
            futures.append(future)
        engine.submit(prepared, specs)
        return futures

    def _payload(self, index: int, blob: bytes, position: int) -> p.Payload:
        opts = self.options
        if len(blob) + 1 > opts.inline_limit and opts.bucket:
            key = p.object_key(self._prefix(), index, "args")
            try:
                self._s3().put_object(Bucket=opts.bucket, Key=key, Body=blob)
            except Exception as exc:
                raise OSError(
                    f"cannot store the arguments of item {position} in s3://{opts.bucket}/{key}: {exc}"
                ) from exc
            self._keys.append(key)
            return p.Payload(key=key)
        if len(blob) > MAX_FRAME_PAYLOAD:
            raise ValueError(
                f"the arguments of item {position} are {len(blob) >> 20} MiB, more than one message "
                "carries; give the executor a bucket (bucket='...') to pass them through S3"
            )
        return p.Payload(blob)

    def _prefix(self) -> str:
        return f"{PREFIX}{self._job_id()}/"

    def _job_id(self) -> str:
        if self.options.job_id is None:
            import secrets

            self.options.job_id = f"{self.options.name}-{secrets.token_hex(6)}"
        return self.options.job_id

    def _s3(self) -> Any:
        from coordinator.core.logsink import s3_client_factory

        if not hasattr(self, "_s3_client"):
            self._s3_client = s3_client_factory(self.options.region, self.options.s3_endpoint)()
        return self._s3_client

    def _start(self) -> _Engine:
        with self._lock:
            if self._engine is None:
                self._engine = _Engine(self)
                self._engine.start()
            return self._engine

    # -- results (in the engine's thread) -----------------------------------------------------------

    def _finish(self, outcome: Any, data: bytes | None, problem: BaseException | None) -> bool:
        """Settle a call's future; True if it failed."""
        future = self._futures.pop(outcome.index, None)
        position = self._items.pop(outcome.index, None)
        if future is None or future.cancelled():
            return False
        try:
            value, exc = self._value(outcome, data, problem, position)
        except Exception as bug:  # never leave a future unsettled
            value, exc = None, CallError(f"mu.map could not read the outcome: {bug!r}", "bad", position)
        if not future.set_running_or_notify_cancel():
            return False
        if exc is None:
            future.set_result(value)
            return False
        future.set_exception(exc)
        return True

    def _value(
        self, outcome: Any, data: bytes | None, problem: BaseException | None, position: int | None
    ) -> tuple[Any, BaseException | None]:
        if problem is not None:
            what = "result" if outcome.what == "result" else "exception"
            return None, CallError(
                f"cannot read the call's {what} from the bucket: {problem}",
                "transfer",
                position,
                outcome.attempts,
            )
        if outcome.what == "result":
            assert data is not None
            try:
                return pickle.loads(data), None
            except Exception as exc:
                return None, CallError(
                    f"the call's result cannot be unpickled here: {type(exc).__name__}: {exc}",
                    "bad",
                    position,
                    outcome.attempts,
                )
        if outcome.what == "raised":
            assert data is not None
            return None, rebuild(pickle.loads(data), position)
        if outcome.what == "unloadable":
            return None, FunctionLoadError(outcome.text, "unloadable", position, outcome.attempts)
        return None, failure(outcome.kind, outcome.text, position, outcome.attempts)

    def _remove_objects(self) -> None:
        """Everything under the job's prefix is of no use once the executor is done: the
        arguments and functions it put there, and results that no one will read (those of an
        attempt that lost to another or was cancelled, or whose worker died before its reply).
        Results that were read are gone already. Without ``s3:ListBucket`` only the objects
        this executor put are removed."""
        bucket = self.options.bucket
        if not bucket or self._engine is None:
            return
        keys = dict.fromkeys(self._keys)
        with contextlib.suppress(Exception):
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self._prefix())
            keys.update(dict.fromkeys(obj["Key"] for page in pages for obj in page.get("Contents", [])))
        left = list(keys)
        with contextlib.suppress(Exception):
            for start in range(0, len(left), 1000):
                batch = [{"Key": k} for k in left[start : start + 1000]]
                self._s3().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        self._keys.clear()


class _Engine:
    """The event loop thread holding the job: server, launcher, driver."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="mu-map", daemon=True)
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.driver: Any = None
        self.stopping: asyncio.Event | None = None
        self.main_done = False  # set on the loop's thread when the job has ended
        self.stopper: asyncio.Task[None] | None = None
        self.result: Any = None
        self.timing: dict[str, Any] | None = None
        self.sent: set[str] = set()
        self.status: Any = None
        self.launcher: Any = None
        self.worker_logs: str | None = None
        self.failures = 0  # calls that ended without a result or an exception of their own
        self.interrupted = False  # stopped at once (mu pymap's SIGINT, SIGTERM): not a failure

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()
        if self.failed is not None:
            raise self.failed

    def submit(self, prepared: Prepared, specs: list[Any]) -> None:
        def go() -> None:
            if prepared.hash not in self.sent:
                self.sent.add(prepared.hash)
                self.driver.scheduler.add_function(prepared.hash, prepared.mode, self._package(prepared))
            self.status.add_total(len(specs))  # the progress display counts calls
            self.driver.submit(specs)

        self.loop.call_soon_threadsafe(go)

    def when_cancelled(self, index: int) -> Callable[[Future], None]:
        """A done-callback: a call whose future the caller cancelled leaves the queue or its worker."""

        def callback(future: Future) -> None:
            if future.cancelled() and not self.loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(self.driver.cancel, index)

        return callback

    def _package(self, prepared: Prepared) -> p.Payload:
        opts = self.executor.options
        if len(prepared.package) + 1 > opts.inline_limit and opts.bucket:
            key = f"{self.executor._prefix()}function-{prepared.hash}.zip"
            self.executor._s3().put_object(Bucket=opts.bucket, Key=key, Body=prepared.package)
            self.executor._keys.append(key)
            return p.Payload(key=key)
        return p.Payload(prepared.package)

    def stop(self, wait: bool) -> None:
        async def stop() -> None:
            if wait:
                await self.driver.until_idle()
            assert self.stopping is not None
            self.stopping.set()

        def begin() -> None:
            # Runs on the loop. The coroutine is made only while the job still runs: made for a
            # loop that is already winding down, it would never be awaited.
            if not self.main_done:
                self.stopper = self.loop.create_task(stop())

        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
                self.loop.call_soon_threadsafe(begin)
        self.thread.join()

    def interrupt(self, sig: signal.Signals) -> None:
        """The job ends early, as on a signal; the executor's shutdown then waits for its end."""

        def begin() -> None:
            if self.main_done:
                return
            self.interrupted = True
            if self.driver.coordinator is not None:
                self.driver.closed = True  # the server's line says it all: no line per worker
                self.driver.coordinator.interrupt(sig)
            else:  # the server has not started: nothing runs yet, an ordinary stop will do
                assert self.stopping is not None
                self.stopping.set()

        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
                self.loop.call_soon_threadsafe(begin)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # a failure before the job could start is the caller's error
            self.failed = exc
            self.ready.set()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _main(self) -> None:
        from .job import build

        self.stopping = asyncio.Event()
        job, run, self.status, self.launcher = build(self.executor, self._finish, self.stopping)
        self.driver = job.driver
        self.ready.set()
        try:
            self.result = await run
        except Exception as exc:
            self.driver.job_ended(f"the job stopped: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.main_done = True
            self.driver.job_ended(self._no_worker_left())
            self.timing = getattr(self.result, "timing", None) or (
                self.driver.coordinator.timing_document() if self.driver.coordinator is not None else None
            )
            self._settle_logs()

    def _settle_logs(self) -> None:
        """Local workers' logs are kept when something went wrong (a failed call or worker) and
        a log says more than the worker's closing summary: what a call or the worker printed."""
        settle = getattr(self.launcher, "settle_logs", None)
        if settle is None:
            return
        ok = self.interrupted or getattr(self.result, "ok", True)
        trouble = self.failures or bool(self.driver.refused) or not ok
        kept = settle(bool(trouble) and any(map(worth_reading, self.launcher.logs().values())))
        if kept is not None:
            self.worker_logs = str(kept)
            self.status.event(f"worker logs: {kept}")

    def _log_of(self, worker: int | None) -> str | None:
        """The log of the local worker that ran a call, if it already says something."""
        logs = getattr(self.launcher, "logs", None)
        if worker is None or logs is None:
            return None
        path = logs().get(self.driver.invocations.get(worker))
        return str(path) if path is not None and worth_reading(path) else None

    def _no_worker_left(self) -> str:
        reasons = list(dict.fromkeys(self.driver.refused))
        failures = getattr(self.result, "failures", None) or {}
        reasons += [f"{who}: {why}" for who, why in sorted(failures.items())]
        shown = "; ".join(reasons[:3]) or "the job ended"
        return f"no worker is left to run it ({shown})"

    def _finish(self, outcome: Any, data: bytes | None, problem: BaseException | None) -> None:
        if (outcome.what in ("failed", "unloadable") or problem is not None) and not self.interrupted:
            self.failures += 1  # not the function's own exception: the workers' logs may say why
            log = self._log_of(outcome.worker) if problem is None else None
            if log is not None:
                outcome = replace(outcome, text=f"{outcome.text}; its worker's log: {log}")
        failed = self.executor._finish(outcome, data, problem)
        if failed:
            self.status.failed += 1
        else:
            self.status.done += 1


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """While workers are being stopped, SIGINT and SIGTERM change nothing (as in ``mu run``):
    the stop takes a few seconds at most, and cut short it would leave workers and their logs
    behind. Only the main thread may set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def worth_reading(log: Path) -> bool:
    """A worker's log holds more than its closing summary (a JSON line): what a call printed,
    a traceback, why the worker stopped. A summary is short: 64 KiB are enough to tell."""
    try:
        with open(log, "rb") as f:
            text = f.read(64 << 10)
    except OSError:
        return False
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            summary = json.loads(line)
        except ValueError:
            return True
        if not (isinstance(summary, dict) and "worker" in summary and "exit" in summary):
            return True
    return False


def status_stream(progress: bool | None) -> tuple[TextIO, bool | None]:
    """Where the progress display goes: stderr on a terminal by default, nowhere otherwise."""
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        return sys.stderr, None
    return _Quiet(), False
