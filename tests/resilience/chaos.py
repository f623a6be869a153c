"""Fault injection from outside: run ``mu`` as a user would and hurt its worker processes.

Everything here looks at the coordinator process through ``/proc`` only (children, sockets,
resident memory), so the faults are the ones a real machine produces: SIGKILL, SIGSTOP, a
port that never answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields after it are fixed.
    return stat[stat.rindex(")") + 2 :].split()


def _live_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and alive(int(entry))]


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie has released everything but its exit status."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a marker a test put there)."""
    found = []
    for pid in _live_pids():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if text.encode() in argv:
                found.append(pid)
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment holds ``name=value``: whatever a run started, even
    after it has left the run's process tree. A running worker is undumpable: only root (as
    the tests run in CI) reads its environment; its commands are readable by anyone."""
    needle = f"{name}={value}".encode()
    found = []
    for pid in _live_pids():
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, parents first."""
    found, frontier = [], [pid]
    while frontier:
        frontier = [kid for parent in frontier for kid in children(parent)]
        found += frontier
    return found


def worker_pids(coordinator: int) -> list[int]:
    """The worker processes (``python -m lambda_worker``) below the coordinator. Local workers
    run inside bubblewrap, so they are its grandchildren; the ``bwrap`` processes around them
    carry the same arguments and are skipped by their program name."""
    pids = []
    for pid in descendants(coordinator):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"lambda_worker" in argv and os.path.basename(argv[0]).startswith(b"python"):
                pids.append(pid)
    return pids


def _established_inodes(port: int, end: int = 2) -> set[str]:
    """Socket inodes of established TCP connections whose remote (end=2) or local (end=1) port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[end].split(":")[1], 16) == port and fields[3] == "01":  # 01 is ESTABLISHED
            inodes.add(fields[9])
    return inodes


def connected_workers(coordinator: int, port: int) -> list[int]:
    """Worker processes holding an open connection to the coordinator's port."""
    return _owners(coordinator, _established_inodes(port))


def worker_with_local_port(coordinator: int, port: int) -> int | None:
    """The worker whose connection leaves from ``port`` (as in the log's 'connected from HOST:PORT')."""
    owners = _owners(coordinator, _established_inodes(port, end=1))
    return owners[0] if owners else None


def _owners(coordinator: int, inodes: set[str]) -> list[int]:
    pids = []

    for pid in worker_pids(coordinator):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(pid)
                    break
    return pids


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def signal_quietly(pid: int, sig: signal.Signals) -> bool:
    """True if the process was there to receive it."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


class MuRun:
    """``python -m coordinator run ...`` (or another ``subcommand``) in the background, its
    output collected."""

    def __init__(
        self, *args: str, subcommand: str = "run", env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator", subcommand, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        )  # fmt: skip
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _collect(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, predicate, timeout: float, what: str):
        """Poll ``predicate`` until it returns something truthy; fail clearly if it never does."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            if not self.running():
                raise AssertionError(f"mu run ended before {what}:\n{self.stderr}")
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}:\n{self.stderr}")

    def finish(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._readers:
                t.join(5)
        return code


class MarkedMu(MuRun):
    """``python -m coordinator SUBCOMMAND ARGS`` with its own TMPDIR and a marker in its
    environment, which everything it starts inherits: ``leftovers()`` finds what is left of it
    even after it has left the process tree."""

    def __init__(self, tmp_path: Path, subcommand: str, *args: str, cwd: Path | None = None) -> None:
        self.mark = uuid.uuid4().hex
        self.tmpdir = tmp_path / "tmpdir"
        self.tmpdir.mkdir()
        env = {**os.environ, "MU_TEST_MARK": self.mark, "TMPDIR": str(self.tmpdir)}
        super().__init__(*args, subcommand=subcommand, env=env, cwd=cwd)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda: text in self.stderr, timeout, repr(text))

    def leftovers(self) -> list[int]:
        return [p for p in processes_with_env("MU_TEST_MARK", self.mark) if p != self.proc.pid]


class BlackHole:
    """A TCP port that accepts connections and never says a word: workers aimed here hang."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
