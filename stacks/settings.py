"""What a user may set with ``-c key=value`` (or in cdk.json), checked at synth.

A value CloudFormation or Lambda would reject (``-c port=65535``, ``-c memory=20000``) stops
synth here with the allowed range, instead of failing minutes into a deployment.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constructs import Node


class SettingsError(ValueError):
    """A context value is missing its form or out of range; the message says which and why."""


# name: (default, lowest, highest, why the range)
NUMBERS: dict[str, tuple[int | None, int, int, str]] = {
    "memory": (3008, 128, 10240, "Lambda memory in MB"),
    "timeout": (900, 1, 900, "Lambda timeout in seconds"),
    "ephemeral": (2048, 512, 10240, "Lambda /tmp size in MB"),
    "copies": (1, 1, 100, "identical worker functions per region"),
    "port": (13579, 1024, 65534, "coordinator port; the relay uses port+1"),
    # Checked against the account only at deploy time: Lambda keeps 100 of a region's limit
    # unreserved, so copies x N, with other functions' reservations, must leave it 100.
    "reserved": (
        None,
        1,
        100_000,
        "reserved concurrency of each worker function; all functions of a region "
        "together may reserve at most the account's limit less 100",
    ),
    "connect_timeout": (300, 60, 21600, "seconds a worker may take to connect; Lambda's maximum event age"),
}
ARCHITECTURES = ("x86_64", "arm64")  # the worker functions' CPU; the tools must match
# Lambda's Python runtimes the worker runs on (it needs 3.11's asyncio and TimeoutError).
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
ROOT = Path(__file__).resolve().parent.parent
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"  # the Python running cdk
STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,29}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


@dataclass(frozen=True)
class Settings:
    stack_name: str = "MuStack"
    memory: int = 3008
    timeout: int = 900
    ephemeral: int = 2048
    copies: int = 1
    port: int = 13579
    reserved: int | None = None
    connect_timeout: int = 300
    arch: str = "x86_64"
    # Empty: one environment-agnostic stack in the deploying credentials' region. Otherwise the
    # first region holds the bucket and the coordinator, and every region gets worker functions.
    regions: tuple[str, ...] = ()
    binaries: str | None = None  # folder of the static tools; default binaries/bin (bin-arm64)
    # The workers' Python: mu.map's functions pickle by value only into the same minor version,
    # so by default the one running cdk (and so, usually, the code that calls mu.map).
    python: str = HERE if HERE in PYTHONS else "3.12"
    requirements: Path | None = None  # third-party packages for mu.map's functions: a layer

    @classmethod
    def from_context(cls, node: Node) -> Settings:
        values: dict[str, Any] = {name: _number(node, name, *spec) for name, spec in NUMBERS.items()}
        stack_name = str(node.try_get_context("stack_name") or "MuStack")
        if not STACK_NAME.fullmatch(stack_name):
            raise SettingsError(
                f"context 'stack_name' must be a letter then up to 29 letters, digits or hyphens "
                f"(it names the bucket and the functions), got {stack_name!r}"
            )
        arch = str(node.try_get_context("arch") or "x86_64")
        if arch not in ARCHITECTURES:
            raise SettingsError(f"context 'arch' must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        binaries = node.try_get_context("binaries")
        return cls(
            stack_name=stack_name, arch=arch, regions=_regions(node.try_get_context("regions")),
            binaries=str(binaries) if binaries else None, python=_python(node.try_get_context("python")),
            requirements=_requirements(node.try_get_context("requirements")), **values,
        )  # fmt: skip

    @property
    def home_region(self) -> str | None:
        return self.regions[0] if self.regions else None

    def function_names(self) -> list[str]:
        """The same fixed names in every region, so one --function list serves all of them."""
        return [f"{self.stack_name}-worker-{i}" for i in range(self.copies)]


def _number(node: Node, name: str, default: int | None, low: int, high: int, what: str) -> int | None:
    raw = node.try_get_context(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise SettingsError(f"context '{name}' must be a whole number ({what}), got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(
            f"context '{name}' must be between {low} and {high} ({what}), got {value}: -c {name}=N"
        )
    return value


def _python(raw: Any) -> str:
    if raw is None or raw == "":
        if HERE not in PYTHONS:
            raise SettingsError(
                f"the workers run the Python that runs cdk ({HERE}) unless -c python=X.Y says otherwise, "
                f"and Lambda's runtimes for them are {', '.join(PYTHONS)}: pass -c python=3.12"
            )
        return HERE
    text = str(raw).removeprefix("python")
    if text not in PYTHONS:
        raise SettingsError(
            f"context 'python' must be one of {', '.join(PYTHONS)} (the workers' runtime), got {raw!r}"
        )
    return text


def _requirements(raw: Any) -> Path | None:
    if raw is None or raw == "":
        return None
    path = (ROOT / str(raw)).resolve()
    if not path.is_file():
        raise SettingsError(
            f"context 'requirements' names {raw!r}, which is not a file (a pip requirements file, relative "
            "to the checkout)"
        )
    return path


def _regions(raw: Any) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    names = [r.strip() for r in (raw if isinstance(raw, list) else str(raw).split(","))]
    bad = [r for r in names if not REGION.fullmatch(r)]
    if bad or not names:
        raise SettingsError(
            f"context 'regions' must be region names separated by commas (e.g. us-east-1,us-west-2), "
            f"got {raw!r}"
        )
    if len(set(names)) != len(names):
        raise SettingsError(f"context 'regions' names a region twice: {raw!r}")
    return tuple(names)
