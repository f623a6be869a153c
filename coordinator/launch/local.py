"""Workers as local processes running the real Lambda handler, each isolated as on Lambda."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from coordinator.launch import Launcher
from coordinator.launch.sandbox import Isolation, Sandbox
from lambda_worker.process import CREDENTIAL_VARIABLES

QUIT_GRACE = 2.0  # seconds a worker told quit: has to exit on its own before it is killed


class LocalLauncher(Launcher):
    """Workers as ``python -m lambda_worker`` processes on this machine.

    Each runs in a bubblewrap sandbox (``launch.sandbox``) unless given another ``isolation``
    (``NoSandbox`` for ``--no-sandbox``). At most ``concurrency`` run at once (a worker holds
    its slot until it exits); each one's stdout and stderr go to ``log_dir/worker-N.log``.
    Without a ``log_dir`` the logs go to a temporary folder that ``settle_logs`` removes unless
    the job failed. Workers run in sessions of their own, so a Ctrl-C at the terminal reaches
    only ``mu``, which then stops them in order. AWS keys go to each worker with its event on
    stdin, never in its environment, where /proc would show them to the worker's commands.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 64,
        env: dict[str, str] | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.isolation: Isolation = isolation if isolation is not None else Sandbox()
        self._given_log_dir = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = self._given_log_dir
        self.concurrency = concurrency
        given = {**os.environ, **(env or {})}
        self.env = {k: v for k, v in given.items() if k not in CREDENTIAL_VARIABLES}
        self.credentials = {k: given[k] for k in CREDENTIAL_VARIABLES if given.get(k)}
        if not self.credentials.get("AWS_ACCESS_KEY_ID"):
            self.credentials = dict(self.isolation.credentials)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._exit: dict[int, int] = {}
        self._failed: dict[int, str] = {}
        self._killed: set[int] = set()
        self._closing = False

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="mu-logs-"))
        return self._log_dir

    async def launch(self, events: list[dict[str, Any]]) -> None:
        if self._closing:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._run(ev)) for ev in events]

    async def _run(self, event: dict[str, Any]) -> None:
        worker = int(event["worker"])
        log_path = self.log_dir / f"worker-{worker}.log"
        async with self._slots:
            if self._closing:
                return
            self.mark(worker, "sent")
            with open(log_path, "wb") as log:
                try:
                    proc = await self.isolation.start(worker, self.env, log)
                except OSError as exc:
                    self._failed[worker] = f"could not start a worker process: {exc}"
                    return
                self._procs[worker] = proc
                if self._closing:  # close() began while this one was starting
                    self._killed.add(worker)
                    await self.isolation.kill(proc)
                self.mark(worker, "accepted")
                stdin = {**event, "credentials": self.credentials} if self.credentials else event
                with contextlib.suppress(ConnectionError):  # a worker killed before reading
                    await proc.communicate(json.dumps(stdin).encode())
                await proc.wait()
                await self.isolation.ended(worker, proc)
                self.mark(worker, "exited")
            code = proc.returncode if proc.returncode is not None else -1
            self._exit[worker] = code
            if code != 0 and worker not in self._killed:
                self._failed[worker] = f"worker process exited with status {code} (log: {log_path})"

    def running(self) -> int:
        """Worker processes started or waiting for a slot that have not ended."""
        return sum(1 for t in self._tasks if not t.done())

    def may_connect(self, arrived: int, live: int) -> int:
        """A process that has not ended may still connect, unless it is connected now."""
        return max(0, self.running() - live)

    def failures(self) -> dict[int, str]:
        return dict(self._failed)

    def exit_codes(self) -> dict[int, int]:
        return dict(self._exit)

    async def close(self, grace: float = QUIT_GRACE) -> None:
        """The job is over and its workers were told ``quit:``: give them ``grace`` seconds to
        exit on their own, then kill what is left with everything it started."""
        self._closing = True  # workers still waiting for a slot never start
        if self._tasks and grace > 0:
            await asyncio.wait(self._tasks, timeout=grace)
        running = [(w, p) for w, p in self._procs.items() if p.returncode is None]
        self._killed.update(w for w, _ in running)
        await asyncio.gather(*(self.isolation.kill(p) for _, p in running), return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.isolation.close()

    async def abort(self) -> None:
        """The job ended early (deadline, interrupt, error): kill every worker now."""
        await self.close(grace=0)

    def logs(self) -> dict[int, Path]:
        """The log of each worker started so far, by its number."""
        if self._log_dir is None:
            return {}
        started = sorted({*self._procs, *self._exit, *self._failed})
        return {w: self._log_dir / f"worker-{w}.log" for w in started}

    def settle_logs(self, keep: bool) -> Path | None:
        """Where the worker logs are kept, or None once removed: a folder the user named always,
        a temporary one only when ``keep`` (an actor failed, so a log may explain it)."""
        if self._log_dir is None:
            return None
        if self._given_log_dir is not None or keep:
            return self._log_dir
        shutil.rmtree(self._log_dir, ignore_errors=True)
        self._log_dir = None
        return None
