"""The standalone relay (``mu relay``) under load that costs memory: many idle peers, and a
recipient that reads nothing while its partner sends 64 MiB. Bounds are generous; the figures
are printed."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

from coordinator.core.tls import make_job_keys, write_keys
from lambda_worker.wire import encode
from tests.helpers import relay_peer

from .chaos import rss_kib

IDLE = 300
MIB = 1 << 20


def start_relay(tmp_path, *extra: str) -> tuple[subprocess.Popen[str], int, object]:
    keys = make_job_keys()
    write_keys(keys, tmp_path / "keys")
    cmd = ["relay", "--keys", str(tmp_path / "keys"), "--host", "127.0.0.1", "--port", "0", *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator", *cmd],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on 127.0.0.1:" in line, line
    return proc, int(line.rsplit(":", 1)[1]), keys


def settled_rss(pid: int) -> int:
    time.sleep(1.0)
    return rss_kib(pid)


def test_idle_peers_cost_the_capped_tls_buffer(tmp_path):
    """mu relay caps asyncio's per-connection TLS buffer as the coordinator does (32 KiB, not 256)."""
    proc, port, keys = start_relay(tmp_path)
    try:
        before = settled_rss(proc.pid)

        async def hold() -> int:
            conns = [
                await relay_peer(keys, port, b"HELLO_STATE:idle:%d:%d" % (i, i + IDLE)) for i in range(IDLE)
            ]
            after = await asyncio.to_thread(settled_rss, proc.pid)
            for _, w in conns:
                w.close()
            return after

        after = asyncio.run(hold())
    finally:
        proc.terminate()
        proc.wait(10)
    per_peer = (after - before) / IDLE
    print(f"mu relay: {IDLE} idle peers, RSS {before} -> {after} KiB, {per_peer:.0f} KiB per peer")
    assert per_peer < 160  # uncapped, asyncio's TLS buffers cost about 310 KiB a connection


def test_a_recipient_that_reads_nothing_cannot_grow_the_relay(tmp_path):
    """Backpressure: 64 MiB for a recipient that never reads; the relay holds its mailbox cap
    (--max-held-mb 8) and one message in flight, then cuts the stalled recipient."""
    proc, port, keys = start_relay(tmp_path, "--max-held-mb", "8", "--stall-timeout", "3")
    try:
        before = settled_rss(proc.pid)

        async def push() -> int:
            _r1, w1 = await relay_peer(keys, port, b"HELLO_STATE:bp:1:0", rcvbuf=64 * 1024)
            _r0, w0 = await relay_peer(keys, port, b"HELLO_STATE:bp:0:1")
            block = b"x" * MIB
            peak = 0
            for _ in range(64):
                w0.write(encode(block))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w0.drain(), 0.05)
                peak = max(peak, rss_kib(proc.pid))
            for _ in range(60):
                peak = max(peak, rss_kib(proc.pid))
                await asyncio.sleep(0.1)
            w0.close()
            w1.close()
            return peak

        peak = asyncio.run(push())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    growth = (peak - before) / 1024
    print(
        f"mu relay: 64 MiB to a peer that reads nothing, RSS {before} -> peak {peak} KiB (+{growth:.1f} MiB)"
    )
    assert growth < 32, err
    assert "peer 1 of bp took nothing for 3 s; closing its connection" in err
