"""The Python-call commands (``mu.map``), sans-I/O: frame layouts both ends share.

These are commands of this project, added beside mu's command set (which is unchanged):

==============================================  ==============================================
command                                         reply
==============================================  ==============================================
``py_function:HASH:MODE:`` + payload            ``OK:PY_FUNCTION(HASH)``, or
                                                ``FAIL(PY_FUNCTION(HASH): why)``
``py_call:ID:HASH:TIMEOUT:MEMORY:`` + payload   later: ``OK:PY_RESULT(ID):`` + payload,
                                                ``OK:PY_RAISED(ID):`` + payload, or
                                                ``FAIL(PY_CALL(ID):KIND: why)``
``py_cancel:ID``                                ``OK:PY_CANCEL(ID)``; the call sends nothing more
==============================================  ==============================================

``HASH`` names a function package (a zip: the pickled function and the source files of the
project modules it needs) by its SHA-256, so a worker loads each function once. ``MODE`` is
``cloudpickle`` (the same Python minor version at both ends) or ``pickle`` (another version:
the function travels by reference, its modules as source). ``ID`` is ``CALL.ATTEMPT``.
``TIMEOUT`` is seconds (empty: none) and ``MEMORY`` MiB of resident memory (empty: the
worker's default). ``KIND`` says why a call could not finish: ``exit``, ``signal``,
``timeout``, ``memory``, ``runner``, ``transfer``, ``deadline`` or ``bad``.

A payload is ``=`` followed by the bytes themselves, or ``@`` followed by the key of an object
in the job's bucket holding them (payloads above the job's inline limit travel that way).

The ``python`` field of the worker's ``META:`` message after ``OK:HELLO`` (``wire.META``) tells
the coordinator which Python runs the calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lambda_worker.commands import CommandError
from lambda_worker.wire import quote

MODES = ("cloudpickle", "pickle")
KINDS = ("exit", "signal", "timeout", "memory", "runner", "transfer", "deadline", "bad")
INLINE = b"="
IN_BUCKET = b"@"
DEFAULT_INLINE_LIMIT = 4 * 1024 * 1024  # bytes; larger payloads go through the job's bucket
COMMANDS = ("py_function", "py_call", "py_cancel")

_HASH = re.compile(r"[0-9a-f]{16,64}")
_ID = re.compile(r"[0-9]{1,12}\.[0-9]{1,6}")
_FAIL_CALL = re.compile(rb"FAIL\(PY_CALL\(([0-9.]+)\):([a-z]+): (.*)\)\Z", re.S)
_FAIL_FUNCTION = re.compile(rb"FAIL\(PY_FUNCTION\(([0-9a-f]+)\): (.*)\)\Z", re.S)


class BadCommandError(CommandError):
    """A Python-call command that cannot be parsed; its text becomes the FAIL reason."""


# -- payloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """Bytes carried in the frame, or the bucket key that holds them."""

    data: bytes = b""
    key: str | None = None

    def encode(self) -> bytes:
        return IN_BUCKET + self.key.encode() if self.key is not None else INLINE + self.data

    @classmethod
    def decode(cls, raw: bytes) -> Payload:
        if raw[:1] == INLINE:
            return cls(raw[1:])
        if raw[:1] == IN_BUCKET and len(raw) > 1:
            return cls(key=raw[1:].decode("utf-8", "replace"))
        raise BadCommandError(
            f"a payload starts with '=' (inline) or '@' (a bucket key), got {quote(raw, 20)}"
        )


def object_key(prefix: str, call: int, what: str, attempt: int | None = None) -> str:
    """Deterministic keys of a job's payloads: ``PREFIX00000017.args``, ``PREFIX00000017.1.result``."""
    middle = f"{call:08d}" if attempt is None else f"{call:08d}.{attempt}"
    return f"{prefix}{middle}.{what}"


# -- commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Define:
    hash: str
    mode: str
    payload: Payload


@dataclass(frozen=True)
class Call:
    id: str
    hash: str
    timeout: float | None
    memory_mb: int | None
    payload: Payload

    @property
    def numbers(self) -> tuple[int, int]:
        call, _, attempt = self.id.partition(".")
        return int(call), int(attempt)


def call_id(call: int, attempt: int) -> str:
    return f"{call}.{attempt}"


def define_command(fn_hash: str, mode: str, payload: Payload) -> bytes:
    return f"py_function:{fn_hash}:{mode}:".encode() + payload.encode()


def call_command(
    ident: str, fn_hash: str, timeout: float | None, memory_mb: int | None, payload: Payload
) -> bytes:
    limit = "" if timeout is None else f"{timeout:g}"
    memory = "" if memory_mb is None else str(memory_mb)
    return f"py_call:{ident}:{fn_hash}:{limit}:{memory}:".encode() + payload.encode()


def cancel_command(ident: str) -> bytes:
    return f"py_cancel:{ident}".encode()


def _fields(arg: bytes, count: int, what: str) -> list[bytes]:
    parts = arg.split(b":", count)
    if len(parts) != count + 1:
        raise BadCommandError(f"{what} needs {count} fields before its payload, got {quote(arg)}")
    return parts


