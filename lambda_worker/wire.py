"""mu's message framing: ``"%012d %s" % (len(body), body)``.

Sans-I/O so the worker, the coordinator and the relay share one tested implementation and
none of them can disagree about where a message ends.
"""

from __future__ import annotations

import json
from typing import Any

HEADER_DIGITS = 12
HEADER_LEN = HEADER_DIGITS + 1  # the digits and one space
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
# The worker's one message about itself, right after OK:HELLO: ``META:{"worker": 17, ...}``.
# It is not a reply: the coordinator's server takes it, and a job's states never see it (mu
# had no such message, and its InfoWatcherState fires on any INFO).
META = b"META:"


def meta_message(fields: dict[str, Any]) -> bytes:
    return META + json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()


def _take_meta(msg: bytes, into: dict[str, Any]) -> None:
    """What a ``META:`` message says, into ``into`` (one that is not a JSON object is kept as
    ``unreadable``)."""
    try:
        fields = json.loads(msg[len(META) :])
    except ValueError:
        fields = None
    if isinstance(fields, dict):
        into.update(fields)
    else:
        into["unreadable"] = quote(msg, 200)


def quote(data: bytes, limit: int = 80) -> str:
    """Part of a message as text for an error message: ``'connect:10.0.0.1'``, never Python's
    ``b'...'``; bytes that are not UTF-8 show as U+FFFD, control characters escaped."""
    text = repr(data[:limit].decode("utf-8", "replace"))
    return text[:-1] + "...'" if len(data) > limit else text


class ProtocolError(Exception):
    """The peer sent bytes that are not a mu frame; the connection cannot be trusted further."""


def encode(body: bytes | str) -> bytes:
    """Frame one message. Text is sent as UTF-8 so commands may carry any file name."""
    data = body.encode() if isinstance(body, str) else bytes(body)
    if len(data) >= 10**HEADER_DIGITS:
        raise ProtocolError(f"message of {len(data)} bytes does not fit a 12-digit header")
    return b"%012d %s" % (len(data), data)


class Decoder:
    """Incremental frame decoder: feed it whatever the socket returned, get whole messages.

    A header that is not 12 ASCII digits and a space, or that announces more than
    ``max_frame`` bytes, raises :class:`ProtocolError` before any body is buffered, so a
    hostile peer cannot make us allocate more than one header's worth of memory.

    Given ``meta``, the decoder of a connection from a worker takes the worker's ``META:``
    message aside into it where the frames are cut, so no reader of that connection (the
    server's loop, a job's driver) sees it among the replies or has to remember to remove it.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, meta: dict[str, Any] | None = None) -> None:
        if max_frame < 0:
            raise ValueError(f"max_frame must be >= 0, got {max_frame}")
        self.max_frame = max_frame
        self.meta = meta
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read, once known

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER_LEN:
                    self._check_partial_header()
                    return out
                self._need = self._parse_header(bytes(self._buf[:HEADER_LEN]))
                del self._buf[:HEADER_LEN]
            if len(self._buf) < self._need:
                return out
            msg = bytes(self._buf[: self._need])
            if self.meta is not None and msg.startswith(META):
                _take_meta(msg, self.meta)
            else:
                out.append(msg)
            del self._buf[: self._need]
            self._need = None

    def _check_partial_header(self) -> None:
        # Reject garbage as soon as it shows, not only once 13 bytes have arrived.
        head = bytes(self._buf)
        digits = head[:HEADER_DIGITS]
        if not digits.isdigit() and digits:
            raise ProtocolError(
                f"frame header must be 12 ASCII digits and a space, got {quote(head, HEADER_LEN)}"
            )

    def _parse_header(self, head: bytes) -> int:
        digits, sep = head[:HEADER_DIGITS], head[HEADER_DIGITS:]
        if not digits.isdigit() or sep != b" ":
            raise ProtocolError(f"frame header must be 12 ASCII digits and a space, got {quote(head)}")
        length = int(digits)
        if length > self.max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds the maximum of {self.max_frame} bytes")
        return length
