"""Starting workers. One interface, two backends: local processes now, Lambda invocations later.

Both send each worker the same invocation event (DESIGN.md), so a job cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from .job import Job
from .tls import JobKeys


def make_events(
    job: Job, job_id: str, coordinator: str, keys: JobKeys, count: int, idle_timeout: float = 300
) -> list[dict[str, Any]]:
    """One invocation event per worker, numbered from 0; only ``worker`` differs."""
    base = {
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
    return [{**base, "worker": i} for i in range(count)]


class Launcher(ABC):
    """Starts workers; tells the server whether any launched worker can still connect."""

    @abstractmethod
    async def launch(self, events: list[dict[str, Any]]) -> None:
        """Start one worker per event; returns once all are started (not finished)."""

    @abstractmethod
    def all_finished(self) -> bool:
        """True when no launched worker can connect any more (unknowable for Lambda: False)."""

    @abstractmethod
    def failures(self) -> dict[int, str]:
        """Worker number -> why it could not be started or ended badly."""

    @abstractmethod
    async def close(self) -> None:
        """Stop whatever is still running."""


class LocalLauncher(Launcher):
    """Workers as ``python -m lambda_worker`` processes on this machine.

    At most ``concurrency`` run at once (a worker holds its slot until it exits); each one's
    stdout and stderr go to ``log_dir/worker-N.log``.
    """

    def __init__(
        self, log_dir: str | os.PathLike[str], concurrency: int = 64, env: dict[str, str] | None = None
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.log_dir = Path(log_dir)
        self.concurrency = concurrency
        self.env = {**os.environ, **(env or {})}
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._exit: dict[int, int] = {}
        self._failed: dict[int, str] = {}

    async def launch(self, events: list[dict[str, Any]]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._run(ev)) for ev in events]

    async def _run(self, event: dict[str, Any]) -> None:
        worker = int(event["worker"])
        log_path = self.log_dir / f"worker-{worker}.log"
        async with self._slots:
            with open(log_path, "wb") as log:
                try:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "lambda_worker",
                        stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log, env=self.env,
                    )  # fmt: skip
                except OSError as exc:
                    self._failed[worker] = f"could not start a worker process: {exc}"
                    return
                self._procs[worker] = proc
                await proc.communicate(json.dumps(event).encode())
                code = proc.returncode if proc.returncode is not None else -1
                self._exit[worker] = code
                if code != 0:
                    self._failed[worker] = f"worker process exited with status {code} (log: {log_path})"

    def all_finished(self) -> bool:
        return bool(self._tasks) and all(t.done() for t in self._tasks)

    def failures(self) -> dict[int, str]:
        return dict(self._failed)

    def exit_codes(self) -> dict[int, int]:
        return dict(self._exit)

    async def close(self, grace: float = 5.0) -> None:
        """Give workers a moment to exit after ``quit:``, then kill what is left."""
        if self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=grace)
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
