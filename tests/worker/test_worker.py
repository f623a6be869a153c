"""A real ``python -m lambda_worker`` process driven over mutual TLS, with S3 on moto's server."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import uuid

import pytest

from coordinator.core.tls import make_job_keys, server_context
from lambda_worker.handler import lambda_handler
from lambda_worker.process import CREDENTIAL_VARIABLES
from lambda_worker.wire import encode
from tests.helpers import TestCoordinator, event_for, finish, hello, start_worker


@pytest.fixture
def bucket(s3):
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("nonblock", [0, 1])
def test_every_command(keys, s3, bucket, nonblock):
    client = s3.client()
    client.put_object(Bucket=bucket, Key="in/a.txt", Body=b"alpha\n")
    client.put_object(Bucket=bucket, Key="in/b.txt", Body=b"beta\n")

    async def slow(conn, command, working, final):
        """In nonblock mode a slow command answers twice: at once, then when it is done."""
        reply = await conn.cmd(command)
        if nonblock:
            assert reply.startswith(working), reply
            reply = await conn.recv()
        assert reply.startswith(final), reply
        return reply

    async def scenario():
        coord, proc, conn = await hello(
            keys, bucket=bucket, s3_endpoint=s3.endpoint, nonblock=nonblock,
            command="cat ##INFILE## > ##OUTFILE##",
        )  # fmt: skip
        assert await conn.cmd("set:inkey:in/a.txt") == b"OK:SET(inkey)"
        assert await conn.cmd("set:targfile:##TMPDIR##/a.txt") == b"OK:SET(targfile)"
        assert await conn.cmd("seti:answer:42") == b"OK:SETI(answer)"
        assert await conn.cmd("get:inkey") == b"OK:GET(in/a.txt)"
        assert await conn.cmd("geti:answer") == b"INFO:answer:42"
        assert await conn.recv() == b"OK:GETI(answer)"
        dumped = await conn.cmd("dump_vals:")
        assert json.loads(dumped.removeprefix(b"OK:DUMP_VALS:"))["answer"] == 42
        assert await conn.cmd("echo:hi there") == b"OK:ECHO(hi there)"
        await slow(conn, "retrieve:", b"OK:RETRIEVING(", f"OK:RETRIEVE({bucket}/in/a.txt)".encode())
        await slow(conn, b"retrieve:in/b.txt\x00##TMPDIR##/b.txt", b"OK:RETRIEVING(",
                   f"OK:RETRIEVE({bucket}/in/b.txt)".encode())  # fmt: skip
        await conn.cmd("set:cmdinfile:##TMPDIR##/a.txt ##TMPDIR##/b.txt")
        await conn.cmd("set:cmdoutfile:##TMPDIR##/out.txt")
        reply = await slow(conn, "run:", b"OK:RUNNING(", b"OK:RETVAL(0):OUTPUT():COMMAND(cat /")
        assert b"/out.txt" in reply
        await conn.cmd("set:outkey:out/ab.txt")
        await conn.cmd("set:fromfile:##TMPDIR##/out.txt")
        await slow(conn, "upload:", b"OK:UPLOADING(", f"OK:UPLOAD({bucket}/out/ab.txt)".encode())
        await slow(conn, b"upload:out/copy.txt\x00##TMPDIR##/a.txt", b"OK:UPLOADING(",
                   f"OK:UPLOAD({bucket}/out/copy.txt)".encode())  # fmt: skip
        reply = await slow(conn, "run:echo $TMPDIR; png2y4m -h | head -1", b"OK:RUNNING(", b"OK:RETVAL(0)")
        assert b"usage: png2y4m" in reply  # the bundled binaries are on PATH
        reply = await slow(conn, "run:./png2y4m -h | head -1", b"OK:RUNNING(", b"OK:RETVAL(0)")
        assert b"usage: png2y4m" in reply  # ... and in the working directory, as in mu's /var/task
        await conn.send("quit:")
        code, summary, _ = await finish(proc)
        await coord.__aexit__()
        return code, summary

    code, summary = run(scenario())
    assert code == 0 and summary["exit"] == "quit" and summary["ok"]
    assert client.get_object(Bucket=bucket, Key="out/ab.txt")["Body"].read() == b"alpha\nbeta\n"
    assert client.get_object(Bucket=bucket, Key="out/copy.txt")["Body"].read() == b"alpha\n"


def test_a_missing_program_is_named_with_the_worker_s_programs(keys):
    async def scenario():
        coord, proc, conn = await hello(keys)
        reply = await conn.cmd("run:./vpxenc --codec=vp8 -o out.ivf in.y4m")
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return reply

    reply = run(scenario())
    assert reply.startswith(b"OK:RETVAL(127):OUTPUT(")
    assert b"./vpxenc: not found" in reply  # the shell's words, then the worker's
    assert b"[worker: exit status 127: vpxenc is not among this worker's programs (in " in reply
    assert re.search(rb"programs \(in [^:]+: [^)]*png2y4m[^)]*\)", reply)  # what it does have
    assert reply.endswith(b"):COMMAND(./vpxenc --codec=vp8 -o out.ivf in.y4m)")


def test_nonblock_replies_in_completion_order_and_keeps_serving(keys):
    async def scenario():
        coord, proc, conn = await hello(keys, nonblock=1)
        assert (await conn.cmd("run:sleep 1.5; echo slow")).startswith(b"OK:RUNNING(")
        assert (await conn.cmd("run:echo fast")).startswith(b"OK:RUNNING(")
        assert await conn.cmd("echo:still here") == b"OK:ECHO(still here)"
        first, second = await conn.recv(), await conn.recv()
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return first, second

    first, second = run(scenario())
    assert first.startswith(b"OK:RETVAL(0):OUTPUT(fast")
    assert second.startswith(b"OK:RETVAL(0):OUTPUT(slow")


def test_bad_commands_fail_and_the_worker_keeps_serving(keys, s3, bucket):
    async def scenario():
        coord, proc, conn = await hello(keys, bucket=bucket, s3_endpoint=s3.endpoint)
        replies = {
            "unknown": await conn.cmd("frobnicate:x"),
            "set": await conn.cmd("set:novalue"),
            "seti": await conn.cmd("seti:n:abc"),
            "get": await conn.cmd("get:nothing"),
            "missing_key": await conn.cmd(b"retrieve:no/such/key\x00##TMPDIR##/x"),
            "missing_bucket": await conn.cmd("set:bucket:no-such-bucket-here")
            and await conn.cmd(b"retrieve:k\x00##TMPDIR##/x"),
            "upload_nofile": await conn.cmd(b"upload:k\x00##TMPDIR##/absent"),
            "failing": await conn.cmd("run:echo oops; exit 3"),
        }
        replies["alive"] = await conn.cmd("echo:alive")
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return replies

    r = run(scenario())
    assert r["unknown"] == b"FAIL(no such command 'frobnicate:x')"
    assert r["set"].startswith(b"FAIL(set needs 'set:KEY:VALUE'")
    assert r["seti"] == b"FAIL(seti: value 'abc' for 'n' is not an integer)"
    assert r["get"] == b"FAIL(no such variable nothing)"
    assert r["missing_key"].startswith(f"FAIL(RETRIEVE({bucket}/no/such/key)".encode())
    assert b"404" in r["missing_key"] or b"NoSuchKey" in r["missing_key"]
    assert r["missing_bucket"].startswith(b"FAIL(RETRIEVE(no-such-bucket-here/k)")
    assert r["upload_nofile"].startswith(b"FAIL(UPLOAD(no-such-bucket-here/k): local file")
    assert r["failing"] == b"OK:RETVAL(3):OUTPUT(oops\n):COMMAND(echo oops; exit 3)"  # as in mu
    assert r["alive"] == b"OK:ECHO(alive)"


def test_failures_say_what_was_wrong_and_what_to_check(keys, s3, bucket):
    """Project rule: a FAIL names the bucket and key, and the option or command that fixes it;
    bytes are quoted as text, never as Python's b'...'."""

    async def scenario():
        coord, proc, conn = await hello(keys, bucket="", s3_endpoint=s3.endpoint)
        replies = {
            "no_bucket": await conn.cmd(b"retrieve:k\x00##TMPDIR##/x"),
            "bare_run": await conn.cmd("run:"),
            "set_bucket": await conn.cmd(f"set:bucket:{bucket}"),
            "missing_key": await conn.cmd(b"retrieve:in/00000001.png\x00##TMPDIR##/x"),
            "mkdir": await conn.cmd("run:mkdir -p ##TMPDIR##/folder && echo x > ##TMPDIR##/file"),
            "upload_dir": await conn.cmd(b"upload:out/k\x00##TMPDIR##/folder"),
            "no_such_bucket": await conn.cmd("set:bucket:no-such-bucket-here")
            and await conn.cmd(b"upload:k\x00##TMPDIR##/file"),
            "connect_form": await conn.cmd("connect:127.0.0.1"),
            "connect_port": await conn.cmd("connect:127.0.0.1:0:HELLO"),
        }
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return {k: v.decode() for k, v in replies.items()}

    r = run(scenario())
    assert r["no_bucket"].startswith("FAIL(retrieve: no bucket: the job named none (its -b BUCKET option")
    assert "--command 'CMD'" in r["bare_run"] and r["bare_run"].startswith("FAIL(run: a bare 'run:'")
    assert r["missing_key"].startswith(f"FAIL(RETRIEVE({bucket}/in/00000001.png) to ")
    assert f"there is no object 'in/00000001.png' in bucket '{bucket}' (region us-east-1, endpoint " \
        f"{s3.endpoint}): check the key the job asks for" in r["missing_key"]
    assert r["upload_dir"].startswith(f"FAIL(UPLOAD({bucket}/out/k): ")
    assert "/folder is a directory; upload: sends one file" in r["upload_dir"]
    assert "there is no bucket 'no-such-bucket-here'" in r["no_such_bucket"], r["no_such_bucket"]
    assert r["connect_form"] == "FAIL(connect needs 'connect:HOST:PORT:MSG', got 'connect:127.0.0.1')"
    assert r["connect_port"] == "FAIL(connect: port must be 1-65535, got '0')"
    assert not [text for text in r.values() if re.search(r"\bb'", text)]  # no bytes repr


