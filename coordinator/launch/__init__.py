"""Starting workers. One interface, two backends: local processes (``launch.local``) and Lambda
invocations (``launch.aws_lambda``).

Both send each worker the same invocation event (DESIGN.md), so a job cannot tell them apart.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from coordinator.core.job import Job
from coordinator.core.tls import JobKeys


def make_events(
    job: Job,
    job_id: str,
    coordinator: str,
    keys: JobKeys,
    count: int,
    idle_timeout: float = 300,
    first: int = 0,
) -> list[dict[str, Any]]:
    """One invocation event per worker, numbered from ``first``; only ``worker`` differs.

    A job's own ``event`` fields (a mu job's ``bg_silent``, ``hash_s3keys`` ...) come along;
    the fields below are the launcher's and always win.
    """
    base = {
        **job.event,
        "coordinator": coordinator,
        "job": job_id,
        "tls": keys.worker_tls(),
        "bucket": job.bucket,
        "region": job.region,
        "s3_endpoint": job.s3_endpoint,
        "command": job.command,
        "nonblock": job.nonblock,
        "idle_timeout": idle_timeout,
    }
    return [{**base, "worker": i} for i in range(first, first + count)]


class Launcher(ABC):
    """Starts workers; tells the server whether any launched worker can still connect."""

    def mark(self, worker: int, moment: str) -> None:
        """Note when worker ``worker``'s invocation reached ``moment`` ("sent", "accepted",
        "exited"), first time only, for the timing log; read back by :meth:`launch_times`."""
        times = self.__dict__.setdefault("_launch_times", {})
        times.setdefault(worker, {}).setdefault(moment, time.monotonic())

    def launch_times(self) -> dict[int, dict[str, float]]:
        """Worker number -> {moment: time.monotonic()} for every worker marked so far."""
        return dict(self.__dict__.get("_launch_times", {}))

    @abstractmethod
    async def launch(self, events: list[dict[str, Any]]) -> None:
        """Start one worker per event; returns once all are started (not finished)."""

    # How a seat fails when a launch meant for it came to nothing; the launcher's reason follows.
    never_connected = "its worker ended without connecting"

    @abstractmethod
    def may_connect(self, arrived: int, live: int) -> int | None:
        """How many launched workers may still connect, given that ``arrived`` connections have
        said OK:HELLO so far and ``live`` of them are open; None where unknowable. The server
        fails the seats beyond it at once instead of waiting out --connect-timeout."""

    @abstractmethod
    def failures(self) -> dict[int, str]:
        """Worker number -> why it could not be started or ended badly, in the order they happened."""

    @abstractmethod
    async def close(self) -> None:
        """The job is over and its workers were told ``quit:``; stop whatever is still running."""

    async def abort(self) -> None:
        """The job ended early (deadline, interrupt, error): stop workers without waiting.

        Workers this launcher cannot kill (Lambda) stop on the ``quit:`` or the closed
        connection the coordinator gave them, so the default is ``close``.
        """
        await self.close()


class LaunchError(Exception):
    """The launcher cannot start at all (no credentials, bad endpoint)."""
