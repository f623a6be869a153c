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

MAX_OBJECTS = 1_000_000


def parse_s3_url(url: str, what: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{what} must look like s3://BUCKET/PREFIX/, got {url!r}")
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


class MapChunkState(CommandListState):
    """Fetch the chunk's objects, run the command once over them, upload the one output."""

    extra = "(fetching, running, uploading)"
    nextState = MapFinal

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        # The first state: the job's settings come on the link (mu's socket) it is built on,
        # and the list must exist before mu's __init__ turns it into expects and commands.
        info, i = prevState.info, getattr(prevState, "actorNum", aNum)
        keys: list[str] = info["plan"][i]
        names = [f"{n:04d}_{os.path.basename(k)}" for n, k in enumerate(keys)]
        quoted = " ".join("##TMPDIR##/in/" + shlex.quote(name) for name in names)  # for the shell
        outfile = f"##TMPDIR##/{i:08d}{info['suffix']}"
        self.commandlist = [
            ("OK:HELLO", "seti:nonblock:0"),
            f"set:bucket:{info['in_bucket']}",
            f"set:cmdinfile:{quoted}",
            f"set:cmdoutfile:{outfile}",
            *(f"retrieve:{k}\0##TMPDIR##/in/{name}" for k, name in zip(keys, names, strict=True)),
            "run:",
            ("OK:RETVAL(0)", f"set:bucket:{info['out_bucket']}"),
            f"upload:{numbered_key(info['out_prefix'], i, info['suffix'])}\0{outfile}",
            ("OK:UPLOAD(", "quit:"),
        ]
        super().__init__(prevState, aNum)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ of the input objects")
    p.add_argument("--output", required=True, help="s3://BUCKET/PREFIX/ for the outputs")
    p.add_argument("--command", required=True, help="e.g. 'png2y4m -o ##OUTFILE## ##INFILE##'")
    p.add_argument("--chunk", type=int, default=1, help="objects per worker (1)")
    p.add_argument("--suffix", default="", help="appended to each output name, e.g. .y4m")


def make_job(args: argparse.Namespace, s3: Any = None) -> Job:
    in_bucket, in_prefix = parse_s3_url(args.input, "--input")
    out_bucket, out_prefix = parse_s3_url(args.output, "--output")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    if "/" in args.suffix:
        raise ValueError(f"--suffix may not contain '/', got {args.suffix!r}")
    if s3 is None:
        import boto3

        s3 = boto3.client("s3", region_name=args.region, endpoint_url=args.s3_endpoint)
    try:
        keys = list_keys(s3, in_bucket, in_prefix)
    except ValueError:
        raise
    except Exception as exc:  # botocore: missing bucket, denied, unreachable endpoint
        raise ValueError(f"cannot list {args.input}: {exc}") from exc
    if not keys:
        raise ValueError(f"no objects under {args.input}; check the bucket and prefix")
    chunks = plan(keys, args.chunk)

    def label(actor: int) -> str:
        if actor >= len(chunks):
            return ""
        keys = chunks[actor]
        return f"chunk {actor}: {keys[0]}" + (f" .. {keys[-1]}" if len(keys) > 1 else "")

    return Job(
        name="map",
        initial=MapChunkState,
        workers=len(chunks),
        info={
            "plan": chunks,
            "in_bucket": in_bucket,
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