@pytest.mark.parametrize("header", [b"garbage-header-bytes", b"%012d " % (10**11)])
def test_bad_frame_header_closes_the_connection(keys, header):
    async def scenario():
        coord, proc, conn = await hello(keys)
        conn.writer.write(header)
        await conn.writer.drain()
        closed = await conn.closed()
        code, summary, err = await finish(proc)
        await coord.__aexit__()
        return closed, code, summary, err

    closed, code, summary, err = run(scenario())
    assert closed and code == 1
    assert summary["exit"] == "protocol_error"
    assert "protocol error from coordinator" in err


def test_coordinator_with_a_foreign_certificate_is_refused(keys):
    async def scenario():
        impostor = TestCoordinator(make_job_keys())  # same name, different CA
        await impostor.__aenter__()
        proc = await start_worker(event_for(keys, impostor.port))
        code, summary, err = await finish(proc)
        await impostor.__aexit__()
        return code, summary, err, impostor.conns.qsize()

    code, summary, err, accepted = run(scenario())
    assert code == 1 and summary["exit"] == "connect_failed"
    assert "CERTIFICATE_VERIFY_FAILED" in err or "certificate verify failed" in err
    assert accepted == 0


def test_malformed_event_is_a_clear_error(keys):
    async def scenario():
        ev = event_for(keys, 1)
        del ev["tls"]
        code, summary, err = await finish(await start_worker(ev))
        return code, summary, err

    code, summary, err = run(scenario())
    assert code == 2
    assert "event field 'tls' is missing" in summary["error"]
    assert "Traceback" not in err


