"""The ``mu`` command line: ``mu run JOB ...``, ``mu genkeys DIR``, ``mu demo``."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from coordinator import import_mu
from coordinator.aws import options as aws_options
from coordinator.aws.discover import DiscoveryError, task_metadata_uri, task_public_address
from coordinator.aws.session import AwsError
from coordinator.core import tls
from coordinator.core.job import Job
from coordinator.core.logsink import default_s3_url
from coordinator.core.machine import Debug
from coordinator.core.relay import Relay
from coordinator.core.runner import Interrupted, interruptible, new_job_id, run_job
from coordinator.core.server import JobResult, ServerOptions
from coordinator.core.status import Status
from coordinator.jobs import JobFileError, job_modules, load_job_file
from coordinator.jobs import map as map_job
from coordinator.launch import Launcher, LaunchError
from coordinator.launch.local import LocalLauncher
from coordinator.launch.sandbox import NoSandbox
from coordinator.preflight import JobIO, PreflightError, run_checks
from coordinator.preflight.checks import check_credentials, check_outputs
from coordinator.preflight.plan import dial_plan, plan_text
from coordinator.report import command as report_command
from coordinator.report.cost import (
    DEFAULT_WORKER_ARCH,
    DEFAULT_WORKER_MEMORY_MB,
    WORKER_ARCHITECTURES,
    PriceError,
    load_prices,
)
from coordinator.report.streams import Guarded, silence
from coordinator.report.summary import run_summary

BACKENDS = ("local", "aws")  # --backend; the first is the default when $MU_BACKEND is unset
DEFAULT_PORT = 13579
MAX_PORT = 65535


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


def _one_of(names: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(names)}, got {text!r}")
        return str(text)

    return parse


class EnvDefault(str):
    """An option's default taken from an environment variable. argparse parses a string
    default with the option's own type, and only when the option is not given, so a bad
    value costs nothing until it is used; ``from_env`` then names the variable."""

    variable = ""


def env_default(variable: str, fallback: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        return fallback
    default = EnvDefault(value)
    default.variable = variable
    return default


def from_env(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """``kind`` as an option's type, whose refusal of an ``EnvDefault`` names the variable."""

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except (argparse.ArgumentTypeError, ValueError):
            if isinstance(text, EnvDefault):
                raise argparse.ArgumentTypeError(
                    f"{text.variable} must be {what}, got {str(text)!r}; correct or unset it"
                ) from None
            raise

    return parse