def _hash(raw: bytes) -> str:
    text = raw.decode("ascii", "replace")
    if not _HASH.fullmatch(text):
        raise BadCommandError(f"function hash must be 16-64 lowercase hex digits, got {text[:70]!r}")
    return text


def _ident(raw: bytes) -> str:
    text = raw.decode("ascii", "replace")
    if not _ID.fullmatch(text):
        raise BadCommandError(f"call id must be CALL.ATTEMPT (digits), got {text[:40]!r}")
    return text


def parse_define(arg: bytes) -> Define:
    fn_hash, mode, payload = _fields(arg, 2, "py_function")
    mode_text = mode.decode("ascii", "replace")
    if mode_text not in MODES:
        raise BadCommandError(f"py_function mode must be one of {', '.join(MODES)}, got {mode_text[:30]!r}")
    return Define(_hash(fn_hash), mode_text, Payload.decode(payload))


def parse_call(arg: bytes) -> Call:
    ident, fn_hash, limit, memory, payload = _fields(arg, 4, "py_call")
    try:
        timeout = float(limit) if limit else None
        memory_mb = int(memory) if memory else None
    except ValueError:
        raise BadCommandError(
            f"py_call timeout and memory must be numbers, got {quote(limit, 20)}, {quote(memory, 20)}"
        ) from None
    if (timeout is not None and not timeout > 0) or (memory_mb is not None and memory_mb <= 0):
        raise BadCommandError(
            f"py_call timeout and memory must be above 0, got {quote(limit)}, {quote(memory)}"
        )
    return Call(_ident(ident), _hash(fn_hash), timeout, memory_mb, Payload.decode(payload))


def parse_cancel(arg: bytes) -> str:
    return _ident(arg)


# -- replies ---------------------------------------------------------------------------------


def defined_reply(fn_hash: str) -> bytes:
    return f"OK:PY_FUNCTION({fn_hash})".encode()


def define_failed_reply(fn_hash: str, why: str) -> bytes:
    return f"FAIL(PY_FUNCTION({fn_hash}): {why})".encode()


def result_reply(ident: str, payload: Payload) -> bytes:
    return f"OK:PY_RESULT({ident}):".encode() + payload.encode()


def raised_reply(ident: str, payload: Payload) -> bytes:
    return f"OK:PY_RAISED({ident}):".encode() + payload.encode()


def call_failed_reply(ident: str, kind: str, why: str) -> bytes:
    return f"FAIL(PY_CALL({ident}):{kind}: {why})".encode()


def cancelled_reply(ident: str) -> bytes:
    return f"OK:PY_CANCEL({ident})".encode()


@dataclass(frozen=True)
class Reply:
    """One reply of the Python-call commands, as the coordinator reads it."""

    what: str  # "defined", "define_failed", "result", "raised", "failed", "cancelled"
    ident: str  # the call id, or the function hash for define replies
    payload: Payload | None = None
    kind: str = ""
    text: str = ""


_OK = re.compile(rb"OK:PY_(RESULT|RAISED|FUNCTION|CANCEL)\(([0-9a-f.]+)\)")
_OK_NAMES = {b"RESULT": "result", b"RAISED": "raised", b"FUNCTION": "defined", b"CANCEL": "cancelled"}


def parse_reply(msg: bytes) -> Reply | None:
    """The reply if ``msg`` is one of the Python-call replies, else None."""
    if msg.startswith(b"OK:PY_"):
        match = _OK.match(msg)
        if match is None:
            return None
        what = _OK_NAMES[match.group(1)]
        rest = msg[match.end() :]
        if what in ("result", "raised"):
            if rest[:1] != b":":
                return None
            return Reply(what, match.group(2).decode(), Payload.decode(rest[1:]))
        return Reply(what, match.group(2).decode())
    if msg.startswith(b"FAIL(PY_CALL("):
        match = _FAIL_CALL.match(msg)
        if match is None:
            return None
        return Reply(
            "failed",
            match.group(1).decode(),
            kind=match.group(2).decode(),
            text=match.group(3).decode("utf-8", "replace"),
        )
    if msg.startswith(b"FAIL(PY_FUNCTION("):
        match = _FAIL_FUNCTION.match(msg)
        if match is None:
            return None
        return Reply("define_failed", match.group(1).decode(), text=match.group(2).decode("utf-8", "replace"))
    return None


# -- between the worker and its call runner (pipes; frames as wire.encode makes them) ---------
#
# worker -> runner: ``define:HASH:MODE:`` + zip, ``call:ID:HASH:TIMEOUT:MEMORY:`` + arguments,
#                   ``cancel:ID``
# runner -> worker: ``defined:HASH``, ``define_failed:HASH:why``, ``result:ID:`` + bytes,
#                   ``raised:ID:`` + bytes, ``failed:ID:KIND:why``

RUNNER_REPLIES = ("defined", "define_failed", "result", "raised", "failed")


def split_runner_message(msg: bytes) -> tuple[str, str, bytes]:
    """``name:ident:rest`` of a runner message."""
    name, _, rest = msg.partition(b":")
    ident, _, body = rest.partition(b":")
    return name.decode("ascii", "replace"), ident.decode("ascii", "replace"), body
