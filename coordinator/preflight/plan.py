"""The plan ``--dry-run`` prints: workers, inputs, outputs and what it would cost."""

from __future__ import annotations

from coordinator.preflight.checks import Preflight
from coordinator.preflight.io import JobIO
from coordinator.report.cost import DEFAULT_TASK_GB, DEFAULT_TASK_VCPU, dollars, per_worker_minute

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
    prices: dict[str, float],
    found: Preflight,
) -> str:
    lines = [f"mu {job}: dry run, nothing launched"]
    extra = f" and {spares} spares" if spares else ""
    if backend == "local":
        at_once = min(workers + spares, concurrency)
        lines.append(f"  workers: {workers}{extra}, local processes, at most {at_once} at once")
    else:
        lines.append(f"  workers: {workers}{extra}, Lambda invocations at {memory_mb} MB")
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
    lines.append("  " + cost_line(backend, workers + spares, io, memory_mb, prices, found))
    return "\n".join(lines)


def cost_line(
    backend: str,
    invocations: int,
    io: JobIO | None,
    memory_mb: int,
    prices: dict[str, float],
    found: Preflight,
) -> str:
    gets = io.input_keys if io else 0
    puts = (io.output_keys if io else 0) + found.list_requests
    s3 = gets * prices["s3_get_request"] + puts * prices["s3_put_request"]
    if backend == "local":
        return (
            "estimated cost: no Lambda or Fargate charges on the local backend; "
            f"S3 requests {dollars(s3)} if the bucket is on AWS"
        )
    fixed = invocations * prices["lambda_request"] + s3
    task = (
        DEFAULT_TASK_VCPU * prices["fargate_vcpu_hour"]
        + DEFAULT_TASK_GB * prices["fargate_gb_hour"]
        + prices["public_ipv4_hour"]
    ) / 60
    per_minute = invocations * per_worker_minute(memory_mb, prices) + task
    return (
        f"estimated cost: {dollars(fixed)} for {invocations} invocations and {gets + puts} S3 requests, "
        f"plus {dollars(per_minute)} per minute the workers run ({invocations} x {memory_mb} MB of Lambda "
        f"and the coordinator task)"
    )