def test_keys_given_on_stdin_sign_s3_requests_and_stay_out_of_commands(keys, s3, bucket, tmp_path):
    """Project rule: a local launcher hands the AWS keys over with the event on stdin, so that
    no starting environment holds them; boto3 signs with them, a run: command never sees them."""
    s3.client().put_object(Bucket=bucket, Key="in.bin", Body=b"data")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    env["HOME"] = str(tmp_path)  # no ~/.aws to fall back on
    given = {"AWS_ACCESS_KEY_ID": "AKIASTDIN", "AWS_SECRET_ACCESS_KEY": "stdin-secret"}

    async def scenario():
        async with TestCoordinator(keys) as coord:
            event = event_for(keys, coord.port, bucket=bucket, s3_endpoint=s3.endpoint, credentials=given)
            proc = await start_worker(event, env)
            conn = await coord.accept()
            assert await conn.recv() == b"OK:HELLO"
            got = [await conn.cmd(b"retrieve:in.bin\x00##TMPDIR##/in.bin"),
                   await conn.cmd("run:cat ##TMPDIR##/in.bin; env | grep -c stdin-secret")]  # fmt: skip
            await conn.send("quit:")
            return got, await finish(proc)

    (retrieved, ran), (code, summary, _) = run(scenario())
    assert retrieved == f"OK:RETRIEVE({bucket}/in.bin)".encode()
    assert ran.startswith(b"OK:RETVAL(1):OUTPUT(data0\n)")  # grep found nothing
    assert code == 0 and summary["exit"] == "quit"


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"AWS_PROFILE": "x"}, "may hold only AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN"),
        ("AKIA", "must map AWS_ACCESS_KEY_ID"),
        ({"AWS_ACCESS_KEY_ID": 5}, "must map AWS_ACCESS_KEY_ID"),
    ],
)
def test_bad_credentials_on_stdin_are_refused(keys, credentials, message):
    async def scenario():
        return await finish(await start_worker(event_for(keys, 1, credentials=credentials)))

    code, _, err = run(scenario())
    assert code == 2 and message in err and "Traceback" not in err


