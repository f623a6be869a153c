"""ExCamera's first mu job: convert PNG frames on S3 into Y4M chunks, one chunk per worker.

Input ``{video}-{in_format}/%08d.png``; worker i (actor number) converts frames
``1 + f*(i+offset)`` to ``f*(i+offset+1)`` into ``{video}-y4m_{f:02d}/%08d.y4m`` named by chunk
number ``i+offset``. The states are mu's png2y4m_server states, ported.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.core.job import Job, numbered_key
from coordinator.core.machine import CommandListState, ForLoopState, TerminalState
from coordinator.preflight import JobIO
from coordinator.preflight.io import bucket_name

COMMAND = "png2y4m -o ##OUTFILE## ##INFILE##"


def chunk_frames(chunk: int, frames: int) -> range:
    """Frame numbers (1-based, as the PNG names) that chunk ``chunk`` converts."""
    return range(1 + frames * chunk, 1 + frames * (chunk + 1))


def input_key(video: str, in_format: str, frame: int) -> str:
    return numbered_key(f"{video}-{in_format}/", frame, ".png")


def output_key(video: str, frames: int, chunk: int) -> str:
    return numbered_key(f"{video}-y4m_{frames:02d}/", chunk, ".y4m")


class FinalState(TerminalState):
    extra = "(finished)"


class PNG2Y4MUploadState(CommandListState):
    extra = "(converting and uploading)"
    nextState = FinalState
    commandlist = [(None, "run:"), ("OK:RETVAL(0)", "upload:"), ("OK:UPLOAD(", "quit:")]


class PNG2Y4MRetrieveAndRunState(CommandListState):
    extra = "(retrieving a PNG)"
    commandlist = [
        (None, "set:inkey:{key}"),
        "set:targfile:##TMPDIR##/{name}",
        "retrieve:",
        ("OK:RETRIEVE(", None),
    ]

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        chunk = self.actorNum + self.info["offset"]
        frame = chunk_frames(chunk, self.info["frames"])[self.info["retrieve_iter"]]
        key = input_key(self.info["video"], self.info["in_format"], frame)
        self.format_commands(key=key, name=f"{frame:08d}.png")


class PNG2Y4MRetrieveLoopState(ForLoopState):
    extra = "(retrieve loop)"
    loopState = PNG2Y4MRetrieveAndRunState
    exitState = PNG2Y4MUploadState
    iterKey = "retrieve_iter"

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        self.iterFin = self.info["frames"]


PNG2Y4MRetrieveAndRunState.nextState = PNG2Y4MRetrieveLoopState


class PNG2Y4MConfigState(CommandListState):
    extra = "(configuring the worker)"
    nextState = PNG2Y4MRetrieveLoopState
    commandlist = [
        ("OK:HELLO", "seti:nonblock:0"),
        "set:cmdinfile:##TMPDIR##/*.png",
        "set:cmdoutfile:##TMPDIR##/{chunk:08d}.y4m",
        "set:outkey:{outkey}",
        "set:fromfile:##TMPDIR##/{chunk:08d}.y4m",
        "set:bucket:{bucket}",
        None,
    ]

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        chunk = self.actorNum + self.info["offset"]
        outkey = output_key(self.info["video"], self.info["frames"], chunk)
        self.format_commands(chunk=chunk, outkey=outkey, bucket=self.info["bucket"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--workers", type=int, default=1, help="workers to launch, one chunk each (1)")
    p.add_argument("-f", "--frames", type=int, default=6, help="frames per chunk (6)")
    p.add_argument("-o", "--offset", type=int, default=0, help="input chunks to skip (0)")
    p.add_argument("-v", "--video", default="sintel-1k", help="video name ('sintel-1k')")
    p.add_argument("-b", "--bucket", required=True, type=bucket_name, help="S3 bucket holding the video")
    p.add_argument("-i", "--in-format", default="png16", help="input format ('png16')")


def make_job(args: argparse.Namespace) -> Job:
    for name in ("workers", "frames"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.offset < 0:
        raise ValueError(f"--offset must be >= 0, got {args.offset}")
    return Job(
        name="png2y4m",
        initial=PNG2Y4MConfigState,
        workers=args.workers,
        info={
            "video": args.video,
            "in_format": args.in_format,
            "frames": args.frames,
            "offset": args.offset,
            "bucket": args.bucket,
        },
        command=COMMAND,
        bucket=args.bucket,
        region=args.region,
        s3_endpoint=args.s3_endpoint,
    )


# -- what the job reads and writes (pre-flight checks, --dry-run, failure labels) -----------


def job_io(job: Job) -> JobIO:
    video, fmt, frames, offset = (job.info[k] for k in ("video", "in_format", "frames", "offset"))
    chunks = range(offset, offset + job.workers)
    reads = [[input_key(video, fmt, f) for f in chunk_frames(c, frames)] for c in chunks]
    writes = [[output_key(video, frames, c)] for c in chunks]
    return JobIO(job.bucket, f"{video}-{fmt}/", reads, job.bucket, f"{video}-y4m_{frames:02d}/", writes,
                 hint="check -v/--video, -i/--in-format, -f/--frames and -o/--offset")  # fmt: skip
