"""Where a finished job's timing log goes: ``-O FILE`` and ``--timing-s3 s3://BUCKET/KEY``.

A log is a report about a job, not part of it: a failure to write one is a warning on stderr
and never changes the job's exit status. Nothing is lost either: when neither destination
takes the log, it is written to a fresh file in the temporary directory and the warning names
it. In a Fargate task the local disk goes with the task, so there the log is uploaded by
default to ``s3://BUCKET/mu-logs/JOB_ID/timing.json`` in the job's bucket.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

TIMING_PREFIX = "mu-logs/"  # the coordinator task may write here and nowhere else (stacks/coordinator.py)
IN_TASK_ENV = "ECS_CONTAINER_METADATA_URI_V4"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as (bucket, key); a ValueError that says what is wrong otherwise."""
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key or key.endswith("/"):
        raise ValueError(f"--timing-s3 must look like s3://BUCKET/KEY (an object, not a folder), got {url!r}")
    return parts.netloc, key


def in_ecs_task() -> bool:
    """ECS sets the task metadata endpoint's address in every container it runs (Fargate too)."""
    return bool(os.environ.get(IN_TASK_ENV))


def default_s3_url(bucket: str, job_id: str) -> str | None:
    """In a Fargate task, the job's own folder under mu-logs/ of its bucket; elsewhere nothing."""
    if not in_ecs_task() or not bucket:
        return None
    return f"s3://{bucket}/{TIMING_PREFIX}{job_id}/timing.json"


def deliver(
    doc: dict[str, Any],
    path: str | None,
    s3_url: str | None,
    s3_client: Callable[[], Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[str]:
    """Write ``doc`` to every destination; returns where it went (for the run's summary, which
    names it once). Only problems are said here. Never raises for I/O."""
    say = say or (lambda text: print(f"mu: {text}", file=sys.stderr, flush=True))
    body = json.dumps(doc, indent=1).encode()
    written: list[str] = []
    if path:
        try:
            with open(path, "wb") as f:
                f.write(body)
            written.append(path)
        except OSError as exc:
            say(f"warning: cannot write the timing log to {path}: {exc.strerror or exc}")
    if s3_url:
        try:
            bucket, key = parse_s3_url(s3_url)
            if s3_client is None:
                raise ValueError("no S3 client to upload with")
            s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
            written.append(s3_url)
        except Exception as exc:  # botocore errors of every kind, or a bad URL: report, carry on
            from coordinator.aws.session import explain

            say(f"warning: {explain(exc, f'uploading the timing log to {s3_url}')}")
    if not written:
        try:
            fd, fallback = tempfile.mkstemp(prefix="mu-timing-", suffix=".json")
            with os.fdopen(fd, "wb") as f:
                f.write(body)
        except OSError as exc:
            say(f"warning: the timing log is lost: {exc.strerror or exc} in {tempfile.gettempdir()} too")
            return written
        say(f"warning: the timing log is in {fallback} instead")
        written.append(fallback)
    return written


def s3_client_factory(region: str | None, endpoint: str | None) -> Callable[[], Any]:
    """An S3 client made when needed, with short timeouts: a job's end must not hang on a log."""

    def make() -> Any:
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client("s3", region_name=region, endpoint_url=endpoint, config=config)

    return make
