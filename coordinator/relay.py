"""The worker-to-worker relay: Lambdas accept no inbound connections, so peers meet here.

A peer's first message is ``HELLO_STATE:PREFIX:MYID:PARTNERID``; every later message it sends
goes to the peer that said ``MYID`` = its ``PARTNERID`` under the same ``PREFIX``. A message
for a peer that has not arrived yet, or has gone, is held and delivered in order when it
(re)connects; held messages expire after ``hold_seconds`` and their total size is bounded,
and anything dropped is logged. :class:`RelayCore` holds all of that logic without sockets;
:class:`Relay` is the asyncio mutual-TLS shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lambda_worker.wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode

DEFAULT_HOLD_SECONDS = 600.0
DEFAULT_MAX_HELD_BYTES = 256 * 1024 * 1024

Address = tuple[str, str]  # (prefix, peer id)


class RelayError(ValueError):
    """A peer broke the relay protocol; its connection is closed."""


@dataclass
class _Held:
    data: bytes
    at: float


@dataclass
class _Peer:
    me: Address
    partner: Address


@dataclass
class RelayCore:
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES
    log: Callable[[str], None] = lambda text: None
    clock: Callable[[], float] = time.monotonic
    peers: dict[int, _Peer] = field(default_factory=dict)  # connection id -> peer
    online: dict[Address, int] = field(default_factory=dict)  # address -> connection id
    held: dict[Address, deque[_Held]] = field(default_factory=dict)
    held_bytes: int = 0
    dropped: int = 0

    def hello(self, conn: int, msg: bytes) -> list[tuple[int, bytes]]:
        """Register a connection; returns the held messages to deliver to it now."""
        parts = msg.decode("utf-8", "replace").split(":")
        if len(parts) != 4 or parts[0] != "HELLO_STATE" or not all(parts[1:]):
            raise RelayError(f"first message must be HELLO_STATE:PREFIX:MYID:PARTNERID, got {msg[:80]!r}")
        _, prefix, me, partner = parts
        address = (prefix, me)
        if address in self.online:
            raise RelayError(f"peer {me} of {prefix} is already connected")
        self.peers[conn] = _Peer(address, (prefix, partner))
        self.online[address] = conn
        self.expire()
        queue = self.held.pop(address, deque())
        for item in queue:
            self.held_bytes -= len(item.data)
        return [(conn, item.data) for item in queue]

    def message(self, conn: int, data: bytes) -> list[tuple[int, bytes]]:
        """A message from ``conn`` for its partner: deliver it now or hold it."""
        peer = self.peers.get(conn)
        if peer is None:
            raise RelayError("message before HELLO_STATE")
        target = self.online.get(peer.partner)
        if target is not None:
            return [(target, data)]
        self.expire()
        if self.held_bytes + len(data) > self.max_held_bytes:
            self.dropped += 1
            self.log(
                f"relay: dropped {len(data)} bytes from {peer.me[1]} for {peer.partner[1]} "
                f"({peer.partner[0]}): {self.held_bytes} bytes already held, limit {self.max_held_bytes}"
            )
            return []
        self.held.setdefault(peer.partner, deque()).append(_Held(data, self.clock()))
        self.held_bytes += len(data)
        return []

    def disconnect(self, conn: int) -> None:
        peer = self.peers.pop(conn, None)
        if peer is not None and self.online.get(peer.me) == conn:
            del self.online[peer.me]

    def expire(self) -> None:
        """Drop held messages older than ``hold_seconds``."""
        cutoff = self.clock() - self.hold_seconds
        for address in list(self.held):
            queue = self.held[address]
            while queue and queue[0].at < cutoff:
                item = queue.popleft()
                self.held_bytes -= len(item.data)
                self.dropped += 1
                self.log(
                    f"relay: dropped a {len(item.data)}-byte message for {address[1]} ({address[0]}): "
                    f"not collected within {self.hold_seconds:g} s"
                )
            if not queue:
                del self.held[address]


class Relay:
    """Listens with mutual TLS and moves frames between paired peers."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
        log: Callable[[str], None] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.core = RelayCore(hold_seconds, max_held_bytes, self.log)
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._next = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        try:
            self._server = await asyncio.start_server(self._accept, host, port, backlog=4096)
        except OSError as exc:
            raise OSError(
                f"relay cannot listen on {host}:{port}: {exc.strerror}; pick another --relay-port"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.port

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.core.hold_seconds / 2))
            self.core.expire()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self._next
        self._next += 1
        decoder = Decoder(self.max_frame)
        hello = False
        try:
            await writer.start_tls(self.ssl_context, ssl_handshake_timeout=self.handshake_timeout)
            self._writers[conn] = writer
            while data := await reader.read(256 * 1024):
                for msg in decoder.feed(data):
                    if hello:
                        deliveries = self.core.message(conn, msg)
                    else:
                        deliveries, hello = self.core.hello(conn, msg), True
                    for target, payload in deliveries:
                        self._writers[target].write(encode(payload))
                await writer.drain()
        except (RelayError, ProtocolError) as exc:
            self.log(f"relay: closing connection {conn}: {exc}")
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            self.log(f"relay: connection {conn} ended: {exc or type(exc).__name__}")
        finally:
            self.core.disconnect(conn)
            self._writers.pop(conn, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
