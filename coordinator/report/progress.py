"""What the operator sees while a job runs.

On a terminal: a rich progress display, redrawn in place, with connected / running / done /
failed counts, the rate, an ETA and how many workers are in each state (by its human name),
with event lines scrolling above it. Anywhere else (a log file, CloudWatch, a pipe): one
plain line per event, nothing redrawn, so logs stay readable. A reader that goes away (``2>&1
| head``, a pager quit) ends the display quietly and never the job (``streams.Guarded``).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from coordinator.report.names import human_name
from coordinator.report.streams import Guarded

MAX_STATES_SHOWN = 6


class _Display(Progress):
    """One progress bar for the job, and a line of state counts under it."""

    def __init__(self, status: Status, console: Console) -> None:
        self.status = status  # before super().__init__, which renders once
        super().__init__(
            TextColumn("[bold]mu {task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn(f"{status.unit} finished, {{task.fields[rate]}}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
            transient=False,
        )

    def get_renderables(self) -> Any:
        yield Group(self.make_tasks_table(self.tasks), self.status.state_line())


class Status:
    """The progress display. Its event API is what the server, runner and launchers call:
    ``event(text)``, ``state(actor, state)``, and the counters ``connected``, ``done``,
    ``failed`` and ``states`` (actor -> the human name of its current state)."""

    def __init__(
        self, job: str, workers: int, stream: TextIO | None = None, tty: bool | None = None,
        unit: str = "actors",
    ) -> None:  # fmt: skip
        self.job = job
        self.workers = workers  # the bar's total: actors, or mu.map's calls (``unit``)
        self.unit = unit
        self.stream = Guarded(stream or sys.stderr)
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.states: dict[int, str] = {}
        self._display: _Display | None = None
        self._task: Any = None
        self._closed = False
        self._counts = {"connected": 0, "done": 0, "failed": 0}
        if self.tty:
            console = Console(file=self.stream, force_terminal=True, highlight=False)  # type: ignore[arg-type]
            self._display = _Display(self, console)
            self._task = self._display.add_task(job, total=workers, rate="")
        self._started = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- the event API ----------------------------------------------------------------------

    def event(self, text: str) -> None:
        """Something worth a line in a log; on a terminal it scrolls above the display."""
        line = f"[{self.elapsed():8.2f}s] {text}"
        if self.stream.gone:
            return
        if self._display is not None and not self._closed:
            self._start()
            self._display.console.print(Text(line), soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def state(self, actor: int, state: Any) -> None:
        """Actor ``actor`` is now in ``state`` (a state object, or already a name)."""
        self.states[actor] = state if isinstance(state, str) else human_name(state)
        self.sync()

    def add_total(self, more: int) -> None:
        """More work to count (mu.map's calls arrive while the job runs)."""
        self.workers += more
        if self._display is not None and self._task is not None:
            self._display.update(self._task, total=self.workers)

    def draw(self, force: bool = False) -> None:
        """Redraw now (the display also redraws itself four times a second)."""
        if self._display is not None and not self._closed and self._started:
            self._display.refresh()

    def close(self) -> None:
        """Draw the final counts and stop redrawing; later events are plain lines."""
        if self._display is not None and not self._closed and self._started:
            self.sync()
            self._display.refresh()
            self._display.stop()
        self._closed = True

    # -- counters (the server increments them; the display follows) ------------------------

    def _count(self, name: str, value: int) -> None:
        self._counts[name] = value
        self.sync()

    @property
    def connected(self) -> int:
        return self._counts["connected"]

    @connected.setter
    def connected(self, value: int) -> None:
        self._count("connected", value)

    @property
    def done(self) -> int:
        return self._counts["done"]

    @done.setter
    def done(self, value: int) -> None:
        self._count("done", value)

    @property
    def failed(self) -> int:
        return self._counts["failed"]

    @failed.setter
    def failed(self, value: int) -> None:
        self._count("failed", value)

    # -- what the display shows ---------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self.states)

    def counts(self) -> str:
        return f"{self.connected} connected, {self.running} running, {self.done} done, {self.failed} failed"

    def rate(self) -> str:
        finished, elapsed = self.done + self.failed, self.elapsed()
        return f"{finished / elapsed:.1f}/s" if finished and elapsed > 0 else "-/s"

    def _start(self) -> None:
        """The display appears with the first event or state, so a run that stops before doing
        anything (a pre-flight error, a dry run) leaves no empty bar behind."""
        if not self._started and self._display is not None and not self._closed:
            self._started = True
            self._display.start()

    def sync(self) -> None:
        if self._display is not None and self._task is not None:
            self._start()
            self._display.update(self._task, completed=self.done + self.failed, rate=self.rate())

    def state_line(self) -> RenderableType:
        """``4 connected, 2 running, ... | retrieving a PNG: 1 | converting and uploading: 1``."""
        counts = Counter(dict(self.states).values())  # a copy: the event loop may change it meanwhile
        line = Text("  " + self.counts())
        if not counts and not self.connected:
            line.append(" | waiting for workers to connect", style="dim")
        shown = counts.most_common(MAX_STATES_SHOWN)
        for name, n in shown:
            line.append(" | ")
            line.append(f"{name}: {n}", style="cyan")
        rest = sum(counts.values()) - sum(n for _, n in shown)
        if rest:
            line.append(f" | other states: {rest}", style="cyan")
        return line
