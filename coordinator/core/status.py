"""What the operator sees while a job runs: a redrawn status line on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO


class Status:
    def __init__(self, job: str, workers: int, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.job = job
        self.workers = workers
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.states: dict[int, str] = {}
        self.connected = 0
        self.done = 0
        self.failed = 0
        self._last_draw = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, text: str) -> None:
        """Something worth a line in a log; on a TTY it scrolls above the status line."""
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"[{self.elapsed():8.2f}s] {text}\n")
        if self.tty:
            self.draw(force=True)
        self.stream.flush()

    def state(self, actor: int, name: str) -> None:
        self.states[actor] = name
        if self.tty:
            self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or (not force and now - self._last_draw < 0.2):
            return
        self._last_draw = now
        counts = Counter(self.states.values())
        busy = ", ".join(f"{name.split(' ')[0]} {n}" for name, n in counts.most_common(4))
        line = (
            f"mu {self.job}: {self.connected}/{self.workers} connected, {self.done} done, "
            f"{self.failed} failed | {busy or 'waiting for workers'} | {self.elapsed():.1f} s"
        )
        self.stream.write("\r\x1b[K" + line[:200])
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
