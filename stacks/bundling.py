"""Local bundling of the worker Lambda: the handler package plus the static binaries.

Bundled on this machine (never in Docker): the zip holds ``lambda_worker/``, ``bin/`` and
``cloudpickle/``. The worker itself needs only the standard library and boto3 (which Lambda's
runtime has); cloudpickle is what mu.map's pickled functions name when the worker loads them,
so the version ``pyproject.toml`` pins is copied in from this environment's installation.
Synth stops with a clear message when a binary is missing, dynamically linked, or built for
another CPU than the function's (checked from its ELF headers by ``stacks.elf``, so synth works
on macOS as well as Linux).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tomllib
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


def pinned_version(package: str) -> str:
    """The version ``pyproject.toml`` pins ``package`` to (``package==X`` in its dependencies)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(package)}==([^\s;]+)", dep.strip())
        if m:
            return m.group(1)
    raise BundlingError(f"pyproject.toml pins no version of {package}")


def cloudpickle_files() -> list[tuple[Path, str]]:
    """(installed file, name in the bundle) of the pinned cloudpickle: its modules and licence."""
    pinned = pinned_version("cloudpickle")
    try:
        dist = importlib.metadata.distribution("cloudpickle")
    except importlib.metadata.PackageNotFoundError:
        raise BundlingError(f"cloudpickle is not installed here; the workers need cloudpickle=={pinned}: "
                            "run 'make venv'") from None  # fmt: skip
    if dist.version != pinned:
        raise BundlingError(f"cloudpickle {dist.version} is installed here, but pyproject.toml pins {pinned} "
                            "for the workers: run 'make venv'")  # fmt: skip
    out = []
    for file in dist.files or []:
        name = str(file)
        if name.startswith("cloudpickle/") and name.endswith(".py"):
            out.append((Path(str(dist.locate_file(file))), name))
        elif Path(name).name in ("LICENSE", "LICENSE.txt", "LICENSE.rst"):
            out.append((Path(str(dist.locate_file(file))), "cloudpickle/LICENSE"))
    if not any(name == "cloudpickle/__init__.py" for _, name in out):
        raise BundlingError("the installed cloudpickle lists no cloudpickle/__init__.py: make venv")
    return out


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
        for source, name in cloudpickle_files():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / name)
        return True


def binaries_folder(setting: str | None, arch: str) -> Path:
    """``-c binaries=DIR`` (relative to the checkout), else ``binaries/bin`` or ``binaries/bin-arm64``."""
    return (ROOT / setting).resolve() if setting else BINARIES[arch]


def bundling_options(arch: str, folder: Path) -> BundlingOptions:
    # The image is required by the API but never used: local bundling always succeeds or raises.
    local = WorkerBundle(arch, folder)
    return BundlingOptions(image=DockerImage.from_registry("local-bundling-only"), local=local)
