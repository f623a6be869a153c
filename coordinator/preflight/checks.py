"""The pre-flight checks themselves: credentials, buckets, one listing of the inputs, overlap
of outputs with inputs, ``-n`` against the input, and local process counts."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from coordinator.preflight.io import JobIO

MAX_NAMED = 3  # missing keys named in a message
LOCAL_PROCESSES_PER_CORE = 8  # local workers at once per core before we warn


class PreflightError(RuntimeError):
    """Something that would make the job fail or do harm; nothing has been launched.

    ``status`` is the exit status: 1 for what the job met (a missing bucket or input), 2 for
    configuration the user must change (no credentials), as ``coordinator.aws.session`` says.
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Preflight:
    """What the checks found besides errors: warnings to show, requests made, time spent."""

    warnings: list[str] = field(default_factory=list)
    list_requests: int = 0
    seconds: float = 0.0
    missing: int = 0


def where(endpoint: str | None) -> str:
    return f" at {endpoint}" if endpoint else ""


def s3_problem(exc: Exception, bucket: str, endpoint: str | None, what: str = "") -> str:
    """One line saying what went wrong with S3 and what to do about it."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return no_credentials(endpoint)  # found by check_credentials first, unless they vanished
    if isinstance(exc, EndpointConnectionError):
        return (
            f"cannot reach S3{where(endpoint) or ''}: {exc}; is the endpoint running? "
            "(set it with --s3-endpoint or AWS_ENDPOINT_URL_S3)"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or (status == 404 and not what):
            return f"bucket '{bucket}' does not exist{where(endpoint)}; create it, or name an existing one"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return (
                f"access to bucket '{bucket}'{where(endpoint)} is denied ({code or status}); "
                "check the credentials and the bucket's policy"
            )
        return f"S3 {what or 'request'} on bucket '{bucket}'{where(endpoint)} failed: {code or status}: {exc}"
    return f"S3 {what or 'request'} on bucket '{bucket}'{where(endpoint)} failed: {exc}"


def no_credentials(endpoint: str | None) -> str:
    from coordinator.aws.session import NO_CREDENTIALS

    if not endpoint:
        return NO_CREDENTIALS
    return NO_CREDENTIALS + "; a local S3 endpoint takes any: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"


def check_credentials(endpoint: str | None) -> None:
    """The standard chain (environment, profile, SSO, container or instance role) must find some."""
    from coordinator.aws.session import AwsError, credentials, new_session

    try:
        credentials(new_session())
    except AwsError as exc:
        message = no_credentials(endpoint) if "credentials" in str(exc) else str(exc)
        raise PreflightError(message, exc.status) from exc


def check_writable(path: str, option: str, folder: bool = False) -> None:
    """A file (or with ``folder``, a folder made if need be) that the run writes at its end,
    checked before anything runs so that a typo costs nothing; a ValueError saying what to
    change otherwise."""
    target = os.path.abspath(path)
    kind = "folder" if folder else "file"
    if os.path.exists(target):
        if folder != os.path.isdir(target):
            problem = f"{path} exists and is not a folder" if folder else f"{path} is a folder; name a file"
        elif not os.access(target, os.W_OK):
            problem = f"{path} cannot be written (permission denied); name another {kind}"
        else:
            return
    else:
        parent = os.path.dirname(target)
        while folder and not os.path.exists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)  # the folders are made: the nearest existing one counts
        if not os.path.exists(parent):
            problem = f"the folder {parent} does not exist; create it, or name a {kind} in an existing folder"
        elif not os.path.isdir(parent):
            problem = f"{parent} is not a folder"
        elif not os.access(parent, os.W_OK | os.X_OK):
            problem = f"the folder {parent} cannot be written (permission denied); name another {kind}"
        else:
            return
    raise ValueError(f"{option} {path}: {problem}")


def check_log_dir(path: str, option: str = "--log-dir") -> None:
    """The folder local workers write their logs into, tried before anything is launched: an
    existing folder must take a file, and a new one is made by the run only as the last folder
    of the path (a typo in a parent folder is refused rather than built from /). Trying is the
    only sure test: root passes every permission check, yet cannot make a folder in /proc.
    Nothing is left behind; a ValueError says what to change."""
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"{option} {path} exists and is not a folder; name a folder for the worker logs")
    if not os.path.exists(target) and not os.path.isdir(parent):
        raise ValueError(
            f"{option} {path}: the folder {parent} does not exist; create it first "
            f"(mu makes only the last folder of {option}), or name a folder in an existing one"
        )
    made = False
    try:
        if not os.path.exists(target):
            os.mkdir(target)
            made = True
        fd, probe = tempfile.mkstemp(prefix=".mu-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "create" if not os.path.exists(target) else "write in"
        raise ValueError(
            f"{option} {path}: cannot {what} this folder ({exc.strerror or exc}); name a folder you can write"
        ) from exc
    finally:
        if made:
            os.rmdir(target)  # the run makes it when it launches; a refused run leaves nothing


def check_outputs(args: Any) -> None:
    """The files a run writes (-O, -P when it ends; local workers' --log-dir from its start),
    checked before it starts (--timing-s3's form is checked with the AWS options)."""
    if args.timing_log:
        check_writable(args.timing_log, "-O")
    if getattr(args, "cprofile", None):
        check_writable(args.cprofile, "-P")
    if getattr(args, "log_dir", None) and getattr(args, "backend", "local") == "local":
        check_log_dir(args.log_dir)


def s3_client(region: str, endpoint: str | None) -> Any:
    """A client that fails fast: pre-flight should take seconds, not minutes of retries."""
    import boto3
    from botocore.config import Config

    check_credentials(endpoint)
    session = boto3.Session(region_name=region)
    config = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})
    return session.client("s3", endpoint_url=endpoint, config=config)


