"""A small HTTP/1.1 client for the Lambda Invoke API: sans-I/O parsing, kept-alive connections.

The launcher sends thousands of tiny signed POSTs to a few endpoints; a persistent connection
per lane and no per-request object churn is what makes that fast (boto3 thread pools spend
most of their time in Python per-request machinery, not on the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


class HTTPError(Exception):
    """The peer did not speak HTTP/1.1 as expected; the connection is unusable."""


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def encode_request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if not any(k.lower() == "content-length" for k in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ResponseParser:
    """Bytes in, whole responses out (Content-Length or chunked bodies)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: Response | None = None
        self._need: int | None = None
        self._chunked = False
        self._chunks = bytearray()

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        out: list[Response] = []
        while True:
            if self._head is None and not self._parse_head():
                return out
            assert self._head is not None
            done = self._parse_chunked() if self._chunked else self._parse_sized()
            if not done:
                return out
            out.append(self._head)
            self._head = None

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEADER:
                raise HTTPError(f"response header longer than {MAX_HEADER} bytes")
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HTTPError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HTTPError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        self._head = Response(int(code), reason, headers)
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length", "0")
        if not self._chunked and (not length.isdigit() or int(length) > MAX_BODY):
            raise HTTPError(f"bad Content-Length {length!r}")
        self._need = None if self._chunked else int(length)
        return True

    def _parse_sized(self) -> bool:
        assert self._head is not None and self._need is not None
        if len(self._buf) < self._need:
            return False
        self._head.body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        return True

    def _parse_chunked(self) -> bool:
        assert self._head is not None
        while True:
            end = self._buf.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(self._buf[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HTTPError(f"bad chunk size {size_text[:20]!r}") from None
            if len(self._buf) < end + 2 + size + 2:
                return False
            self._chunks += self._buf[end + 2 : end + 2 + size]
            del self._buf[: end + 2 + size + 2]
            if len(self._chunks) > MAX_BODY:
                raise HTTPError("chunked body too large")
            if size == 0:
                self._head.body = bytes(self._chunks)
                self._chunks = bytearray()
                return True


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be http(s)://HOST[:PORT], got {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{self.host}" + ("" if self.port == default else f":{self.port}")


class Connection:
    """One kept-alive connection; reconnects transparently when the peer closed it."""

    def __init__(self, endpoint: Endpoint, ssl_context: ssl.SSLContext | None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.ssl_context = ssl_context if endpoint.scheme == "https" else None
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = ResponseParser()

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.endpoint.host, self.endpoint.port, ssl=self.ssl_context),
            self.timeout,
        )
        self._parser = ResponseParser()

    async def request(self, raw: bytes) -> Response:
        if self._writer is None or self._writer.is_closing():
            await self._open()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(raw)
            async with asyncio.timeout(self.timeout):
                responses: list[Response] = []
                while not responses:
                    data = await self._reader.read(65536)
                    if not data:
                        raise ConnectionError("server closed the connection before answering")
                    responses = self._parser.feed(data)
        except BaseException:
            await self.close()
            raise
        response = responses[0]
        if not response.keep_alive:
            await self.close()
        return response

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
