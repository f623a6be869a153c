"""The Lambda layer of third-party packages that mu.map's functions import (``-c requirements=FILE``).

Built on this machine, without Docker: pip downloads the wheels built for the workers' platform
and Python (``--platform manylinux2014_x86_64 --python-version X.Y --only-binary=:all:``,
``manylinux2014_aarch64`` for arm64 workers) and installs them into the layer's ``python/``
folder, which Lambda puts on the workers' import path. A package that has no such wheel stops
synth with pip's reason: a source build here would make code for this machine, not Lambda's.
Every installed wheel's tags and every shared library's ELF header are checked against the
target before the layer is used.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .bundling import BundlingError
from .elf import NotElfError, read

PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
PIP_TIMEOUT = 600  # seconds for pip to fetch and install everything


def pip_command(requirements: Path, python: str, arch: str, target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--target",
        str(target),
        "--platform",
        PLATFORMS[arch],
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--requirement",
        str(requirements),
    ]


def install(requirements: Path, python: str, arch: str, out: Path) -> Path:
    """Install ``requirements`` for Lambda's ``python`` on ``arch`` into ``out/python``; returns it."""
    target = out / "python"
    target.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            pip_command(requirements, python, arch, target),
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise BundlingError(
            f"pip took over {PIP_TIMEOUT} s to install {requirements}; is PyPI reachable?"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise BundlingError(
            f"cannot build the packages layer from {requirements} for Python {python} on {arch}: "
            f"pip says:\n{tail}\nEvery package needs a wheel for {PLATFORMS[arch]} and Python {python} on "
            "PyPI (no source builds); pin a version that has one, or deploy with another -c python=..."
        )
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    problems = check_layer(target, python, arch)
    if problems:
        raise BundlingError(
            f"the packages layer from {requirements} holds files Lambda cannot use: " + "; ".join(problems)
        )
    return target


def wheel_tags(site: Path) -> dict[str, list[str]]:
    """Each installed distribution's wheel tags (``cp312-cp312-manylinux_2_17_x86_64``, ...)."""
    tags: dict[str, list[str]] = {}
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        headers = HeaderParser().parsestr(wheel.read_text(encoding="utf-8", errors="replace"))
        tags[wheel.parent.name] = list(headers.get_all("Tag") or [])
    return tags


def tag_fits(tag: str, python: str, arch: str) -> bool:
    """Whether a wheel tag (``python-abi-platform``) runs on Lambda's ``python`` on ``arch``."""
    interpreter, abi, platform = tag.split("-")
    if platform == "any":
        return True
    nodot = python.replace(".", "")
    pythons_ok = interpreter in (f"cp{nodot}", "py3", f"py{nodot}") or (
        abi == "abi3" and interpreter.startswith("cp3")
    )
    abi_ok = abi in (f"cp{nodot}", "abi3", "none")
    platform_ok = platform.endswith("_" + MACHINES[arch]) and (
        "manylinux" in platform or platform.startswith("linux")
    )
    return pythons_ok and abi_ok and platform_ok


def check_layer(site: Path, python: str, arch: str) -> list[str]:
    """What in an installed layer would not run on Lambda: foreign wheels, foreign binaries."""
    problems = [
        f"{dist} was built for {', '.join(tags)}"
        for dist, tags in wheel_tags(site).items()
        if not any(tag_fits(tag, python, arch) for tag in tags)
    ]
    for lib in sorted(site.rglob("*.so*")):
        if lib.is_file() and not lib.is_symlink():
            try:
                machine = read(lib).machine
            except NotElfError as exc:
                machine = str(exc)
            if machine != arch:
                problems.append(f"{lib.relative_to(site)} is not an {arch} Linux library ({machine})")
    return problems


@jsii.implements(ILocalBundling)
class LayerBundle:
    def __init__(self, requirements: Path, python: str, arch: str) -> None:
        self.requirements = requirements
        self.python = python
        self.arch = arch

    def try_bundle(self, output_dir: str, *args: Any, **options: Any) -> bool:
        install(self.requirements, self.python, self.arch, Path(output_dir))
        return True


class Packages(Construct):
    """One layer version holding the packages of ``requirements`` for the workers' Python and CPU."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        requirements: Path,
        runtime: lambda_.Runtime,
        python: str,
        arch: str,
        architecture: lambda_.Architecture,
    ) -> None:
        super().__init__(scope, construct_id)
        # Named by what goes in, so a synth with the same file, Python and CPU reuses the build.
        digest = hashlib.sha256(
            requirements.read_bytes() + f"|{python}|{PLATFORMS[arch]}".encode()
        ).hexdigest()
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(
                str(requirements.parent),
                asset_hash_type=AssetHashType.CUSTOM,
                asset_hash=digest,
                bundling=BundlingOptions(
                    image=DockerImage.from_registry("local-bundling-only"),  # never used: bundled locally
                    local=LayerBundle(requirements, python, arch),
                ),
            ),
            compatible_runtimes=[runtime],
            compatible_architectures=[architecture],
            description=f"mu workers: the packages of {requirements.name} for Python {python} on {arch}",
        )
