"""What a call's caller may catch. Standard library only: the worker may import it too.

An exception the function raised is re-raised as itself when it survives pickling, else as
:class:`RemoteError`; either way its ``__cause__`` is a :class:`RemoteTraceback` holding the
traceback from the worker, so printing it shows where the call failed, as
``concurrent.futures.ProcessPoolExecutor`` does. A call that ended without raising or
returning (its process exited, was killed, ran out of time or memory, its worker went away)
raises a :class:`CallError`.
"""

from __future__ import annotations

import pickle
from typing import Any


class RemoteTraceback(Exception):  # noqa: N818 - a traceback, carried as a cause
    """The traceback of an exception raised on a worker, as text."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class RemoteError(Exception):
    """An exception raised by a call on a worker that could not be rebuilt here (it does not
    pickle, or its class is not importable here): its type, message and traceback as text."""

    def __init__(self, type_name: str, message: str, traceback: str = "", item: int | None = None) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.item = item

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.traceback, self.item))


class CallError(Exception):
    """A call that ended without a result or an exception of its own.

    ``kind`` is ``exit`` or ``signal`` (the call's process ended), ``timeout``, ``memory``,
    ``worker`` (its worker went away or none was left), ``runner``, ``transfer`` (its payload
    could not be moved through the bucket), ``deadline`` (Lambda's time limit), ``cancelled``.
    """

    def __init__(self, reason: str, kind: str = "", item: int | None = None, attempts: int = 1) -> None:
        where = f"item {item}: " if item is not None else ""
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.kind = kind
        self.item = item
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.kind, self.item, self.attempts))


class CallTimeoutError(CallError, TimeoutError):
    """The call ran past its timeout and was stopped."""


class CallMemoryError(CallError, MemoryError):
    """The call's process went over its memory limit and was stopped."""


class FunctionLoadError(CallError):
    """The function could not be loaded on a worker (a module or package it imports is missing
    there, say); every call of it fails with this."""


class VersionMismatchError(Exception):
    """The function cannot go to workers running another Python version; raised before any
    worker is launched."""


def failure(kind: str, reason: str, item: int | None, attempts: int) -> CallError:
    cls = {"timeout": CallTimeoutError, "memory": CallMemoryError, "unloadable": FunctionLoadError}.get(
        kind, CallError
    )
    return cls(reason, kind, item, attempts)


def rebuild(record: dict[str, Any], item: int | None = None) -> BaseException:
    """The exception a call raised, from the worker's record of it."""
    exc: BaseException | None = None
    blob = record.get("exception")
    if blob:
        try:
            exc = pickle.loads(blob)
        except Exception:  # its class is not importable here, or it does not rebuild
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(
            str(record.get("type")), str(record.get("message")), str(record.get("traceback")), item
        )
        for note in record.get("notes") or ():
            exc.add_note(str(note))
    exc.__cause__ = RemoteTraceback(str(record.get("traceback", "")))
    return exc
