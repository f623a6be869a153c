"""``mu pymap MODULE:FUNCTION --items FILE.jsonl``: mu.map from the command line.

Each line of the items file is one JSON value: a list is the call's positional arguments, an
object its keyword arguments, anything else its one argument. The results are written as JSON
lines in item order (``{"item": 0, "result": ...}`` or ``{"item": 3, "error": {...}}``) as soon
as each, and every item before it, is done; the exit status is 1 if any call failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "")
NOT_FOR_PYMAP = {  # options of every job that mean nothing here, and what to use instead
    "kill_time": ("-m/--kill-time", "--timeout limits each call"),
    "debug": ("-D/--debug", "the workers' logs (--log-dir) show each call"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pymap")
    g.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="the function to call: a module importable from here (pkg.mod:fn) or a file (tasks.py:fn)",
    )
    g.add_argument(
        "--items", required=True, metavar="FILE.jsonl", help="one JSON value per call ('-': stdin)"
    )
    g.add_argument("-n", "--workers", type=int, default=4, help="workers to run the calls on (4)")
    g.add_argument("--timeout", type=float, default=None, help="seconds each call may run (none)")
    g.add_argument(
        "--memory",
        type=int,
        default=None,
        metavar="MB",
        help="resident memory per call, MiB (Lambda: the function's share; local: 2048)",
    )
    g.add_argument("--slots", type=int, default=1, help="calls at once on each worker (1)")
    g.add_argument("--window", type=int, default=None, help="calls in flight per worker (2 x slots)")
    g.add_argument(
        "-b",
        "--bucket",
        default=None,
        help="the job's bucket: arguments and results over --inline-limit go through it",
    )
    g.add_argument(
        "--inline-limit",
        type=int,
        default=None,
        metavar="BYTES",
        help="larger payloads go through the bucket (4194304)",
    )
    g.add_argument(
        "--python",
        default=None,
        metavar="X.Y",
        help="the workers' Python (this one locally; the function's runtime on AWS)",
    )
    g.add_argument(
        "-o", "--output", default=None, metavar="FILE.jsonl", help="write the results here (stdout)"
    )
    g.add_argument(
        "--no-star", action="store_true", help="pass each item as the one argument, even a list or an object"
    )


def load_function(spec: str) -> Callable[..., Any]:
    """``pkg.mod:fn`` (importable from the current folder) or ``path/to/file.py:fn``."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(
            f"name the function as MODULE:FUNCTION (tasks:square, tasks.py:square), got {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if target.endswith(".py"):
        target = module_of_file(target)
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise ValueError(f"cannot import {target}: {exc}") from exc
    fn: Any = module
    for part in name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"{target} has no {name}")
    if not callable(fn):
        raise ValueError(f"{target}:{name} is a {type(fn).__name__}, not a function")
    return fn


def module_of_file(path: str) -> str:
    """The dotted name of a ``.py`` file, its import root put on ``sys.path``: the folders above
    it that are packages (hold ``__init__.py``) are part of the name, so relative imports work."""
    if not os.path.isfile(path):
        raise ValueError(f"no file {path}")
    folder, filename = os.path.split(os.path.abspath(path))
    parts = [filename[:-3]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, package = os.path.split(folder)
        parts.insert(0, package)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return ".".join(parts)


def read_items(path: str) -> list[Any]:
    """Every line's JSON value (blank lines skipped); a bad line names itself."""
    try:
        f: TextIO = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ValueError(f"cannot read --items {path}: {exc.strerror}") from exc
    items = []
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"--items {path} line {number} is not JSON: {exc.msg} (column {exc.colno})"
                ) from exc
            items.append(tuple(value) if isinstance(value, list) else value)
    return items


