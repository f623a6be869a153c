"""Admission of new connections, shared by the coordinator and the relay.

Both ports face the internet (Lambda workers have no fixed addresses), so a connection earns
a place only by finishing TLS with the job's CA and sending its first message within one time
budget, and only so many may be at that stage at once: junk, half-open and flooding
connections cost bounded memory and go away on their own.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import ssl
from collections.abc import Callable

from lambda_worker.wire import Decoder, ProtocolError

READ_SIZE = 256 * 1024

# asyncio's TLS transport zero-fills a 256 KiB receive buffer for every connection, which is
# most of a connection's memory. TLS records are at most 16 KiB, so 32 KiB loses nothing;
# benchmarks/coordinator_capacity.py measured peak RSS per worker falling about five-fold.
TLS_BUFFER = 32 * 1024


def limit_tls_buffers() -> None:
    """Cap asyncio's per-connection TLS buffer (process-wide); both servers call it before listening."""
    sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, TLS_BUFFER)


class Gate:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        hello_timeout: float,
        max_pending: int,
        log: Callable[[str], None],
        label: str = "",
    ) -> None:
        self.ssl_context = ssl_context
        self.hello_timeout = hello_timeout
        self.max_pending = max_pending
        self.log = log
        self.label = label  # prefixes log lines: "relay: "
        self.pending = 0
        self.rejected = 0

    def refuse_flood(self, writer: asyncio.StreamWriter) -> bool:
        """Cut the connection (True) if ``max_pending`` are already waiting: no TLS is spent on it."""
        if self.pending < self.max_pending:
            return False
        self.rejected += 1
        if self.rejected % 100 == 1:
            self.log(f"{self.label}over {self.max_pending} connections pending; refusing new ones")
        writer.transport.abort()
        return True

    def reject(self, peer: str, why: str) -> None:
        self.rejected += 1
        self.log(f"{self.label}rejected connection from {peer}: {why}")

    async def first_messages(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: Decoder, peer: str
    ) -> list[bytes] | None:
        """TLS, then at least one whole message, within ``hello_timeout``; None if rejected.

        TLS is started here rather than by the listener so that a failed handshake is seen,
        counted and logged instead of vanishing inside asyncio.
        """
        budget = self.hello_timeout
        when = asyncio.get_running_loop().time() + budget  # one budget for both steps
        self.pending += 1
        try:
            try:
                async with asyncio.timeout_at(when):
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=budget)
            except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
                why = str(exc) or (f"not done within {budget:g} s" if isinstance(exc, TimeoutError) else "")
                self.reject(peer, f"TLS handshake failed: {why or type(exc).__name__}")
                return None
            try:
                messages: list[bytes] = []
                async with asyncio.timeout_at(when):
                    while not messages:
                        data = await reader.read(READ_SIZE)
                        if not data:
                            raise ConnectionError("closed before saying hello")
                        messages = decoder.feed(data)
            except (TimeoutError, ConnectionError, ProtocolError, ssl.SSLError, OSError) as exc:
                self.reject(peer, str(exc) or f"no hello within {budget:g} s of connecting")
                return None
            return messages
        finally:
            self.pending -= 1