def test_the_worker_process_is_made_undumpable():
    """What keeps a command from reading the worker's /proc/PID/environ and mem (without
    CAP_SYS_PTRACE); the sandbox test checks the effect from a command."""
    code = (
        "import ctypes; from lambda_worker.process import protect_memory; libc = ctypes.CDLL(None)\n"
        "before = libc.prctl(3, 0, 0, 0, 0); print(protect_memory(), before, libc.prctl(3, 0, 0, 0, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "1", "0"]  # PR_GET_DUMPABLE: 1 before, 0 after


def test_idle_timeout_ends_a_forgotten_worker(keys):
    async def scenario():
        coord, proc, _conn = await hello(keys, idle_timeout=1)
        result = await finish(proc)
        await coord.__aexit__()
        return result

    code, summary, err = run(scenario())
    assert summary["exit"] == "idle_timeout" and code == 1
    assert "no command for 1 s" in err


def test_lambda_context_deadline_is_reported(keys):
    class Context:
        def get_remaining_time_in_millis(self):
            return 123456

    async def scenario():
        async with TestCoordinator(keys) as coord:
            task = asyncio.create_task(
                asyncio.to_thread(lambda_handler, event_for(keys, coord.port), Context())
            )
            conn = await coord.accept()
            got = [await conn.recv(), await conn.cmd("echo:x")]  # META comes between, taken aside
            await conn.send("quit:")
            return got, conn.meta, await task

    got, meta, summary = run(scenario())
    assert got == [b"OK:HELLO", b"OK:ECHO(x)"]
    assert meta == {"worker": 0, "python": platform.python_version(), "deadline_ms": 123456}
    assert summary["ok"] and summary["exit"] == "quit"


def test_connect_to_a_relay_and_receive_a_file(keys):
    """connect: opens mutual TLS to a peer endpoint; FILE messages land in the temp dir."""

    async def scenario():
        seen: list[bytes] = []

        async def relay(reader, writer):
            head = await reader.readexactly(13)
            seen.append(await reader.readexactly(int(head[:12])))
            writer.write(encode(b"FILE:state.bin:\x00\x01payload"))
            await writer.drain()
            await reader.read()  # until the worker closes

        server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=server_context(keys))
        rport = server.sockets[0].getsockname()[1]
        coord, proc, conn = await hello(keys)
        reply = await conn.cmd(f"connect:127.0.0.1:{rport}:HELLO_STATE:job:0:1")
        info = await conn.recv()
        cat = await conn.cmd("run:od -An -c ##TMPDIR##/state.bin")
        closing = await conn.cmd("close_connect:")
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        server.close()
        return reply, info, cat, closing, seen

    reply, info, cat, closing, seen = run(scenario())
    assert re.fullmatch(rb"OK:CONNECT\(127\.0\.0\.1:\d+:HELLO_STATE:job:0:1\)", reply)  # mu echoes it all
    assert seen == [b"HELLO_STATE:job:0:1"]
    assert info == b"INFO:file:state.bin"
    assert b"p   a   y   l   o   a   d" in cat
    assert closing == b"OK:CLOSE_CONNECT"


