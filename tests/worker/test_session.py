"""The worker's command loop in this process: real shells, real files, a real relay.

Named after the behaviour of mu's worker each test pins (``lambda_function_template.py``,
``libmu/handler.py``), or marked as this project's own rule.
"""

from __future__ import annotations

import asyncio
import stat
import zlib

import pytest

from coordinator.core.relay import Relay
from coordinator.core.tls import server_context
from lambda_worker import process
from lambda_worker.wire import Decoder, encode
from tests.helpers import local_session, relay_peer, settle


def run(coro):
    return asyncio.run(coro)


async def feed(session, out, *msgs: bytes | str) -> list[bytes]:
    """Dispatch commands in order, wait for background ones, return every reply."""
    for msg in msgs:
        assert await session.dispatch(msg if isinstance(msg, bytes) else msg.encode())
    await settle(session)
    return out.replies()


def tool(folder, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# -- where commands run ------------------------------------------------------------------------


def test_bundled_binaries_folder_is_found_as_mu_bin_dir_then_lambda_task_root_then_the_checkout(tmp_path):
    """Project rule (mu ran in /var/task): MU_BIN_DIR, else $LAMBDA_TASK_ROOT/bin, else binaries/bin."""
    (tmp_path / "task" / "bin").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    env = {"MU_BIN_DIR": str(tmp_path / "mine"), "LAMBDA_TASK_ROOT": str(tmp_path / "task")}
    assert process.bin_dir(env) == str(tmp_path / "mine")
    assert process.bin_dir({**env, "MU_BIN_DIR": str(tmp_path / "absent")}) == str(tmp_path / "task" / "bin")
    assert process.bin_dir({}) == str(process.CHECKOUT_BINARIES)


def test_commands_run_beside_the_binaries_so_dot_slash_tools_resolve(keys, tmp_path, monkeypatch):
    """mu's Lambda ran commands in /var/task, where its binaries were: './xc-enc' worked."""
    bins = tmp_path / "bin"
    bins.mkdir()
    tool(bins, "hello-tool", "echo hello from $(pwd)\n")
    monkeypatch.setenv("MU_BIN_DIR", str(bins))

    async def scenario():
        session, out = local_session(keys, str(tmp_path / "w"))
        return await feed(session, out, "run:./hello-tool")

    assert run(scenario()) == [f"OK:RETVAL(0):OUTPUT(hello from {bins}\n):COMMAND(./hello-tool)".encode()]


def test_run_environment_holds_no_aws_credentials(keys, tmp_path, monkeypatch):
    """Project rule (issue 12): S3 transfers happen in the worker; a command gets no AWS keys."""
    secrets = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t",
               "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://x", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
               "AWS_PROFILE": "p", "AWS_WEB_IDENTITY_TOKEN_FILE": "/f"}  # fmt: skip
    for k, v in {**secrets, "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)

    async def scenario():
        session, out = local_session(keys, str(tmp_path))
        return await feed(session, out, "run:env")

    [reply] = run(scenario())
    env = dict(line.split("=", 1) for line in reply.decode().split("OUTPUT(")[1].splitlines() if "=" in line)
    assert not set(secrets) & set(env)
    assert env["AWS_REGION"] == "eu-west-1" and env["TMPDIR"] == str(tmp_path)


def test_tmpdir_comes_back_after_a_job_removes_it(keys, tmp_path):
    """mu jobs begin with run:rm -rf /tmp/* and then use ##TMPDIR## again."""
    tmpdir = tmp_path / "lambda_w"

    async def scenario():
        session, out = local_session(keys, str(tmpdir))
        replies = await feed(
            session, out, "run:rm -rf ##TMPDIR##", "run:echo x > ##TMPDIR##/after; cat ##TMPDIR##/after"
        )
        await session._peer_message(b"FILE:peer.bin:data")
        return replies + out.replies()

    removed, after, info = run(scenario())
    assert removed.startswith(b"OK:RETVAL(0)") and after.startswith(b"OK:RETVAL(0):OUTPUT(x\n)")
    assert info == b"INFO:file:peer.bin" and (tmpdir / "peer.bin").read_bytes() == b"data"


# -- nonblock and bg_silent: handler._background ------------------------------------------------


@pytest.mark.parametrize("how", ["event", "set"])
def test_bg_silent_suppresses_the_immediate_running_reply(keys, tmp_path, how):
    """_background: with nonblock, OK:RUNNING(...) is sent only if not vals['bg_silent']."""

    async def scenario():
        session, out = local_session(keys, str(tmp_path), nonblock=1, bg_silent=1 if how == "event" else 0)
        first = [] if how == "event" else await feed(session, out, "set:bg_silent:1")
        return first, await feed(session, out, "run:echo quiet"), await feed(session, out, "set:bg_silent:0",
                                                                              "run:echo loud")  # fmt: skip

    _, quiet, loud = run(scenario())
    assert quiet == [b"OK:RETVAL(0):OUTPUT(quiet\n):COMMAND(echo quiet)"]
    assert loud == [
        b"OK:SET(bg_silent)",
        b"OK:RUNNING(echo loud)",
        b"OK:RETVAL(0):OUTPUT(loud\n):COMMAND(echo loud)",
    ]


def test_nonblock_transfer_replies_retrieving_with_the_file(keys, tmp_path, s3):
    """do_retrieve in the background: OK:RETRIEVING(bucket/key->file), then OK:RETRIEVE(bucket/key)."""
    client = s3.client()
    client.create_bucket(Bucket="nb-bucket")
    client.put_object(Bucket="nb-bucket", Key="v/1.png", Body=b"png")

    async def scenario():
        session, out = local_session(
            keys, str(tmp_path), nonblock=1, bucket="nb-bucket", s3_endpoint=s3.endpoint
        )
        try:
            return await feed(session, out, b"retrieve:v/1.png\0##TMPDIR##/1.png")
        finally:
            session.s3.close()

    assert run(scenario()) == [f"OK:RETRIEVING(nb-bucket/v/1.png->{tmp_path}/1.png)".encode(),
                               b"OK:RETRIEVE(nb-bucket/v/1.png)"]  # fmt: skip
    assert (tmp_path / "1.png").read_bytes() == b"png"


def test_hash_s3keys_from_the_event_names_the_object_stored(keys, tmp_path, s3):
    """make_urstring with the event's hash_s3keys: the object is stored under the hashed key."""
    client = s3.client()
    client.create_bucket(Bucket="hash-bucket")
    (tmp_path / "o.ivf").write_bytes(b"ivf")

    async def scenario():
        session, out = local_session(keys, str(tmp_path), hash_s3keys=1, bucket="hash-bucket",
                                     s3_endpoint=s3.endpoint)  # fmt: skip
        try:
            return await feed(session, out, b"upload:out/00000007.ivf\0##TMPDIR##/o.ivf")
        finally:
            session.s3.close()

    [reply] = run(scenario())
    key = reply.decode().removeprefix("OK:UPLOAD(hash-bucket/").removesuffix(")")
    assert key.endswith("-out/00000007.ivf") and len(key.split("-")[0]) == 4
    assert client.get_object(Bucket="hash-bucket", Key=key)["Body"].read() == b"ivf"


# -- the peer connection: do_connect, finished_run, get_input_state --------------------------------


class Partner:
    """The other worker at the relay, played by a raw mutual-TLS client."""

    def __init__(self, reader, writer):
        self.reader, self.writer, self.decoder, self.got = reader, writer, Decoder(), []

    @classmethod
    async def join(cls, keys, port: int, hello: bytes) -> Partner:
        return cls(*await relay_peer(keys, port, hello))

    async def recv(self) -> bytes:
        while not self.got:
            data = await asyncio.wait_for(self.reader.read(1 << 20), 10)
            assert data, "relay closed"
            self.got += self.decoder.feed(data)
        return self.got.pop(0)

    async def send(self, body: bytes) -> None:
        self.writer.write(encode(body))
        await self.writer.drain()


async def with_relay(keys, body):
    relay = Relay(server_context(keys), log=lambda _: None)
    port = await relay.start()
    try:
        return await body(port)
    finally:
        await relay.close()


def test_connect_echoes_its_whole_argument_and_a_second_connect_fails(keys, tmp_path):
    """do_connect: OK:CONNECT(msg) with the whole 'host:port:tosend'; FAIL(already connected)."""

    async def scenario(port):
        session, out = local_session(keys, str(tmp_path))
        arg = f"127.0.0.1:{port}:HELLO_STATE:U:00000003:4"
        replies = await feed(
            session, out, f"connect:{arg}", f"connect:{arg}", "close_connect:", f"connect:{arg}"
        )
        await session._shutdown()
        return arg, replies

    arg, replies = run(with_relay(keys, scenario))
    assert replies == [f"OK:CONNECT({arg})".encode(), b"FAIL(already connected)", b"OK:CLOSE_CONNECT",
                       f"OK:CONNECT({arg})".encode()]  # fmt: skip


def test_a_failed_connect_is_a_fail_and_the_worker_keeps_serving(keys, tmp_path):
    """Project rule: mu's do_connect returned True (the worker quit) when the connection failed."""

    async def scenario():
        session, out = local_session(keys, str(tmp_path))
        return await feed(session, out, "connect:127.0.0.1:1:HELLO_STATE:a:0:1", "echo:alive")

    failed, alive = run(scenario())
    assert failed.startswith(b"FAIL(CONNECT(127.0.0.1:1):") and alive == b"OK:ECHO(alive)"


def test_state_file_goes_to_the_peer_after_a_successful_xc_enc_run(keys, tmp_path, monkeypatch):
    """finished_run after OK:RETVAL(0) of xc-enc: unlink (run_iter-2).state, copy output.ivf to
    prev.ivf, send 'STATE(run_iter):' + zlib(final.state); get_input_state on the other side
    writes n.state atomically. xcenc's ids are zero-padded: the relay pairs them by int()."""
    bins = tmp_path / "bin"
    bins.mkdir()
    tool(
        bins, "xc-enc", 'printf "state after $1" > "$TMPDIR/final.state"; printf ivf > "$TMPDIR/output.ivf"\n'
    )
    monkeypatch.setenv("MU_BIN_DIR", str(bins))
    sender_dir, receiver_dir = tmp_path / "sender", tmp_path / "receiver"

    async def scenario(port):
        sender, out = local_session(keys, str(sender_dir), send_statefile=1)
        receiver, rout = local_session(keys, str(receiver_dir))
        assert await feed(receiver, rout, f"connect:127.0.0.1:{port}:HELLO_STATE:U:00000004:5") != []
        replies = await feed(
            sender,
            out,
            f"connect:127.0.0.1:{port}:HELLO_STATE:U:00000003:4",
            "seti:run_iter:2",
            "run:echo 0 > ##TMPDIR##/0.state; echo 1 > ##TMPDIR##/1.state",
            "run:./xc-enc two",
        )
        for _ in range(200):
            if (receiver_dir / "2.state").exists():
                break
            await asyncio.sleep(0.02)
        silent = rout.replies()
        await sender._shutdown()
        await receiver._shutdown()
        return replies, silent

    replies, silent = run(with_relay(keys, scenario))
    assert replies[-1] == b"OK:RETVAL(0):OUTPUT():COMMAND(./xc-enc two)"
    assert not (sender_dir / "0.state").exists() and (sender_dir / "1.state").exists()
    assert (sender_dir / "prev.ivf").read_bytes() == b"ivf"
    assert (receiver_dir / "2.state").read_bytes() == b"state after two"
    assert silent == []  # mu's worker tells its coordinator nothing when a state file arrives
    assert not [p for p in receiver_dir.iterdir() if p.name.endswith(".part")]


def test_no_state_is_sent_without_send_statefile_or_after_a_failed_run(keys, tmp_path, monkeypatch):
    """finished_run runs only for 'OK:RETVAL(0)'; without send_statefile only prev.ivf is made."""
    bins = tmp_path / "bin"
    bins.mkdir()
    tool(bins, "xc-enc", 'printf s > "$TMPDIR/final.state"; printf ivf > "$TMPDIR/output.ivf"; exit "$1"\n')
    monkeypatch.setenv("MU_BIN_DIR", str(bins))

    async def scenario(port):
        partner = await Partner.join(keys, port, b"HELLO_STATE:V:1:0")
        session, out = local_session(keys, str(tmp_path / "w"))
        replies = await feed(session, out, f"connect:127.0.0.1:{port}:HELLO_STATE:V:0:1", "run:./xc-enc 1")
        failed_prev = (tmp_path / "w" / "prev.ivf").exists()
        replies += await feed(session, out, "run:./xc-enc 0", "seti:send_statefile:1", "run:./xc-enc 0")
        state = await partner.recv()
        await session._shutdown()
        return replies, failed_prev, state

    replies, failed_prev, state = run(with_relay(keys, scenario))
    assert replies[1].startswith(b"OK:RETVAL(1)") and not failed_prev
    assert (tmp_path / "w" / "prev.ivf").read_bytes() == b"ivf"
    assert state == b"STATE(0):" + zlib.compress(b"s")  # one message: only the run with send_statefile


def test_a_missing_output_ivf_is_reported_not_fatal(keys, tmp_path):
    """Project rule: mu's worker died in shutil.copy when output.ivf was missing."""

    async def scenario():
        session, out = local_session(keys, str(tmp_path))
        return await feed(session, out, "run:true xc-dump", "echo:alive")

    info, reply, alive = run(scenario())
    assert info.startswith(b"INFO:statefile_error:cannot copy output.ivf to prev.ivf")
    assert reply.startswith(b"OK:RETVAL(0)") and alive == b"OK:ECHO(alive)"
