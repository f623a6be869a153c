"""A minimal test-side coordinator: accepts workers over mutual TLS and talks raw mu frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from coordinator.core.job import Job
from coordinator.core.machine import CommandListState, MachineState, TerminalState
from coordinator.core.tls import SERVER_NAME, JobKeys, server_context, worker_context
from lambda_worker.event import parse_event
from lambda_worker.session import Session
from lambda_worker.tlsconf import client_context
from lambda_worker.wire import Decoder, encode


@dataclass
class Conn:
    """The coordinator's end of one worker connection. As the real server does, it takes the
    worker's META message aside (into ``meta``): ``recv`` returns replies only."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: list[bytes] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decoder = Decoder(meta=self.meta)

    async def recv(self, timeout: float = 20.0) -> bytes:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("worker closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def send(self, body: bytes | str) -> None:
        self.writer.write(encode(body))
        await self.writer.drain()

    async def cmd(self, body: bytes | str, timeout: float = 20.0) -> bytes:
        await self.send(body)
        return await self.recv(timeout)

    async def closed(self, timeout: float = 10.0) -> bool:
        """True once the worker has closed its end."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, ssl.SSLError):
            return True


class TestCoordinator:
    __test__ = False  # not a pytest class

    def __init__(self, keys: JobKeys) -> None:
        self.keys = keys
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TestCoordinator:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=server_context(self.keys))
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.conns.put(Conn(reader, writer))

    async def accept(self, timeout: float = 30.0) -> Conn:
        return await asyncio.wait_for(self.conns.get(), timeout)


class Capture:
    """Stands in for the worker's TLS stream to the coordinator; :meth:`replies` decodes it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._decoder = Decoder()

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

    def replies(self) -> list[bytes]:
        """Every reply written since the last call."""
        got = self._decoder.feed(bytes(self.data))
        self.data.clear()
        return got


def local_session(keys: JobKeys, tmpdir: str, **extra: Any) -> tuple[Session, Capture]:
    """A worker's command loop in this process, its replies captured: commands are fed with
    ``await session.dispatch(msg)``. It runs real commands and can dial the relay."""
    tls = keys.worker_tls()
    session = Session(parse_event(event_for(keys, 1, **extra)), tmpdir,
                      client_context(tls["ca"], tls["cert"], tls["key"]))  # fmt: skip
    out = Capture()
    session._writer = out  # type: ignore[assignment]
    return session, out


async def settle(session: Session, timeout: float = 30) -> None:
    """Wait for the session's background (nonblock) commands to finish."""
    while session._background:
        await asyncio.wait_for(asyncio.gather(*session._background), timeout)


async def relay_peer(
    keys: JobKeys, port: int, hello: bytes, rcvbuf: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw mutual-TLS peer at the relay that has said ``hello``. ``rcvbuf`` fixes its socket's
    receive buffer, so the kernel cannot soak up what a test sends to a peer that never reads."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    r, w = await asyncio.open_connection(sock=sock, ssl=worker_context(keys), server_hostname=SERVER_NAME)
    w.write(encode(hello))
    await w.drain()
    return r, w


class RelayThread:
    """A real relay on 127.0.0.1 in a thread of its own, for tests that run many event loops."""

    def __init__(self, keys: JobKeys) -> None:
        self.keys = keys
        self.port = 0
        self.lines: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._relay: Any = None

    def __enter__(self) -> RelayThread:
        from coordinator.core.relay import Relay

        self._thread.start()

        async def start() -> int:
            self._relay = Relay(server_context(self.keys), log=self.lines.append)
            return await self._relay.start()

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._relay.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def event_for(keys: JobKeys, port: int, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "coordinator": f"127.0.0.1:{port}",
        "worker": 0,
        "job": "test-job",
        "tls": keys.worker_tls(),
        "bucket": "",
        "region": "us-east-1",
        "s3_endpoint": None,
        "command": "",
        "nonblock": 0,
        "idle_timeout": 60,
    }
    event.update(extra)
    return event


async def start_worker(
    event: dict[str, Any], env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lambda_worker",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ) if env is None else env,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(event).encode())
    proc.stdin.close()
    return proc


async def hello(keys: JobKeys, **extra: Any) -> tuple[TestCoordinator, asyncio.subprocess.Process, Conn]:
    """A coordinator, a ``python -m lambda_worker`` process connected to it, and that connection
    once the worker has said OK:HELLO. Close the coordinator with ``await coord.__aexit__()``."""
    coord = TestCoordinator(keys)
    await coord.__aenter__()
    proc = await start_worker(event_for(keys, coord.port, **extra))
    conn = await coord.accept()
    assert await conn.recv() == b"OK:HELLO"
    return coord, proc, conn


async def finish(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> tuple[int, dict[str, Any], str]:
    """Wait for a worker process; return its exit code, its JSON summary and its stderr."""
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = out.decode().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    assert proc.returncode is not None
    return proc.returncode, summary, err.decode()


def scan_input(s3: Any, prefix: str, n: int, size: int = 1000) -> tuple[str, list[bytes]]:
    """A fresh bucket holding n chunks of different lengths for the scan job; returns both."""
    from coordinator.jobs.scan import chunk_key

    bucket = f"scan-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    chunks = [bytes((i * 37 + j * 11) % 256 for j in range(size + 313 * i)) for i in range(n)]
    for i, data in enumerate(chunks):
        client.put_object(Bucket=bucket, Key=chunk_key(prefix, i), Body=data)
    return bucket, chunks


def scan_reference(chunks: list[bytes]) -> list[str]:
    """The scan computed serially, independently of scanstep."""
    p, mask = 1099511628211, (1 << 64) - 1
    total = total_sum = h = 0
    out = []
    for i, data in enumerate(chunks):
        for b in data:
            h = (h * p + b + 1) & mask
        total += len(data)
        total_sum += sum(data)
        out.append(f"chunk {i}: bytes_so_far={total} sum_so_far={total_sum} hash_so_far={h:016x}\n")
    return out


class Done(TerminalState):
    pass


class Scripted(CommandListState):
    """Run one scripted shell command.

    Every worker runs ``info['good']``; the actors in ``info['victims']``
    first run ``info['bad']`` (kill their own worker, fail, stall). With ``info['marks']`` set
    to a folder, only an actor's first attempt misbehaves: the worker's shell makes a marker
    directory atomically, so a replacement (a new process with no memory) behaves."""

    nextState = Done
    commandlist = [("OK:HELLO", "run:{cmd}"), ("OK:RETVAL(0)", "quit:")]

    def __init__(self, prevState: MachineState | None, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        info, i = self.info, self.actorNum
        cmd = info.get("good", "true")
        if i in info.get("victims", ()):
            marks = info.get("marks")
            bad = f"mkdir {marks}/actor-{i} 2>/dev/null && {{ {info['bad']}; }}" if marks else info["bad"]
            cmd = f"{bad}; {cmd}"
        self.format_commands(cmd=cmd)


def scripted_job(workers: int, good: str = "true", victims: tuple[int, ...] = (), bad: str = "",
                 marks: str | None = None) -> Job:  # fmt: skip
    info = {"good": good, "victims": list(victims), "bad": bad, "marks": marks}
    return Job("scripted", Scripted, workers=workers, info=info)


def mu_style_certs(folder: Any, ca_name: str = "mu_ca") -> tuple[str, str, str]:
    """What mu's genkeys.sh makes: an RSA CA and a server certificate it signed, naming no
    host (CN=mu_server, no subjectAltName). Returns the paths of CA cert, server cert, key."""
    import datetime as dt
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mu"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder().subject_name(name(ca_name)).issuer_name(name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder().subject_name(name("mu_server")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (out / "ca_cert.pem", out / "server_cert.pem", out / "server_key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    )
    return str(paths[0]), str(paths[1]), str(paths[2])
