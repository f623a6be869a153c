"""mu's worker command set.

Parsing and the commands that only touch the worker's variables are pure; the three slow
commands (retrieve, upload, run) are plain blocking functions over a snapshot of what they
need, so the session can run them inline or in the background without sharing mutable state.
Reply strings are mu's, so coordinator state machines written for mu match them unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OUTPUT_LIMIT = 16 * 1024  # bytes of command output echoed back; the tail is what explains a failure

SLOW_COMMANDS = ("retrieve", "upload", "run")
DEFAULT_WAITFILE_TIMEOUT = 600.0


class CommandError(Exception):
    """A command that cannot be carried out; its text becomes ``FAIL(text)``."""


def fail(reason: str) -> bytes:
    return f"FAIL({reason})".encode()


def parse_command(msg: bytes) -> tuple[str, bytes]:
    """Split ``name:argument``. The argument stays bytes: inline forms carry a NUL."""
    name, _, arg = msg.partition(b":")
    return name.decode("ascii", "replace").strip(), arg


def _text(arg: bytes, what: str) -> str:
    try:
        return arg.decode()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{what} argument is not UTF-8 text: {exc}") from exc


def _key_value(arg: bytes, name: str) -> tuple[str, str]:
    key, sep, value = _text(arg, name).partition(":")
    if not sep or not key:
        raise CommandError(f"{name} needs '{name}:KEY:VALUE', got '{name}:{arg.decode(errors='replace')}'")
    return key, value


def default_vals(*, bucket: str, region: str, command: str, nonblock: int) -> dict[str, Any]:
    """The variables a fresh worker starts with; names are mu's."""
    return {
        "bucket": bucket,
        "region": region,
        "inkey": None,
        "outkey": None,
        "targfile": None,
        "fromfile": None,
        "cmdinfile": None,
        "cmdoutfile": None,
        "command": command,
        "nonblock": nonblock,
    }


def substitute(text: str, vals: dict[str, Any], tmpdir: str) -> str:
    """Expand mu's placeholders; ``##TMPDIR##`` last so the file variables may use it too."""
    for marker, key in (("##INFILE##", "cmdinfile"), ("##OUTFILE##", "cmdoutfile")):
        if marker in text:
            value = vals.get(key)
            if value is None:
                raise CommandError(f"{marker} is used but '{key}' is not set; send set:{key}:PATH first")
            text = text.replace(marker, str(value))
    return text.replace("##TMPDIR##", tmpdir)


def do_set(vals: dict[str, Any], arg: bytes) -> bytes:
    key, value = _key_value(arg, "set")
    vals[key] = value
    return f"OK:SET({key})".encode()


def do_seti(vals: dict[str, Any], arg: bytes) -> bytes:
    key, value = _key_value(arg, "seti")
    try:
        vals[key] = int(value)
    except ValueError:
        raise CommandError(f"seti: value '{value}' for '{key}' is not an integer") from None
    return f"OK:SETI({key})".encode()


def _lookup(vals: dict[str, Any], arg: bytes, name: str) -> tuple[str, Any]:
    key = _text(arg, name)
    if key not in vals:
        raise CommandError(f"{name}: no variable '{key}'; set it with set:{key}:VALUE")
    return key, vals[key]


def do_get(vals: dict[str, Any], arg: bytes) -> bytes:
    _, value = _lookup(vals, arg, "get")
    return f"OK:GET({value})".encode()


def do_geti(vals: dict[str, Any], arg: bytes) -> list[bytes]:
    key, value = _lookup(vals, arg, "geti")
    return [f"INFO:{key}:{value}".encode(), f"OK:GETI({key})".encode()]


def do_dump_vals(vals: dict[str, Any], arg: bytes) -> bytes:
    return b"OK:DUMP_VALS:" + json.dumps(vals, sort_keys=True, default=str).encode()


def do_echo(vals: dict[str, Any], arg: bytes) -> bytes:
    return b"OK:ECHO(" + arg + b")"


@dataclass(frozen=True)
class Transfer:
    """One S3 object and one local file, resolved when the command arrived."""

    bucket: str
    key: str
    path: str

    @property
    def where(self) -> str:
        return f"{self.bucket}/{self.key}"


