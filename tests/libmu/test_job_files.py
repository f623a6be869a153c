"""Job files end to end: ``python JOB.py`` and ``mu run ./JOB.py``, local workers, moto's S3.

``jobs/png2y4m_job.py`` follows mu's png2y4m_server.py command for command, importing
``coordinator.libmu``, with mu's default command: ``rm -rf /tmp/*`` first (each sandboxed worker
has a /tmp of its own), then one PNG retrieved and ``./png2y4m -i -d`` run per frame. Every
output chunk is checked frame by frame: size, frame count, and the PSNR of each plane of each
frame against the BT.601 conversion of the PNG it came from.
"""

from __future__ import annotations

import json
import os
import pstats
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coordinator.jobs import png2y4m
from coordinator.local.demo import encode_png, frame_rgb, to_uint16, verify_chunk
from tests.helpers import mu_style_certs

JOBS = Path(__file__).parent / "jobs"
ROOT = Path(__file__).resolve().parents[2]
W, H = 64, 36
# mu's README builds this into the Lambda function (lambdaize.sh); here it is --command
COMMAND = "./png2y4m -i -d -o ##OUTFILE## ##INFILE##"


def frames_bucket(s3, video: str, frames: int) -> str:
    bucket = f"libmu-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for frame in range(1, frames + 1):
        png = encode_png(to_uint16(frame_rgb(frame, W, H)))
        client.put_object(Bucket=bucket, Key=png2y4m.input_key(video, "png16", frame), Body=png)
    return bucket


def without_aws_credentials() -> dict[str, str]:
    """A user's shell with no AWS account: mu's main() must still find its variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("CA_CERT", "SRV_CERT", "SRV_KEY")
    }


def run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**without_aws_credentials(), **extra}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)


def check_chunks(s3, bucket: str, video: str, frames: int, chunks: range) -> None:
    """Each chunk holds exactly its frames, in order, each plane within 40 dB of the reference."""
    client = s3.client()
    for chunk in chunks:
        body = client.get_object(Bucket=bucket, Key=png2y4m.output_key(video, frames, chunk))["Body"].read()
        assert verify_chunk(body, chunk, frames, W, H) == [], f"chunk {chunk}"
        assert body.count(b"YUV4MPEG2") == 1  # one header: -i appended every later frame


def job_flags(s3, tmp_path, bucket: str, *flags: str) -> list[str]:
    """The flags every run here shares, then the test's own."""
    common = ["-v", "clip", "-b", bucket, "-t", "0", "--s3-endpoint", s3.endpoint, "--command", COMMAND]
    return [*common, "--log-dir", str(tmp_path / "logs"), *flags]


def test_python_job_py_runs_a_mu_style_job_file(s3, tmp_path, png2y4m):
    frames, workers = 3, 3
    bucket = frames_bucket(s3, "clip", frames * workers)
    timing, profile = tmp_path / "timing.json", tmp_path / "coordinator.prof"
    canary = tmp_path / "canary"  # under the host's /tmp, which the job's rm -rf /tmp/* must not reach
    canary.write_text("still here")
    flags = ["-n", str(workers), "-f", str(frames), "-O", str(timing), "-P", str(profile)]
    proc = run([sys.executable, str(JOBS / "png2y4m_job.py"), *job_flags(s3, tmp_path, bucket, *flags)])
    assert proc.returncode == 0, proc.stderr
    assert f"all {workers} workers finished" in proc.stdout
    check_chunks(s3, bucket, "clip", frames, range(workers))
    assert canary.read_text() == "still here"

    log = json.loads(timing.read_text())
    record = next(r for r in log["records"] if r["actor"] == 0)
    assert record["states"][0]["state"].startswith("ConfigState ((configuring the worker) (#0))")
    assert record["states"][-1]["state"] == "FinalState (finished)"
    classes = [name for _, name in record["mu_timeline"]]  # mu's own log line: every state built
    assert classes[0] == "ConfigState" and classes[-1] == "FinalState"
    assert classes.count("RetrieveAndRunState") == frames and classes.count("RetrieveLoopState") == frames + 1
    times = [t for t, _ in record["mu_timeline"]]
    assert times == sorted(times) and times[0] >= 0
    assert pstats.Stats(str(profile)).total_calls > 0  # -P: cProfile data of the coordinator


def test_mu_run_job_file_with_user_certificates_and_an_offset(s3, tmp_path, png2y4m):
    frames, workers, offset = 2, 2, 1
    bucket = frames_bucket(s3, "clip", frames * (workers + offset))
    ca, cert, key = mu_style_certs(tmp_path / "keys")
    flags = ["-n", str(workers), "-f", str(frames), "-o", str(offset), "-c", ca, "-s", cert]
    mu_run = [sys.executable, "-m", "coordinator", "run", str(JOBS / "png2y4m_job.py")]
    proc = run([*mu_run, *job_flags(s3, tmp_path, bucket, *flags)], SRV_KEY=key)
    assert proc.returncode == 0, proc.stderr
    check_chunks(s3, bucket, "clip", frames, range(offset, offset + workers))
    user_key = Path(key).read_text()
    for log in (tmp_path / "logs").iterdir():
        assert user_key.splitlines()[1] not in log.read_text()


