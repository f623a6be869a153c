"""A chained job in ExCamera's pattern: a running state passed from each worker to the next.

Worker i fetches chunk i (``{input}{i:08d}.bin``) and summarises it in parallel with every
other worker (``scanstep local``). Then, through the relay, it waits for the running state of
worker i-1, folds its summary in (``scanstep combine``), passes the new state to worker i+1,
and uploads ``{output}{i:08d}.txt``: running totals and a rolling hash of every byte so far.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.core.job import Job, numbered_key
from coordinator.core.machine import (
    CommandListState,
    IfElseState,
    InfoWatcherState,
    TerminalState,
)
from coordinator.preflight import JobIO
from coordinator.preflight.io import bucket_name


def chunk_key(prefix: str, i: int) -> str:
    return numbered_key(prefix, i, ".bin")


def report_key(prefix: str, i: int) -> str:
    return numbered_key(prefix, i, ".txt")


class ScanFinal(TerminalState):
    extra = "(finished)"


class ScanCombineState(CommandListState):
    """Fold the summary into the previous state, pass it on, upload the report."""

    extra = "(combining and passing the state on)"
    nextState = ScanFinal

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        # The list must exist before mu's __init__ turns it into expects and commands.
        self.commandlist = self.plan(prevState.info, prevState.actorNum)
        super().__init__(prevState, aNum)

    @staticmethod
    def plan(info: dict[str, Any], i: int) -> list[Any]:
        last = i == info["workers"] - 1
        prev = "none" if i == 0 else f"##TMPDIR##/state.{i - 1}"
        combine = (
            f"scanstep combine {prev} ##TMPDIR##/local.sum ##TMPDIR##/state.{i} ##TMPDIR##/report.txt {i}"
        )
        return [
            (None, f"run:{combine}"),
            *([] if last else [("OK:RETVAL(0)", f"send:state.{i}")]),
            ("OK:RETVAL(0)" if last else "OK:SEND(", f"set:bucket:{info['bucket']}"),
            f"upload:{report_key(info['output'], i)}\0##TMPDIR##/report.txt",
            ("OK:UPLOAD(", "close_connect:"),
            ("OK:CLOSE_CONNECT", "quit:"),
        ]


class ScanWaitState(InfoWatcherState):
    """Wait until the relay has delivered worker i-1's state (the worker reports INFO:file:...).

    mu's InfoWatcherState fires on any INFO; this one only once the right file is there,
    which may already be the case when the state starts.
    """

    extra = "(waiting for the previous state)"
    nextState = ScanCombineState

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        if self.arrived():
            self.kick()

    def arrived(self) -> bool:
        return bool(self.info.get("file") == f"state.{self.actorNum - 1}")

    def info_updated(self) -> None:
        if self.arrived():
            self.kick()


class ScanBranchState(IfElseState):
    consequentState = ScanCombineState  # the first worker starts the chain
    alternativeState = ScanWaitState

    def testfn(self) -> bool:
        return self.actorNum == 0


class ScanConfigState(CommandListState):
    """Fetch and summarise this worker's chunk; join the relay as i, sending to i+1."""

    extra = "(fetching and summarising the chunk)"
    nextState = ScanBranchState
    commandlist = [
        ("OK:HELLO", "seti:nonblock:0"),
        "set:bucket:{bucket}",
        "retrieve:{inkey}\0##TMPDIR##/chunk.bin",
        ("OK:RETRIEVE(", "run:scanstep local ##TMPDIR##/chunk.bin ##TMPDIR##/local.sum"),
        ("OK:RETVAL(0)", "connect:{relay}:HELLO_STATE:{chain}:{me}:{next}"),
        ("OK:CONNECT", None),
    ]

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        i = self.actorNum
        self.format_commands(
            bucket=self.info["bucket"],
            inkey=chunk_key(self.info["input"], i),
            relay=self.info["relay"],
            chain=self.info["chain"],
            me=i,
            next=i + 1,
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--workers", type=int, default=2, help="workers, one chunk each, in chain order (2)")
    p.add_argument("-b", "--bucket", required=True, type=bucket_name, help="S3 bucket for input and output")
    p.add_argument(
        "--input", default="scan-in/", help="input prefix: chunk i is PREFIX%%08d.bin ('scan-in/')"
    )
    p.add_argument(
        "--output", default="scan-out/", help="output prefix: report i is PREFIX%%08d.txt ('scan-out/')"
    )


def make_job(args: argparse.Namespace) -> Job:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    return Job(
        name="scan",
        initial=ScanConfigState,
        workers=args.workers,
        info={"bucket": args.bucket, "input": args.input, "output": args.output, "workers": args.workers},
        bucket=args.bucket,
        region=args.region,
        s3_endpoint=args.s3_endpoint,
        relay=True,
    )


# -- what the job reads and writes (pre-flight checks, --dry-run, failure labels) -----------

RELAY = True  # runs a relay beside the coordinator: `mu run scan` takes --relay-port


def job_io(job: Job) -> JobIO:
    n, bucket, inp, out = job.workers, job.bucket, job.info["input"], job.info["output"]
    reads = [[chunk_key(inp, i)] for i in range(n)]
    writes = [[report_key(out, i)] for i in range(n)]
    return JobIO(bucket, inp, reads, bucket, out, writes, hint="check --input (chunk i is PREFIX%08d.bin)")
