"""mu's worker command set, sans-I/O.

Everything here is a pure function of the worker's variables (``vals``), the event's template
values and the command: parsing, mu's ``run:`` templates, transfer parameters, every reply
string, what a peer message means, and what to hand to the next worker after a ``run:``. The
session (``session.py``) does the I/O these decisions call for. Reply strings and rules are
those of mu's ``libmu/handler.py`` and ``lambda_function_template.py``, so state machines
written for mu match them unchanged; where this worker differs on purpose, the README's
"differences from mu" table says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .event import WorkerEvent
from .wire import quote

OUTPUT_TAIL = 16 * 1024  # bytes of a command's output kept for its reply: the end explains a failure
PEER_INFO_LIMIT = 4096  # bytes of an unrecognised peer message forwarded as INFO:peer:
REPLY_ECHO_LIMIT = 200  # characters of a bad command quoted back in its FAIL
MAX_STATE_BYTES = 1 << 30  # a received STATE(n) file may inflate to at most this

SLOW_COMMANDS = ("retrieve", "upload", "run")
DEFAULT_WAITFILE_TIMEOUT = 600.0
# After a successful run: of one of these (mu's finished_run), the state file goes to the peer.
STATE_TOOLS = ("xc-enc", "xc-dump", "xc-terminate-chunk")
# Peer file names: one path component of plain characters, never hidden, "." or "..".
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
PLACEHOLDER = re.compile(r"##[A-Z][A-Z0-9_]*##")
PLACEHOLDER_HINTS = {
    "##INFILE##": "set:cmdinfile:... (or the event's 'infile')",
    "##OUTFILE##": "set:cmdoutfile:... (or the event's 'outfile')",
    "##QUALITY##": "set:cmdquality:... (or the event's 'quality')",
}


class CommandError(Exception):
    """A command that cannot be carried out; its text becomes ``FAIL(text)``."""


def fail(reason: str) -> bytes:
    return f"FAIL({reason})".encode()


def parse_command(msg: bytes) -> tuple[str, bytes]:
    """Split ``name:argument`` (mu matches commands by the prefix ``name:``, colon included).

    A message without a colon names no command. The argument stays bytes: inline transfer
    forms carry a NUL and ``echo:`` may carry anything.
    """
    name, sep, arg = msg.partition(b":")
    if not sep:
        return "", msg
    return name.decode("ascii", "replace"), arg


def unknown_command(msg: bytes) -> CommandError:
    shown = msg[:REPLY_ECHO_LIMIT].decode(errors="replace")
    return CommandError(f"no such command '{shown}'")


def flag_on(value: Any) -> bool:
    """A variable used as a switch. ``set:`` stores text, so "0" and "" are off."""
    return str(value).strip().lower() not in ("", "0", "none", "false")


def _text(arg: bytes, what: str) -> str:
    try:
        return arg.decode()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{what} argument is not UTF-8 text: {exc}") from exc


def _int(vals: dict[str, Any], key: str) -> int:
    value = vals.get(key, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CommandError(
            f"variable '{key}' must be an integer, got {value!r:.40}; use seti:{key}:N"
        ) from None


def default_vals(event: WorkerEvent) -> dict[str, Any]:
    """The variables a fresh worker starts with: mu's (its flags and ``run_iter``) plus ours."""
    return {
        "bucket": event.bucket,
        "region": event.region,
        "command": event.command,
        **event.flags,
        "run_iter": 0,
    }


# -- the quick commands ---------------------------------------------------------------------


def _key_value(arg: bytes, name: str) -> tuple[str, str]:
    key, sep, value = _text(arg, name).partition(":")
    if not sep or not key:
        shown = arg[:80].decode(errors="replace")
        raise CommandError(f"{name} needs '{name}:KEY:VALUE', got '{name}:{shown}'")
    return key, value


def do_set(vals: dict[str, Any], arg: bytes) -> bytes:
    key, value = _key_value(arg, "set")
    vals[key] = value
    return f"OK:SET({key})".encode()


