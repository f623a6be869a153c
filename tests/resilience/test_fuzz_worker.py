"""Worker commands and peer messages fuzzed: whatever arrives, the worker answers and keeps serving.

Messages go straight into a real :class:`Session` (the worker's command loop) in this process:
S3 is the moto server, ``run:`` starts real shells, ``connect:`` dials a real relay on
127.0.0.1, in both nonblock modes and with ``bg_silent``. So that fuzzing cannot touch this
machine, ``run:`` commands come from a list of shapes whose free text is shell-quoted (or
carries a NUL, which the worker refuses), the variables that reach the shell unquoted
(``cmdvars``, ``command`` ...) take only listed values, and transfers whose file lies outside
the worker's temp dir, or ``connect:`` anywhere but the test relay, are not sent.

The suite runs a fixed set of examples (the "ci" profile in tests/conftest.py);
``HYPOTHESIS_PROFILE=fuzz`` runs a long randomised campaign instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import tempfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from lambda_worker import commands as cmds
from lambda_worker.transfer import S3Transfers
from lambda_worker.wire import Decoder, ProtocolError, encode
from tests.helpers import RelayThread, local_session, settle

BUCKET = "fuzz-bucket"
RELAY = "RELAYPORT"  # replaced by the relay's port when the example runs
SHELL_VARS = ("cmdvars", "cmdargs", "cmdinfile", "cmdoutfile", "cmdquality", "command")
SHELL_VALUES = ["A=1", "--flag", "##TMPDIR##/a", "##TMPDIR##/*.txt", "30", "", "cat ##INFILE##",
                "true xc-enc", "##TMPDIR##/out.txt"]  # fmt: skip
VARS = ["bucket", "inkey", "outkey", "targfile", "fromfile", "nonblock", "bg_silent", "waitfile",
        "waitfile_timeout", "region", "run_iter", "expect_statefile", "send_statefile", "minimal_recode",
        "hash_s3keys"]  # fmt: skip
NAMES = ["set", "seti", "get", "geti", "dump_vals", "echo", "retrieve", "upload", "send", "close_connect",
         "run", "connect"]  # fmt: skip

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
values = st.one_of(
    text,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["##TMPDIR##/a", "##TMPDIR##/d/b", "##INFILE##", BUCKET, "k/one", "0", "1", "0.1"]),
)
keys_ = st.one_of(st.sampled_from(VARS), text)

RUN_SHAPES = [
    "run:", "run:echo out; echo err >&2; exit 3", "run:printf '\\000\\377\\n'", "run:sleep 0.05",
    "run:echo ##QUALITY##", "run:echo ##INFILE## ##OUTFILE##", "run:echo ##INSTATESWITCH##",
    "run:echo ##NOPE##", "run:true xc-enc", "run:rm -rf ##TMPDIR##", "run:cat ##TMPDIR##/a",
    "run:printf s > ##TMPDIR##/final.state; printf v > ##TMPDIR##/output.ivf; true xc-enc",
    "run:kill -9 $$",
]  # fmt: skip


@st.composite
def run_command(draw) -> bytes:
    shape = draw(st.sampled_from(["fixed", "print", "status", "bytes", "nul"]))
    if shape == "fixed":
        return draw(st.sampled_from(RUN_SHAPES)).encode()
    if shape == "print":
        return f"run:printf %s {shlex.quote(draw(text))}".encode()
    if shape == "status":
        return f"run:exit {draw(st.integers(0, 255))}".encode()
    if shape == "bytes":
        return f"run:head -c {draw(st.integers(0, 100_000))} /dev/urandom".encode()
    return b"run:" + draw(st.binary(max_size=40)) + b"\0"  # a NUL: refused before any shell


@st.composite
def connect_command(draw) -> bytes:
    shape = draw(st.sampled_from(["relay", "closed", "text", "binary"]))
    if shape == "relay":
        me, partner = draw(st.integers(-3, 12)), draw(st.integers(-3, 12))
        hello = draw(st.sampled_from([f"HELLO_STATE:fz:{me:08d}:{partner}", "", "HELLO_STATE:bad", "junk"]))
        return f"connect:127.0.0.1:{RELAY}:{hello}".encode()
    if shape == "closed":
        return b"connect:127.0.0.1:1:HELLO_STATE:fz:1:2"
    if shape == "text":
        return f"connect:{draw(text)}".encode()
    return b"connect:" + draw(st.binary(max_size=40))


@st.composite
def command(draw) -> bytes:
    name = draw(st.sampled_from([*NAMES, "nosuch", ""]))
    if name == "run":
        return draw(run_command())
    if name == "connect":
        return draw(connect_command())
    if name in ("set", "seti"):
        key = draw(st.one_of(keys_, st.sampled_from(SHELL_VARS)))
        value = draw(st.sampled_from(SHELL_VALUES) if key in SHELL_VARS else values)
        return f"{name}:{key}:{value}".encode()
    if name in ("get", "geti", "send"):
        return f"{name}:{draw(st.one_of(keys_, st.sampled_from(['a', 'out.txt'])))}".encode()
    if name in ("retrieve", "upload"):
        form = draw(st.sampled_from(["inline", "vars", "junk"]))
        if form == "inline":
            return f"{name}:{draw(st.one_of(values, st.just('k/one')))}\0{draw(values)}".encode()
        return f"{name}:".encode() if form == "vars" else f"{name}:{draw(text)}".encode()
    return f"{name}:{draw(text)}".encode()


# Well-formed steps, so that random sequences also reach successful transfers, runs and peers.
useful = st.sampled_from(
    [b"seti:nonblock:1", b"seti:nonblock:0", b"set:bg_silent:1", b"set:bg_silent:0",
     b"retrieve:k/one\0##TMPDIR##/a", b"upload:k/out\0##TMPDIR##/a", b"set:inkey:k/one",
     b"set:targfile:##TMPDIR##/d/b", b"set:fromfile:##TMPDIR##/d/b", b"set:outkey:k/out", b"retrieve:",
     b"upload:", b"set:cmdinfile:##TMPDIR##/a", b"seti:run_iter:2", b"seti:expect_statefile:1",
     b"seti:send_statefile:1", b"send:a", f"connect:127.0.0.1:{RELAY}:HELLO_STATE:fz:1:2".encode()]
)  # fmt: skip
messages = st.lists(
    st.one_of(command(), run_command(), connect_command(), useful, st.binary(max_size=64)),
    min_size=1,
    max_size=12,
)


def unsafe(session, msg: bytes, relay_port: int) -> bool:
    """Commands the fuzzer does not send: they could reach outside the worker's temp dir."""
    name, arg = cmds.parse_command(msg)
    if name == "quit":
        return True
    if name == "run":
        for var in SHELL_VARS:
            value = session.vals.get(var, session.event.command if var == "command" else None)
            if value is not None and not isinstance(value, int) and value not in SHELL_VALUES:
                return True
        if session.vals.get("waitfile"):  # a run that waits: only briefly
            try:
                return float(session.vals.get("waitfile_timeout", 600)) > 0.2
            except ValueError:
                return False
        return False
    if name == "connect":
        try:
            target = cmds.connect_for(arg)
        except cmds.CommandError:
            return False  # refused before dialling
        return (target.host, target.port) not in (("127.0.0.1", relay_port), ("127.0.0.1", 1))
    if name in ("retrieve", "upload"):
        try:
            transfer = cmds.transfer_for(name, session.vals, arg, session.tmpdir)
        except cmds.CommandError:
            return False  # refused before any file is touched
        return not os.path.realpath(transfer.path).startswith(session.tmpdir + os.sep)
    return False


