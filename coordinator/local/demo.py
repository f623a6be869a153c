"""``mu demo`` (``DESCRIPTION`` says what it does): the whole system on one machine, so that
a new user sees it work, and sees where the time went, before owning an AWS account."""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from coordinator.core.runner import Interrupted, interruptible, new_job_id, run_job
from coordinator.core.server import ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import make_job_keys
from coordinator.jobs import png2y4m
from coordinator.launch import LaunchError
from coordinator.launch.local import LocalLauncher
from coordinator.launch.sandbox import Isolation, NoSandbox, Sandbox
from coordinator.local.locals3 import FAKE_CREDENTIALS, LocalS3
from coordinator.local.y4m import parse_y4m, psnr, reference_ycbcr
from coordinator.preflight.checks import check_writable
from coordinator.report import timeline
from coordinator.report.analysis import analyze

MIN_PSNR = 40.0
DEFAULT_OUT = "mu-demo"  # in the current folder; the repository ignores it
TIMING, TIMELINE, S3_LOG, WORKERS = "timing.json", "timeline.png", "s3.log", "workers"
DESCRIPTION = """The png2y4m job end to end on this machine, with no AWS account: an embedded S3
server (moto) on 127.0.0.1, generated 16-bit frames, local worker processes running the real
worker code and the static png2y4m, and a check of every output.

Everything it writes goes to --out (./mu-demo): the timing log (timing.json, for 'mu report'),
its timeline picture (timeline.png), the worker logs and the S3 server's log. Each run replaces
the files of the one before."""


def encode_png(pixels: Any) -> bytes:
    """PNG bytes for an H x W (gray) or H x W x C uint8/uint16 array (filter 0, zlib level 1)."""
    import numpy as np

    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2" if depth == 16 else "u1").reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rows.view(np.uint8)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


def frame_rgb(index: int, width: int, height: int) -> Any:
    """A moving test pattern: drifting colour waves and a square that crosses the frame."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    t = index / 10.0
    r = 0.5 + 0.5 * np.sin(xx / 23.0 + t)
    g = 0.5 + 0.5 * np.sin(yy / 17.0 - 1.3 * t)
    b = 0.5 + 0.5 * np.sin((xx + yy) / 31.0 + 0.7 * t)
    rgb = np.stack([r, g, b], axis=-1)
    side = height // 4
    x0 = (index * 9) % max(1, width - side)
    rgb[height // 3 : height // 3 + side, x0 : x0 + side] = (1.0, 1.0, 0.9)
    return rgb


def to_uint16(rgb: Any) -> Any:
    import numpy as np

    return np.round(rgb * 65535).astype(np.uint16)


def verify_chunk(data: bytes, chunk: int, frames: int, width: int, height: int) -> list[str]:
    """Problems with one output Y4M, compared with the frames it should hold."""
    try:
        y4m = parse_y4m(data)
    except (ValueError, KeyError) as exc:
        return [f"chunk {chunk}: unreadable Y4M: {exc}"]
    problems = []
    if (y4m.width, y4m.height) != (width, height):
        problems.append(f"chunk {chunk}: size {y4m.width}x{y4m.height}, expected {width}x{height}")
    if len(y4m.frames) != frames:
        problems.append(f"chunk {chunk}: {len(y4m.frames)} frames, expected {frames}")
    if problems:
        return problems
    for got, frame in zip(y4m.frames, png2y4m.chunk_frames(chunk, frames), strict=True):
        want = reference_ycbcr(to_uint16(frame_rgb(frame, width, height)) / 65535.0)
        for plane, g, w in zip(("Y", "Cb", "Cr"), got, want, strict=True):
            value = psnr(g, w)
            if value < MIN_PSNR:
                problems.append(f"chunk {chunk} frame {frame} {plane}: PSNR {value:.1f} dB < {MIN_PSNR} dB")
    return problems


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mu demo", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workers", type=int, default=10, help="local workers, one chunk each (10)")
    p.add_argument("--frames", type=int, default=6, help="frames per chunk (6)")
    p.add_argument("--width", type=int, default=640, help="frame width in pixels (640)")
    p.add_argument("--height", type=int, default=360, help="frame height in pixels (360)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="where the timing log, its timeline picture, the worker logs and the S3 server's "
                        f"log go, made if need be (default: {DEFAULT_OUT} in this folder)")  # fmt: skip
    p.add_argument("--no-sandbox", action="store_true", help="run workers without bubblewrap (README)")
    args = p.parse_args(argv)
    for name in ("workers", "frames", "width", "height"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    try:
        check_writable(args.out, "--out", folder=True)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str]) -> int:
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("mu demo needs numpy and moto; run it with 'make demo', which installs them", file=sys.stderr)
        return 2
    args = parse_args(argv)
    os.environ.update(FAKE_CREDENTIALS)  # the embedded S3 takes any; workers must not look for real ones
    try:
        isolation: Isolation = NoSandbox() if args.no_sandbox else Sandbox()
    except LaunchError as exc:
        print(f"mu demo: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        with interruptible():
            return _demo(args, out, isolation)
    except Interrupted as exc:  # outside the job (uploading, checking); in it, _demo says it
        print(f"mu demo: {exc}", file=sys.stderr)
        print(f"  {kept(out, 'the interrupted run')}")
        return 128 + exc.signal


def forget_last_run(out: Path) -> None:
    """Remove what an earlier demo wrote in ``out`` (only the files the demo names), so that no
    file of that run is ever named as this run's."""
    stale = [out / name for name in (TIMING, TIMELINE, S3_LOG)] + list((out / WORKERS).glob("worker-*.log"))
    for path in stale:
        path.unlink(missing_ok=True)


