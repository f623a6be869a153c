"""Worker commands fuzzed: whatever arrives, the worker answers and keeps serving.

Messages go straight into a real :class:`Session` (the worker's command loop) with its S3
client aimed at the moto server; only ``run:`` and ``connect:`` are left out (they start
processes and dial out), and transfers that would touch files outside the worker's temp dir
are not sent, so fuzzing cannot write to this machine.

The suite runs a fixed set of examples (the "ci" profile in tests/conftest.py);
``HYPOTHESIS_PROFILE=fuzz`` runs a long randomised campaign instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from lambda_worker import commands as cmds
from lambda_worker.event import parse_event
from lambda_worker.session import Session
from lambda_worker.wire import Decoder, ProtocolError, encode
from tests.helpers import event_for

BUCKET = "fuzz-bucket"
VARS = ["bucket", "inkey", "outkey", "targfile", "fromfile", "cmdinfile", "cmdoutfile", "nonblock",
        "waitfile", "waitfile_timeout", "command", "region"]  # fmt: skip
NAMES = ["set", "seti", "get", "geti", "dump_vals", "echo", "retrieve", "upload", "send", "close_connect"]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
values = st.one_of(
    text,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["##TMPDIR##/a", "##TMPDIR##/d/b", "##INFILE##", "##OUTFILE##", BUCKET, "k/one", "0", "1"]
    ),
)
keys = st.one_of(st.sampled_from(VARS), text)


@st.composite
def command(draw) -> bytes:
    name = draw(st.sampled_from([*NAMES, "nosuch", ""]))
    if name in ("set", "seti"):
        body = f"{name}:{draw(keys)}:{draw(values)}"
    elif name in ("get", "geti", "send"):
        body = f"{name}:{draw(keys)}"
    elif name in ("retrieve", "upload"):
        form = draw(st.sampled_from(["inline", "vars", "junk"]))
        if form == "inline":
            body = f"{name}:{draw(st.one_of(values, st.just('k/one')))}\0{draw(values)}"
        else:
            body = f"{name}:" if form == "vars" else f"{name}:{draw(text)}"
    else:
        body = f"{name}:{draw(text)}"
    return body.encode()


# Well-formed steps, so that random sequences also reach successful transfers in both modes.
useful = st.sampled_from(
    [b"seti:nonblock:1", b"seti:nonblock:0", b"retrieve:k/one\0##TMPDIR##/a", b"upload:k/out\0##TMPDIR##/a",
     b"set:inkey:k/one", b"set:targfile:##TMPDIR##/d/b", b"set:fromfile:##TMPDIR##/d/b", b"set:outkey:k/out",
     b"retrieve:", b"upload:", b"set:cmdinfile:##TMPDIR##/a"]
)  # fmt: skip
messages = st.lists(st.one_of(command(), useful, st.binary(max_size=64)), min_size=1, max_size=12)


class Capture:
    """Stands in for the worker's TLS stream to the coordinator."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


def leaves_the_sandbox(session: Session, msg: bytes) -> bool:
    name, arg = cmds.parse_command(msg)
    if name in ("run", "connect", "quit"):
        return True
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
    event = parse_event(event_for(keys, 1, bucket=BUCKET, s3_endpoint=s3.endpoint))
    probe = Session(event, tempfile.mkdtemp(), ssl.create_default_context())
    return event, probe._s3_client()  # one S3 client for every example: creating one is slow


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages)
def test_every_command_gets_a_reply_and_the_worker_keeps_serving(fuzz_env, msgs):
    event, s3_client = fuzz_env

    async def play() -> None:
        tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="mu-fuzz-"))
        session = Session(event, tmpdir, ssl.create_default_context())
        session._s3 = s3_client
        out = Capture()
        session._writer = out  # type: ignore[assignment]
        decoder = Decoder()
        try:
            for msg in [*msgs, b"echo:still here"]:
                if leaves_the_sandbox(session, msg):
                    continue
                assert await asyncio.wait_for(session.dispatch(msg), 30), msg
                if session._background:
                    await asyncio.wait_for(asyncio.gather(*session._background), 30)
                replies = decoder.feed(bytes(out.data))
                out.data.clear()
                assert replies, f"no reply to {msg!r}"
                for reply in replies:
                    assert reply.startswith((b"OK:", b"FAIL(", b"INFO:")), (msg, reply)
                    tally(re.match(rb"[A-Z_]+(:[A-Z_]+)?", reply).group().decode())  # type: ignore[union-attr]
                if replies[0].startswith((b"OK:RETRIEVING", b"OK:UPLOADING")):
                    assert len(replies) == 2, (msg, replies)  # nonblock: the final reply follows
            assert replies == [b"OK:ECHO(still here)"]
        finally:
            await session._shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)

    asyncio.run(play())


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
