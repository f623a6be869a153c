"""The relay: sans-I/O pairing rules, then the real TLS relay, the scan chain and mu map."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from coordinator.core.relay import Relay, RelayCore, RelayError
from coordinator.core.tls import SERVER_NAME, make_job_keys, server_context, worker_context
from lambda_worker.wire import Decoder, encode
from tests.helpers import relay_peer, scan_input, scan_reference


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pairing_delivers_to_the_partner():
    core = RelayCore()
    assert core.hello(1, b"HELLO_STATE:job:0:1") == []
    assert core.hello(2, b"HELLO_STATE:job:1:2") == []
    assert core.message(1, b"FILE:state.0:abc") == [(2, b"FILE:state.0:abc")]
    assert core.message(2, b"for 2's partner") == []  # peer 2 is not connected: held
    assert core.held_bytes == len(b"FILE:state.0:abc") + len(b"for 2's partner")


def test_late_partner_gets_held_messages_in_order():
    core = RelayCore()
    core.hello(1, b"HELLO_STATE:job:0:1")
    for i in range(3):
        core.message(1, f"m{i}".encode())
    assert core.hello(7, b"HELLO_STATE:job:1:2") == [(7, b"m0"), (7, b"m1"), (7, b"m2")]
    assert core.message(1, b"m3") == [(7, b"m3")]


def test_a_replacement_peer_gets_everything_its_predecessor_was_sent():
    core = RelayCore()
    core.hello(1, b"HELLO_STATE:job:0:1")
    core.hello(2, b"HELLO_STATE:job:1:2")
    assert core.message(1, b"state") == [(2, b"state")]  # delivered, and kept
    core.disconnect(2)  # the worker playing peer 1 dies
    assert core.hello(3, b"HELLO_STATE:job:1:2") == [(3, b"state")]


def test_prefixes_keep_jobs_apart():
    core = RelayCore()
    core.hello(1, b"HELLO_STATE:jobA:0:1")
    core.hello(2, b"HELLO_STATE:jobB:1:2")
    assert core.message(1, b"x") == []  # jobB's peer 1 is not jobA's peer 1


def test_partner_that_disconnected_gets_messages_when_back():
    core = RelayCore()
    core.hello(1, b"HELLO_STATE:j:0:1")
    core.hello(2, b"HELLO_STATE:j:1:2")
    core.disconnect(2)
    assert core.message(1, b"later") == []
    assert core.hello(3, b"HELLO_STATE:j:1:2") == [(3, b"later")]


def test_memory_bound_drops_with_a_log_line():
    lines = []
    core = RelayCore(max_held_bytes=10, log=lines.append)
    core.hello(1, b"HELLO_STATE:j:0:1")
    core.message(1, b"123456")
    core.message(1, b"123456")  # would exceed 10 bytes
    assert core.held_bytes == 6 and core.dropped == 1
    assert "dropped 6 bytes from 0 for 1" in lines[0] and "limit 10" in lines[0]


def test_delivered_copies_make_room_for_undelivered_mail():
    lines = []
    core = RelayCore(max_held_bytes=10, log=lines.append)
    core.hello(1, b"HELLO_STATE:j:0:1")
    core.hello(2, b"HELLO_STATE:j:1:0")
    core.message(1, b"123456")  # delivered to 2; its copy is kept for a replacement
    core.disconnect(1)
    assert core.message(2, b"abcdef") == []  # 0 is gone: held, evicting the delivered copy
    assert core.held_bytes == 6 and core.dropped == 0 and lines == []
    assert core.hello(5, b"HELLO_STATE:j:0:1") == [(5, b"abcdef")]


def test_held_messages_expire():
    clock, lines = Clock(), []
    core = RelayCore(hold_seconds=600, log=lines.append, clock=clock)
    core.hello(1, b"HELLO_STATE:j:0:1")
    core.message(1, b"old")
    clock.now = 601
    core.message(1, b"new")
    assert core.hello(2, b"HELLO_STATE:j:1:2") == [(2, b"new")]
    assert "not collected within 600 s" in lines[0]


def test_peer_ids_are_integers_as_in_mu_so_zero_padded_ids_pair():
    """lambda_state_server.StateSocket.initialize: ids are "%s_%d" % (prefix, int(id)); xcenc
    says HELLO_STATE:U:00000003:4 and its neighbour HELLO_STATE:U:00000004:5."""
    core = RelayCore()
    core.hello(1, b"HELLO_STATE:U:00000003:4")
    core.hello(2, b"HELLO_STATE:U:00000004:5")
    assert core.message(1, b"STATE(1):x") == [(2, b"STATE(1):x")]
    assert core.hello(3, b"HELLO_STATE:U: +5 :-1") == []  # int() takes a sign and spaces, so do we
    assert core.message(2, b"y") == [(3, b"y")]


@pytest.mark.parametrize(
    "bad",
    [b"HELLO:j:0:1", b"HELLO_STATE:j:0", b"HELLO_STATE:j::1", b"\xff", b"HELLO_STATE:U:three:4",
     b"HELLO_STATE:U:3:4:5", "HELLO_STATE:U:\u0663:4".encode(), b"HELLO_STATE:U:1_000:4"],
)  # fmt: skip
def test_bad_hello_is_refused(bad):
    with pytest.raises(RelayError, match="HELLO_STATE:PREFIX:MYID:PARTNERID"):
        RelayCore().hello(1, bad)


def test_a_second_hello_for_an_address_takes_it_over():
    lines = []
    core = RelayCore(log=lines.append)
    core.hello(1, b"HELLO_STATE:j:0:1")
    core.hello(9, b"HELLO_STATE:j:1:0")
    assert core.hello(2, b"HELLO_STATE:j:0:1") == [(1, None)]  # close the stalled older one
    assert core.message(9, b"x") == [(2, b"x")]
    assert "connected again" in lines[0]
    with pytest.raises(RelayError, match="before HELLO_STATE"):
        core.message(1, b"from the closed one")


def test_tls_relay_end_to_end():
    keys = make_job_keys()

    async def scenario():
        lines = []
        relay = Relay(server_context(keys), log=lines.append)
        port = await relay.start()

        async def peer(hello):
            r, w = await asyncio.open_connection(
                "127.0.0.1", port, ssl=worker_context(keys), server_hostname=SERVER_NAME
            )
            w.write(encode(hello))
            await w.drain()
            return r, w

        async def recv(r, n):
            dec, got = Decoder(), []
            while len(got) < n:
                got += dec.feed(await asyncio.wait_for(r.read(65536), 10))
            return got

        _r0, w0 = await peer(b"HELLO_STATE:j:0:1")
        w0.write(encode(b"first") + encode(b"second"))  # partner 1 not connected yet
        await w0.drain()
        await asyncio.sleep(0.2)
        r1, _w1 = await peer(b"HELLO_STATE:j:1:2")
        got = await recv(r1, 2)
        # a client from another CA never gets in
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=worker_context(make_job_keys()),
                                                 server_hostname=SERVER_NAME)  # fmt: skip
            w.write(encode(b"HELLO_STATE:j:5:6"))
            foreign = await asyncio.wait_for(r.read(), 10)
        except (OSError, ConnectionError) as exc:
            foreign = exc
        await relay.close()
        return got, foreign, lines

    got, foreign, _lines = asyncio.run(scenario())
    assert got == [b"first", b"second"]
    assert foreign == b"" or isinstance(foreign, Exception)


def test_a_recipient_that_does_not_read_holds_one_message_and_is_cut_when_stalled():
    """Backpressure: the relay stops reading from a sender while its recipient has not taken the
    last message, so a recipient that never reads costs one message, not everything sent to it;
    after --stall-timeout it is disconnected and what follows goes to its (bounded) mailbox."""
    keys = make_job_keys()
    mib = 1 << 20

    async def scenario():
        lines = []
        relay = Relay(server_context(keys), log=lines.append, stall_seconds=1.5, max_held_bytes=4 * mib)
        port = await relay.start()

        taken = []
        message = relay.core.message
        relay.core.message = lambda conn, data: taken.append(len(data)) or message(conn, data)

        _r1, w1 = await relay_peer(keys, port, b"HELLO_STATE:bp:1:0", rcvbuf=64 * 1024)  # never reads
        _r0, w0 = await relay_peer(keys, port, b"HELLO_STATE:bp:0:1")
        for i in range(30):
            w0.write(encode(bytes([i]) * mib))
        sending = asyncio.create_task(w0.drain())
        buffered = []
        for _ in range(100):  # 1 s, before the stall timeout
            sizes = [w.transport.get_write_buffer_size() for w in relay._writers.values()]
            buffered.append(max(sizes, default=0))
            await asyncio.sleep(0.01)
        taken_while_stalled = len(taken)
        await asyncio.wait_for(sending, 20)
        for _ in range(100):  # the stalled recipient is cut; the relay reads the rest
            if len(taken) == 30:
                break
            await asyncio.sleep(0.1)
        await relay.close()
        w1.close()
        w0.close()
        return max(buffered), taken_while_stalled, len(taken), relay.core, lines

    most, while_stalled, total, core, lines = asyncio.run(scenario())
    assert while_stalled <= 10 and total == 30  # the relay stopped reading from the sender, then went on
    assert most <= 1.2 * mib  # one message in flight to the recipient, not 30
    assert any("peer 1 of bp took nothing for 1.5 s; closing its connection" in line for line in lines)
    assert core.held_bytes <= 4 * mib and core.dropped > 0  # the rest: mailbox up to its cap, then dropped


def test_scan_chain_matches_a_serial_computation(s3, tmp_path, png2y4m):
    n = 5
    bucket, chunks = scan_input(s3, "scan-in/", n)
    client = s3.client()
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "run", "scan", "-n", str(n), "-b", bucket, "-t", "0",
         "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path), "-m", "60"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "relay listening on" in proc.stderr
    got = [
        client.get_object(Bucket=bucket, Key=f"scan-out/{i:08d}.txt")["Body"].read().decode()
        for i in range(n)
    ]
    assert got == scan_reference(chunks)


def test_map_runs_a_command_over_objects(s3, tmp_path, png2y4m):
    from coordinator.local.demo import encode_png, frame_rgb, to_uint16
    from coordinator.local.y4m import parse_y4m

    bucket, out_bucket = f"map-{uuid.uuid4().hex[:10]}", f"mapout-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=out_bucket)
    for frame in range(1, 8):  # 7 frames, 3 per chunk: chunks of 3, 3 and 1
        client.put_object(Bucket=bucket, Key=f"frames/f {frame:02d}.png",
                          Body=encode_png(to_uint16(frame_rgb(frame, 32, 18))))  # fmt: skip
    client.put_object(Bucket=bucket, Key="other/ignored.png", Body=b"x")

    def mu_map(*extra):
        return subprocess.run(
            [sys.executable, "-m", "coordinator", "map", "--input", f"s3://{bucket}/frames/",
             "--output", f"s3://{out_bucket}/y4m/", "--chunk", "3", "--suffix", ".y4m",
             "--command", "png2y4m -o ##OUTFILE## ##INFILE##", "-t", "0", "--s3-endpoint", s3.endpoint,
             "--log-dir", str(tmp_path), "-m", "60", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    proc = mu_map()
    assert proc.returncode == 0, proc.stderr
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=out_bucket)["Contents"])
    assert keys == ["y4m/00000000.y4m", "y4m/00000001.y4m", "y4m/00000002.y4m"]
    frames = [len(parse_y4m(client.get_object(Bucket=out_bucket, Key=k)["Body"].read()).frames) for k in keys]
    assert frames == [3, 3, 1]
    # A second run replaces the outputs rather than adding to them.
    assert mu_map().returncode == 0
    assert len(client.list_objects_v2(Bucket=out_bucket)["Contents"]) == 3

    client.put_object(Bucket=bucket, Key="frames/f 99.png", Body=b"not a png")  # chunk 2 now fails
    bad = mu_map()
    assert bad.returncode == 1
    assert "actor 2 (chunk 2: frames/f 07.png .. frames/f 99.png)" in bad.stderr
    assert "f 99.png: not a PNG file" in bad.stderr


def test_map_usage_errors(s3):
    def mu(*args):
        cmd = [sys.executable, "-m", "coordinator", "map", *args, "--s3-endpoint", s3.endpoint]
        return subprocess.run(cmd, capture_output=True, text=True)

    assert (
        "--input must look like s3://"
        in mu("--input", "x", "--output", "s3://bkt/o/", "--command", "c").stderr
    )
    # A missing bucket is found before anything is launched: a run-time error, one line, status 1.
    empty = mu("--input", "s3://no-such-bucket-x/p/", "--output", "s3://bkt/o/", "--command", "c")
    assert empty.returncode == 1 and "bucket 'no-such-bucket-x' does not exist" in empty.stderr
    assert "usage:" not in empty.stderr and len(empty.stderr.strip().splitlines()) == 1