def test_run_can_wait_for_a_file(keys):
    async def scenario():
        coord, proc, conn = await hello(keys, nonblock=1)
        await conn.cmd("set:waitfile:##TMPDIR##/later.txt")
        assert (await conn.cmd("run:cat ##TMPDIR##/later.txt")).startswith(b"OK:RUNNING(")
        assert (await conn.cmd("run:echo arrived > ##TMPDIR##/later.txt")).startswith(b"OK:RUNNING(")
        replies = [await conn.recv(), await conn.recv()]
        await conn.cmd("set:waitfile:##TMPDIR##/never")
        await conn.cmd("set:waitfile_timeout:0.2")
        await conn.cmd("run:true")
        timed_out = await conn.recv()
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return replies, timed_out

    replies, timed_out = run(scenario())
    assert replies[0].startswith(b"OK:RETVAL(0):OUTPUT():COMMAND(echo arrived")
    assert replies[1].startswith(b"OK:RETVAL(0):OUTPUT(arrived")
    assert timed_out.startswith(b"FAIL(run: /") and b"did not appear within 0.2 s" in timed_out


def test_send_needs_a_peer_and_a_file(keys):
    async def scenario():
        coord, proc, conn = await hello(keys)
        no_file = await conn.cmd("send:nothing")
        await conn.cmd("run:echo x > ##TMPDIR##/f")
        no_peer = await conn.cmd("send:f")
        bad_name = await conn.cmd("send:../etc/passwd")
        await conn.send("quit:")
        await finish(proc)
        await coord.__aexit__()
        return no_file, no_peer, bad_name

    no_file, no_peer, bad_name = run(scenario())
    assert no_file.startswith(b"FAIL(send: /") and b"does not exist" in no_file
    assert no_peer == b"FAIL(send: no peer connection; use connect:HOST:PORT:HELLO first)"
    assert bad_name.startswith(b"FAIL(send: file name '../etc/passwd' is not allowed")


def test_quit_followed_at_once_by_a_close_is_a_clean_quit(keys):
    """The coordinator may close right after quit:, before the worker has taken the command."""

    async def scenario():
        coord, proc, conn = await hello(keys)
        await conn.send(b"echo:one")
        await conn.send(b"quit:")
        conn.writer.close()
        result = await finish(proc)
        await coord.__aexit__()
        return result

    code, summary, _ = run(scenario())
    assert code == 0 and summary["exit"] == "quit" and summary["ok"]
