"""Local bundling of the worker Lambda: the handler package plus the static binaries.

Bundled on this machine (never in Docker): the zip holds ``lambda_worker/`` and ``bin/``.
Synth stops with a clear message when a binary is missing or dynamically linked, because
Lambda's runtime does not promise the build machine's shared libraries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

ROOT = Path(__file__).resolve().parent.parent
HANDLER_PACKAGE = ROOT / "lambda_worker"
BINARIES = ROOT / "binaries" / "bin"
REQUIRED_BINARIES = ("png2y4m",)


class BundlingError(RuntimeError):
    pass


def is_static(path: Path) -> bool:
    """No program interpreter and no needed shared libraries, per readelf."""
    headers = subprocess.run(["readelf", "-l", str(path)], capture_output=True, text=True)
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True)
    if headers.returncode != 0:
        raise BundlingError(f"{path} is not an ELF executable: {headers.stderr.strip()}")
    return "INTERP" not in headers.stdout and "NEEDED" not in dynamic.stdout


def check_binaries(folder: Path = BINARIES) -> list[Path]:
    missing = [name for name in REQUIRED_BINARIES if not (folder / name).is_file()]
    if missing:
        raise BundlingError(
            f"{', '.join(missing)} missing from {folder}; "
            "build the static tools with 'make -C binaries' first"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file())
    dynamic = [p.name for p in files if not is_static(p)]
    if dynamic:
        raise BundlingError(
            f"{', '.join(dynamic)} in {folder} is dynamically linked; Lambda needs static binaries "
            "(rebuild with 'make -C binaries', which links with -static)"
        )
    return files


@jsii.implements(ILocalBundling)
class WorkerBundle:
    """Copies the handler package and the checked binaries into the asset directory."""

    def try_bundle(self, output_dir: str, *args: Any, **options: Any) -> bool:
        out = Path(output_dir)
        binaries = check_binaries()
        shutil.copytree(
            HANDLER_PACKAGE, out / "lambda_worker", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (out / "bin").mkdir(exist_ok=True)
        for binary in binaries:
            shutil.copy2(binary, out / "bin" / binary.name)
        return True


def bundling_options() -> BundlingOptions:
    # The image is required by the API but never used: local bundling always succeeds or raises.
    return BundlingOptions(image=DockerImage.from_registry("local-bundling-only"), local=WorkerBundle())