def do_seti(vals: dict[str, Any], arg: bytes) -> bytes:
    key, value = _key_value(arg, "seti")
    try:
        vals[key] = int(value)
    except ValueError:
        raise CommandError(f"seti: value '{value[:40]}' for '{key}' is not an integer") from None
    return f"OK:SETI({key})".encode()


def _lookup(vals: dict[str, Any], arg: bytes, name: str) -> tuple[str, Any]:
    key = _text(arg, name)
    if vals.get(key) is None:
        raise CommandError(f"no such variable {key}")  # mu's words
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


PURE: dict[str, Callable[[dict[str, Any], bytes], bytes | list[bytes]]] = {
    "set": do_set,
    "seti": do_seti,
    "get": do_get,
    "geti": do_geti,
    "dump_vals": do_dump_vals,
    "echo": do_echo,
}


# -- run: mu's command templates --------------------------------------------------------------


def check_expanded(text: str, what: str) -> str:
    """A ``##NAME##`` left in a command would reach the shell as a comment: refuse it by name."""
    left = PLACEHOLDER.search(text)
    if left:
        marker = left.group()
        hint = PLACEHOLDER_HINTS.get(marker, "it is not one of mu's placeholders")
        raise CommandError(f"{what}: {marker} is not expanded: {hint}; in {text[:300]!r}")
    if "\0" in text:
        raise CommandError(f"{what}: {text[:300]!r} holds a NUL byte")
    return text


def _template(vals: dict[str, Any], templates: dict[str, str | list[str]], name: str) -> Any:
    """mu's vals_lookup: the variable ``cmdNAME`` if set, else the event's ``NAME``."""
    value = vals.get(f"cmd{name}")
    return templates.get(name) if value is None else value


def _as_words(value: Any) -> str:
    return " ".join(str(v) for v in (value if isinstance(value, list) else [value]))


def state_templates(vals: dict[str, Any]) -> tuple[str, str]:
    """mu's ``##INSTATEWAIT##`` and ``##INSTATESWITCH##`` for the current ``run_iter``."""
    if not flag_on(vals.get("expect_statefile")):
        return "", ""
    run_iter = _int(vals, "run_iter")
    if run_iter <= 0:
        return "", ""
    instate = f"##TMPDIR##/{run_iter - 1}.state"
    wait = f'( while [ ! -f "{instate}" ]; do sleep 0.025; done; echo "hi" ) | '
    switch = f'-r -I "{instate}" -p "##TMPDIR##/prev.ivf"'
    if run_iter > 1:
        older = "0" if flag_on(vals.get("minimal_recode")) else str(run_iter - 2)
        switch += f' -S "##TMPDIR##/{older}.state"'
    return wait, switch


def command_for(vals: dict[str, Any], templates: dict[str, str | list[str]], arg: bytes, tmpdir: str) -> str:
    """mu's make_cmdstring: the command (or the job's default), then vars, args, placeholders.

    The order is mu's: ``cmdvars`` before and ``cmdargs`` after the command, then
    ``##QUALITY##``, ``##INFILE##``, ``##OUTFILE##``, the state-file templates, and
    ``##TMPDIR##`` last because the others may contain it.
    """
    cmd = _text(arg, "run") if arg else str(vals.get("command") or "")
    if not cmd:
        raise CommandError(
            "run: a bare 'run:' runs the job's default command, and this job has none: give it one "
            "(a mu job file: --command 'CMD'; the invocation event's 'command'), or send run:CMD"
        )
    use_vars = _template(vals, templates, "vars")
    if use_vars is not None:
        cmd = f"{_as_words(use_vars)} {cmd}"
    use_args = _template(vals, templates, "args")
    if use_args is not None:
        cmd = f"{cmd} {_as_words(use_args)}"
    for name, marker in (("quality", "##QUALITY##"), ("infile", "##INFILE##"), ("outfile", "##OUTFILE##")):
        value = _template(vals, templates, name)
        if value is not None:
            cmd = cmd.replace(marker, str(value))
    wait, switch = state_templates(vals)
    cmd = cmd.replace("##INSTATEWAIT##", wait).replace("##INSTATESWITCH##", switch)
    return check_expanded(cmd.replace("##TMPDIR##", tmpdir), "run")