def kept(out: Path, run: str) -> str:
    """The line naming what ``run`` left in ``out``: only files that exist."""
    names = {TIMING: "timing log", TIMELINE: "timeline", WORKERS: "worker logs", S3_LOG: "S3 log"}
    found = [f"{what}: {out / name}" for name, what in names.items() if (out / name).exists()]
    if not found:
        return f"{run} wrote nothing to keep"
    return f"{run} is kept in {out}: " + "; ".join(found)


def _demo(args: argparse.Namespace, out: Path, isolation: Isolation) -> int:
    out.mkdir(parents=True, exist_ok=True)
    forget_last_run(out)
    total = args.workers * args.frames
    bucket, video = "mu-demo", "demo"
    print(
        f"mu demo: {total} frames of {args.width}x{args.height} (16-bit RGB PNG), "
        f"{args.workers} workers x {args.frames} frames"
    )
    with LocalS3(log_path=str(out / S3_LOG)) as s3:
        client: Any = s3.client()
        client.create_bucket(Bucket=bucket)
        t = time.monotonic()
        for frame in range(1, total + 1):
            png = encode_png(to_uint16(frame_rgb(frame, args.width, args.height)))
            client.put_object(Bucket=bucket, Key=png2y4m.input_key(video, "png16", frame), Body=png)
        print(
            f"  uploaded {total} PNGs to s3://{bucket}/{video}-png16/ on {s3.endpoint} "
            f"in {time.monotonic() - t:.1f} s"
        )
        job = png2y4m.make_job(
            argparse.Namespace(
                workers=args.workers, frames=args.frames, offset=0, video=video, bucket=bucket,
                in_format="png16", region="us-east-1", s3_endpoint=s3.endpoint,
            )
        )  # fmt: skip
        timing = out / TIMING
        job_id = new_job_id(job.name)
        options = ServerOptions(
            host="127.0.0.1", port=0, kill_time=120, connect_timeout=120, timing_log=str(timing),
            meta={"job_id": job_id, "backend": "local", "worker_logs": str(out / WORKERS)},
        )  # fmt: skip
        launcher = LocalLauncher(out / WORKERS, concurrency=args.workers, isolation=isolation)
        t = time.monotonic()
        result = asyncio.run(
            run_job(
                job,
                launcher,
                make_job_keys(),
                options,
                Status("png2y4m", args.workers),
                job_id=job_id,
                handle_signals=True,
            )
        )
        wall = time.monotonic() - t
        if result.timing is not None:
            timeline.draw(analyze(result.timing), out / TIMELINE)
        if result.interrupted is not None:
            print(f"  {kept(out, 'the interrupted run')}")
            return 128 + result.interrupted
        problems = [] if result.ok else [result.describe()]
        for chunk in range(args.workers):
            key = png2y4m.output_key(video, args.frames, chunk)
            try:
                data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                problems.append(f"chunk {chunk}: s3://{bucket}/{key} is missing")
                continue
            problems += verify_chunk(data, chunk, args.frames, args.width, args.height)
    print(
        f"  job: {result.succeeded}/{args.workers} workers succeeded, "
        f"wall time {wall:.2f} s, {total / wall:.1f} frames/s"
    )
    if timing.exists():
        print(f"  timing log: {timing} ('mu report {timing}' for the numbers)")
    if (out / TIMELINE).exists():
        print(f"  timeline: {out / TIMELINE}")
    print(f"  worker logs: {out / WORKERS}; S3 server's log: {out / S3_LOG}")
    if problems:
        print("mu demo FAILED:", *problems, sep="\n  ")
        return 1
    print(
        f"mu demo OK: {args.workers} Y4M chunks of {args.frames} frames each match their PNGs "
        f"(PSNR >= {MIN_PSNR:g} dB per plane)"
    )
    return 0