def list_range(s3: Any, bucket: str, prefix: str, first: str, last: str) -> tuple[set[str], int]:
    """Keys under ``prefix`` from ``first`` to ``last`` inclusive, in one (paged) listing."""
    present: set[str] = set()
    pages = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if first > prefix:
        kwargs["StartAfter"] = first[:-1]  # a proper prefix of ``first`` sorts before it
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        pages += 1
        keys = [o["Key"] for o in page.get("Contents", [])]
        present.update(k for k in keys if first <= k <= last)
        if keys and keys[-1] > last:
            break
    return present, pages


def fitting_workers(io: JobIO, present: set[str]) -> int:
    """How many actors, from the first, find all their inputs."""
    for actor, keys in enumerate(io.reads):
        if any(k not in present for k in keys):
            return actor
    return len(io.reads)


def overlap(io: JobIO) -> str | None:
    if io.in_bucket != io.out_bucket:
        return None
    written = {k for keys in io.writes for k in keys}
    clash = next((k for keys in io.reads for k in keys if k in written), None)
    if clash:
        return f"the job would overwrite its own input s3://{io.in_bucket}/{clash}; choose another output"
    a, b = io.in_prefix, io.out_prefix
    if a.startswith(b) or b.startswith(a):
        return (
            f"the output prefix s3://{io.out_bucket}/{b} overlaps the input prefix s3://{io.in_bucket}/{a}: "
            "a later run would read this run's outputs as input; choose an output outside the input"
        )
    return None


def run_checks(
    io: JobIO | None,
    *,
    region: str,
    endpoint: str | None,
    backend: str,
    workers_at_once: int,
    option_hint: str = "-n",
    s3: Any = None,
    cores: int | None = None,
) -> Preflight:
    """Raise :class:`PreflightError` on the first problem; return warnings and counts otherwise."""
    t0 = time.monotonic()
    found = Preflight()
    cores = cores or os.cpu_count() or 1
    if backend == "local" and workers_at_once > LOCAL_PROCESSES_PER_CORE * cores:
        found.warnings.append(
            f"{workers_at_once} local worker processes at once on a {cores}-core machine will mostly wait "
            f"for the CPU; --concurrency N runs at most N at once (the rest queue), --backend aws runs them "
            "on Lambda"
        )
    if io is None:
        found.seconds = time.monotonic() - t0
        return found
    problem = overlap(io)
    if problem:
        raise PreflightError(problem)
    s3 = s3 or s3_client(region, endpoint)
    for bucket in dict.fromkeys((io.in_bucket, io.out_bucket)):
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise PreflightError(s3_problem(exc, bucket, endpoint)) from exc
    if not io.listed and io.input_keys:
        needed = sorted({k for keys in io.reads for k in keys})
        try:
            present, pages = list_range(s3, io.in_bucket, io.in_prefix, needed[0], needed[-1])
        except Exception as exc:
            raise PreflightError(s3_problem(exc, io.in_bucket, endpoint, "listing")) from exc
        found.list_requests += pages
        missing = [k for k in needed if k not in present]
        found.missing = len(missing)
        if missing:
            raise PreflightError(missing_message(io, missing, len(needed), present, option_hint))
    found.seconds = time.monotonic() - t0
    return found


def missing_message(io: JobIO, missing: list[str], needed: int, present: set[str], option_hint: str) -> str:
    named = ", ".join(missing[:MAX_NAMED]) + (
        f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
    )
    where = f"s3://{io.in_bucket}/{io.in_prefix}"
    text = f"{len(missing)} of {needed} input objects are missing under {where}: {named}"
    fits = fitting_workers(io, present)
    if fits == len(io.reads):
        return text
    tail_only = all(k in present for keys in io.reads[:fits] for k in keys) and not any(
        k in present for keys in io.reads[fits + 1 :] for k in keys
    )
    if fits and tail_only:
        asked = f"{option_hint} {len(io.reads)}"
        return f"{text}; {asked} asks for more than the input holds: it is enough for {option_hint} {fits}"
    if not present:
        return f"{text}; none of the job's inputs exist" + (f": {io.hint}" if io.hint else "")
    return text + (f" ({io.hint})" if io.hint else "")
