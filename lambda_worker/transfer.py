"""S3 transfers for ``retrieve:`` and ``upload:``, bounded in time and cancellable.

botocore's defaults (60 s connect and read timeouts, legacy retries) let a transfer outlive
its coordinator by minutes, so every limit is set here. Transfers run through one s3transfer
manager (what boto3's ``download_file`` uses inside) whose futures can be cancelled: a worker
that loses its coordinator or reaches Lambda's time limit stops its transfers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .commands import CommandError, Transfer, s3_problem

CONNECT_TIMEOUT = 5  # seconds to open a connection to S3
READ_TIMEOUT = 20  # seconds a socket read may wait
MAX_ATTEMPTS = 4  # per request, with botocore's "standard" retry mode (exponential back-off)


class S3Transfers:
    def __init__(self, region: str, endpoint: str | None) -> None:
        self.region = region
        self.endpoint = endpoint
        self._client: Any = None
        self._manager: Any = None
        self._waiters = ThreadPoolExecutor(max_workers=64, thread_name_prefix="mu-s3-wait")
        self._futures: set[Any] = set()

    def client(self) -> Any:
        if self._client is None:
            import boto3  # deferred: most of a cold start is importing boto3
            from botocore.config import Config

            try:
                self._client = boto3.session.Session().client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint,
                    config=Config(
                        connect_timeout=CONNECT_TIMEOUT,
                        read_timeout=READ_TIMEOUT,
                        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                        max_pool_connections=32,
                    ),
                )
            except Exception as exc:  # botocore raises several kinds for a bad region or endpoint
                raise CommandError(
                    f"cannot make an S3 client for region {self.region!r}, endpoint {self.endpoint!r}: {exc}"
                ) from exc
        return self._client

    def _transfer_manager(self) -> Any:
        if self._manager is None:
            from boto3.s3.transfer import TransferConfig, create_transfer_manager

            self._manager = create_transfer_manager(self.client(), TransferConfig(max_concurrency=10))
        return self._manager

    async def run(self, t: Transfer) -> bytes:
        """Carry out one transfer; ``OK:RETRIEVE(...)`` / ``OK:UPLOAD(...)`` or CommandError."""
        if t.name == "upload" and os.path.isdir(t.path):
            raise CommandError(f"UPLOAD({t.where}): {t.path} is a directory; upload: sends one file "
                               "(pack a folder first, e.g. run:tar -C DIR -cf FILE .)")  # fmt: skip
        if t.name == "upload" and not os.path.isfile(t.path):
            raise CommandError(f"UPLOAD({t.where}): local file {t.path} does not exist")
        manager = self._transfer_manager()
        try:
            if t.name == "retrieve":
                os.makedirs(os.path.dirname(t.path) or ".", exist_ok=True)
                # s3transfer writes a temporary file beside the target and renames it when done
                future = manager.download(t.bucket, t.key, t.path)
            else:
                future = manager.upload(t.path, t.bucket, t.key)
        except Exception as exc:
            raise CommandError(f"{t.name.upper()}({t.where}) with {t.path}: {self._problem(t, exc)}") from exc
        self._futures.add(future)
        try:
            await asyncio.get_running_loop().run_in_executor(self._waiters, future.result)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # boto3 raises many kinds; every one becomes a FAIL
            side = "to" if t.name == "retrieve" else "from"
            why = self._problem(t, exc)
            raise CommandError(f"{t.name.upper()}({t.where}) {side} {t.path}: {why}") from exc
        finally:
            self._futures.discard(future)
        return t.done()

    def _problem(self, t: Transfer, exc: BaseException) -> str:
        return s3_problem(t, exc, self.region, self.endpoint)

    def cancel_all(self) -> None:
        for future in list(self._futures):
            with contextlib.suppress(Exception):
                future.cancel()

    def close(self) -> None:
        """Cancel what is still running and wait for s3transfer's threads (bounded by the timeouts)."""
        self.cancel_all()
        if self._manager is not None:
            with contextlib.suppress(Exception):
                self._manager.shutdown(cancel=True, cancel_msg="the worker is stopping")
        self._waiters.shutdown(wait=False, cancel_futures=True)
