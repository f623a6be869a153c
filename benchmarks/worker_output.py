"""A worker's memory while a ``run:`` command prints a lot: it should not grow with the output.

A real ``python -m lambda_worker`` process connects over mutual TLS to a minimal coordinator
in this process, which sends ``run:`` commands printing 50 MB and 100 MB. The worker's peak
RSS (VmHWM, reset before each command through /proc/PID/clear_refs) is compared with its RSS
before the command. For contrast, the same commands run under ``subprocess.run(...,
capture_output=True)`` in a fresh Python, which keeps the whole output as the worker once did.

    python benchmarks/worker_output.py [--sizes 50,100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machineinfo import machine_line

from coordinator.core import tls
from lambda_worker.wire import Decoder, encode

MB = 1_000_000
COMMAND = "yes 'a line of output from a chatty tool' | head -c {n}"
BUFFERING = """
import subprocess, sys
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
before = hwm()
out = subprocess.run(sys.argv[1], shell=True, capture_output=True).stdout
print(hwm() - before, len(out))
"""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    """VmHWM := VmRSS. The worker is undumpable, so its /proc files belong to root: as another
    user this cannot be done, and the peak is then the worker's since it started."""
    with contextlib.suppress(PermissionError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class Link:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder = reader, writer, Decoder(meta={})  # META is not a reply
        self.pending: list[bytes] = []

    async def cmd(self, body: str) -> bytes:
        self.writer.write(encode(body))
        await self.writer.drain()
        return await self.recv()

    async def recv(self) -> bytes:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1 << 20), 300)
            if not data:
                raise EOFError("the worker closed the connection")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)


async def measure(sizes: list[int]) -> list[dict[str, float]]:
    keys = tls.make_job_keys()
    links: asyncio.Queue[Link] = asyncio.Queue()
    server = await asyncio.start_server(
        lambda r, w: links.put_nowait(Link(r, w)), "127.0.0.1", 0, ssl=tls.server_context(keys)
    )
    port = server.sockets[0].getsockname()[1]
    event = {"coordinator": f"127.0.0.1:{port}", "worker": 0, "job": "bench", "tls": keys.worker_tls(),
             "idle_timeout": 300}  # fmt: skip
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lambda_worker", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parent.parent),
    )  # fmt: skip
    assert worker.stdin is not None
    worker.stdin.write(json.dumps(event).encode())
    worker.stdin.close()
    link = await asyncio.wait_for(links.get(), 60)
    assert await link.recv() == b"OK:HELLO"
    await link.cmd("run:true")  # warm: the first command's allocations are not the output's
    rows = []
    for size in sizes:
        n = size * MB
        await asyncio.sleep(0.2)
        reset_peak(worker.pid)
        before = status_kib(worker.pid, "VmRSS")
        started = time.perf_counter()
        reply = await link.cmd(f"run:{COMMAND.format(n=n)}")
        seconds = time.perf_counter() - started
        peak = status_kib(worker.pid, "VmHWM")
        assert reply.startswith(b"OK:RETVAL(0):OUTPUT([... "), reply[:80]
        assert len(reply) < 20_000, len(reply)
        rows.append({"mb": size, "before_kib": before, "peak_kib": peak, "growth_kib": peak - before,
                     "seconds": seconds, "reply_bytes": len(reply)})  # fmt: skip
    await link.cmd("echo:bye")
    link.writer.write(encode("quit:"))
    await link.writer.drain()
    await asyncio.wait_for(worker.wait(), 30)
    server.close()
    return rows


def buffering_growth_kib(size: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", BUFFERING, COMMAND.format(n=size * MB)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,100", help="output sizes in MB, comma-separated (50,100)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = asyncio.run(measure(sizes))
    for row in rows:
        row["buffering_growth_kib"] = buffering_growth_kib(int(row["mb"]))
    print(machine_line())
    print("| run: output | worker RSS before | worker peak RSS | growth | output rate | "
          "subprocess.run(capture_output) growth |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mb']:.0f} MB | {r['before_kib'] / 1024:.1f} MiB | {r['peak_kib'] / 1024:.1f} MiB | "
              f"{r['growth_kib'] / 1024:+.1f} MiB | {r['mb'] / r['seconds']:.0f} MB/s | "
              f"{r['buffering_growth_kib'] / 1024:+.1f} MiB |")  # fmt: skip
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
