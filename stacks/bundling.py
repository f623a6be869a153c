"""Local bundling of the worker Lambda: the handler package plus the static binaries.

Bundled on this machine (never in Docker): the zip holds ``lambda_worker/`` and ``bin/``.
Synth stops with a clear message when a binary is missing, dynamically linked, or built for
another CPU than the function's (checked from its ELF headers by ``stacks.elf``, so synth works
on macOS as well as Linux).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

from .elf import problem

ROOT = Path(__file__).resolve().parent.parent
HANDLER_PACKAGE = ROOT / "lambda_worker"
BINARIES = {"x86_64": ROOT / "binaries" / "bin", "arm64": ROOT / "binaries" / "bin-arm64"}
REQUIRED_BINARIES = ("png2y4m",)


class BundlingError(RuntimeError):
    pass


def check_binaries(folder: Path = BINARIES["x86_64"], arch: str = "x86_64") -> list[Path]:
    """Every file in ``folder``, once each is known to be a static Linux program for ``arch``."""
    missing = [name for name in REQUIRED_BINARIES if not (folder / name).is_file()]
    if missing:
        raise BundlingError(
            f"{', '.join(missing)} missing from {folder}; build the static tools with "
            f"'make binaries-{arch}' first"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file())
    problems = [why for why in (problem(p, arch) for p in files) if why]
    if problems:
        raise BundlingError(
            f"cannot bundle {folder}: {'; '.join(problems)}. Build the tools with 'make binaries-{arch}' "
            "on x86-64 Linux (it links them with -static), or point -c binaries=DIR at such a build"
        )
    return files


@jsii.implements(ILocalBundling)
class WorkerBundle:
    """Copies the handler package and the checked binaries into the asset directory."""

    def __init__(self, arch: str, folder: Path) -> None:
        self.arch = arch
        self.folder = folder

    def try_bundle(self, output_dir: str, *args: Any, **options: Any) -> bool:
        out = Path(output_dir)
        binaries = check_binaries(self.folder, self.arch)
        shutil.copytree(
            HANDLER_PACKAGE, out / "lambda_worker", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (out / "bin").mkdir(exist_ok=True)
        for binary in binaries:
            shutil.copy2(binary, out / "bin" / binary.name)
        return True


def binaries_folder(setting: str | None, arch: str) -> Path:
    """``-c binaries=DIR`` (relative to the checkout), else ``binaries/bin`` or ``binaries/bin-arm64``."""
    return (ROOT / setting).resolve() if setting else BINARIES[arch]


def bundling_options(arch: str, folder: Path) -> BundlingOptions:
    # The image is required by the API but never used: local bundling always succeeds or raises.
    local = WorkerBundle(arch, folder)
    return BundlingOptions(image=DockerImage.from_registry("local-bundling-only"), local=local)
