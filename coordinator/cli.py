"""The ``mu`` command line: ``mu run JOB ...``, ``mu genkeys DIR``, ``mu demo``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from . import tls
from .discover import DiscoveryError, task_public_address
from .jobs import job_modules
from .launcher import LambdaLauncher, Launcher, LaunchError, LocalLauncher
from .runner import new_job_id, run_job
from .server import ServerOptions
from .status import Status


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("coordinator")
    g.add_argument("--backend", choices=("local", "aws"), default="local", help="where workers run (local)")
    port = int(os.environ.get("MU_PORT", "13579"))
    g.add_argument("-t", "--port", type=int, default=port, help=f"port to listen on; 0 picks one ({port})")
    g.add_argument("--host", default=None, help="address to listen on (127.0.0.1 local, 0.0.0.0 aws)")
    g.add_argument("--advertise", default=None, help="address workers dial (default: the listen address)")
    g.add_argument("-m", "--kill-time", type=_positive(float), default=300.0,
                   help="seconds to wait for one reply before failing the worker (300)")  # fmt: skip
    g.add_argument("--connect-timeout", type=_positive(float), default=300.0,
                   help="seconds to wait for all workers to connect (300)")  # fmt: skip
    g.add_argument("-O", "--timing-log", default=None, help="write per-worker state timings as JSON here")
    g.add_argument("--keys", default=None, help="folder from 'mu genkeys' (default: fresh keys for this job)")
    g.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"), help="AWS region")
    g.add_argument(
        "--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL_S3"), help="S3 endpoint override"
    )
    g.add_argument("--spares", type=int, default=0, help="extra workers; the first N to connect work (0)")
    g.add_argument("--log-dir", default=None, help="local backend: folder for worker logs (a temp dir)")
    g.add_argument(
        "--concurrency", type=_positive(int), default=64, help="local backend: processes at once (64)"
    )
    a = p.add_argument_group("aws backend")
    a.add_argument(
        "--function",
        default=os.environ.get("MU_FUNCTION", ""),
        help="worker function name(s), comma-separated ($MU_FUNCTION)",
    )
    a.add_argument("--regions", default=None, help="regions to invoke in, comma-separated (--region)")
    a.add_argument(
        "--max-inflight", type=_positive(int), default=256, help="invocations in flight at once (256)"
    )
    a.add_argument(
        "--launch-deadline",
        type=_positive(float),
        default=120.0,
        help="seconds to keep retrying throttled invocations (120)",
    )
    a.add_argument(
        "--lambda-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_LAMBDA"),
        help="Lambda endpoint override ($AWS_ENDPOINT_URL_LAMBDA)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mu", description="Run parallel jobs on AWS Lambda workers driven over mutual TLS."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,submit,genkeys,demo}")
    run = sub.add_parser("run", help="run a job")
    jobs = run.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, module in job_modules().items():
        jp = jobs.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(jp)
        add_server_arguments(jp)
    gk = sub.add_parser("genkeys", help="write long-lived CA, coordinator and worker keys to a folder")
    gk.add_argument("dir")
    gk.add_argument("--days", type=_positive(int), default=365, help="validity in days (365)")
    sub.add_parser(
        "submit", help="run a job's coordinator as a Fargate task (see 'mu submit -h')", add_help=False
    )
    sub.add_parser(
        "demo", help="run png2y4m locally against an embedded S3 (see 'mu demo -h')", add_help=False
    )
    return parser


def validate_run(command: list[str]) -> None:
    """Parse and check ``run JOB ...`` as ``mu run`` would; a usage error exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(command)
    try:
        job_modules()[args.job].make_job(args)
    except ValueError as exc:
        parser.error(str(exc))


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def make_launcher(args: argparse.Namespace, job_id: str, status: Status) -> Launcher:
    if args.backend == "aws":
        return LambdaLauncher(
            _names(args.function),
            _names(args.regions or args.region),
            endpoint_url=args.lambda_endpoint,
            max_inflight=args.max_inflight,
            deadline=args.launch_deadline,
            status=status,
        )
    log_dir = args.log_dir or tempfile.mkdtemp(prefix=f"mu-{job_id}-")
    return LocalLauncher(log_dir, concurrency=args.concurrency)


def cmd_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    module = job_modules()[args.job]
    try:
        job = module.make_job(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.spares < 0:
        parser.error(f"--spares must be >= 0, got {args.spares}")
    job_id = new_job_id(job.name)
    status = Status(job.name, job.workers)
    try:
        launcher = make_launcher(args, job_id, status)
        keys = tls.read_keys(args.keys) if args.keys else tls.make_job_keys(label=job_id)
    except (LaunchError, FileNotFoundError) as exc:
        print(f"mu: {exc}", file=sys.stderr)
        return 2
    host = args.host or ("127.0.0.1" if args.backend == "local" else "0.0.0.0")
    advertise = args.advertise
    if args.backend == "aws" and not advertise and host in ("0.0.0.0", "::"):
        try:
            advertise = task_public_address()
        except DiscoveryError as exc:
            print(f"mu: {exc}", file=sys.stderr)
            return 2
        status.event(f"advertising {advertise} (found from the task's network interface)")
    options = ServerOptions(
        host=host, port=args.port, kill_time=args.kill_time,
        connect_timeout=args.connect_timeout, timing_log=args.timing_log, spares=args.spares,
    )  # fmt: skip
    try:
        result = asyncio.run(run_job(job, launcher, keys, options, status, advertise, job_id))
    except (OSError, ValueError) as exc:
        print(f"mu: {exc}", file=sys.stderr)
        return 1
    print(result.describe(), file=sys.stderr if not result.ok else sys.stdout)
    return 0 if result.ok else 1


def cmd_genkeys(args: argparse.Namespace) -> int:
    keys = tls.make_job_keys(validity=dt.timedelta(days=args.days), label="long-lived")
    try:
        paths = tls.write_keys(keys, args.dir)
    except (FileExistsError, OSError) as exc:
        print(f"mu genkeys: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["submit"]:
        from .submit import main as submit_main

        return submit_main(argv[1:], validate_run)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "genkeys":
        return cmd_genkeys(args)
    return cmd_run(parser, args)


if __name__ == "__main__":
    sys.exit(main())
