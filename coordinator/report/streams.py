"""Output that its reader may stop reading: ``mu ... | head``, ``| less`` then q.

A closed pipe is not a failure of the job, only a sign that what was being shown is no longer
wanted. Writing to it raises ``BrokenPipeError`` (Python ignores SIGPIPE), and an uncaught one
inside the coordinator's event loop would take the connection handling it down with it. So
output that people read goes through ``Guarded``: the first write that fails ends that
stream's output for good, without a word (there is nowhere to say it), and the stream's file
descriptor is pointed at /dev/null, the remedy Python's documentation gives for SIGPIPE, so
later writes by anyone, the interpreter's last flush included, go nowhere quietly too.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

# What a write to a stream whose reader has gone raises: EPIPE, EIO from a closed terminal,
# ValueError from a file object already closed.
GONE = (OSError, ValueError)


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null (nothing to do if it has none)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class Guarded:
    """A text stream whose output stops, quietly and once, when writing to it fails."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except GONE:
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except GONE:
                self._lose()

    def isatty(self) -> bool:
        try:
            return not self.gone and self.stream.isatty()
        except GONE:
            return False

    def _lose(self) -> None:
        self.gone = True
        silence(self.stream)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: as the stream has them
        return getattr(self.stream, name)
