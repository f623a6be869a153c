"""Inputs that used to kill a worker or lose its replies (issue 11), each against a real
``python -m lambda_worker`` process (or the Lambda handler itself), with a real relay and S3.

After each, the worker answers the next command, or ends cleanly with nothing left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.core.relay import Relay
from coordinator.core.tls import server_context
from lambda_worker import handler as handler_module
from lambda_worker.handler import lambda_handler
from lambda_worker.wire import encode
from tests.helpers import TestCoordinator, event_for, finish, hello, relay_peer, start_worker

from .chaos import BlackHole

MIB = 1 << 20


def run(coro):
    return asyncio.run(coro)


async def stop(coord, proc, conn) -> tuple[int, dict, str]:
    await conn.send("quit:")
    result = await finish(proc)
    await coord.__aexit__()
    return result


def gone(pid: int) -> bool:
    """No such process, or only its zombie (killed, not yet reaped by whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def wait_for_file(path: Path, timeout: float = 10) -> str:
    for _ in range(int(timeout * 50)):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("nonblock", [0, 1])
def test_a_nul_byte_in_a_command_is_a_fail_in_both_modes(keys, nonblock):
    async def scenario():
        coord, proc, conn = await hello(keys, nonblock=nonblock)
        replies = [await conn.cmd(b"run:echo a\x00b"), await conn.cmd("echo:alive")]
        return replies, await stop(coord, proc, conn)

    (nul, alive), (code, summary, _) = run(scenario())
    assert nul.startswith(b"FAIL(run: ") and b"NUL byte" in nul
    assert alive == b"OK:ECHO(alive)" and code == 0 and summary["exit"] == "quit"


def test_connect_to_a_bad_host_or_port_is_a_fail(keys):
    async def scenario():
        coord, proc, conn = await hello(keys)
        replies = [await conn.cmd(b"connect:\xff\xfe:13337:HELLO_STATE:a:0:1"),
                   await conn.cmd("connect:127.0.0.1:99999999:HELLO_STATE:a:0:1"),
                   await conn.cmd("connect:no-such-host.invalid:13337:x"),
                   await conn.cmd("echo:alive")]  # fmt: skip
        return replies, await stop(coord, proc, conn)

    (host, port, unresolved, alive), (code, _, _) = run(scenario())
    assert host.startswith(b"FAIL(connect: host") and port.startswith(b"FAIL(connect: port must be 1-65535")
    assert unresolved.startswith(b"FAIL(CONNECT(no-such-host.invalid:13337):")
    assert alive == b"OK:ECHO(alive)" and code == 0


def test_an_unusable_s3_endpoint_or_region_is_a_fail(keys):
    async def scenario():
        coord, proc, conn = await hello(keys, bucket="b", s3_endpoint="http://127.0.0.1:1")
        refused = await conn.cmd(b"retrieve:k\x00##TMPDIR##/f", timeout=60)
        await stop(coord, proc, conn)
        coord, proc, conn = await hello(keys, bucket="b", region="not a region!")
        bad_region = await conn.cmd(b"upload:k\x00/etc/hostname")
        alive = await conn.cmd("echo:alive")
        return refused, bad_region, alive, await stop(coord, proc, conn)

    refused, bad_region, alive, (code, _, _) = run(scenario())
    assert refused.startswith(b"FAIL(RETRIEVE(b/k) to ") and b"127.0.0.1:1" in refused
    assert bad_region.startswith(b"FAIL(cannot make an S3 client for region 'not a region!'")
    assert alive == b"OK:ECHO(alive)" and code == 0


def test_a_malformed_s3_endpoint_is_a_clear_event_error(keys):
    async def scenario():
        return await finish(await start_worker(event_for(keys, 1, s3_endpoint="localhost:9000")))

    code, summary, err = run(scenario())
    assert code == 2 and "'s3_endpoint' must be an http(s) URL" in summary["error"]
    assert "Traceback" not in err


# -- the handler never raises -----------------------------------------------------------------

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["coordinator", "worker", "job", "tls", "bucket", "region", "s3_endpoint", "command", "nonblock",
          "idle_timeout", "bg_silent", "rm_tmpdir", "args", "vars", "quality", "infile"]  # fmt: skip


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), junk, max_size=4), whole=st.one_of(st.none(), junk))
def test_the_handler_never_raises_whatever_the_event(keys, changes, whole):
    """An async invocation whose handler raises is retried by Lambda: a ghost worker."""
    event = (
        whole if whole is not None else {**event_for(keys, 1, idle_timeout=2), **changes}
    )  # port 1: refused
    summary = lambda_handler(event, None)
    assert isinstance(summary, dict) and summary["ok"] is False and "seconds" in summary
    json.dumps(summary)  # what Lambda returns must serialise


