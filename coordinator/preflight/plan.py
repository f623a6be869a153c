"""The plan ``--dry-run`` prints: workers, where they dial, inputs, outputs, what it would cost,
and what was checked.

A dry run makes the read-only calls a real run makes before it launches (credentials, one
listing of the inputs, Lambda's concurrency settings) and nothing that belongs to running the
job: no port is opened, no address is discovered, nothing is invoked.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.aws.discover import DiscoveryError, task_metadata_uri
from coordinator.core.logsink import in_ecs_task
from coordinator.preflight.checks import Preflight
from coordinator.preflight.io import JobIO
from coordinator.report.cost import (
    DEFAULT_TASK_GB,
    DEFAULT_TASK_VCPU,
    dollars,
    per_worker_minute,
    task_per_hour,
)

SHOWN_ACTORS = 3


def plan_text(
    *,
    job: str,
    workers: int,
    spares: int,
    backend: str,
    concurrency: int,
    io: JobIO | None,
    memory_mb: int,
    arch: str,
    prices: dict[str, float],
    found: Preflight,
    dial: str,
    lambda_regions: Sequence[str] = (),
    lambda_unchecked: Sequence[str] = (),
) -> str:
    """``lambda_regions``: the aws backend's regions; ``lambda_unchecked``: those whose Lambda
    settings could not be read (a warning said why), which the plan must not call checked."""
    lines = [f"mu {job}: dry run, nothing launched"]
    extra = f" and {spares} spares" if spares else ""
    if backend == "local":
        at_once = min(workers + spares, concurrency)
        lines.append(f"  workers: {workers}{extra}, local processes, at most {at_once} at once")
    else:
        lines.append(f"  workers: {workers}{extra}, Lambda invocations at {memory_mb} MB ({arch})")
    lines.append(f"  workers dial: {dial}")
    if io is not None:
        pages = found.list_requests
        checked = "listed by the job" if io.listed else f"all present; checked with {pages} LIST request(s)"
        lines.append(
            f"  reads:   {io.input_keys} objects from s3://{io.in_bucket}/{io.in_prefix} ({checked})"
        )
        lines.append(f"  writes:  {io.output_keys} objects to s3://{io.out_bucket}/{io.out_prefix}")
        shown = list(range(min(SHOWN_ACTORS, workers)))
        if workers > SHOWN_ACTORS:
            shown.append(workers - 1)
        for actor in shown:
            if actor == workers - 1 and workers > SHOWN_ACTORS + 1:
                lines.append("    ...")
            lines.append(f"    actor {actor}: {io.label(actor)}")
    else:
        lines.append("  reads and writes: not declared by this job (no input checks)")
    lines.append("  " + cost_line(backend, workers + spares, io, memory_mb, arch, prices, found))
    lines.append("  " + checked_line(backend, io, lambda_regions, lambda_unchecked))
    return "\n".join(lines)


def checked_line(backend: str, io: JobIO | None, regions: Sequence[str], unchecked: Sequence[str]) -> str:
    """What the dry run checked, and what it could not: a check that failed with a warning is
    not listed as done."""
    done = ["credentials"] if io is not None or backend == "aws" else []
    if io is not None:
        done.append("the bucket and every input (S3)")
    lambda_checks = "the worker functions and the account's Lambda concurrency"
    read = [r for r in regions if r not in unchecked]
    if backend == "aws" and read:
        done.append(lambda_checks + (f" in {', '.join(read)}" if unchecked else ""))
    text = f"checked: {', '.join(done) or 'the options'}"
    if backend == "aws" and unchecked:
        text += (f"; not checked: {lambda_checks} in {', '.join(unchecked)} (they could not be read: "
                 "see the warning above)")  # fmt: skip
    not_done = "opening the port, " + ("finding the address, " if backend == "aws" else "") + "launching"
    return f"{text}; not done: {not_done}"


def dial_plan(backend: str, host: str, advertise: str | None, port: int) -> tuple[str, str | None]:
    """Where workers will connect, as far as a dry run can tell without looking it up, and a
    warning when the real run could not find it."""
    where = f":{port}" if port else " on a free port"
    if advertise:
        return f"{advertise}{where} (--advertise)", None
    if backend == "local" or host not in ("0.0.0.0", "::"):
        return f"{host}{where}", None
    try:
        task_metadata_uri()
    except DiscoveryError as exc:
        return "unknown: no --advertise, and not in an ECS task", f"the job itself would stop here: {exc}"
    return f"this Fargate task's public IP{where}, found from its network interface when the job starts", None


def cost_line(
    backend: str,
    invocations: int,
    io: JobIO | None,
    memory_mb: int,
    arch: str,
    prices: dict[str, float],
    found: Preflight,
    on_fargate: bool | None = None,
) -> str:
    """``on_fargate``: whether the coordinator runs in ECS (default: whether this process does);
    only then does the job pay for its task, at least Fargate's minimum minute."""
    gets = io.input_keys if io else 0
    puts = (io.output_keys if io else 0) + found.list_requests
    s3 = gets * prices["s3_get_request"] + puts * prices["s3_put_request"]
    if backend == "local":
        return (
            "estimated cost: no Lambda or Fargate charges on the local backend; "
            f"S3 requests {dollars(s3)} if the bucket is on AWS"
        )
    fixed = invocations * prices["lambda_request"] + s3
    per_minute = invocations * per_worker_minute(memory_mb, arch, prices)
    running = f"{invocations} x {memory_mb} MB of Lambda ({arch})"
    if on_fargate is None:
        on_fargate = in_ecs_task()
    if on_fargate:
        per_minute += task_per_hour(DEFAULT_TASK_VCPU, DEFAULT_TASK_GB, prices) / 60
        running += " and the coordinator's Fargate task, billed for a minute at least"
    else:
        running += "; no Fargate: the coordinator runs outside ECS"
    return (
        f"estimated cost: {dollars(fixed)} for {invocations} invocations and {gets + puts} S3 requests, "
        f"plus {dollars(per_minute)} per minute the workers run ({running})"
    )
