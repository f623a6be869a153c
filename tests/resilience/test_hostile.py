"""Hostile traffic at the coordinator and relay ports while a real job is in progress.

A chained ``scan`` job runs as ``mu run`` with its workers frozen (SIGSTOP) just after they
joined, so the job is certainly in progress while every attack below lands on both ports
(``--retries`` keeps the coordinator's port open for replacements once every actor is taken).

Then the workers are thawed and the job must finish with correct output, every attack must
have been turned away, and the coordinator's memory must not have grown past a bound.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
from collections.abc import Awaitable, Callable

from coordinator.core import tls
from coordinator.core.relay import Relay
from coordinator.core.server import FLOOD_HEADROOM, Coordinator, ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import SERVER_NAME, make_job_keys, server_context, worker_context
from coordinator.jobs import scan
from coordinator.local.locals3 import free_port
from lambda_worker.wire import encode
from tests.helpers import scan_input, scan_reference, scripted_job

from .chaos import MuRun, rss_kib, signal_quietly, worker_with_local_port

HELLO_TIMEOUT = 2.0
FLOOD = 300  # connections opened at once; bounded, loopback only
REFUSED = (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError)


async def _closed_by_server(reader: asyncio.StreamReader, limit: float) -> str:
    """How the server ended it: 'closed' (EOF or reset) or, if it never did, 'open'."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return "open"
    except REFUSED:
        pass
    return "closed"


def _attacks(keys: tls.JobKeys) -> dict[str, Callable[[int], Awaitable[str]]]:
    """Each attack returns 'closed' once the server has turned it away."""
    limit = HELLO_TIMEOUT + 8

    async def tcp(port: int, payload: bytes) -> str:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        if payload:
            w.write(payload)
        try:
            return await _closed_by_server(r, limit)
        finally:
            w.close()

    async def tls_client(port: int, ctx: ssl.SSLContext, payload: bytes) -> str:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME)
        except REFUSED:
            return "closed"  # refused during the handshake
        try:
            if payload:
                w.write(payload)
            return await _closed_by_server(r, limit)
        finally:
            w.close()

    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(cadata=keys.ca_cert)
    foreign = worker_context(make_job_keys())
    foreign.load_verify_locations(cadata=keys.ca_cert)  # trusts the server; the server won't trust it
    valid = worker_context(keys)
    return {
        "random bytes": lambda port: tcp(port, os.urandom(4096)),
        "plaintext frames": lambda port: tcp(port, encode(b"OK:HELLO") + encode(b"HELLO_STATE:x:0:1")),
        "half-open (nothing sent)": lambda port: tcp(port, b""),
        "TLS without a client certificate": lambda port: tls_client(port, no_cert, encode(b"OK:HELLO")),
        "certificate from another CA": lambda port: tls_client(port, foreign, encode(b"OK:HELLO")),
        "over-long frame header, valid certificate": lambda port: tls_client(port, valid, b"999999999999 x"),
        "garbage frame header, valid certificate": lambda port: tls_client(
            port, valid, b"GET / HTTP/1.1\r\n"
        ),
        "idle after TLS, valid certificate": lambda port: tls_client(port, valid, b""),
    }


async def _flood(port: int, n: int) -> int:
    """Open n connections at once, hold them, and count how many the server ended."""
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(n)),
                                  return_exceptions=True)  # fmt: skip
    conns = [c for c in opened if not isinstance(c, BaseException)]
    results = await asyncio.gather(*(_closed_by_server(r, HELLO_TIMEOUT + 8) for r, _ in conns))
    for _, w in conns:
        w.close()
    return sum(1 for x in results if x == "closed") + (n - len(conns))


