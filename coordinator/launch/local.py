"""Workers as local processes running the real Lambda handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from coordinator.launch import Launcher


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

    def running(self) -> int | None:
        return sum(1 for t in self._tasks if not t.done())

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

