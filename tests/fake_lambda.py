"""A local HTTPS endpoint that speaks the Lambda API the launcher uses.

Invoke (asynchronous), GetAccountSettings, GetFunctionConcurrency, GetFunctionConfiguration. It checks every
request's SigV4 signature by recomputing it with botocore, records the invocations, answers
as a script says, reports the concurrency it is told to, and can run each accepted event as a
real local worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from coordinator.core.tls import JobKeys, server_context

CREDS = Credentials("AKIDTESTLAUNCHER", "secret-for-tests", "session-token")
AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/lambda/aws4_request, "
                     r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")  # fmt: skip


@dataclass
class Seen:
    function: str
    region: str
    event: dict[str, Any]
    signature_ok: bool


@dataclass
class FakeLambda:
    keys: JobKeys
    script: Callable[[str, int, int], int] = lambda function, worker, attempt: 202
    run_workers: bool | Callable[[dict[str, Any]], bool] = False  # or: which accepted events to run
    seen: list[Seen] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bad_signatures: int = 0
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    # region -> (ConcurrentExecutions, UnreservedConcurrentExecutions); 1000 of 1000 elsewhere
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    reserved: dict[tuple[str, str], int] = field(default_factory=dict)  # (function, region) -> N
    missing: set[tuple[str, str]] = field(default_factory=set)  # (function, region) that do not exist
    deny_settings: bool = False  # answer GetAccountSettings with AccessDeniedException
    settings_reads: list[tuple[str, str]] = field(default_factory=list)  # (operation, region)
    runtime: str = f"python{sys.version_info[0]}.{sys.version_info[1]}"  # what GetFunctionConfiguration says
    architecture: str = "x86_64"  # and its Architectures

    async def __aenter__(self) -> FakeLambda:
        self.server = await asyncio.start_server(
            self._conn, "127.0.0.1", 0, ssl=server_context(self.keys, require_client=False)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for proc in self.procs:
            await asyncio.wait_for(proc.wait(), 30)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip()] = v.strip()
                body = await reader.readexactly(int(headers.get("Content-Length", "0")))
                status, payload = self._handle(method, path, headers, body)
                kind = {403: "AccessDeniedException", 404: "ResourceNotFoundException",
                        429: "TooManyRequestsException"}.get(status, "ServiceException")  # fmt: skip
                if status >= 300 and not payload:
                    payload = json.dumps({"Type": "User", "message": f"scripted {status}"}).encode()
                extra = f"x-amzn-ErrorType: {kind}\r\n" if status >= 300 else ""
                extra += "Content-Type: application/json\r\n" if payload else ""
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n{extra}\r\n".encode() + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        except Exception as exc:  # a bug here must show in the test, not as a silent close
            print(f"fake lambda: {type(exc).__name__}: {exc}", file=sys.stderr)
            writer.close()
            raise

    def _verify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
        m = AUTH_RE.fullmatch(headers.get("Authorization", ""))
        if not m or m.group(1) != CREDS.access_key or headers.get("X-Amz-Security-Token") != CREDS.token:
            return False, ""
        region, signed = m.group(3), m.group(4).split(";")
        lower = {k.lower(): v for k, v in headers.items()}
        req = AWSRequest(method=method, url=f"https://{lower['host']}{path}", data=body,
                         headers={h: lower[h] for h in signed if h != "host"})  # fmt: skip
        req.context["timestamp"] = lower["x-amz-date"]
        auth = SigV4Auth(CREDS, "lambda", region)
        signature = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        return signature == m.group(5), region

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        ok, region = self._verify(method, path, headers, body)
        if not ok:
            self.bad_signatures += 1
            return 403, b""
        if method == "GET":
            return self._settings(path, region)
        m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", path)
        if not m or headers.get("X-Amz-Invocation-Type") != "Event":
            self.bad_signatures += 1
            return 403, b""
        function, event = unquote(m.group(1)), json.loads(body)
        worker = event["worker"]
        self.attempts[worker] += 1
        status = self.script(function, worker, self.attempts[worker])
        if status == 202:
            self.seen.append(Seen(function, region, event, ok))
            run = self.run_workers(event) if callable(self.run_workers) else self.run_workers
            if run:
                asyncio.get_running_loop().create_task(self._start(event))
        return status, b""

    def _settings(self, path: str, region: str) -> tuple[int, bytes]:
        """GetAccountSettings and GetFunctionConcurrency, as Lambda answers them."""
        if path.rstrip("/") == "/2016-08-19/account-settings":
            self.settings_reads.append(("GetAccountSettings", region))
            if self.deny_settings:
                return 403, json.dumps({"Type": "User", "Message": "not allowed by test"}).encode()
            limit, unreserved = self.limits.get(region, (1000, 1000))
            account = {
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": unreserved,
                "TotalCodeSize": 80530636800,
                "CodeSizeUnzipped": 262144000,
                "CodeSizeZipped": 52428800,
            }
            doc = {"AccountLimit": account, "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0}}
            return 200, json.dumps(doc).encode()
        m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/configuration", path)
        if m:
            self.settings_reads.append(("GetFunctionConfiguration", region))
            answer = {
                "FunctionName": unquote(m.group(1)), "Runtime": self.runtime, "MemorySize": 3008,
                "Architectures": [self.architecture],
            }  # fmt: skip
            return 200, json.dumps(answer).encode()
        m = re.fullmatch(r"/2019-09-30/functions/([^/]+)/concurrency", path)
        if not m:
            return 404, b""
        function = unquote(m.group(1))
        self.settings_reads.append(("GetFunctionConcurrency", region))
        if (function, region) in self.missing:
            return 404, json.dumps({"Type": "User", "Message": f"Function not found: {function}"}).encode()
        reserved = self.reserved.get((function, region))
        answer = {} if reserved is None else {"ReservedConcurrentExecutions": reserved}
        return 200, json.dumps(answer).encode()

    async def _start(self, event: dict[str, Any]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lambda_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append(proc)
        await proc.communicate(json.dumps(event).encode())
