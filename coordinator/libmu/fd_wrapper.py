"""mu's ``libmu.fd_wrapper``: a socket-like face on a raw file descriptor."""

from __future__ import annotations

import fcntl
import os


class FDWrapper:
    """Lets a pipe stand where a socket is expected (mu's worker used it for background runs)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def set_blocking(self, blocking: bool) -> None:
        if self.fd is None:
            return
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL, 0)
        flags = flags & ~os.O_NONBLOCK if blocking else flags | os.O_NONBLOCK
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags)

    def recv(self, length: int) -> bytes | None:
        return None if self.fd is None else os.read(self.fd, length)

    def send(self, msg: bytes) -> int | None:
        return None if self.fd is None else os.write(self.fd, msg)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def shutdown(*_: object) -> None:
        pass

    def fileno(self) -> int | None:
        return self.fd

    @staticmethod
    def getpeername() -> tuple[None, None]:
        return (None, None)

    @staticmethod
    def getsockname() -> tuple[None, None]:
        return (None, None)