@pytest.fixture(scope="module")
def fuzz_env(s3, keys):
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="k/one", Body=b"one")
    transfers = S3Transfers("us-east-1", s3.endpoint)  # one for every example: creating one is slow
    transfers.client()
    with RelayThread(keys) as relay:
        yield keys, s3.endpoint, transfers, relay.port
    transfers.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages, nonblock=st.sampled_from([0, 1]), bg_silent=st.sampled_from([0, 1]))
def test_every_command_gets_a_reply_and_the_worker_keeps_serving(fuzz_env, msgs, nonblock, bg_silent):
    keys, endpoint, transfers, relay_port = fuzz_env

    async def play() -> None:
        tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="mu-fuzz-"))
        session, out = local_session(keys, tmpdir, bucket=BUCKET, s3_endpoint=endpoint, nonblock=nonblock,
                                     bg_silent=bg_silent, command="cat ##INFILE##")  # fmt: skip
        session.s3 = transfers
        answers: list[bytes] = []
        try:
            for msg in [*msgs, b"echo:still here"]:
                msg = msg.replace(RELAY.encode(), str(relay_port).encode())
                if unsafe(session, msg, relay_port):
                    continue
                assert await asyncio.wait_for(session.dispatch(msg), 60), msg
                await settle(session, 60)
                replies = out.replies()
                answers = [r for r in replies if not r.startswith(b"INFO:")]
                assert answers, f"no reply to {msg!r}: {replies!r}"
                for reply in replies:
                    assert reply.startswith((b"OK:", b"FAIL(", b"INFO:")), (msg, reply)
                    tally(re.match(rb"[A-Z_]+(:[A-Z_]+)?", reply).group().decode())  # type: ignore[union-attr]
                if answers[0].startswith((b"OK:RUNNING", b"OK:RETRIEVING", b"OK:UPLOADING")):
                    assert len(answers) == 2, (msg, replies)  # nonblock: the final reply follows
            assert answers == [b"OK:ECHO(still here)"]
        finally:
            await session._shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)

    asyncio.run(play())