def test_every_hostile_input_is_turned_away_while_a_chained_job_finishes(s3, tmp_path, png2y4m):
    keys_dir = tmp_path / "keys"
    tls.write_keys(make_job_keys(), keys_dir)
    keys = tls.read_keys(keys_dir)
    n = 4
    bucket, chunks = scan_input(s3, "scan-in/", n, size=50_000)
    client = s3.client()

    port, relay_port = free_port(), free_port()
    run = MuRun(
        "scan", "-n", str(n), "-b", bucket, "-t", str(port), "--relay-port", str(relay_port),
        "--keys", str(keys_dir), "--hello-timeout", str(HELLO_TIMEOUT), "-m", "120", "--retries", "1",
        "--s3-endpoint", s3.endpoint, "--log-dir", str(tmp_path / "logs"),
    )  # fmt: skip
    frozen: set[int] = set()

    def freeze_arrivals() -> bool:
        # Freeze each worker as soon as the coordinator has given it an actor, found by the
        # source port the coordinator logs for it.
        for source in re.findall(r"actor \d+ connected from 127\.0\.0\.1:(\d+)", run.stderr):
            pid = worker_with_local_port(run.pid, int(source))
            if pid is not None and pid not in frozen and signal_quietly(pid, signal.SIGSTOP):
                frozen.add(pid)
        return len(frozen) >= n

    try:
        run.wait_for(freeze_arrivals, 60, "every worker to connect")
        before = rss_kib(run.pid)

        async def attack() -> tuple[dict[str, str], dict[int, int]]:
            outcomes, flooded = {}, {}
            for target in (port, relay_port):
                for name, hit in _attacks(keys).items():
                    outcomes[f"{name} at {'coordinator' if target == port else 'relay'}"] = await hit(target)
                flooded[target] = await _flood(target, FLOOD)
            return outcomes, flooded

        # Two identical rounds: the first may grow the heap; the second must reuse it.
        outcomes, flooded = asyncio.run(attack())
        first = rss_kib(run.pid)
        again, flooded_again = asyncio.run(attack())
        second = rss_kib(run.pid)
        assert run.running(), "the coordinator must survive the attacks"
    finally:
        for pid in frozen:
            signal_quietly(pid, signal.SIGCONT)
    code = run.finish()

    assert code == 0, run.stderr
    assert outcomes == again == dict.fromkeys(outcomes, "closed"), (outcomes, again)
    assert flooded == flooded_again == {port: FLOOD, relay_port: FLOOD}
    got = [client.get_object(Bucket=bucket, Key=scan.report_key("scan-out/", i))["Body"].read().decode()
           for i in range(n)]  # fmt: skip
    assert got == scan_reference(chunks)
    coordinator_attacks = 2 * (len(_attacks(keys)) + FLOOD)
    assert f"{coordinator_attacks} connections rejected" in run.stdout, run.stdout
    assert "over-long" in run.stderr or "frame header" in run.stderr
    # Memory: a connection pending TLS costs under ~100 KiB (benchmarks/coordinator_capacity.py
    # measures it), so a round may grow the heap by at most that much per flood connection
    # (one flood at each port, both served by the coordinator process); the second round must
    # find that memory free again rather than grow as much again.
    print(f"coordinator RSS: {before} KiB before, {first} KiB after one round, {second} KiB after two")
    assert first - before < 2 * FLOOD * 100

    assert second - first < (first - before) / 4 + 2048


def test_the_flood_cap_refuses_connections_before_spending_a_handshake():
    """Past ``max_pending`` connections still in TLS or before hello, new ones are cut at once."""
    keys, cap = make_job_keys(), 20

    async def scenario() -> tuple[int, int]:
        job = scripted_job(1)
        options = ServerOptions(host="127.0.0.1", port=0, hello_timeout=5, max_pending=cap)
        coord = Coordinator(job, server_context(keys), options, Status("sleepy", 1, tty=False))
        relay = Relay(server_context(keys), hello_timeout=5, max_pending=cap, log=lambda text: None)
        ports = [await coord.start(), await relay.start()]
        conns = [await asyncio.open_connection("127.0.0.1", p) for p in ports for _ in range(cap * 3)]
        await asyncio.sleep(0.5)
        rejected = coord.rejected, relay.rejected
        for _, w in conns:
            w.close()
        await coord.close()
        await relay.close()
        return rejected

    assert asyncio.run(scenario()) == (cap * 2, cap * 2)


def test_the_default_cap_admits_a_whole_burst_of_the_jobs_workers():
    """Thousands of Lambdas may connect in the same second; none of them may be cut as a flood."""
    job = scripted_job(5000)
    options = ServerOptions(host="127.0.0.1", port=0, spares=50)
    coord = Coordinator(job, server_context(make_job_keys()), options, Status("big", 5000, tty=False))
    assert coord.gate.max_pending == 5000 + 50 + FLOOD_HEADROOM
