"""mu.map on Lambda workers: the launcher, and which Python the worker function runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.aws.session import new_session, resolve_region
from coordinator.core.status import Status
from coordinator.launch import LaunchError
from coordinator.launch.aws_lambda import LambdaLauncher

if TYPE_CHECKING:
    from .executor import Options


def settle_region(opts: Options) -> str:
    """The bucket's region (and the workers', unless ``regions``): given, or the standard chain's."""
    if opts.region is None:
        opts.region = resolve_region(new_session(), None)
    return opts.region


def _launcher(opts: Options, status: Status | None) -> LambdaLauncher:
    return LambdaLauncher(
        opts.function,
        opts.regions or [settle_region(opts)],
        endpoint_url=opts.lambda_endpoint,
        max_inflight=opts.max_inflight,
        deadline=opts.launch_deadline,
        status=status,
    )


def lambda_launcher(opts: Options, status: Status, workers: int) -> LambdaLauncher:
    """The Lambda launcher for ``workers`` at once, refused (LaunchError) if they cannot all run."""
    launcher = _launcher(opts, status)
    launcher.check_capacity(workers)
    return launcher


def worker_runtime(opts: Options) -> tuple[str, int | None, str | None]:
    """The worker function's Python version (``3.12``), memory (MB) and architecture
    (``x86_64`` or ``arm64``), read from Lambda before anything is launched, so that a function
    is pickled for the Python that will load it and the cost estimate prices what runs."""
    config = _launcher(opts, None).configuration()
    runtime, memory = config.get("Runtime"), config.get("MemorySize")
    if not isinstance(runtime, str) or not runtime.startswith("python"):
        raise LaunchError(
            f"cannot tell which Python the worker function {opts.function[0]} runs (its runtime: "
            f"{runtime or 'unreadable'}); pass python='3.12' (mu pymap --python 3.12), the version "
            "the stack deployed (-c python=...)"
        )
    arches = config.get("Architectures")
    arch = arches[0] if isinstance(arches, list) and arches and isinstance(arches[0], str) else None
    return runtime.removeprefix("python"), memory if isinstance(memory, int) else None, arch
