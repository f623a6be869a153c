"""The worker-to-worker relay: Lambdas accept no inbound connections, so peers meet here.

A peer's first message is ``HELLO_STATE:PREFIX:MYID:PARTNERID``; every later message it sends
goes to the peer that said ``MYID`` = its ``PARTNERID`` under the same ``PREFIX``. Ids are
integers compared as numbers, as in mu's ``lambda_state_server.py`` (``int()``): ExCamera's
encoder says ``HELLO_STATE:U:00000003:4``.

Every message is also kept in its recipient's mailbox, and a peer that says HELLO_STATE gets
its whole mailbox first, in order. That covers a partner that has not arrived yet, and also a
*replacement*: when the coordinator relaunches a dead worker, the new one starts from the
beginning and must see what its predecessor was sent. For the same reason a second HELLO_STATE
for an address takes it over, and the older connection (a stalled or half-dead worker) is
closed. Mail expires after ``hold_seconds`` and its total size is bounded; copies already
delivered are evicted first, and anything undelivered that is dropped is logged.
:class:`RelayCore` holds all of that logic without sockets; :class:`Relay` is the asyncio
mutual-TLS shell around it.

The shell applies backpressure: after handing a message to a recipient's connection it waits
until that connection has taken it (asyncio's write buffer is below its 64 KiB mark) before it
reads more from the sender, so a recipient that does not read holds at most one message in the
relay's memory and its senders wait in TCP instead. A recipient that takes nothing for
``stall_seconds`` is disconnected (its mail stays in its mailbox for when it says hello again).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.core.gate import READ_SIZE, Gate, limit_tls_buffers
from lambda_worker.wire import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode, quote

DEFAULT_HOLD_SECONDS = 600.0
DEFAULT_MAX_HELD_BYTES = 256 * 1024 * 1024
DEFAULT_STALL_SECONDS = 60.0

Address = tuple[str, str]  # (prefix, peer id as int() writes it)
PEER_ID = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")  # what mu's int() took, ASCII digits only
# What the shell must do: write bytes to a connection, or close it (payload None).
Delivery = tuple[int, bytes | None]


class RelayError(ValueError):
    """A peer broke the relay protocol; its connection is closed."""


@dataclass
class _Mail:
    data: bytes
    at: float
    delivered: bool = False


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
    mailboxes: dict[Address, deque[_Mail]] = field(default_factory=dict)
    held_bytes: int = 0
    dropped: int = 0

    def hello(self, conn: int, msg: bytes) -> list[Delivery]:
        """Register a connection; returns its mailbox to deliver now (and an older holder to close)."""
        parts = msg.decode("utf-8", "replace").split(":")
        if len(parts) != 4 or parts[0] != "HELLO_STATE" or not all(map(PEER_ID.fullmatch, parts[2:])):
            raise RelayError(
                f"first message must be HELLO_STATE:PREFIX:MYID:PARTNERID with integer ids, got {quote(msg)}"
            )
        prefix, me, partner = parts[1], str(int(parts[2])), str(int(parts[3]))  # as mu: 00000003 is 3
        address = (prefix, me)
        out: list[Delivery] = []
        older = self.online.get(address)
        if older is not None:
            self.log(f"relay: peer {me} of {prefix} connected again; closing its older connection")
            self.disconnect(older)
            out.append((older, None))
        self.peers[conn] = _Peer(address, (prefix, partner))
        self.online[address] = conn
        self.expire()
        for mail in self.mailboxes.get(address, ()):
            mail.delivered = True
            out.append((conn, mail.data))
        return out

    def message(self, conn: int, data: bytes) -> list[Delivery]:
        """A message from ``conn`` for its partner: deliver it now if it is here; keep it either way."""
        peer = self.peers.get(conn)
        if peer is None:
            raise RelayError("message before HELLO_STATE")
        target = self.online.get(peer.partner)
        self.expire()
        kept = self._keep(peer.partner, data, delivered=target is not None)
        if target is not None:
            return [(target, data)]
        if not kept:
            self.dropped += 1
            self.log(
                f"relay: dropped {len(data)} bytes from {peer.me[1]} for {peer.partner[1]} "
                f"({peer.partner[0]}): {self.held_bytes} bytes already held, limit {self.max_held_bytes}"
            )
        return []

    def disconnect(self, conn: int) -> None:
        peer = self.peers.pop(conn, None)
        if peer is not None and self.online.get(peer.me) == conn:
            del self.online[peer.me]

    def expire(self) -> None:
        """Drop mail older than ``hold_seconds``."""
        cutoff = self.clock() - self.hold_seconds
        for address in list(self.mailboxes):
            box = self.mailboxes[address]
            while box and box[0].at < cutoff:
                mail = box.popleft()
                self.held_bytes -= len(mail.data)
                if not mail.delivered:
                    self.dropped += 1
                    self.log(
                        f"relay: dropped a {len(mail.data)}-byte message for {address[1]} ({address[0]}): "
                        f"not collected within {self.hold_seconds:g} s"
                    )
            if not box:
                del self.mailboxes[address]

    def _keep(self, address: Address, data: bytes, delivered: bool) -> bool:
        if self.held_bytes + len(data) > self.max_held_bytes:
            self._evict_delivered(self.held_bytes + len(data) - self.max_held_bytes)
        if self.held_bytes + len(data) > self.max_held_bytes:
            return False
        self.mailboxes.setdefault(address, deque()).append(_Mail(data, self.clock(), delivered))
        self.held_bytes += len(data)
        return True

    def _evict_delivered(self, need: int) -> None:
        """Make room by forgetting copies kept only for replacements, oldest first."""
        for address in list(self.mailboxes):
            box = self.mailboxes[address]
            kept: deque[_Mail] = deque()
            for mail in box:
                if need > 0 and mail.delivered:
                    need -= len(mail.data)
                    self.held_bytes -= len(mail.data)
                else:
                    kept.append(mail)
            if kept:
                self.mailboxes[address] = kept
            else:
                del self.mailboxes[address]
            if need <= 0:
                return


class Relay:
    """Listens with mutual TLS and moves frames between paired peers.

    New connections pass a :class:`Gate`: TLS and HELLO_STATE within ``hello_timeout``, at
    most ``max_pending`` at that stage at once.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
        log: Callable[[str], None] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        hello_timeout: float = 30.0,
        max_pending: int = 4096,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> None:
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.core = RelayCore(hold_seconds, max_held_bytes, self.log)
        self.stall_seconds = stall_seconds
        self.gate = Gate(ssl_context, hello_timeout, max_pending, self.log, label="relay: ")
        self.max_frame = max_frame
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._next = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def rejected(self) -> int:
        return self.gate.rejected

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        limit_tls_buffers()
        try:
            self._server = await asyncio.start_server(self._accept, host, port, backlog=4096)
        except OSError as exc:
            # the caller adds which option picks another port: it differs by command
            raise OSError(f"relay cannot listen on {host}:{port}: {exc.strerror}") from exc
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
        if self.gate.refuse_flood(writer):
            return
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
        host, port = (writer.get_extra_info("peername") or ("?", "?"))[:2]
        decoder = Decoder(self.max_frame)
        try:
            messages = await self.gate.first_messages(reader, writer, decoder, f"{host}:{port}")
            if messages is None:
                return
            self._writers[conn] = writer
            try:
                deliveries = self.core.hello(conn, messages[0])
            except RelayError as exc:
                self.gate.reject(f"{host}:{port}", str(exc))
                return
            await self._deliver(deliveries)
            for msg in messages[1:]:
                await self._deliver(self.core.message(conn, msg))
            while data := await reader.read(READ_SIZE):
                for msg in decoder.feed(data):
                    await self._deliver(self.core.message(conn, msg))
        except (RelayError, ProtocolError) as exc:
            self.log(f"relay: closing connection {conn}: {exc}")
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.log(f"relay: connection {conn} ended: {exc or type(exc).__name__}")
        finally:
            self.core.disconnect(conn)
            self._writers.pop(conn, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _deliver(self, deliveries: list[Delivery]) -> None:
        """Write each message and wait until its recipient has taken it: backpressure."""
        for target, payload in deliveries:
            writer = self._writers.get(target)
            if writer is None or writer.is_closing():
                continue
            if payload is None:
                writer.close()  # its serving task sees the end and cleans up
                continue
            writer.write(encode(payload))
            try:
                await asyncio.wait_for(writer.drain(), self.stall_seconds)
            except TimeoutError:
                peer = self.core.peers.get(target)
                who = f"peer {peer.me[1]} of {peer.me[0]}" if peer else f"connection {target}"
                self.log(f"relay: {who} took nothing for {self.stall_seconds:g} s; closing its connection "
                         "(its mail stays for when it connects again)")  # fmt: skip
                writer.transport.abort()
            except (ConnectionError, ssl.SSLError, OSError):
                pass  # the recipient is gone; its serving task cleans up