def test_a_failing_worker_fails_the_job_file_with_status_1(s3, tmp_path, png2y4m):
    bucket = frames_bucket(s3, "clip", 2)  # two frames; chunk 1 asks for frames 3 and 4
    proc = run(
        [sys.executable, str(JOBS / "png2y4m_job.py"), *job_flags(s3, tmp_path, bucket, "-n", "2", "-f", "2")]
    )
    assert proc.returncode == 1
    assert "1 of 2 workers failed" in proc.stderr
    assert "actor 1: FAIL(" in proc.stderr and "RetrieveAndRunState" in proc.stderr
    check_chunks(s3, bucket, "clip", 2, range(1))


@pytest.mark.usefixtures("png2y4m")
def test_a_frame_png2y4m_cannot_read_fails_its_actor_with_the_reason(s3, tmp_path):
    bucket = frames_bucket(s3, "clip", 4)
    s3.client().put_object(Bucket=bucket, Key=png2y4m.input_key("clip", "png16", 4), Body=b"not a png")
    flags = job_flags(s3, tmp_path, bucket, "-n", "2", "-f", "2")
    proc = run([sys.executable, str(JOBS / "png2y4m_job.py"), *flags])
    assert proc.returncode == 1
    assert "1 of 2 workers failed" in proc.stderr
    # actor 1's second run: png2y4m's own message, quoted in the reply the state did not expect
    assert "actor 1: OK:RETVAL(1):OUTPUT(png2y4m: " in proc.stderr
    assert "00000004.png: not a PNG file (bad signature)" in proc.stderr
    assert "00000001.y4m is left as it was (" in proc.stderr
    assert "in RetrieveAndRunState" in proc.stderr and "which expected 'OK:RETVAL(0)'" in proc.stderr
    check_chunks(s3, bucket, "clip", 2, range(1))


def test_mu_run_a_project_job_module_by_path(tmp_path):
    proc = run(
        [
            sys.executable,
            "-m",
            "coordinator",
            "run",
            str(JOBS / "project_job.py"),
            "-n",
            "3",
            "--greeting",
            "hi",
            "-t",
            "0",
            "--log-dir",
            str(tmp_path / "logs"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "all 3 workers finished" in proc.stdout
    bad = run([sys.executable, "-m", "coordinator", "run", str(JOBS / "project_job.py"), "-n", "0"])
    assert bad.returncode == 2 and "--workers must be at least 1" in bad.stderr


def test_job_files_that_cannot_run_are_clear_usage_errors(tmp_path):
    py2 = tmp_path / "old_server.py"
    py2.write_text('from coordinator.libmu import server\nprint "hello"\n')
    neither = tmp_path / "nothing.py"
    neither.write_text("X = 1\n")
    unported = tmp_path / "unported_server.py"
    unported.write_text("from libmu import server\n")
    cases = [
        (tmp_path / "missing.py", "no job file at"),
        (py2, "is not Python 3 (line 2"),
        (neither, "defines neither main() (a mu job file) nor add_arguments() and make_job()"),
        (unported, "imports coordinator.libmu instead of libmu"),
    ]
    for path, message in cases:
        proc = run([sys.executable, "-m", "coordinator", "run", str(path)])
        assert proc.returncode == 2, (path, proc.stderr)
        assert message in proc.stderr, proc.stderr


def test_a_program_the_workers_lack_is_warned_about_even_when_the_states_accept_it(tmp_path):
    """mu's linpack_server.py takes any reply starting with OK after its run:, so a benchmark
    the workers do not have (exit status 127) passes as in mu; the summary says so."""
    timing = tmp_path / "timing.json"
    proc = run([sys.executable, str(JOBS / "any_reply_job.py"), "-n", "3", "-t", "0", "--s3-endpoint",
                "http://127.0.0.1:9", "--log-dir", str(tmp_path / "logs"), "-O", str(timing)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "all 3 workers finished" in proc.stdout
    assert (
        "warning: ./no_such_benchmark was not found (run: exit status 127) on 3 actors (0-2); put a "
        "static Linux build in binaries/bin (Lambda workers: before 'make deploy') or in a folder named "
        "by MU_BIN_DIR"
    ) in proc.stdout
    log = json.loads(timing.read_text())
    assert log["commands_not_run"] == [{"status": 127, "program": "./no_such_benchmark", "actors": [0, 1, 2]}]