def test_the_handler_never_raises_even_on_a_bug(keys, monkeypatch):
    async def broken(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(handler_module.Session, "run", broken)
    summary = lambda_handler(event_for(keys, 1), None)
    assert summary["ok"] is False and summary["exit"] == "crashed" and "a bug" in summary["error"]


# -- the peer connection ------------------------------------------------------------------------


def test_hostile_peer_files_are_reported_and_later_files_still_arrive(keys):
    """A FILE name with a NUL byte, of 300 bytes, or naming a directory used to end the peer
    reader silently; a huge other message was forwarded whole to the coordinator."""

    async def scenario():
        relay = Relay(server_context(keys), log=lambda _: None)
        port = await relay.start()
        coord, proc, conn = await hello(keys)
        assert (await conn.cmd("run:mkdir ##TMPDIR##/adir")).startswith(b"OK:RETVAL(0)")
        assert (await conn.cmd(f"connect:127.0.0.1:{port}:HELLO_STATE:h:1:0")).startswith(b"OK:CONNECT(")
        _r, w = await relay_peer(keys, port, b"HELLO_STATE:h:0:1")
        for body in (b"FILE:a\x00b:x", b"FILE:" + b"n" * 300 + b":x", b"FILE:adir:x", b"y" * (10 * MIB),
                     b"FILE:good.bin:payload"):  # fmt: skip
            w.write(encode(body))
        await w.drain()
        infos = [await conn.recv() for _ in range(5)]
        cat = await conn.cmd("run:cat ##TMPDIR##/good.bin")
        w.close()
        result = await stop(coord, proc, conn)
        await relay.close()
        return infos, cat, result

    infos, cat, (code, _, _) = run(scenario())
    assert [i[:31] for i in infos[:3]] == [b"INFO:peer_error:bad FILE messag"] * 2 + [
        b"INFO:peer_error:cannot store pe"
    ]
    assert infos[3].startswith(b"INFO:peer:yyyy") and infos[3].endswith(
        b"[... %d more bytes]" % (10 * MIB - 4096)
    )
    assert infos[4] == b"INFO:file:good.bin" and cat.startswith(b"OK:RETVAL(0):OUTPUT(payload)")
    assert code == 0


def test_send_refuses_a_file_over_the_frame_limit(keys):
    async def scenario():
        coord, proc, conn = await hello(keys)
        await conn.cmd("run:truncate -s 67108865 ##TMPDIR##/big")  # sparse: costs no disk
        refused = await conn.cmd("send:big")
        return refused, await stop(coord, proc, conn)

    refused, (code, _, _) = run(scenario())
    assert (
        refused.startswith(b"FAIL(send: /")
        and b"is 67108874 bytes, over the 67108864-byte message limit" in refused
    )
    assert code == 0


# -- a lost coordinator, Lambda's deadline, SIGTERM ----------------------------------------------


@pytest.mark.parametrize("nonblock", [0, 1])
def test_a_lost_coordinator_ends_the_running_command(keys, tmp_path, nonblock):
    """The worker notices the closed connection while the command runs and kills its group."""
    pidfile = tmp_path / "pid"

    async def scenario():
        coord, proc, conn = await hello(keys, nonblock=nonblock)
        await conn.send(f"run:echo $$ > {pidfile}; exec sleep 60")
        pid = int(await wait_for_file(pidfile))
        conn.writer.close()
        await coord.__aexit__()
        return pid, await finish(proc, timeout=15)

    pid, (code, summary, err) = run(scenario())
    assert summary["exit"] == "disconnected" and code == 1
    assert "stopping what is still running" in err
    assert gone(pid)


def test_a_lost_coordinator_ends_an_s3_transfer_that_hangs(keys, s3):
    """S3 aimed at a port that never answers: the worker still ends within seconds."""

    async def scenario(port):
        coord, proc, conn = await hello(keys, bucket="b", s3_endpoint=f"http://127.0.0.1:{port}")
        await conn.send(b"retrieve:k\x00##TMPDIR##/f")
        await asyncio.sleep(1)
        conn.writer.close()
        await coord.__aexit__()
        started = time.monotonic()
        result = await finish(proc, timeout=20)
        return result, time.monotonic() - started

    with BlackHole() as hole:
        (code, summary, _), took = run(scenario(hole.port))
    assert summary["exit"] == "disconnected" and code == 1
    print(f"worker ended {took:.1f} s after losing its coordinator mid-transfer")


class Context:
    def __init__(self, ms: int) -> None:
        self.end = time.monotonic() + ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


def test_lambdas_deadline_fails_the_command_kills_it_and_cleans_up(keys, tmp_path):
    pidfile = tmp_path / "pid"

    async def scenario():
        async with TestCoordinator(keys) as coord:
            task = asyncio.create_task(
                asyncio.to_thread(lambda_handler, event_for(keys, coord.port), Context(3000))
            )
            conn = await coord.accept()
            assert await conn.recv() == b"OK:HELLO"
            tmpdir = (await conn.cmd("run:printf %s $TMPDIR")).split(b"OUTPUT(")[1].split(b")")[0].decode()
            await conn.send(f"run:echo $$ > {pidfile}; exec sleep 60")
            pid = int(await wait_for_file(pidfile))
            failed = await conn.recv(timeout=10)
            return tmpdir, pid, failed, await asyncio.wait_for(task, 15)

    tmpdir, pid, failed, summary = run(scenario())
    assert (
        failed.startswith(b"FAIL(run(echo $$ > ")
        and b"the Lambda invocation reaches its time limit in 0.3 s" in failed
    )
    assert summary["exit"] == "deadline" and not summary["ok"]
    assert gone(pid) and not os.path.exists(tmpdir)


def test_sigterm_stops_the_worker_cleanly(keys, tmp_path):
    pidfile = tmp_path / "pid"

    async def scenario():
        coord, proc, conn = await hello(keys)
        tmpdir = (await conn.cmd("run:printf %s $TMPDIR")).split(b"OUTPUT(")[1].split(b")")[0].decode()
        await conn.send(f"run:echo $$ > {pidfile}; exec sleep 60")
        pid = int(await wait_for_file(pidfile))
        proc.send_signal(signal.SIGTERM)
        result = await finish(proc, timeout=15)
        await coord.__aexit__()
        return tmpdir, pid, result

    tmpdir, pid, (code, _, err) = run(scenario())
    assert code == 128 + signal.SIGTERM and "Traceback" not in err
    assert gone(pid) and not os.path.exists(tmpdir)
