"""``mu map``: run one bundled command over S3 objects without writing a state machine.

The input objects (sorted by key) are cut into chunks of K; worker i fetches chunk i into its
temp dir, runs the command with ``##INFILE##`` = those files and ``##OUTFILE##`` = one output
file, and uploads it as ``{output}{i:08d}{suffix}``. The names are deterministic, so running a
chunk again replaces its output instead of adding a second one.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any
from urllib.parse import urlsplit

from coordinator.core.job import Job, numbered_key
from coordinator.core.machine import CommandListState, TerminalState
from coordinator.preflight import JobIO, PreflightError
from coordinator.preflight.checks import s3_client, s3_problem
from coordinator.preflight.io import bucket_problem

MAX_OBJECTS = 1_000_000


def parse_s3_url(url: str, what: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{what} must look like s3://BUCKET/PREFIX/, got {url!r}")
    problem = bucket_problem(parts.netloc)
    if problem:
        raise ValueError(f"{what} {url}: {problem}")
    return parts.netloc, parts.path.lstrip("/")


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        if len(keys) > MAX_OBJECTS:
            raise ValueError(f"more than {MAX_OBJECTS} objects under s3://{bucket}/{prefix}; narrow --input")
    return sorted(keys)


def plan(keys: list[str], chunk: int) -> list[list[str]]:
    return [keys[i : i + chunk] for i in range(0, len(keys), chunk)]


class MapFinal(TerminalState):
    extra = "(finished)"


class MapUploadState(CommandListState):
    """Upload the one output to ``{output}{i:08d}{suffix}``."""

    extra = "(uploading the output)"
    nextState = MapFinal

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        info, i = prevState.info, getattr(prevState, "actorNum", aNum)
        self.commandlist = [
            (None, f"set:bucket:{info['out_bucket']}"),
            f"upload:{numbered_key(info['out_prefix'], i, info['suffix'])}\0{_outfile(info, i)}",
            ("OK:UPLOAD(", "quit:"),
        ]
        super().__init__(prevState, aNum)


class MapRunState(CommandListState):
    """Run the command once over the chunk's files."""

    extra = "(running the command)"
    nextState = MapUploadState
    commandlist = [(None, "run:"), ("OK:RETVAL(0)", None)]


class MapFetchState(CommandListState):
    """Fetch the chunk's objects into the worker's temp dir."""

    extra = "(fetching the chunk)"
    nextState = MapRunState

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        # The first state: the job's settings come on the link (mu's socket) it is built on,
        # and the list must exist before mu's __init__ turns it into expects and commands.
        info, i = prevState.info, getattr(prevState, "actorNum", aNum)
        keys: list[str] = info["plan"][i]
        names = [f"{n:04d}_{os.path.basename(k)}" for n, k in enumerate(keys)]
        quoted = " ".join("##TMPDIR##/in/" + shlex.quote(name) for name in names)  # for the shell
        self.commandlist = [
            ("OK:HELLO", "seti:nonblock:0"),
            f"set:bucket:{info['in_bucket']}",
            f"set:cmdinfile:{quoted}",
            f"set:cmdoutfile:{_outfile(info, i)}",
            *(f"retrieve:{k}\0##TMPDIR##/in/{name}" for k, name in zip(keys, names, strict=True)),
            ("OK:RETRIEVE(", None),
        ]
        super().__init__(prevState, aNum)


def _outfile(info: dict[str, Any], i: int) -> str:
    return f"##TMPDIR##/{i:08d}{info['suffix']}"


DESCRIPTION = """\
Run one command bundled with the worker over the objects under an S3 prefix, K per worker.

The objects under --input, sorted by key, are cut into chunks of --chunk objects. Worker i
fetches chunk i into its private temporary directory and runs --command once in a shell that
finds the bundled binaries (png2y4m, ...), with these placeholders replaced:
  ##INFILE##   the chunk's files: shell-quoted paths, space-separated, in key order
  ##OUTFILE##  the one file the command must write
  ##TMPDIR##   the worker's private temporary directory
and uploads ##OUTFILE## as {output prefix}{i:08d}{suffix}, e.g. s3://BUCKET/y4m/00000000.y4m.
Output names depend only on the chunk number, so a re-run replaces its outputs instead of
adding to them. A chunk whose command fails is reported by its first and last key, and mu
exits 1.

example:
  mu map --input s3://BUCKET/frames/ --output s3://BUCKET/y4m/ --chunk 6 --suffix .y4m \\
         --command 'png2y4m -o ##OUTFILE## ##INFILE##'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="s3://BUCKET/PREFIX/", help="the input objects")
    p.add_argument("--output", required=True, metavar="s3://BUCKET/PREFIX/",
                   help="where outputs go, named PREFIX%%08d + --suffix (not inside --input)")  # fmt: skip
    p.add_argument("--command", required=True,
                   help="shell command over ##INFILE## writing ##OUTFILE## (see above)")  # fmt: skip
    p.add_argument("--chunk", type=int, default=1, metavar="K", help="objects per worker (1)")
    p.add_argument("--suffix", default="", help="appended to each output name, e.g. .y4m ('')")


def check_arguments(args: argparse.Namespace) -> tuple[tuple[str, str], tuple[str, str]]:
    """The options' form alone, with no S3 call (``mu submit map`` checks them before any AWS
    call): ValueError if wrong, else the input's and the output's (bucket, prefix)."""
    where = parse_s3_url(args.input, "--input"), parse_s3_url(args.output, "--output")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    if "/" in args.suffix:
        raise ValueError(f"--suffix may not contain '/', got {args.suffix!r}")
    return where


def make_job(args: argparse.Namespace, s3: Any = None) -> Job:
    (in_bucket, in_prefix), (out_bucket, out_prefix) = check_arguments(args)
    if s3 is None:
        s3 = s3_client(args.region, args.s3_endpoint)
    try:
        keys = list_keys(s3, in_bucket, in_prefix)
    except ValueError as exc:
        raise PreflightError(str(exc)) from exc
    except Exception as exc:  # botocore: missing bucket, denied, unreachable endpoint
        raise PreflightError(s3_problem(exc, in_bucket, args.s3_endpoint, "listing")) from exc
    if not keys:
        raise PreflightError(f"no objects under {args.input}; check the bucket and prefix")
    chunks = plan(keys, args.chunk)

    def label(actor: int) -> str:
        if actor >= len(chunks):
            return ""
        keys = chunks[actor]
        return f"chunk {actor}: {keys[0]}" + (f" .. {keys[-1]}" if len(keys) > 1 else "")

    return Job(
        name="map",
        initial=MapFetchState,
        workers=len(chunks),
        info={
            "plan": chunks,
            "in_bucket": in_bucket,
            "in_prefix": in_prefix,
            "out_bucket": out_bucket,
            "out_prefix": out_prefix,
            "suffix": args.suffix,
        },
        command=args.command,
        bucket=in_bucket,
        region=args.region,
        s3_endpoint=args.s3_endpoint,
        actor_label=label,
    )


# -- what the job reads and writes (pre-flight checks, --dry-run, failure labels) -----------


def job_io(job: Job) -> JobIO:
    info = job.info
    chunks: list[list[str]] = info["plan"]
    writes = [[numbered_key(info["out_prefix"], i, info["suffix"])] for i in range(len(chunks))]
    in_prefix = info.get("in_prefix", "")
    return JobIO(info["in_bucket"], in_prefix, chunks, info["out_bucket"], info["out_prefix"], writes,
                 listed=True, hint="check --input")  # fmt: skip
