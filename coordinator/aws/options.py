"""The options of ``mu run`` / ``mu map`` that reach AWS, checked before any AWS call is made.

Region and profile come from the standard chain (see ``aws.session``); the Lambda targets,
the timing log's S3 destination and the launcher's capacity check live here so the command
line stays one place that only wires them up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from coordinator.aws.session import AwsError, new_session, resolve_region, use_profile
from coordinator.core.logsink import parse_s3_url
from coordinator.core.status import Status
from coordinator.launch.aws_lambda import LambdaLauncher

DEFAULT_REGION_LOCAL = "us-east-1"  # only names the bucket's region for local runs, where nothing checks it


def names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def add_arguments(
    p: argparse.ArgumentParser, count: Callable[[str], Any], seconds: Callable[[str], Any]
) -> None:
    """The ``aws backend`` group; ``count`` and ``seconds`` parse numbers above zero."""
    a = p.add_argument_group("aws backend")
    a.add_argument(
        "--function",
        default=os.environ.get("MU_FUNCTION", ""),
        help="worker function name(s), comma-separated ($MU_FUNCTION; mu submit fills it from the stack)",
    )
    a.add_argument(
        "--regions", default=None, help="regions to invoke in, comma-separated (default: the --region)"
    )
    a.add_argument("--profile", default=None, help="AWS profile to use, as AWS_PROFILE (the standard chain)")
    a.add_argument("--max-inflight", type=count, default=256, help="invocations in flight at once (256)")
    a.add_argument(
        "--launch-deadline",
        type=seconds,
        default=120.0,
        help="seconds to keep retrying throttled invocations (120)",
    )
    a.add_argument(
        "--lambda-endpoint",
        default=None,
        help="Lambda endpoint override (botocore's endpoint for each region; AWS_ENDPOINT_URL_LAMBDA)",
    )


def check(args: argparse.Namespace) -> None:
    """The AWS-bound options' form alone (no environment, no network); ValueError if wrong."""
    if getattr(args, "timing_s3", None):
        parse_s3_url(args.timing_s3)
    if args.backend == "aws" and not names(args.function):
        raise ValueError("name at least one worker function with --function NAME[,NAME...]")


def prepare(args: argparse.Namespace) -> None:
    """:func:`check`, then settle profile and region from the standard chain, touching no endpoint.

    Raises ValueError for a usage error (exit 2 through the parser) and AwsError for
    configuration that must change (no region for the aws backend, an unknown profile).
    """
    check(args)
    use_profile(args.profile)
    if args.backend == "aws":
        args.region = resolve_region(new_session(), args.region)
        return
    try:
        args.region = resolve_region(new_session(), args.region)
    except AwsError:
        args.region = DEFAULT_REGION_LOCAL


def make_launcher(args: argparse.Namespace, workers: int, status: Status) -> LambdaLauncher:
    """The Lambda launcher for ``workers`` at once, refused (LaunchError) if they cannot all run."""
    launcher = LambdaLauncher(
        names(args.function),
        names(args.regions) or [args.region],
        endpoint_url=args.lambda_endpoint,
        max_inflight=args.max_inflight,
        deadline=args.launch_deadline,
        status=status,
    )
    launcher.check_capacity(workers)
    return launcher
