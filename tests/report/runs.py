"""Real local runs through the CLI, shared by the report tests."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from coordinator.jobs import png2y4m
from coordinator.local.demo import encode_png, frame_rgb, to_uint16


def mu(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def local(s3: Any, logs: Path | str) -> list[str]:
    """The options of a local run against the test S3 server: any free port, logs kept in ``logs``."""
    return ["-t", "0", "--s3-endpoint", s3.endpoint, "--log-dir", str(logs)]


def frames_bucket(s3: Any, video: str = "clip", frames: int = 6, bad: int | None = None) -> str:
    """A fresh bucket holding ``frames`` small PNGs of ``video``; frame ``bad`` is not a PNG."""
    bucket = f"rep-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for frame in range(1, frames + 1):
        body = b"not a png" if frame == bad else encode_png(to_uint16(frame_rgb(frame, 48, 32)))
        client.put_object(Bucket=bucket, Key=png2y4m.input_key(video, "png16", frame), Body=body)
    return bucket


def run_png2y4m(
    s3: Any, tmp: Path, workers: int = 4, frames: int = 3, bad: int | None = None
) -> tuple[Any, Path]:
    bucket = frames_bucket(s3, frames=workers * frames, bad=bad)
    log = tmp / f"png2y4m-{uuid.uuid4().hex[:6]}.json"
    proc = mu(
        "run",
        "png2y4m",
        "-n",
        str(workers),
        "-f",
        str(frames),
        "-v",
        "clip",
        "-b",
        bucket,
        "-t",
        "0",
        "-O",
        str(log),
        "-m",
        "60",
        "--s3-endpoint",
        s3.endpoint,
        "--log-dir",
        str(tmp / "logs"),
    )
    return proc, log