def waitfile_for(vals: dict[str, Any], tmpdir: str) -> tuple[str, float] | None:
    """``set:waitfile:PATH`` makes the next ``run:`` (only) wait until PATH exists (peer data, say)."""
    path = vals.get("waitfile")
    if not path:
        return None
    raw_timeout = vals.get("waitfile_timeout", DEFAULT_WAITFILE_TIMEOUT)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise CommandError(f"waitfile_timeout must be a number of seconds, got {raw_timeout!r:.40}") from None
    return check_expanded(str(path).replace("##TMPDIR##", tmpdir), "waitfile"), timeout


class OutputTail:
    """The last ``limit`` bytes of a stream, however long it runs: memory stays flat."""

    def __init__(self, limit: int = OUTPUT_TAIL) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > self.limit:
            del self._buf[: len(self._buf) - self.limit]

    def value(self) -> bytes:
        dropped = self.total - len(self._buf)
        head = b"[... %d bytes of output omitted ...]\n" % dropped if dropped else b""
        return head + bytes(self._buf)


# The shell's line about a program it could not run, by exit status. 127, dash: "/bin/sh: 1:
# ./y4m2png: not found"; bash (Lambda's /bin/sh): "bash: line 1: ffmpeg: command not found",
# "bash: line 1: ./ffmpeg: No such file or directory"; time(1): "time: cannot run ./x: No such
# file or directory". 126: "...: ./tool: Permission denied", "...: ./tool: cannot execute
# binary file: Exec format error" (a program built for another CPU).
_NOT_RUN = {
    127: re.compile(
        rb"^[^\n]*?: (?:cannot run )?([^:\n]+): (?:(?:command )?not found|No such file or directory)$",
        re.MULTILINE,
    ),
    126: re.compile(
        rb"^[^\n]*?: (?:cannot run )?([^:\n]+): "
        rb"(?:Permission denied|Is a directory|cannot execute[^\n]*|Exec format error)$",
        re.MULTILINE,
    ),
}


def program_not_run(status: int, output: bytes) -> str | None:
    """The program a command's shell could not find (exit status 127) or execute (126), as the
    shell named it (``./ffmpeg``), from the command's output; None if it names none."""
    pattern = _NOT_RUN.get(status)
    found = pattern.findall(output) if pattern is not None else []
    return found[-1].decode(errors="replace").strip() if found else None


def missing_program_hint(output: bytes, binaries: str | None, programs: list[str]) -> bytes:
    """What to do when the shell found no program (exit status 127): mu's jobs name tools
    (ffmpeg, vpxenc, xc-enc) that were built into their own Lambda functions."""
    found = program_not_run(127, output)
    name = found.removeprefix("./") if found else None
    what = f"{name} is not" if name else "a program the command names is not"
    where = f"in {binaries}: {', '.join(programs) or 'none'}" if binaries else "none: no binaries folder"
    return (
        f"[worker: exit status 127: {what} among this worker's programs ({where}). To run it, put a "
        "static Linux build of it in binaries/bin before 'make deploy' (Lambda workers), or in a "
        "folder named by MU_BIN_DIR (local workers)]\n"
    ).encode()


def run_reply(cmd: str, returncode: int, output: bytes) -> bytes:
    """mu's reply to ``run:`` for every exit status; the job decides what a status means."""
    return b"OK:RETVAL(%d):OUTPUT(%s):COMMAND(%s)" % (returncode, output, cmd.encode())


