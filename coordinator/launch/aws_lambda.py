"""Workers as asynchronous Lambda invocations, SigV4-signed, over kept-alive HTTPS connections."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from coordinator.aws.session import USAGE, AwsError, explain, new_session
from coordinator.aws.session import credentials as aws_credentials
from coordinator.core.status import Status
from coordinator.launch import Launcher, LaunchError
from coordinator.launch.capacity import MissingFunctionError, RegionCapacity, advice, read_region, shortfalls
from coordinator.launch.http import Connection, Endpoint, HTTPError, Response, encode_request
from coordinator.launch.sigv4 import InvokeSigner


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

    never_connected = "its invocation failed"

    def __init__(
        self,
        functions: list[str],
        regions: list[str],
        *,
        session: Any = None,
        credentials: Any = None,
        endpoint_url: str | None = None,
        ca_bundle: str | None = None,
        max_inflight: int = 256,
        deadline: float = 120.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        status: Status | None = None,
    ) -> None:
        """``session``: a botocore session (the standard chain by default); ``credentials``
        replace its credentials. ``endpoint_url`` overrides botocore's endpoint for every region;
        ``ca_bundle`` (or ``AWS_CA_BUNDLE``) adds a CA for it."""
        if not functions or not all(functions):
            raise LaunchError("name at least one worker function with --function NAME[,NAME...]")
        if not regions or not all(regions):
            raise LaunchError("name at least one region with --regions R1[,R2...]")
        if max_inflight < 1:
            raise LaunchError(f"--max-inflight must be at least 1, got {max_inflight}")
        self.functions, self.regions = list(functions), list(regions)
        self._session = session or new_session()
        if credentials is not None:
            self._session.set_credentials(credentials.access_key, credentials.secret_key, credentials.token)
        try:
            self._credentials = aws_credentials(self._session)
        except AwsError as exc:
            raise LaunchError(f"{exc}; or use --backend local") from exc
        bundle = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
        self._clients = {r: self._client(r, endpoint_url, bundle) for r in self.regions}
        self.unchecked_regions: list[str] = []  # where check_capacity could not read the settings
        try:
            endpoints = {r: Endpoint.parse(c.meta.endpoint_url) for r, c in self._clients.items()}
        except ValueError as exc:
            raise LaunchError(f"bad Lambda endpoint: {exc}") from exc
        self.targets = [Target(f, r, endpoints[r]) for r in self.regions for f in self.functions]
        self._endpoints = set(endpoints.values())
        self.max_inflight = max_inflight
        self.deadline = deadline
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.status = status
        self._signers: dict[tuple[str, Endpoint], InvokeSigner] = {}
        self._checked: set[Target] = set()
        self._ssl = ssl.create_default_context(cafile=bundle)
        self.issued = 0  # invocations handed to send(): each may start one worker
        self.launched = 0  # accepted by Lambda
        self.retried = 0
        self._failed: dict[int, str] = {}
        self._queues: dict[Endpoint, asyncio.Queue[_Invocation]] = {}
        self._lanes: list[asyncio.Task[None]] = []
        self.elapsed = 0.0  # seconds spent sending batches, added up

    def _client(self, region: str, endpoint_url: str | None, bundle: str | None) -> Any:
        """A botocore Lambda client: its endpoint is the one botocore resolves for the region
        (partition, FIPS and dual-stack settings, ``AWS_ENDPOINT_URL_LAMBDA``), unless overridden."""
        from botocore.config import Config

        config = Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
        try:
            return self._session.create_client(
                "lambda", region_name=region, endpoint_url=endpoint_url, verify=bundle, config=config
            )
        except Exception as exc:  # botocore: an invalid region name, a broken profile
            raise LaunchError(str(explain(exc, f"setting up Lambda in {region!r}"))) from exc

    # -- before launching -----------------------------------------------------------------

    def check_capacity(self, workers: int) -> None:
        """Refuse a job whose workers Lambda cannot run at once (see ``launch.capacity``).

        Where the settings cannot be read (no permission, an endpoint that lacks the API) it
        says so and lets the job run; a missing function or refused credentials stop it.
        """
        regions: dict[str, RegionCapacity] = {}
        for region, client in self._clients.items():
            try:
                regions[region] = read_region(client, region, self.functions)
            except MissingFunctionError as exc:
                raise LaunchError(str(exc)) from None
            except Exception as exc:
                error = explain(exc, f"reading Lambda concurrency in {region}")
                if error.status == USAGE and not error.denied:
                    raise LaunchError(str(error)) from exc
                many = f"{workers} worker" + ("" if workers == 1 else "s")
                self._say(f"warning: {error}; launching without knowing whether {many} fit")
                self.unchecked_regions.append(region)
        problems = shortfalls(workers, [(t.function, t.region) for t in self.targets], regions)
        if problems:
            raise LaunchError(advice(workers, problems))
        for cap in regions.values():
            reserved = [f"{f} {n}" for f, n in cap.reserved.items() if n is not None]
            self._say(
                f"Lambda in {cap.region}: {cap.unreserved} of {cap.account_limit} concurrent executions "
                f"unreserved" + (f"; reserved: {', '.join(reserved)}" if reserved else "")
            )

    def configuration(self) -> dict[str, Any]:
        """The first worker function's configuration (``Runtime``, ``MemorySize`` ...); empty when
        it cannot be read (a warning says why). mu.map pickles for the Python it names."""
        target = self.targets[0]
        try:
            config = self._clients[target.region].get_function_configuration(FunctionName=target.function)
        except Exception as exc:
            where = f"reading the configuration of {target.function} in {target.region}"
            self._say(f"warning: {explain(exc, where)}")
            return {}
        return dict(config)

    def _say(self, text: str) -> None:
        if self.status is not None:
            self.status.event(text)
        else:
            print(f"mu: {text}", file=sys.stderr)

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
        self.issued += len(invocations)
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
                self.mark(inv.worker, "sent")
                try:
                    response = await conn.request(inv.raw)
                except (OSError, TimeoutError, HTTPError, ssl.SSLError) as exc:
                    self._retry(
                        inv, queue, f"connection to {endpoint.url} failed: {exc or type(exc).__name__}"
                    )
                    continue
                if response.status in (200, 202, 204):
                    self.mark(inv.worker, "accepted")
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

    def may_connect(self, arrived: int, live: int) -> int:
        """Every invocation sent and not failed may start a worker, once: those that have not
        connected yet. Lambda does not say whether an accepted one will ever run; that is what
        --connect-timeout is for."""
        return max(0, self.issued - len(self._failed) - arrived)

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