def executor_options(args: argparse.Namespace, keys: Any) -> dict[str, Any]:
    from coordinator.aws.options import names

    return {
        "timeout": args.timeout,
        "memory": args.memory,
        "retries": args.retries,
        "speculate": args.speculate,
        "connect_timeout": args.connect_timeout,
        "slots": args.slots,
        "window": args.window,
        "bucket": args.bucket,
        "region": args.region,
        "s3_endpoint": args.s3_endpoint,
        "python": args.python,
        "function": names(args.function),
        "regions": names(args.regions),
        "lambda_endpoint": args.lambda_endpoint,
        "advertise": args.advertise,
        "host": args.host,
        "port": args.port,
        "sandbox": not args.no_sandbox,
        "log_dir": args.log_dir,
        "concurrency": args.concurrency,
        "timing_log": args.timing_log,
        "timing_s3": args.timing_s3,
        "progress": True,
        "job_id": args.job_id,
        "deadline": args.deadline,
        "hello_timeout": args.hello_timeout,
        "spares": args.spares,
        "max_inflight": args.max_inflight,
        "launch_deadline": args.launch_deadline,
        "keys": keys,
        **({"inline_limit": args.inline_limit} if args.inline_limit is not None else {}),
    }


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, keys_for: Callable[[str], Any]) -> int:
    """The command; ``keys_for(job_id)`` gives the coordinator's keys (the CLI's -c/-s/-k, --keys)."""
    import mu
    from coordinator.aws import options as aws_options
    from coordinator.aws.session import AwsError
    from coordinator.core.runner import Interrupted, interruptible
    from coordinator.launch import LaunchError
    from coordinator.preflight.checks import check_outputs, check_writable

    from .executor import ignoring_interrupts

    for dest, (flag, instead) in NOT_FOR_PYMAP.items():
        if getattr(args, dest, None):
            parser.error(f"{flag} does not apply to mu pymap: {instead}")
    if args.workers + args.spares > args.max_workers:
        parser.error(
            f"{args.workers + args.spares} workers at once is more than --max-workers {args.max_workers}"
        )
    try:
        check_outputs(args)
        if args.output:
            check_writable(args.output, "-o")  # the results are written as the calls end
        aws_options.prepare(args)
        fn = load_function(args.target)
        items = read_items(args.items)
        args.job_id = args.job_id or f"pymap-{os.urandom(6).hex()}"
        ex = mu.Executor(args.workers, args.backend, **executor_options(args, keys_for(args.job_id)))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    except AwsError as exc:
        print(f"mu pymap: {exc}", file=sys.stderr)
        return exc.status
    started = time.monotonic()
    stopped_by: signal.Signals | None = None
    try:
        if args.dry_run:
            ex._prepare(fn)  # the version check and the function's package, launching nothing
            where = (
                "local processes" if args.backend == "local" else f"Lambda ({', '.join(ex.options.function)})"
            )
            print(f"would run {len(items)} calls of {args.target} on {args.workers} workers: {where}")
            return 0
        with interruptible():  # SIGINT, SIGTERM: stopped as mu run stops
            futures = ex.map(fn, items, star=not args.no_star)
            failed = write_results(futures, args.output)
    except Interrupted as exc:
        stopped_by = exc.signal
    except KeyboardInterrupt:  # between the handler's removal and the end of the try
        stopped_by = signal.SIGINT
    except mu.VersionMismatchError as exc:
        print(f"mu pymap: {exc}", file=sys.stderr)
        return 2
    except (LaunchError, OSError) as exc:
        print(f"mu pymap: {exc}", file=sys.stderr)
        return 1
    finally:
        with ignoring_interrupts():  # a second Ctrl-C changes nothing
            if stopped_by is not None:
                ex._interrupt(stopped_by)  # the server says "interrupted: X done, Y running, ..."
            else:
                ex.shutdown(wait=False, cancel_futures=True)
    if stopped_by is not None:
        summary(ex, None, 0, time.monotonic() - started, args)
        return 128 + stopped_by
    summary(ex, len(items), failed, time.monotonic() - started, args)
    return 1 if failed else 0


def write_results(futures: list[Any], output: str | None) -> int:
    """The results as JSON lines in item order, each written once it and those before it are
    done; returns how many calls failed."""
    out: TextIO = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    failed = 0
    try:
        for item, future in enumerate(futures):
            exc = future.exception()
            if exc is None:
                line: dict[str, Any] = {"item": item, "result": future.result()}
            else:
                failed += 1
                line = {"item": item, "error": {"type": type(exc).__name__, "message": str(exc)}}
            out.write(json.dumps(line, default=repr) + "\n")
            out.flush()
    finally:
        if output:
            out.close()
    return failed


def summary(ex: Any, calls: int | None, failed: int, elapsed: float, args: argparse.Namespace) -> None:
    """The end of the run: the calls (``None`` when interrupted: the server's line said it),
    then the timing log and the worker logs, as ``mu run`` ends."""
    from coordinator.report.summary import run_summary

    if calls is not None:
        rate = f", {calls / elapsed:.0f} calls/s" if elapsed > 0 and calls else ""
        print(
            f"{calls} calls: {calls - failed} returned, {failed} failed in {elapsed:.2f} s{rate}",
            file=sys.stderr,
        )
    lines = run_summary(
        ex.timing,
        timing_logs=getattr(ex.result, "timing_places", []),
        timing_wanted=bool(args.timing_log or args.timing_s3),
        worker_logs=ex.worker_logs,
        s3_endpoint=args.s3_endpoint,
    )
    print("\n".join(line for line in lines if not line.startswith("wrote no objects")), file=sys.stderr)