# -- retrieve: and upload: ----------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """One S3 object and one local file, resolved when the command arrived."""

    name: str  # "retrieve" or "upload"
    bucket: str
    key: str
    path: str

    @property
    def where(self) -> str:
        return f"{self.bucket}/{self.key}"

    def pending(self) -> bytes:
        """mu's immediate nonblock reply: ``RETRIEVING(bucket/key->file)``,
        ``UPLOADING(file->bucket/key)``."""
        if self.name == "retrieve":
            return f"OK:RETRIEVING({self.where}->{self.path})".encode()
        return f"OK:UPLOADING({self.path}->{self.where})".encode()

    def done(self) -> bytes:
        return f"OK:{self.name.upper()}({self.where})".encode()


def hashed_key(key: str) -> str:
    """mu's ``hash_s3keys``: 4 hex digits of the md5 of the key's last component spread the keys
    over S3 partitions."""
    digest = hashlib.md5(key.split("/")[-1].encode(), usedforsecurity=False).hexdigest()
    return f"{digest[:4]}-{key}"


def transfer_for(name: str, vals: dict[str, Any], arg: bytes, tmpdir: str) -> Transfer:
    """mu's make_urstring: the inline ``KEY\\0FILE`` or the variables; ``##TMPDIR##`` in the file."""
    key_var, file_var = ("inkey", "targfile") if name == "retrieve" else ("outkey", "fromfile")
    if arg:
        key_b, sep, file_b = arg.partition(b"\0")
        if not sep or not key_b or not file_b:
            raise CommandError(f"{name}: inline form is '{name}:KEY\\0FILE', got {quote(arg, 120)}")
        key, path = _text(key_b, name), _text(file_b, name)
    else:
        for var in (key_var, file_var):
            if vals.get(var) is None or vals.get(var) == "":
                raise CommandError(f"{name}: '{var}' is not set; send set:{var}:... first")
        key, path = str(vals[key_var]), str(vals[file_var])
    bucket = vals.get("bucket")
    if not bucket:
        raise CommandError(
            f"{name}: no bucket: the job named none (its -b BUCKET option, the invocation event's "
            "'bucket') and no set:bucket:NAME came first"
        )
    path = check_expanded(path.replace("##TMPDIR##", tmpdir), f"{name} file")
    if flag_on(vals.get("hash_s3keys")):
        key = hashed_key(key)
    return Transfer(name, str(bucket), key, path)


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


def s3_problem(t: Transfer, exc: BaseException, region: str, endpoint: str | None) -> str:
    """Why a transfer failed and what to check: S3's code, and for the usual ones (no such
    object or bucket, access denied) the bucket, key and place it looked, in words."""
    reason = s3_reason(exc)
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    place = f"region {region}" + (f", endpoint {endpoint}" if endpoint else "")
    action = "s3:GetObject" if t.name == "retrieve" else "s3:PutObject"
    if code == "NoSuchBucket" or (code == "404" and t.name == "upload"):
        hint = f"there is no bucket '{t.bucket}' ({place}): check the job's bucket (-b BUCKET)"
    elif code in ("404", "NoSuchKey"):  # a HEAD cannot say whether the key or the bucket is missing
        hint = (f"there is no object '{t.key}' in bucket '{t.bucket}' ({place}): check the key the job "
                "asks for (its input names) and that the inputs were uploaded to this bucket")  # fmt: skip
    elif code in ("403", "AccessDenied"):
        hint = (f"access to s3://{t.bucket}/{t.key} was denied: the worker needs {action} on it (and "
                "without s3:ListBucket on the bucket, S3 answers a missing key with 403 too)")  # fmt: skip
    else:
        return reason
    return f"{reason}: {hint}"


def running_reply(cmd: str) -> bytes:
    """The immediate reply of ``run:`` in nonblock mode (transfers have :meth:`Transfer.pending`)."""
    return f"OK:RUNNING({cmd})".encode()


# -- the peer connection --------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    host: str
    port: int
    hello: bytes

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def connect_for(arg: bytes) -> Connect:
    """mu's ``connect:HOST:PORT:MSG``; MSG (possibly empty) is sent first on the new connection."""
    host_b, sep1, rest = arg.partition(b":")
    port_b, sep2, hello = rest.partition(b":")
    if not (sep1 and sep2 and host_b):
        raise CommandError(f"connect needs 'connect:HOST:PORT:MSG', got {quote(b'connect:' + arg, 88)}")
    try:
        host = host_b.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(f"connect: host {quote(host_b)} is not an ASCII host name or address") from None
    if not port_b.isdigit() or not 0 < int(port_b) < 65536:
        raise CommandError(f"connect: port must be 1-65535, got {quote(port_b, 20)}")
    return Connect(host, int(port_b), hello)


