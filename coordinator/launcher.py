"""Starting workers. One interface, two backends: local processes now, Lambda invocations later.

Both send each worker the same invocation event (DESIGN.md), so a job cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .http import Connection, Endpoint, HTTPError, Response, encode_request
from .job import Job
from .sigv4 import InvokeSigner
from .status import Status
from .tls import JobKeys


def make_events(
    job: Job,
    job_id: str,
    coordinator: str,
    keys: JobKeys,
    count: int,
    idle_timeout: float = 300,
    first: int = 0,
) -> list[dict[str, Any]]:
    """One invocation event per worker, numbered from ``first``; only ``worker`` differs."""
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
    return [{**base, "worker": i} for i in range(first, first + count)]


class Launcher(ABC):
    """Starts workers; tells the server whether any launched worker can still connect."""

    @abstractmethod
    async def launch(self, events: list[dict[str, Any]]) -> None:
        """Start one worker per event; returns once all are started (not finished)."""

    @abstractmethod
    def running(self) -> int | None:
        """Launched workers still alive, connected or not; None where unknowable."""

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


class LaunchError(Exception):
    """The launcher cannot start at all (no credentials, bad endpoint)."""


@dataclass(frozen=True)
class Target:
    function: str
    region: str
    endpoint: Endpoint

    def describe(self) -> str:
        return f"function '{self.function}' in {self.region}"


@dataclass
class _Batch:
    remaining: int
    done: asyncio.Event
    deadline_at: float


@dataclass
class _Invocation:
    worker: int
    body: bytes
    target: Target
    attempts: int = 0
    raw: bytes = b""
    batch: _Batch | None = None


_HINTS = {
    400: "the request was refused as invalid",
    403: "these credentials may not invoke it; check the coordinator's IAM role",
    404: "no such function there; check --function and --regions (is the stack deployed in that region?)",
    413: "the invocation event is larger than Lambda accepts",
}


class LambdaLauncher(Launcher):
    """Asynchronous (``Event``) Lambda invocations, SigV4-signed, over kept-alive connections.

    Invocations go round-robin over every (function, region) pair so a job can scale out
    past one function's concurrency growth rate. Throttles (429), server errors (5xx) and
    broken connections are retried with exponential back-off and full jitter until
    ``deadline`` seconds after launch; any other status fails that worker with a reason.
    """

    def __init__(
        self,
        functions: list[str],
        regions: list[str],
        *,
        endpoint_url: str | None = None,
        max_inflight: int = 256,
        deadline: float = 120.0,
        credentials: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        status: Status | None = None,
    ) -> None:
        if not functions or not all(functions):
            raise LaunchError("name at least one worker function with --function NAME[,NAME...]")
        if not regions or not all(regions):
            raise LaunchError("name at least one region with --regions R1[,R2...]")
        if max_inflight < 1:
            raise LaunchError(f"--max-inflight must be at least 1, got {max_inflight}")
        override = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_LAMBDA")
        try:
            endpoints = {r: Endpoint.parse(override or f"https://lambda.{r}.amazonaws.com") for r in regions}
        except ValueError as exc:
            raise LaunchError(f"bad Lambda endpoint: {exc}") from exc
        self.targets = [Target(f, r, endpoints[r]) for r in regions for f in functions]
        self._endpoints = set(endpoints.values())
        self.max_inflight = max_inflight
        self.deadline = deadline
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.status = status
        self._credentials = credentials if credentials is not None else _default_credentials()
        self._signers: dict[tuple[str, Endpoint], InvokeSigner] = {}
        self._checked: set[Target] = set()
        self._ssl = ssl_context or ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        self.launched = 0
        self.retried = 0
        self._failed: dict[int, str] = {}
        self._queues: dict[Endpoint, asyncio.Queue[_Invocation]] = {}
        self._lanes: list[asyncio.Task[None]] = []
        self.elapsed = 0.0  # seconds spent sending batches, added up

    # -- building requests ----------------------------------------------------------------

    @staticmethod
    def _path(target: Target) -> str:
        return f"/2015-03-31/functions/{quote(target.function, safe='')}/invocations"

    def _signer(self, target: Target) -> InvokeSigner:
        key = (target.region, target.endpoint)
        if key not in self._signers:
            host = urlsplit(target.endpoint.url).netloc
            self._signers[key] = InvokeSigner(self._credentials, target.region, host)
        return self._signers[key]

    def _sign(self, inv: _Invocation) -> bytes:
        """A complete HTTP request; signed anew for every attempt so retries stay fresh."""
        path = self._path(inv.target)
        headers = self._signer(inv.target).sign(path, inv.body)
        return encode_request("POST", path, headers, inv.body)

    def build(self, events: list[dict[str, Any]]) -> list[_Invocation]:
        """Serialise and sign every invocation before the first is sent (as mu's launchpar).

        The first request of each target is also signed by botocore's full pipeline and must
        agree, so a botocore change can never make us send thousands of bad signatures.
        """
        invs = []
        for i, event in enumerate(events):
            target = self.targets[i % len(self.targets)]
            inv = _Invocation(int(event["worker"]), json.dumps(event).encode(), target)
            if target not in self._checked:  # once per launcher: replacements reuse the check
                self._signer(target).check(self._path(target), inv.body)
                self._checked.add(target)
            inv.raw = self._sign(inv)
            invs.append(inv)
        return invs

    # -- sending ------------------------------------------------------------------------------

    async def launch(self, events: list[dict[str, Any]]) -> None:
        await self.send(self.build(events))

    async def send(self, invocations: list[_Invocation]) -> None:
        """Send a batch and wait until each invocation is accepted or has failed for good.

        Batches may overlap (replacement workers are launched while a job runs); lanes, one
        kept-alive connection each, are shared and live until :meth:`close`.
        """
        if not invocations:
            return
        t0 = time.monotonic()
        batch = _Batch(len(invocations), asyncio.Event(), t0 + self.deadline)
        for inv in invocations:
            inv.batch = batch
            self._queue(inv.target.endpoint).put_nowait(inv)
        await batch.done.wait()
        self.elapsed += time.monotonic() - t0
        if self.status is not None:
            self.status.event(self.report())

    def _queue(self, endpoint: Endpoint) -> asyncio.Queue[_Invocation]:
        """The endpoint's queue, with its lanes started on first use."""
        if endpoint not in self._queues:
            queue: asyncio.Queue[_Invocation] = asyncio.Queue()
            self._queues[endpoint] = queue
            loop = asyncio.get_running_loop()
            for _ in range(max(1, self.max_inflight // len(self._endpoints))):
                self._lanes.append(loop.create_task(self._lane(endpoint, queue)))
        return self._queues[endpoint]

    def report(self) -> str:
        rate = self.launched / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"launch: {self.launched} invoked, {self.retried} retried, {len(self._failed)} failed "
            f"in {self.elapsed:.2f} s ({rate:.0f}/s)"
        )

    async def _lane(self, endpoint: Endpoint, queue: asyncio.Queue[_Invocation]) -> None:
        conn = Connection(endpoint, self._ssl)
        try:
            while True:
                inv = await queue.get()
                try:
                    response = await conn.request(inv.raw)
                except (OSError, TimeoutError, HTTPError, ssl.SSLError) as exc:
                    self._retry(
                        inv, queue, f"connection to {endpoint.url} failed: {exc or type(exc).__name__}"
                    )
                    continue
                if response.status in (200, 202, 204):
                    self.launched += 1
                    self._resolve(inv)
                elif response.status == 429 or response.status >= 500:
                    self._retry(inv, queue, f"HTTP {response.status} {_error_text(response)}")
                else:
                    hint = _HINTS.get(response.status, "unexpected answer from Lambda")
                    self._fail(inv, f"HTTP {response.status} {_error_text(response)}; {hint}")
        finally:
            await conn.close()

    def _retry(self, inv: _Invocation, queue: asyncio.Queue[_Invocation], why: str) -> None:
        inv.attempts += 1
        delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**inv.attempts))
        assert inv.batch is not None
        if time.monotonic() + delay > inv.batch.deadline_at:
            self._fail(
                inv, f"still failing after {inv.attempts} attempts when --launch-deadline passed: {why}"
            )
            return
        self.retried += 1

        def again() -> None:
            inv.raw = self._sign(inv)
            queue.put_nowait(inv)

        asyncio.get_running_loop().call_later(delay, again)

    def _fail(self, inv: _Invocation, why: str) -> None:
        self._failed[inv.worker] = f"{inv.target.describe()}: {why}"
        self._resolve(inv)

    @staticmethod
    def _resolve(inv: _Invocation) -> None:
        assert inv.batch is not None
        inv.batch.remaining -= 1
        if inv.batch.remaining <= 0:
            inv.batch.done.set()

    def running(self) -> int | None:
        return None  # Lambda does not say whether an accepted invocation is still starting

    def failures(self) -> dict[int, str]:
        return dict(self._failed)

    async def close(self) -> None:
        for lane in self._lanes:
            lane.cancel()
        await asyncio.gather(*self._lanes, return_exceptions=True)


def _error_text(response: Response) -> str:
    kind = response.headers.get("x-amzn-errortype", "").split(":")[0]
    message = ""
    try:
        doc = json.loads(response.body or b"{}")
        if isinstance(doc, dict):
            message = str(doc.get("message") or doc.get("Message") or "")
            kind = kind or str(doc.get("Type") or doc.get("__type") or "")
    except ValueError:
        message = response.body[:200].decode(errors="replace")
    return " ".join(p for p in (kind or response.reason, message) if p)


def _default_credentials() -> Any:
    """The standard chain: environment, shared profile, container or instance role."""
    import botocore.session

    creds = botocore.session.Session().get_credentials()
    if creds is None:
        raise LaunchError(
            "no AWS credentials found (environment, ~/.aws profile, or container role); "
            "configure them, or use --backend local"
        )
    return creds
