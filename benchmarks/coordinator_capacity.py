"""How many workers one coordinator holds at once, and how fast it drives them.

Simulated workers (asyncio clients in this process) speak the real protocol over mutual TLS
to a real coordinator in a child process, which runs a 10-command script on each. The same
clients then drive a bare asyncio TLS echo server (another child) through the same number of
round trips, so the coordinator's overhead shows as a ratio on this very machine.

    python benchmarks/coordinator_capacity.py [--workers 5000] [--connect-parallel 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machineinfo import machine_line, peak_rss_kib, rss_kib

from coordinator.core import tls
from coordinator.core.job import Job
from coordinator.core.machine import CommandListState, TerminalState
from coordinator.core.server import Coordinator, ServerOptions
from coordinator.core.status import Status
from lambda_worker import commands
from lambda_worker.tlsconf import SERVER_NAME
from lambda_worker.wire import Decoder, encode

SCRIPT = [
    "set:a:1", "seti:b:2", "get:a", "echo:hello", "set:c:three",
    "get:c", "echo:payload-0123456789", "seti:d:4", "geti:d", "echo:done",
]  # fmt: skip


class BenchDone(TerminalState):
    pass


class BenchScript(CommandListState):
    nextState = BenchDone
    commandlist = [("OK:HELLO", SCRIPT[0]), *SCRIPT[1:], "quit:"]


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- child processes ---------------------------------------------------------------------------


async def coordinator_main(keys_dir: str, workers: int) -> None:
    keys = tls.read_keys(keys_dir)
    job = Job("bench", BenchScript, workers=workers)
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=600, connect_timeout=600, hello_timeout=600)
    status = Status("bench", workers, stream=open(os.devnull, "w"), tty=False)  # noqa: SIM115
    coord = Coordinator(job, tls.server_context(keys), opts, status)
    base = rss_kib()
    port = await coord.start()
    print(json.dumps({"port": port}), flush=True)
    result = await coord.wait()
    print(
        json.dumps(
            {"ok": result.ok, "failures": len(result.failures), "base_kib": base, "peak_kib": peak_rss_kib()}
        ),
        flush=True,
    )


async def echo_main(keys_dir: str) -> None:
    keys = tls.read_keys(keys_dir)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        try:
            while data := await reader.read(65536):
                for msg in decoder.feed(data):
                    writer.write(encode(msg))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    base = rss_kib()
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.server_context(keys), backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    print(json.dumps({"base_kib": base, "peak_kib": peak_rss_kib()}), flush=True)


# -- simulated workers --------------------------------------------------------------------------


class Clients:
    def __init__(self, keys: tls.JobKeys, port: int, n: int, parallel: int) -> None:
        self.ctx = tls.worker_context(keys)
        self.port, self.n, self.parallel = port, n, parallel
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect_all(self) -> float:
        gate = asyncio.Semaphore(self.parallel)

        async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with gate:
                return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx,
                                                     server_hostname=SERVER_NAME)  # fmt: skip

        t = time.perf_counter()
        self.conns = await asyncio.gather(*(one() for _ in range(self.n)))
        return time.perf_counter() - t

    async def worker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Answer commands with the real worker's pure command handlers until quit."""
        decoder, served = Decoder(), 0
        vals: dict[str, object] = {}
        writer.write(encode(b"OK:HELLO"))
        while data := await reader.read(65536):
            for msg in decoder.feed(data):
                name, arg = commands.parse_command(msg)
                if name == "quit":
                    writer.close()
                    return served
                replies = commands.PURE[name](vals, arg)
                writer.write(
                    b"".join(encode(r) for r in (replies if isinstance(replies, list) else [replies]))
                )
                served += 1
        return served

    async def echo_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rounds: int
    ) -> int:
        decoder = Decoder()
        for i in range(rounds):
            writer.write(encode(SCRIPT[i % len(SCRIPT)]))
            got: list[bytes] = []
            while not got:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("echo server closed early")
                got = decoder.feed(data)
        writer.close()
        return rounds


def start_child(role: str, keys_dir: str, workers: int) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--role", role, "--keys", keys_dir, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["port"]


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as keys_dir:
        tls.write_keys(tls.make_job_keys(label="bench"), Path(keys_dir) / "k")
        keys_path = str(Path(keys_dir) / "k")
        keys = tls.read_keys(keys_path)

        proc, port = start_child("coordinator", keys_path, args.workers)
        clients = Clients(keys, port, args.workers, args.connect_parallel)
        t_connect = await clients.connect_all()
        t = time.perf_counter()
        served = await asyncio.gather(*(clients.worker(r, w) for r, w in clients.conns))
        t_cmds = time.perf_counter() - t
        out, _ = proc.communicate(timeout=120)
        stats = json.loads(out.strip().splitlines()[-1])
        if not stats["ok"] or sum(served) != args.workers * len(SCRIPT):
            raise SystemExit(f"coordinator run failed: {stats}, served {sum(served)} commands")

        eproc, eport = start_child("echo", keys_path, args.workers)
        eclients = Clients(keys, eport, args.workers, args.connect_parallel)
        t_econnect = await eclients.connect_all()
        t = time.perf_counter()
        await asyncio.gather(*(eclients.echo_client(r, w, len(SCRIPT)) for r, w in eclients.conns))
        t_echo = time.perf_counter() - t
        eout, _ = eproc.communicate("", timeout=120)
        estats = json.loads(eout.strip().splitlines()[-1])

    n, total = args.workers, args.workers * len(SCRIPT)
    rss_per = (stats["peak_kib"] - stats["base_kib"]) / n
    echo_rss_per = (estats["peak_kib"] - estats["base_kib"]) / n
    print(machine_line())
    print(f"workers held at once: {n} (each connected over mutual TLS before any said OK:HELLO)")
    print(f"coordinator: {n} handshakes in {t_connect:.2f} s; {total} commands in {t_cmds:.2f} s")
    print(f"echo server: {n} handshakes in {t_econnect:.2f} s; {total} round trips in {t_echo:.2f} s")
    print(f"peak RSS per connection: coordinator {rss_per:.1f} KiB, echo {echo_rss_per:.1f} KiB")
    print(
        f"coordinator: workers={n} handshakes/s={n / t_connect:.0f} cmds/s={total / t_cmds:.0f} "
        f"vs_echo={(total / t_cmds) / (total / t_echo):.2f} rss/worker_kib={rss_per:.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=5000)
    p.add_argument("--connect-parallel", type=int, default=200, help="handshakes in flight at once (200)")
    p.add_argument(
        "--role", choices=("bench", "coordinator", "echo"), default="bench", help=argparse.SUPPRESS
    )
    p.add_argument("--keys", help=argparse.SUPPRESS)
    args = p.parse_args()
    raise_fd_limit()
    if args.role == "coordinator":
        asyncio.run(coordinator_main(args.keys, args.workers))
    elif args.role == "echo":
        asyncio.run(echo_main(args.keys))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