def port_number(least: int = 0) -> Callable[[str], int]:
    """An argparse type: a TCP port from ``least`` (0: any free port) to 65535."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
        if not least <= value <= MAX_PORT:
            free = " (0: any free port)" if least == 0 else ""
            raise argparse.ArgumentTypeError(f"a port is {least} to {MAX_PORT}{free}, got {value}")
        return value

    return parse


def check_backend(args: argparse.Namespace) -> None:
    """``--backend`` defaults to ``$MU_BACKEND``, which argparse does not hold to the choices:
    a bad value there is one line and exit status 2, before anything else is checked."""
    backend = getattr(args, "backend", BACKENDS[0])
    if backend not in BACKENDS:
        print(f"mu: MU_BACKEND={backend!r} is not a backend: set it to local or aws, or unset it "
              "(--backend local|aws overrides it)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)


def add_server_arguments(p: argparse.ArgumentParser, relay: bool = False) -> None:
    """The options every job takes; ``relay`` adds those of jobs that run a relay."""
    g = p.add_argument_group("coordinator")
    g.add_argument("--dry-run", action="store_true",
                   help="check the inputs, print the plan and its cost estimate, launch nothing")  # fmt: skip
    g.add_argument("--backend", choices=BACKENDS, default=os.environ.get("MU_BACKEND") or BACKENDS[0],
                   help="where workers run ($MU_BACKEND, else local)")  # fmt: skip
    g.add_argument("-t", "--port", type=from_env(port_number(0), "a port number, 0 to 65535"),
                   default=env_default("MU_PORT", str(DEFAULT_PORT)),
                   help=f"port to listen on; 0 picks a free one ($MU_PORT, else {DEFAULT_PORT})")  # fmt: skip
    g.add_argument("--host", default=None, help="address to listen on (127.0.0.1 local, 0.0.0.0 aws)")
    g.add_argument("--advertise", default=None, help="address workers dial (default: the listen address)")
    g.add_argument("-m", "--kill-time", type=_positive(float), default=None,
                   help="seconds a worker may run after connecting before it fails (none)")  # fmt: skip
    g.add_argument("--connect-timeout", type=from_env(_positive(float), "a number of seconds above 0"),
                   default=env_default("MU_CONNECT_TIMEOUT", "300"),
                   help="seconds an actor may wait for a worker to connect "
                        "($MU_CONNECT_TIMEOUT, else 300)")  # fmt: skip
    g.add_argument("--hello-timeout", type=_positive(float), default=30.0,
                   help="seconds a new connection has to finish TLS and say hello (30)")  # fmt: skip
    g.add_argument(
        "-O",
        "--timing-log",
        default=None,
        help="write the timing log (JSON) here, for 'mu report' (a warning says if it cannot)",
    )
    g.add_argument(
        "--timing-s3",
        default=None,
        metavar="s3://BUCKET/KEY",
        help="upload the timing log there too (in a Fargate task: s3://BUCKET/mu-logs/JOB_ID/...)",
    )
    g.add_argument("--job-id", default=None, type=_job_id, help="names the job's keys and logs (JOB-random)")
    g.add_argument("--max-workers", type=_positive(int), default=1000,
                   help="refuse a job that needs more workers than this at once (1000)")  # fmt: skip
    g.add_argument("-P", "--cprofile", default=None, metavar="FILE",
                   help="write cProfile data of the coordinator here (mu's -P)")  # fmt: skip
    g.add_argument("-D", "--debug", action="store_true", help="print every reply the state machines handle")
    g.add_argument("--keys", default=None, help="folder from 'mu genkeys' (default: fresh keys for this job)")
    g.add_argument("-c", "--ca-cert", default=os.environ.get("CA_CERT"),
                   help="your CA certificate; workers check the coordinator with it ($CA_CERT)")  # fmt: skip
    g.add_argument("-s", "--server-cert", default=os.environ.get("SRV_CERT"),
                   help="your server certificate, shown to workers ($SRV_CERT)")  # fmt: skip
    g.add_argument("-k", "--server-key", default=os.environ.get("SRV_KEY"),
                   help="its key; it never leaves this machine ($SRV_KEY)")  # fmt: skip
    g.add_argument("--region", default=None,
                   help="the bucket's region (AWS_REGION, AWS_DEFAULT_REGION, the profile's)")  # fmt: skip
    g.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL_S3"), metavar="URL",
                   help="S3 endpoint, e.g. http://127.0.0.1:5000 ($AWS_ENDPOINT_URL_S3)")  # fmt: skip
    g.add_argument("--prices", default=None, metavar="FILE",
                   help="JSON object overriding prices of the cost estimate ($MU_PRICES)")  # fmt: skip
    g.add_argument("--spares", type=int, default=0, help="extra workers; the first N to connect work (0)")
    g.add_argument("--retries", type=int, default=0, help="replacement workers per actor that fails (0)")
    g.add_argument("--speculate", type=float, default=0.0,
                   help="once this %% of actors is done, duplicate the stragglers (0: off)")  # fmt: skip
    g.add_argument("--deadline", type=_positive(float), default=None, help="seconds for the whole job (none)")
    if relay:
        g.add_argument("--relay-port", type=port_number(0), default=None,
                       help="port of the job's relay; 0 picks a free one (PORT+1)")  # fmt: skip
    g.add_argument("--log-dir", default=None,
                   help="local backend: keep worker logs in this folder, made if its parent exists "
                        "(default: a temporary one, kept only if an actor failed)")  # fmt: skip
    g.add_argument(
        "--concurrency", type=_positive(int), default=64, help="local backend: processes at once (64)"
    )
    g.add_argument("--no-sandbox", action="store_true",
                   help="local backend: run workers unisolated, without bubblewrap (README)")  # fmt: skip
    g.add_argument("--worker-memory", type=from_env(_positive(int), "a whole number of MB above 0"),
                   default=env_default("MU_WORKER_MEMORY", str(DEFAULT_WORKER_MEMORY_MB)), metavar="MB",
                   help=f"aws backend: the worker function's memory, for the cost estimate "
                        f"($MU_WORKER_MEMORY, else {DEFAULT_WORKER_MEMORY_MB})")  # fmt: skip
    arches = " or ".join(WORKER_ARCHITECTURES)
    g.add_argument("--worker-arch", type=from_env(_one_of(WORKER_ARCHITECTURES), arches),
                   default=env_default("MU_WORKER_ARCH", DEFAULT_WORKER_ARCH), metavar="ARCH",
                   help=f"aws backend: the worker function's CPU, {arches}, for the cost estimate "
                        f"($MU_WORKER_ARCH, else {DEFAULT_WORKER_ARCH})")  # fmt: skip
    aws_options.add_arguments(p, _positive(int), _positive(float))


class MuParser(argparse.ArgumentParser):
    """The parser of ``mu`` and its subcommands: a JOB that is not a bundled job's name says
    how job files and ``mu map`` are given instead of only listing the names."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.dest == "job" and action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(
                action,
                f"no bundled job {value!r} (bundled: {', '.join(action.choices)}); a job file is given as "
                "its path, e.g. 'mu run ./JOB.py', and mapping a command over S3 objects is 'mu map'",
            )
        super()._check_value(action, value)