# -- peer messages ----------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["ok.bin", "state.0", "d", "..", ".", ".hidden", "a/b", "n" * 300, "a\0b", "é", ""]),
    text,
).map(lambda n: n.encode())
payloads = st.one_of(st.binary(max_size=2000), st.integers(0, 3 << 20).map(lambda n: b"\x00" * n))
peer_messages = st.one_of(
    st.tuples(names, payloads).map(lambda t: b"FILE:" + t[0] + b":" + t[1]),
    st.tuples(st.integers(0, 10**12), st.one_of(payloads.map(zlib.compress), st.binary(max_size=200))).map(
        lambda t: b"STATE(%d):" % t[0] + t[1]
    ),
    st.binary(max_size=5000),
    st.binary(max_size=64).map(lambda b: b"STATE(" + b),
)


def inflates(data: bytes) -> bytes | None:
    try:
        d = zlib.decompressobj()
        out = d.decompress(data)
        return out if d.eof else None
    except zlib.error:
        return None


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(peer_messages, min_size=1, max_size=8))
def test_every_peer_message_is_stored_or_reported(keys, msgs):
    """FILE lands (INFO:file) or is refused (INFO:peer_error); STATE inflates to n.state silently, as
    in mu, or is refused; anything else is forwarded capped; a good file still lands afterwards."""

    async def play() -> None:
        tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="mu-fuzz-"))
        session, out = local_session(keys, tmpdir)
        os.mkdir(os.path.join(tmpdir, "d"))  # a FILE named like a directory cannot replace it
        try:
            for msg in [*msgs, b"FILE:last.bin:end"]:
                await session._peer_message(msg)
                replies = out.replies()
                action = cmds.peer_message(msg)
                if isinstance(action, cmds.PeerState) and inflates(action.compressed) is not None:
                    assert replies == [], msg[:80]
                    with open(os.path.join(tmpdir, f"{action.number}.state"), "rb") as f:
                        assert f.read() == inflates(action.compressed)
                    tally("STATE stored")
                    continue
                assert len(replies) == 1 and replies[0].startswith(b"INFO:"), (msg[:80], replies)
                assert len(replies[0]) <= cmds.PEER_INFO_LIMIT + 200
                if isinstance(action, cmds.PeerFile) and action.name != "d":
                    assert replies == [f"INFO:file:{action.name}".encode()]
                    with open(os.path.join(tmpdir, action.name), "rb") as f:
                        assert f.read() == action.payload
                tally(replies[0].split(b":")[1].decode(errors="replace"))
            assert not [n for n in os.listdir(tmpdir) if n.endswith(".part")]  # nothing half-written
        finally:
            await session._shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)

    asyncio.run(play())


# -- framing ----------------------------------------------------------------------------------


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_the_frame_decoder_takes_any_bytes_in_any_pieces(data, cuts):
    """Garbage ends in a ProtocolError, never another exception; pieces never change the result."""

    def decode(pieces: list[bytes]) -> tuple[list[bytes], bool]:
        decoder, got = Decoder(max_frame=1 << 20), []
        try:
            for piece in pieces:
                got += decoder.feed(piece)
        except ProtocolError:
            return got, True
        return got, False

    points = sorted({c for c in cuts if c <= len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole, pieced = decode([data]), decode(pieces)
    assert whole[1] == pieced[1]
    assert whole[0] == pieced[0] or whole[1]  # a stream that turns bad may stop at different frames


@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 50))
def test_frames_survive_any_chunking(bodies, step):
    stream = b"".join(encode(b) for b in bodies)
    decoder, got = Decoder(), []
    for i in range(0, len(stream), step):
        got += decoder.feed(stream[i : i + step])
    assert got == bodies