def transfer_for(name: str, vals: dict[str, Any], arg: bytes, tmpdir: str) -> Transfer:
    """Resolve ``retrieve:``/``upload:`` either from variables or from the inline ``KEY\\0FILE``."""
    key_var, file_var = ("inkey", "targfile") if name == "retrieve" else ("outkey", "fromfile")
    if arg:
        key_b, sep, file_b = arg.partition(b"\0")
        if not sep or not key_b or not file_b:
            raise CommandError(f"{name}: inline form is '{name}:KEY\\0FILE', got {arg!r}")
        key, path = _text(key_b, name), _text(file_b, name)
    else:
        for var in (key_var, file_var):
            if not vals.get(var):
                raise CommandError(f"{name}: '{var}' is not set; send set:{var}:... first")
        key, path = str(vals[key_var]), str(vals[file_var])
    bucket = vals.get("bucket")
    if not bucket:
        raise CommandError(f"{name}: 'bucket' is not set; send set:bucket:NAME first")
    transfer = Transfer(str(bucket), substitute(str(key), vals, tmpdir), substitute(str(path), vals, tmpdir))
    if "\0" in transfer.path:
        raise CommandError(f"{name}: local file name {transfer.path!r} holds a NUL byte; name a real file")
    return transfer


def s3_reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = err.get("Code", "?")
        message = err.get("Message") or {
            "404": "not found", "403": "access denied", "NoSuchKey": "no such key",
        }.get(str(code), "")  # fmt: skip
        return f"{code} {message}".strip()
    return f"{type(exc).__name__}: {exc}"


def do_retrieve(s3: Any, t: Transfer) -> bytes:
    try:
        os.makedirs(os.path.dirname(t.path) or ".", exist_ok=True)
        partial = f"{t.path}.part{os.getpid()}"
        s3.download_file(t.bucket, t.key, partial)
        os.replace(partial, t.path)
    except Exception as exc:  # boto3 raises many kinds; every one becomes a FAIL
        _remove_quietly(f"{t.path}.part{os.getpid()}")
        raise CommandError(f"RETRIEVE({t.where}) to {t.path}: {s3_reason(exc)}") from exc
    return f"OK:RETRIEVE({t.where})".encode()


def do_upload(s3: Any, t: Transfer) -> bytes:
    if not os.path.isfile(t.path):
        raise CommandError(f"UPLOAD({t.where}): local file {t.path} does not exist")
    try:
        s3.upload_file(t.path, t.bucket, t.key)
    except Exception as exc:
        raise CommandError(f"UPLOAD({t.where}) from {t.path}: {s3_reason(exc)}") from exc
    return f"OK:UPLOAD({t.where})".encode()


def command_for(vals: dict[str, Any], arg: bytes, tmpdir: str) -> str:
    cmd = _text(arg, "run") if arg else str(vals.get("command") or "")
    if not cmd:
        raise CommandError("run: no command given and the job has no default command")
    return substitute(cmd, vals, tmpdir)


def waitfile_for(vals: dict[str, Any], tmpdir: str) -> tuple[str, float] | None:
    """``set:waitfile:PATH`` makes the next ``run:`` (only) wait until PATH exists (peer data, say)."""
    path = vals.get("waitfile")
    if not path:
        return None
    raw_timeout = vals.get("waitfile_timeout", DEFAULT_WAITFILE_TIMEOUT)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise CommandError(f"waitfile_timeout must be a number of seconds, got {raw_timeout!r}") from None
    return substitute(str(path), vals, tmpdir), timeout


def send_path(arg: bytes, tmpdir: str) -> tuple[str, str]:
    """``send:NAME`` ships ##TMPDIR##/NAME to the peer, which stores it under the same NAME."""
    name = _text(arg, "send")
    if not name or "/" in name or name in (".", ".."):
        raise CommandError(f"send needs 'send:NAME' with a file name in the temp dir, got 'send:{name}'")
    path = os.path.join(tmpdir, name)
    if not os.path.isfile(path):
        raise CommandError(f"send: {path} does not exist")
    return name, path


def run_reply(cmd: str, returncode: int, output: bytes) -> bytes:
    """mu's reply to ``run:``; a non-zero exit is a failure the coordinator sees as ``FAIL``."""
    if len(output) > OUTPUT_LIMIT:
        output = b"[...]" + output[-OUTPUT_LIMIT:]
    body = f"RETVAL({returncode}):OUTPUT({output.decode(errors='replace')}):COMMAND({cmd})"
    if returncode != 0:
        raise CommandError(body)
    return f"OK:{body}".encode()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


PURE: dict[str, Callable[[dict[str, Any], bytes], bytes | list[bytes]]] = {
    "set": do_set,
    "seti": do_seti,
    "get": do_get,
    "geti": do_geti,
    "dump_vals": do_dump_vals,
    "echo": do_echo,
}


def pending_reply(name: str, detail: str) -> bytes:
    """The immediate reply of a slow command in nonblock mode."""
    word = {"retrieve": "RETRIEVING", "upload": "UPLOADING", "run": "RUNNING"}[name]
    return f"OK:{word}({detail})".encode()
