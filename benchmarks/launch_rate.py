"""Lambda invocations per second: mu's launcher against boto3 with a thread pool.

Both send asynchronous (Event) Invoke requests, SigV4-signed with botocore, to the same
local HTTPS sink in another process that answers 202 the way Lambda does: nginx when it is
installed (``apt-get install nginx``), else a small asyncio sink (slower; it is said which).

    python benchmarks/launch_rate.py [-n 10000] [--max-inflight 32] [--threads 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machineinfo import machine_line

from coordinator.core.tls import make_job_keys
from coordinator.launch.aws_lambda import LambdaLauncher
from coordinator.local.locals3 import free_port

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ return 202; }}
    }}
}}
"""

SINK = r"""
import asyncio, ssl, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), ssl=ctx, backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def start_sink(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / sub).mkdir()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
        proc = subprocess.Popen([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        kind = "nginx"
    else:
        cmd = [sys.executable, "-c", SINK, str(port), str(tmp / "cert.pem"), str(tmp / "key.pem")]
        proc = subprocess.Popen(cmd)
        kind = "asyncio sink (install nginx for a faster one)"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, kind
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the {kind} did not start on port {port}; see {tmp}/error.log")


def events(n: int) -> list[dict[str, object]]:
    """Events of realistic size: a job's worker key material is most of each one."""
    keys = make_job_keys()
    base = {"coordinator": "203.0.113.7:13579", "job": "bench-0123456789ab", "tls": keys.worker_tls(),
            "bucket": "bench-bucket", "region": "us-east-1", "s3_endpoint": None,
            "command": "png2y4m -o ##OUTFILE## ##INFILE##", "nonblock": 0, "idle_timeout": 300}  # fmt: skip
    return [{**base, "worker": i} for i in range(n)]


def run_mu(evs: list[dict[str, object]], url: str, ca_file: str, max_inflight: int) -> dict[str, Any]:
    """mu's launcher as mu runs it: its own retries (429, 5xx, broken connections) included."""
    from botocore.credentials import Credentials

    creds = Credentials("AKIDBENCHMARK", "bench-secret")
    functions = ["mu-worker-0", "mu-worker-1", "mu-worker-2", "mu-worker-3"]

    async def go() -> dict[str, Any]:
        la = LambdaLauncher(functions, ["us-east-1"], endpoint_url=url, credentials=creds, ca_bundle=ca_file,
                            max_inflight=max_inflight)  # fmt: skip
        t0 = time.perf_counter()
        invocations = la.build(evs)
        t1 = time.perf_counter()
        await la.send(invocations)
        t2 = time.perf_counter()
        await la.close()
        failed = len(evs) - la.launched
        return {"sign": t1 - t0, "send": t2 - t1, "total": t2 - t0, "retried": la.retried, "errors": failed,
                "first_error": next(iter(la.failures().values()), "")}  # fmt: skip

    return asyncio.run(go())


def run_boto3(evs: list[dict[str, object]], url: str, ca_file: str, threads: int) -> tuple[float, int, str]:
    """boto3 as its users configure it: the standard retry mode (as Lithops does), so a request
    the sink drops now and then (a TLS record error under load) is retried, as it would be
    against Lambda. What still fails is counted, not fatal. Returns (seconds, errors, first error)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "lambda", endpoint_url=url, region_name="us-east-1", verify=ca_file,
        aws_access_key_id="AKIDBENCHMARK", aws_secret_access_key="bench-secret",
        config=Config(max_pool_connections=threads, retries={"mode": "standard"}),
    )  # fmt: skip
    payloads = [json.dumps(e).encode() for e in evs]

    def invoke(i: int) -> str:
        try:
            r = client.invoke(FunctionName=f"mu-worker-{i % 4}", InvocationType="Event", Payload=payloads[i])
        except Exception as exc:  # counted: one bad request must not end the benchmark
            return f"{type(exc).__name__}: {exc}"
        return "" if r["StatusCode"] == 202 else f"HTTP {r['StatusCode']}"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(invoke, range(len(evs))))
    elapsed = time.perf_counter() - t0
    errors = [o for o in outcomes if o]
    return elapsed, len(errors), errors[0] if errors else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10_000, help="invocations per launcher (10000)")
    p.add_argument(
        "--max-inflight",
        type=int,
        default=32,
        help="mu launcher: requests in flight (32; a sink on loopback has no round trip to cover)",
    )
    p.add_argument("--threads", type=int, default=64, help="boto3 baseline: thread pool size (64)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        keys = make_job_keys(hosts=("127.0.0.1",))
        (tmp / "cert.pem").write_text(keys.server_cert)
        (tmp / "key.pem").write_text(keys.server_key)
        (tmp / "ca.pem").write_text(keys.ca_cert)
        port = free_port()
        sink, kind = start_sink(tmp, port)
        try:
            url = f"https://127.0.0.1:{port}"
            evs = events(args.n)
            mu = run_mu(evs, url, str(tmp / "ca.pem"), args.max_inflight)
            b3, b3_errors, b3_first = run_boto3(evs, url, str(tmp / "ca.pem"), args.threads)
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait(10)
    n = args.n
    mu_rate, b3_rate = n / mu["total"], n / b3
    print(machine_line())
    print(f"sink: {kind} on 127.0.0.1, answering 202; events of {len(json.dumps(evs[0]))} bytes")
    print(f"mu launcher: signed {n} requests in {mu['sign']:.2f} s, sent them in {mu['send']:.2f} s "
          f"({n / mu['send']:.0f}/s sending alone), {mu['retried']:.0f} retried, {mu['errors']:.0f} failed"
          + (f" (first: {mu['first_error']})" if mu["errors"] else ""))  # fmt: skip
    print(f"boto3 invoke (standard retries) + ThreadPoolExecutor({args.threads}): {n} in {b3:.2f} s, "
          f"{b3_errors} failed" + (f" (first: {b3_first})" if b3_errors else ""))  # fmt: skip
    ratio = mu_rate / b3_rate
    print(f"launch: n={n} mu_per_s={mu_rate:.0f} boto3_threads_per_s={b3_rate:.0f} ratio={ratio:.1f}")


if __name__ == "__main__":
    main()
