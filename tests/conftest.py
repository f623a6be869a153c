from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from coordinator.core.tls import JobKeys, make_job_keys
from coordinator.local.locals3 import FAKE_CREDENTIALS, LocalS3

ROOT = Path(__file__).resolve().parent.parent
PNG2Y4M = ROOT / "binaries" / "bin" / "png2y4m"

for _k, _v in FAKE_CREDENTIALS.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "1")

# CI runs the same examples every time, so a failure is reproducible and never a coin toss;
# a long randomised search is one environment variable away.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """One moto server on 127.0.0.1 for the whole run; tests use their own buckets."""
    with LocalS3() as server:
        yield server


@pytest.fixture(scope="session")
def keys() -> JobKeys:
    return make_job_keys()


@pytest.fixture(scope="session")
def png2y4m() -> Path:
    if not PNG2Y4M.exists():
        subprocess.run(["make", "-C", str(ROOT / "binaries")], check=True)
    return PNG2Y4M


def python() -> str:
    return sys.executable
