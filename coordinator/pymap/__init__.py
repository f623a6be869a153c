"""mu.map: plain Python functions on mu's workers, results pushed back over mutual TLS.

Installed as the package ``mu`` (``import mu``); its code lives in ``coordinator/pymap/``::

    import mu

    futures = mu.map(pow, [(2, 10), (3, 3)], workers=2)
    print(futures.results())  # [1024, 27]

Importing ``mu`` is light (the standard library only): a function's module that says
``import mu`` loads on a worker too, where this package ships with the function.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, as_completed, wait
from typing import TYPE_CHECKING, Any

if __name__ != "mu":  # two copies of these classes would make ``except mu.RemoteError`` miss
    raise ImportError(f"import this package as 'mu' (import mu), not as {__name__!r}")

from .errors import (
    CallError,
    CallMemoryError,
    CallTimeoutError,
    FunctionLoadError,
    RemoteError,
    RemoteTraceback,
    VersionMismatchError,
)

if TYPE_CHECKING:
    from .executor import Executor, MapFutures

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CallError",
    "CallMemoryError",
    "CallTimeoutError",
    "Executor",
    "FunctionLoadError",
    "MapFutures",
    "RemoteError",
    "RemoteTraceback",
    "VersionMismatchError",
    "as_completed",
    "call_async",
    "map",
    "wait",
]


def __getattr__(name: str) -> Any:
    if name in ("Executor", "MapFutures"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'mu' has no attribute {name!r}")


_live: set[Executor] = set()
_live_lock = threading.Lock()


def map(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    workers: int = 4,
    backend: str = "local",
    star: bool = True,
    **options: Any,
) -> MapFutures:
    """Call ``fn`` on every item on ``workers`` workers; returns the futures in item order.

    A tuple item is the call's positional arguments and a dict its keyword arguments (unless
    ``star=False``); anything else is its one argument. The workers stop once every call is
    done. Options are :class:`Executor`'s (``timeout``, ``memory``, ``retries``, ...)."""
    from .executor import Executor

    ex = Executor(workers, backend, **options)
    try:
        futures = ex.map(fn, items, star=star)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    _stop_when_done(ex, futures)
    return futures


def call_async(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
    """Call ``fn(*args, **kwargs)`` on one local worker; returns its future. (Use an
    :class:`Executor` to choose the backend and to reuse workers across calls.)"""
    from .executor import Executor

    ex = Executor(1)
    try:
        future = ex.call_async(fn, *args, **kwargs)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    _stop_when_done(ex, [future])
    return future


def _stop_when_done(ex: Executor, futures: list[Future]) -> None:
    """Shut the executor down once its futures are done, from a thread of its own (the futures'
    callbacks run in the executor's thread, which cannot wait for itself)."""
    with _live_lock:
        _live.add(ex)
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last and not ex.shutting_down:  # else whoever shuts it down (_stop_all) ends it
            threading.Thread(target=_stop, args=(ex,), name="mu-map-stop", daemon=True).start()

    if not futures:
        _stop(ex)
    for future in futures:
        future.add_done_callback(one_done)


def _stop(ex: Executor) -> None:
    ex.shutdown(wait=False)
    with _live_lock:
        _live.discard(ex)


@atexit.register
def _stop_all() -> None:
    """A program that ends without waiting for its calls (a Ctrl-C, say) stops their workers;
    a second Ctrl-C meanwhile changes nothing."""
    with _live_lock:
        running = list(_live)
    if not running:
        return
    from .executor import ignoring_interrupts

    for _ in range(3):  # a Ctrl-C still pending from the one that ended the program lands here once
        try:
            with ignoring_interrupts():
                for ex in running:
                    ex.shutdown(wait=False, cancel_futures=True)
            return
        except KeyboardInterrupt:
            continue