def peer_name(name: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(name):
        raise CommandError(
            f"{what}: file name {name[:80]!r} is not allowed; use 1-128 of A-Z a-z 0-9 . _ -, "
            "not starting with '.'"
        )
    return name


def file_message_head(name: str) -> bytes:
    return b"FILE:" + name.encode() + b":"


def check_frame(size: int, max_frame: int, what: str) -> None:
    if size > max_frame:
        raise CommandError(
            f"{what} is {size} bytes, over the {max_frame}-byte message limit of the relay; "
            "pass it through S3 instead (upload: / retrieve:)"
        )


@dataclass(frozen=True)
class PeerFile:
    """``FILE:NAME:`` + bytes: lands as ``##TMPDIR##/NAME``, reported as ``INFO:file:NAME``."""

    name: str
    payload: bytes


@dataclass(frozen=True)
class PeerState:
    """mu's ``STATE(n):`` + zlib data: inflates to ``##TMPDIR##/n.state``, nothing reported (as in mu)."""

    number: int
    compressed: bytes


@dataclass(frozen=True)
class PeerReport:
    """Anything else, and every peer message that cannot be used: one INFO line to the coordinator."""

    line: bytes


STATE_HEAD = re.compile(rb"STATE\(([0-9]{1,9})\)")


def peer_message(msg: bytes) -> PeerFile | PeerState | PeerReport:
    """What a message from the peer connection asks of the worker."""
    if msg.startswith(b"STATE("):
        head, sep, data = msg.partition(b":")
        match = STATE_HEAD.fullmatch(head)
        if not sep or not match:
            return peer_error(f"bad STATE message header {quote(head, 40)}; expected STATE(n):DATA")
        return PeerState(int(match.group(1)), data)
    if msg.startswith(b"FILE:"):
        name_b, sep, payload = msg[5:].partition(b":")
        name = name_b.decode("ascii", "replace")
        if not sep or not SAFE_NAME.fullmatch(name):
            return peer_error(f"bad FILE message name {quote(name_b)}; names are 1-128 of A-Z a-z 0-9 . _ -")
        return PeerFile(name, payload)
    if len(msg) > PEER_INFO_LIMIT:
        msg = msg[:PEER_INFO_LIMIT] + b"[... %d more bytes]" % (len(msg) - PEER_INFO_LIMIT)
    return PeerReport(b"INFO:peer:" + msg)


def peer_error(reason: str) -> PeerReport:
    return PeerReport(f"INFO:peer_error:{reason}".encode())


def state_message_head(run_iter: int) -> bytes:
    return b"STATE(%d):" % run_iter


# -- mu's hand-off after a successful run: (finished_run) ----------------------------------------


@dataclass(frozen=True)
class Handoff:
    """What a successful ``run:`` of an ExCamera tool leaves to do, in mu's order."""

    unlink: str | None  # ``(run_iter-2).state``: no longer needed
    send: int | None  # send ``final.state`` to the peer as STATE(run_iter)


def handoff_for(cmd: str, vals: dict[str, Any]) -> Handoff | None:
    """mu's finished_run: after xc-enc, xc-dump or xc-terminate-chunk. ``prev.ivf`` is then a copy
    of ``output.ivf``, and with ``send_statefile`` ``final.state`` goes to the peer."""
    if not any(tool in cmd for tool in STATE_TOOLS):
        return None
    run_iter = _int(vals, "run_iter")
    return Handoff(
        unlink=f"{run_iter - 2}.state" if run_iter > 1 else None,
        send=run_iter if flag_on(vals.get("send_statefile")) else None,
    )
