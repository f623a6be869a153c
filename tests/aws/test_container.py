"""The coordinator as the image runs it: as uid 10001, where a timing log can and cannot be written.

The Dockerfile cannot be built here, so the image's entry point (``mu``, i.e. ``python -m
coordinator``) runs as its non-root user against the system Python (the build's own lives
under /root), once in a read-only working directory (the image's old root-owned /opt/mu) and
once in the user's own home (the image's WORKDIR /home/mu) as a Fargate task would: with task
metadata in the environment, so the timing log goes to S3 by default. Workers come from the
fake Lambda endpoint, as real worker processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from coordinator.core.logsink import deliver, parse_s3_url
from coordinator.core.tls import make_job_keys
from tests.conftest import ROOT
from tests.fake_lambda import CREDS, FakeLambda

JOB_USER = 10001  # USER in the Dockerfile
SYSTEM_PYTHON = Path("/usr/bin/python3")


def system_python() -> str:
    """A Python 3.11+ that the job user may run (pyenv's lives in root's home)."""
    if os.geteuid() != 0:
        pytest.skip("becoming the image's user (uid 10001) needs root")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run as uid {JOB_USER}")
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    if version != "True":
        pytest.skip(f"{SYSTEM_PYTHON} is older than 3.11")
    return str(SYSTEM_PYTHON)


@pytest.fixture
def shared(tmp_path):
    """A folder the job user can reach (pytest's own tmp folders are root's alone), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="mu-container-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def frames_bucket(s3, name):
    from coordinator.local.demo import encode_png, frame_rgb, to_uint16

    client = s3.client()
    client.create_bucket(Bucket=name)
    client.put_object(
        Bucket=name, Key="v-png16/00000001.png", Body=encode_png(to_uint16(frame_rgb(1, 16, 8)))
    )
    return client


def run_as_job_user(s3, shared, cwd, *args, env=None):
    """``mu run png2y4m`` (one worker, one frame) as uid 10001 in ``cwd``; workers from a fake Lambda."""
    python = system_python()
    keys = make_job_keys(hosts=("127.0.0.1",))
    bundle = shared / "ca.pem"
    bundle.write_text(keys.ca_cert)
    bundle.chmod(0o644)
    site = sysconfig.get_paths()["purelib"]  # this build's packages, readable by everyone

    async def scenario():
        async with FakeLambda(keys, run_workers=True) as fake:
            full = {
                "PATH": os.environ["PATH"], "PYTHONPATH": f"{ROOT}:{site}", "HOME": str(cwd),
                "TMPDIR": str(shared / "tmp"), "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key, "AWS_SESSION_TOKEN": CREDS.token,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": str(bundle),
                "AWS_ENDPOINT_URL_S3": s3.endpoint, **(env or {}),
            }  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                python, "-m", "coordinator", "run", "png2y4m", "-n", "1", "-f", "1", "-v", "v",
                "--backend", "aws", "--function", "mu-worker-0", "--lambda-endpoint", fake.url,
                "--advertise", "127.0.0.1", "--host", "127.0.0.1", "-t", "0", "--connect-timeout", "60",
                *args,
                cwd=cwd, env=full, user=JOB_USER, group=JOB_USER, extra_groups=[],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode()

    return asyncio.run(scenario())


def test_in_a_read_only_directory_the_log_lands_in_tmpdir_and_the_job_still_succeeds(s3, shared):
    frames_bucket(s3, "container-ro")
    readonly = shared / "opt-mu"  # root's, as /opt/mu is in the image
    readonly.mkdir(mode=0o555)
    (shared / "tmp").mkdir(mode=0o1777)
    (shared / "tmp").chmod(0o1777)
    # -O into a folder that cannot take it is refused before anything is launched.
    code, out, err = run_as_job_user(s3, shared, readonly, "-b", "container-ro", "-O", "timing.json")
    assert code == 2 and "-O timing.json: the folder" in err
    assert "cannot be written (permission denied)" in err
    assert "listening on" not in err and not any((shared / "tmp").iterdir())
    # A destination that fails only at the end (a missing bucket): the log lands in TMPDIR.
    code, out, err = run_as_job_user(
        s3, shared, readonly, "-b", "container-ro", "--timing-s3", "s3://no-such-bucket/t.json"
    )
    assert code == 0, err  # the job succeeded; where its log could not go changes nothing
    assert "all 1 workers finished" in out
    assert "mu: warning: uploading the timing log to s3://no-such-bucket/t.json: NoSuchBucket" in err
    (fallback,) = (shared / "tmp").glob("mu-timing-*.json")
    assert f"mu: warning: the timing log is in {fallback} instead" in err
    assert f"timing log: {fallback} (see 'mu report {fallback} --png timeline.png')" in out
    assert fallback.stat().st_uid == JOB_USER
    log = json.loads(fallback.read_text())
    assert log["job"] == "png2y4m" and len(log["records"]) == 1
    assert not (readonly / "timing.json").exists()


def test_in_its_home_as_a_fargate_task_the_log_goes_to_its_file_and_to_s3(s3, shared):
    client = frames_bucket(s3, "container-home")
    home = shared / "home-mu"  # the image's WORKDIR, created for the user by useradd --create-home
    home.mkdir()
    os.chown(home, JOB_USER, JOB_USER)
    (shared / "tmp").mkdir(mode=0o1777)
    (shared / "tmp").chmod(0o1777)
    code, out, err = run_as_job_user(
        s3, shared, home, "-b", "container-home", "-O", "timing.json", "--job-id", "png2y4m-in-task",
        env={"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/test"},
    )  # fmt: skip
    assert code == 0, err
    assert "all 1 workers finished" in out
    key = "mu-logs/png2y4m-in-task/timing.json"
    assert f"timing log: timing.json, s3://container-home/{key} (see 'mu report timing.json" in out
    assert "timing log" not in err  # said once, in the summary
    local = (home / "timing.json").read_bytes()
    assert client.get_object(Bucket="container-home", Key=key)["Body"].read() == local
    assert json.loads(local)["job"] == "png2y4m" and len(json.loads(local)["records"]) == 1
    assert list((shared / "tmp").iterdir()) == []  # nothing fell back


def test_deliver_writes_every_destination_and_never_raises(s3, tmp_path, capsys):
    client = s3.client()
    client.create_bucket(Bucket="logsink")
    lines: list[str] = []
    doc = {"job": "x", "records": []}
    where = deliver(doc, str(tmp_path / "t.json"), "s3://logsink/a/t.json", s3.client, lines.append)
    assert where == [str(tmp_path / "t.json"), "s3://logsink/a/t.json"]
    assert json.loads(client.get_object(Bucket="logsink", Key="a/t.json")["Body"].read()) == doc
    assert lines == []  # success is the run summary's to say, once
    lines.clear()
    where = deliver(doc, str(tmp_path / "no" / "dir" / "t.json"), None, None, lines.append)
    assert lines[0] == f"warning: cannot write the timing log to {tmp_path / 'no' / 'dir' / 't.json'}: " + (
        "No such file or directory"
    )
    assert (
        lines[1].startswith("warning: the timing log is in ")
        and json.loads(Path(where[0]).read_text()) == doc
    )
    Path(where[0]).unlink()
    assert parse_s3_url("s3://b/k/x.json") == ("b", "k/x.json")
    for bad in ("s3://b/", "s3://b", "https://b/k", "b/k"):
        with pytest.raises(ValueError, match="--timing-s3 must look like s3://BUCKET/KEY"):
            parse_s3_url(bad)