def build_parser() -> argparse.ArgumentParser:
    parser = MuParser(
        prog="mu", description="Run parallel jobs on AWS Lambda workers driven over mutual TLS."
    )
    parser.add_argument("--version", action="version", version=f"mu {version()}")
    sub = parser.add_subparsers(
        dest="subcommand", required=True, metavar="{run,map,pymap,report,submit,relay,genkeys,demo}",
        parser_class=MuParser,
    )  # fmt: skip
    run = sub.add_parser(
        "run", help="run a job",
        description="Run a bundled job (JOB below; 'mu run JOB --help' for its options), or a job file: "
        "'mu run ./JOB.py FLAGS' runs a mu job file's own main(), or a module with add_arguments() and "
        "make_job() as a bundled job.",
    )  # fmt: skip
    jobs = run.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, module in job_modules().items():
        doc = (module.__doc__ or "").strip().replace("``", "")
        jp = jobs.add_parser(name, help=doc.splitlines()[0], description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        module.add_arguments(jp)
        add_server_arguments(jp, relay=getattr(module, "RELAY", False))
    mp = sub.add_parser(
        "map", help="run a bundled command over S3 objects, K objects per worker",
        description=map_job.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    map_job.add_arguments(mp)
    add_server_arguments(mp)
    pymap_cli = import_mu("cli")
    pp = sub.add_parser(
        "pymap", help="call a Python function once per item of a JSON-lines file, on the workers",
        description=pymap_cli.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    pymap_cli.add_arguments(pp)
    add_server_arguments(pp)
    rl = sub.add_parser(
        "relay", help="run the worker-to-worker relay on its own",
        description="The relay through which workers pass data to each other (a worker says "
        "HELLO_STATE:PREFIX:MYID:PARTNERID, then every message goes to its partner, held until the "
        "partner connects), run on its own instead of inside a job's coordinator. Workers connect with "
        "mutual TLS, so it needs the keys of the jobs it serves: a 'mu genkeys' folder, given to those "
        "jobs as --keys too.",
    )  # fmt: skip
    rl.add_argument("--keys", required=True, help="folder from 'mu genkeys' shared with the job")
    rl.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    rl.add_argument("--port", type=port_number(0), default=13580,
                    help="port to listen on; 0 picks a free one (13580)")  # fmt: skip
    rl.add_argument("--hold-seconds", type=_positive(float), default=600.0,
                    help="how long a message waits for its recipient (600)")  # fmt: skip
    rl.add_argument("--max-held-mb", type=_positive(int), default=256, help="bytes held in all, MiB (256)")
    rl.add_argument("--hello-timeout", type=_positive(float), default=30.0,
                    help="seconds a new connection has to finish TLS and say HELLO_STATE (30)")  # fmt: skip
    rl.add_argument("--max-pending", type=_positive(int), default=4096,
                    help="connections allowed before HELLO_STATE at once; more are cut (4096)")  # fmt: skip
    rl.add_argument("--stall-timeout", type=_positive(float), default=60.0,
                    help="seconds a peer may take nothing before it is disconnected (60)")  # fmt: skip
    rp = sub.add_parser("report", help="summarise a timing log: time per state, launch latency, "
                        "stragglers, failures, cost; --png draws the timeline",
                        description="Summarise the timing log of a run ('mu run ... -O FILE', or the one "
                        "'mu demo' keeps): workers per state and their p50/p95/max time in it, launch-to-"
                        "connect latency, stragglers, failures with their reasons, what was written and, "
                        "for the aws backend, the cost; --png and --html draw the timeline.")  # fmt: skip
    report_command.add_arguments(rp)
    gk = sub.add_parser(
        "genkeys", help="write long-lived CA, coordinator and worker keys to a folder",
        description="Write a CA and the coordinator's and workers' certificates and keys it signed (mu's "
        "genkeys.sh), for 'mu run --keys DIR' and 'mu relay --keys DIR'; without them each job makes "
        "fresh keys of its own. The private keys are readable by you alone.",
    )  # fmt: skip
    gk.add_argument(
        "dir", metavar="DIR",
        help="the folder to write ca_cert.pem, server_cert.pem, server_key.pem, worker_cert.pem and "
        "worker_key.pem into, made if need be; key files there are never overwritten",
    )  # fmt: skip
    gk.add_argument("--days", type=_positive(int), default=365, help="validity in days (365)")
    sub.add_parser(
        "submit", help="run a job's coordinator as a Fargate task (see 'mu submit -h')", add_help=False
    )
    sub.add_parser(
        "demo", help="run png2y4m locally against an embedded S3 (see 'mu demo -h')", add_help=False
    )
    return parser


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, whose usage errors name it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def deepest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the innermost subcommand ``args`` chose (``mu run png2y4m``'s for
    ``mu run png2y4m ...``), or ``parser`` itself if it has none."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, action.dest, None) if action is not None else None
        if action is None or chosen not in action.choices:
            return parser
        parser = action.choices[chosen]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that arguments no parser took are a usage error of
    the subcommand given, with its usage (argparse reports them on the top parser, whose usage
    says nothing about the options of ``mu run png2y4m``)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        deepest(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def validate_command(command: list[str]) -> None:
    """Parse and check ``run JOB ...`` or ``map ...`` as ``mu`` would, with no network call (for
    ``mu submit``, before a task is paid for); a usage error exits with status 2.

    A mu job file parses its own flags in ``main()``, which also starts the job, so only its
    loading is checked here; ``map`` lists its input only when it runs, so only the form of
    its options is checked.
    """
    if command[:1] == ["run"] and len(command) > 1 and is_job_file(command[1]):
        try:
            module = load_job_file(command[1])
        except JobFileError as exc:
            print(f"mu run: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        if hasattr(module, "add_arguments") and hasattr(module, "make_job"):
            file_parser = job_file_parser(command[1], module)
            file_args = parse(file_parser, command[2:])
            check_backend(file_args)
            try:
                aws_options.check(file_args)
                check_workers(file_args, module.make_job(file_args))
            except ValueError as exc:
                file_parser.error(str(exc))
        return
    parser = build_parser()
    args = parse(parser, command)
    check_backend(args)
    if args.subcommand == "map":
        try:
            aws_options.check(args)
            map_job.check_arguments(args)
        except ValueError as exc:
            subparser(parser, "map").error(str(exc))
        return
    try:
        aws_options.check(args)
        check_workers(args, job_modules()[args.job].make_job(args))
    except ValueError as exc:
        subparser(subparser(parser, "run"), args.job).error(str(exc))


def _job_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"up to 64 letters, digits, '.', '_' or '-', got {text!r}")
    return text


def check_workers(args: argparse.Namespace, job: Job) -> None:
    """--max-workers: a typo in --chunk or --workers must not start thousands of Lambdas."""
    total = job.workers + args.spares
    if total > args.max_workers:
        raise ValueError(
            f"this job needs {total} workers at once, more than --max-workers {args.max_workers}; "
            "raise --max-workers, or give each worker more work (e.g. a larger --chunk or --frames)"
        )


def make_launcher(args: argparse.Namespace, status: Status, workers: int) -> Launcher:
    if args.backend == "aws":
        return aws_options.make_launcher(args, workers, status)
    if args.no_sandbox:
        status.event("--no-sandbox: local workers share this machine's /tmp and files, unisolated")
    return LocalLauncher(args.log_dir, args.concurrency, isolation=NoSandbox() if args.no_sandbox else None)


def job_keys(parser: argparse.ArgumentParser, args: argparse.Namespace, job_id: str) -> tls.JobKeys:
    """The coordinator's keys: the user's certificates (-c/-s/-k), a ``mu genkeys`` folder, or
    fresh ones for this job. Unusable files are a usage error, before any worker starts."""
    certs = (args.ca_cert, args.server_cert, args.server_key)
    if any(certs):
        if not all(certs):
            parser.error("give all of -c CA_CERT, -s SRV_CERT and -k SRV_KEY (or the same environment "
                         "variables), or none of them for fresh per-job keys")  # fmt: skip
        if args.keys:
            parser.error("--keys and -c/-s/-k (or CA_CERT, SRV_CERT, SRV_KEY) both name the coordinator's "
                         "keys; give one of them")  # fmt: skip
        try:
            return tls.user_keys(*certs, label=job_id)
        except tls.CertificateError as exc:
            parser.error(str(exc))
    if args.keys:
        try:
            return tls.read_keys(args.keys)
        except FileNotFoundError as exc:
            parser.error(str(exc))
    return tls.make_job_keys(label=job_id)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("mu")
    except PackageNotFoundError:
        return "(not installed)"


def _error(exc: Exception) -> int:
    """A run-time error: one line, exit status 1 (2 for configuration to change; usage errors
    are argparse's, also 2)."""
    print(f"mu: {exc}", file=sys.stderr)
    return int(getattr(exc, "status", 1))


def execute(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    make_job: Callable[..., Job],
    job_io: Callable[[Job], JobIO] | None = None,
    port_flags: tuple[str, str] = ("--port", "--relay-port"),
) -> tuple[int, JobResult | None]:
    """Build the job from ``args`` and run it; returns the exit status and the result.
    SIGINT and SIGTERM end it in order with status 130 and 143 (README: Stopping a job).
    ``port_flags`` name the options of the coordinator's and the relay's port in messages."""
    try:
        with interruptible():
            return _execute(parser, args, make_job, job_io, port_flags)
    except Interrupted as exc:
        print(f"mu: {exc}", file=sys.stderr)
        return 128 + exc.signal, None


def _execute(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    make_job: Callable[..., Job],
    job_io: Callable[[Job], JobIO] | None,
    port_flags: tuple[str, str],
) -> tuple[int, JobResult | None]:
    """``execute``'s body: pre-flight checks, then the run. ``job_io`` says what the job reads
    and writes, for the input checks."""
    started = time.monotonic()
    try:
        check_outputs(args)
        aws_options.prepare(args)  # before any AWS call, make_job's included
        job = make_job(args)
        check_workers(args, job)
    except ValueError as exc:
        parser.error(str(exc))
    except AwsError as exc:
        print(f"mu: {exc}", file=sys.stderr)
        return exc.status, None
    except PreflightError as exc:
        return _error(exc), None
    relay_port = getattr(args, "relay_port", None)  # only jobs that run a relay take --relay-port
    if relay_port is None:
        relay_port = args.port + 1 if args.port else 0
        if job.relay and relay_port > MAX_PORT:
            parser.error(f"--port {args.port} leaves no port for the job's relay (PORT+1): "
                         "give --relay-port, or a lower --port")  # fmt: skip
    if args.spares < 0 or args.retries < 0:
        parser.error(f"--spares and --retries must be >= 0, got {args.spares} and {args.retries}")
    if not 0 <= args.speculate < 100:
        parser.error(f"--speculate is a percentage from 0 (off) to below 100, got {args.speculate:g}")
    if args.debug:
        Debug.enabled = True
    io = job_io(job) if job_io is not None else None
    if io is not None and job.actor_label is None:
        job.actor_label = io.label
    launched = job.workers + args.spares
    try:
        prices = load_prices(args.prices)
        if io is not None or args.backend == "aws":
            check_credentials(args.s3_endpoint)
    except (PreflightError, PriceError) as exc:
        return _error(exc), None
    job_id = args.job_id or new_job_id(job.name)
    host = args.host or ("127.0.0.1" if args.backend == "local" else "0.0.0.0")
    # Workers dial the task's public address, found at launch; a dry run only says so.
    discover = args.backend == "aws" and not args.advertise and host in ("0.0.0.0", "::")
    if discover and not args.dry_run:
        try:
            task_metadata_uri()  # outside a task, no address can be found: say so before any AWS call
        except DiscoveryError as exc:
            print(f"mu: {exc}", file=sys.stderr)
            return 2, None
    status = Status(job.name, job.workers)
    keys = job_keys(parser, args, job_id)
    # Settings that need no network are checked before the S3 checks.
    try:
        launcher = make_launcher(args, status, launched)
    except LaunchError as exc:
        status.close()
        print(f"mu: {exc}", file=sys.stderr)
        return 2, None
    advertise = args.advertise
    if discover and not args.dry_run:
        try:
            advertise = task_public_address()
        except DiscoveryError as exc:
            status.close()
            print(f"mu: {exc}", file=sys.stderr)
            return 2, None
        status.event(f"advertising {advertise} (found from the task's network interface)")
    try:
        found = run_checks(
            io, region=args.region, endpoint=args.s3_endpoint, backend=args.backend,
            workers_at_once=launched if args.backend == "aws" else min(launched, args.concurrency),
        )  # fmt: skip
    except PreflightError as exc:
        status.close()
        return _error(exc), None
    for warning in found.warnings:
        status.event(f"warning: {warning}")
    if args.dry_run:
        dial, trouble = dial_plan(args.backend, host, args.advertise, args.port)
        if trouble:
            status.event(f"warning: {trouble}")
        status.close()
        print(plan_text(job=job.name, workers=job.workers, spares=args.spares, backend=args.backend,
                        concurrency=args.concurrency, io=io, memory_mb=args.worker_memory,
                        arch=args.worker_arch, prices=prices, found=found, dial=dial,
                        lambda_regions=getattr(launcher, "regions", ()),
                        lambda_unchecked=getattr(launcher, "unchecked_regions", ())))  # fmt: skip
        return 0, None
    options = ServerOptions(
        host=host, port=args.port, kill_time=args.kill_time, connect_timeout=args.connect_timeout,
        timing_log=args.timing_log, timing_s3=args.timing_s3 or default_s3_url(job.bucket, job_id),
        spares=args.spares, relay_port=relay_port, retries=args.retries,
        speculate=args.speculate, deadline=args.deadline, hello_timeout=args.hello_timeout,
        port_flag=port_flags[0], relay_port_flag=port_flags[1],
    )  # fmt: skip
    worker_logs = worker_log_place(args, launcher)
    options.meta = {
        "job_id": job_id, "backend": args.backend, "spares": args.spares, "worker_logs": worker_logs,
        "lambda_memory_mb": args.worker_memory, "lambda_arch": args.worker_arch,
        "s3_list": found.list_requests,
        "before_listening": time.monotonic() - started,
        "prices": prices if (args.prices or os.environ.get("MU_PRICES")) else None,
    }  # fmt: skip
    profiler = cProfile.Profile() if args.cprofile else None
    result = None
    try:
        if profiler is not None:
            profiler.enable()
        result = asyncio.run(
            run_job(job, launcher, keys, options, status, advertise, job_id, handle_signals=True)
        )
    except (OSError, ValueError) as exc:
        status.close()
        return _error(exc), None
    finally:
        if profiler is not None:
            profiler.disable()
            try:
                profiler.dump_stats(args.cprofile)
            except OSError as exc:
                print(f"mu: cannot write profile data to {args.cprofile}: {exc.strerror}", file=sys.stderr)
        kept = None
        if isinstance(launcher, LocalLauncher):
            kept = launcher.settle_logs(keep=result is None or bool(result.failures))
    out = Guarded(sys.stdout if result.ok else sys.stderr)  # a reader gone (| head): said to no one
    report = result.describe()
    if report:
        print(report, file=out)
    if isinstance(launcher, LocalLauncher):
        worker_logs = str(kept) if kept is not None else None
    wanted = bool(options.timing_log or options.timing_s3)
    summary = run_summary(result.timing, timing_logs=result.timing_places, timing_wanted=wanted,
                          worker_logs=worker_logs, s3_endpoint=args.s3_endpoint, prices=prices)  # fmt: skip
    print("\n".join(summary), file=out)
    if result.interrupted is not None:
        return 128 + result.interrupted, result
    return (0 if result.ok else 1), result


def cmd_run(parser: argparse.ArgumentParser, args: argparse.Namespace, module: Any) -> int:
    """A job module (bundled, or ``mu run ./JOB.py``): ``make_job``, and ``job_io`` if it has one."""
    return execute(parser, args, module.make_job, getattr(module, "job_io", None))[0]


def is_job_file(name: str) -> bool:
    """``mu run ./job.py``: a path, not the name of a bundled job."""
    return name.endswith(".py") or os.sep in name


def job_file_parser(path: str, module: ModuleType) -> argparse.ArgumentParser:
    """The options of a job module written for this project: its own, then the coordinator's."""
    doc = (module.__doc__ or "").strip()
    parser = argparse.ArgumentParser(prog=f"mu run {path}", description=doc.splitlines()[0] if doc else None)
    module.add_arguments(parser)
    add_server_arguments(parser, relay=getattr(module, "RELAY", False))
    return parser


def cmd_run_file(path: str, argv: list[str]) -> int:
    """``mu run ./JOB.py FLAGS``: a mu job file runs its own ``main()`` as ``python JOB.py FLAGS``
    would; a module with ``add_arguments``/``make_job`` runs like a bundled job."""
    try:
        module = load_job_file(path)
    except JobFileError as exc:
        print(f"mu run: {exc}", file=sys.stderr)
        return 2
    if hasattr(module, "add_arguments") and hasattr(module, "make_job"):
        parser = job_file_parser(path, module)
        args = parse(parser, argv)
        check_backend(args)
        return cmd_run(parser, args, module)
    saved = sys.argv
    sys.argv = [path, *argv]
    try:
        module.main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


def worker_log_place(args: argparse.Namespace, launcher: Launcher) -> str | None:
    """Where the worker logs go, as far as is known before the job runs (local logs in a
    temporary folder are kept only if an actor fails)."""
    if isinstance(launcher, LocalLauncher):
        return args.log_dir
    functions = ", ".join(aws_options.names(args.function)) or "the worker function"
    return f"CloudWatch Logs of {functions} (the stack's worker log group)"


def cmd_relay(args: argparse.Namespace) -> int:
    """``mu relay``: the relay alone, for jobs whose coordinator runs elsewhere."""
    try:
        keys = tls.read_keys(args.keys)
    except FileNotFoundError as exc:
        print(f"mu relay: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        relay = Relay(
            tls.server_context(keys),
            hold_seconds=args.hold_seconds,
            max_held_bytes=args.max_held_mb << 20,
            hello_timeout=args.hello_timeout,
            max_pending=args.max_pending,
            stall_seconds=args.stall_timeout,
        )

        try:
            port = await relay.start(args.host, args.port)
        except OSError as exc:
            raise OSError(f"{exc}; pick another port with --port") from exc
        print(f"mu relay: listening on {args.host}:{port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"mu relay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_genkeys(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """A DIR that cannot take the keys (not a folder, not writable, holding keys already) is a
    usage error naming it."""
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        parser.error(f"{args.dir} exists and is not a folder; give a folder for the keys")
    keys = tls.make_job_keys(validity=dt.timedelta(days=args.days), label="long-lived")
    try:
        paths = tls.write_keys(keys, args.dir)
    except FileExistsError as exc:
        parser.error(str(exc))
    except OSError as exc:
        where = exc.filename or args.dir
        parser.error(f"cannot write the keys to {where}: {exc.strerror or exc}; give a folder you can write")
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # output not written through Guarded met a reader that had gone
        silence(sys.stdout)
        silence(sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if argv[:1] == ["demo"]:
        from coordinator.local.demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["submit"]:
        from coordinator.aws.submit import main as submit_main

        return submit_main(argv[1:], validate_command)
    if argv[:1] == ["run"] and len(argv) > 1 and is_job_file(argv[1]):
        return cmd_run_file(argv[1], argv[2:])
    parser = build_parser()
    args = parse(parser, argv)
    check_backend(args)
    if args.subcommand == "genkeys":
        return cmd_genkeys(subparser(parser, "genkeys"), args)
    if args.subcommand == "relay":
        return cmd_relay(args)
    if args.subcommand == "report":
        return report_command.run(subparser(parser, "report"), args)
    if args.subcommand == "map":
        return cmd_run(subparser(parser, "map"), args, map_job)
    if args.subcommand == "pymap":
        pp = subparser(parser, "pymap")
        return int(import_mu("cli").run(pp, args, lambda job_id: job_keys(pp, args, job_id)))
    return cmd_run(subparser(subparser(parser, "run"), args.job), args, job_modules()[args.job])


if __name__ == "__main__":
    sys.exit(main())
