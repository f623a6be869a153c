"""What a job cost on AWS, estimated from its timing log.

Prices are a small table of AWS list prices (us-east-1, x86-64 and arm64 Lambda, Linux
Fargate, S3 Standard) with the date they were taken. They change rarely but they do change, and
other regions differ: ``--prices FILE`` (or ``$MU_PRICES``) points at a JSON object that
overrides any of them, e.g. ``{"lambda_gb_second": 0.0000166667}``.

The estimate covers what a job adds, billed as AWS bills it:

- Lambda compute: GB-seconds at the function's memory and the price of its architecture
  (``MU_WORKER_MEMORY`` and ``MU_WORKER_ARCH``, which the stack sets in the coordinator's
  task). Each worker counts from its invocation (when Lambda accepted it) to the end of its
  connection, rounded up to the millisecond as Lambda rounds each invocation's duration. An
  invocation that never held a seat (a spare sent home, a worker that could not connect) is
  counted as a request only: the coordinator does not see when it ends.
- Lambda requests: one per invocation accepted.
- The coordinator's Fargate task (vCPU, memory and its public IPv4 address), only when the
  coordinator runs in ECS (``ECS_CONTAINER_METADATA_URI_V4`` is set): from the process's start
  to the job's end, and at least the minute Fargate bills at the least. A coordinator on your
  own machine driving Lambda workers pays no Fargate.
- S3 requests: one GET per object fetched, one PUT per object written, the LIST pages of the
  pre-flight check.

Not included: storage, data transfer out of the region, CloudWatch Logs, free tiers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRICES_DATE = "2026-11"
PRICES_REGION = "us-east-1"

# US dollars. Keys are what --prices files may override.
DEFAULT_PRICES: dict[str, float] = {
    "lambda_gb_second": 0.0000166667,  # x86-64, first 6 billion GB-s a month
    "lambda_gb_second_arm64": 0.0000133334,  # arm64 (Graviton), first 7.5 billion GB-s a month
    "lambda_request": 0.20 / 1e6,
    "fargate_vcpu_hour": 0.04048,  # Linux/x86
    "fargate_gb_hour": 0.004445,
    "public_ipv4_hour": 0.005,
    "s3_put_request": 0.005 / 1000,  # PUT, COPY, POST and LIST
    "s3_get_request": 0.0004 / 1000,  # GET and all other requests
}

PRICE_NOTES = {
    "lambda_gb_second": "Lambda compute, per GB-second (x86-64)",
    "lambda_gb_second_arm64": "Lambda compute, per GB-second (arm64)",
    "lambda_request": "Lambda, per request",
    "fargate_vcpu_hour": "Fargate, per vCPU-hour (Linux/x86)",
    "fargate_gb_hour": "Fargate, per GB-hour",
    "public_ipv4_hour": "public IPv4 address, per hour",
    "s3_put_request": "S3 Standard PUT/COPY/POST/LIST, per request",
    "s3_get_request": "S3 Standard GET, per request",
}

# The stack's defaults (stacks/): what a job runs on unless told otherwise.
DEFAULT_WORKER_MEMORY_MB = 3008
WORKER_ARCHITECTURES = ("x86_64", "arm64")  # Lambda's names, as -c arch= takes them
DEFAULT_WORKER_ARCH = "x86_64"
DEFAULT_TASK_VCPU = 1.0
DEFAULT_TASK_GB = 2.0
FARGATE_MINIMUM_SECONDS = 60.0  # Fargate bills per second, with a one-minute minimum
LAMBDA_BILLING_STEP = 0.001  # Lambda rounds each invocation's duration up to the millisecond


class PriceError(ValueError):
    """A prices file that cannot be used."""


def load_prices(path: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The default table with the overrides of ``path`` (or ``$MU_PRICES``) applied."""
    prices = dict(DEFAULT_PRICES)
    path = path or os.environ.get("MU_PRICES") or None
    if path is None:
        return prices
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PriceError(f"cannot read prices file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PriceError(f"prices file {path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PriceError(f"prices file {path} must hold a JSON object of price names to dollars")
    for key, value in doc.items():
        if key not in DEFAULT_PRICES:
            raise PriceError(
                f"prices file {path}: unknown price {key!r}; known: {', '.join(sorted(DEFAULT_PRICES))}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceError(f"prices file {path}: {key} must be a number >= 0 (dollars), got {value!r}")
        prices[key] = float(value)
    return prices


@dataclass
class CostInputs:
    """What a job used; the timing log keeps these under ``cost_inputs``."""

    invocations: int = 0
    lambda_seconds: float = 0.0  # billed duration, summed over workers (see lambda_billed_seconds)
    lambda_memory_mb: int = DEFAULT_WORKER_MEMORY_MB
    lambda_arch: str = DEFAULT_WORKER_ARCH
    coordinator_seconds: float = 0.0
    coordinator_on_fargate: bool = True  # False: the coordinator ran outside ECS and costs nothing
    coordinator_vcpu: float = DEFAULT_TASK_VCPU
    coordinator_gb: float = DEFAULT_TASK_GB
    s3_get: int = 0
    s3_put: int = 0
    s3_list: int = 0

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CostInputs:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class CostLine:
    what: str
    quantity: str
    dollars: float


@dataclass
class Cost:
    lines: list[CostLine] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.dollars for line in self.lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_usd": round(self.total, 6),
            "lines": [
                {"what": x.what, "quantity": x.quantity, "usd": round(x.dollars, 6)} for x in self.lines
            ],
            "prices_date": PRICES_DATE,
            "prices_region": PRICES_REGION,
        }

    def one_line(self) -> str:
        parts = ", ".join(f"{x.what} {dollars(x.dollars)}" for x in self.lines)
        return f"{dollars(self.total)} ({parts}; {PRICES_REGION} list prices of {PRICES_DATE})"


def dollars(value: float) -> str:
    """Three significant digits for small amounts, cents otherwise: $0.000123, $0.0123, $0.50, $1.23."""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = min(9, 2 - math.floor(math.log10(value)))
    text = f"{value:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def lambda_gb_second(arch: str, prices: dict[str, float] | None = None) -> float:
    """The compute price of a worker function of this architecture (``x86_64`` or ``arm64``)."""
    p = prices or DEFAULT_PRICES
    return p["lambda_gb_second_arm64"] if arch == "arm64" else p["lambda_gb_second"]


def task_per_hour(vcpu: float, gb: float, prices: dict[str, float] | None = None) -> float:
    """A running Fargate task of this size, with its public IPv4 address, per hour."""
    p = prices or DEFAULT_PRICES
    return vcpu * p["fargate_vcpu_hour"] + gb * p["fargate_gb_hour"] + p["public_ipv4_hour"]


def lambda_billed_seconds(start: float, end: float) -> float:
    """One invocation's billed duration: ``end - start`` rounded up to the millisecond."""
    steps = math.ceil(round(max(0.0, end - start) / LAMBDA_BILLING_STEP, 6))
    return steps * LAMBDA_BILLING_STEP


def fargate_billed_seconds(seconds: float) -> float:
    return max(FARGATE_MINIMUM_SECONDS, seconds)


def estimate(inputs: CostInputs, prices: dict[str, float] | None = None) -> Cost:
    p = prices or DEFAULT_PRICES
    gb = inputs.lambda_memory_mb / 1024
    gb_seconds = gb * inputs.lambda_seconds
    s3_put = inputs.s3_put + inputs.s3_list
    return Cost(
        [
            CostLine(
                "Lambda compute",
                f"{gb_seconds:,.1f} GB-s ({inputs.lambda_seconds:,.1f} s at {inputs.lambda_memory_mb} MB, "
                f"{inputs.lambda_arch})",
                gb_seconds * lambda_gb_second(inputs.lambda_arch, p),
            ),
            CostLine(
                "Lambda requests",
                f"{inputs.invocations:,} invocations",
                inputs.invocations * p["lambda_request"],
            ),
            _task_line(inputs, p),
            CostLine(
                "S3 requests",
                f"{inputs.s3_get:,} GET, {s3_put:,} PUT/LIST",
                inputs.s3_get * p["s3_get_request"] + s3_put * p["s3_put_request"],
            ),
        ]
    )


def _task_line(inputs: CostInputs, p: dict[str, float]) -> CostLine:
    if not inputs.coordinator_on_fargate:
        return CostLine("coordinator task", "none: the coordinator ran outside ECS", 0.0)
    billed = fargate_billed_seconds(inputs.coordinator_seconds)
    minimum = " (Fargate's 1-minute minimum)" if billed > inputs.coordinator_seconds else ""
    return CostLine(
        "coordinator task",
        f"{billed:,.1f} s{minimum} of {inputs.coordinator_vcpu:g} vCPU, {inputs.coordinator_gb:g} GB "
        "and a public IPv4 address",
        billed / 3600 * task_per_hour(inputs.coordinator_vcpu, inputs.coordinator_gb, p),
    )


def per_worker_minute(memory_mb: int, arch: str, prices: dict[str, float] | None = None) -> float:
    """Lambda compute for one worker busy one minute, for plans made before anything ran."""
    return memory_mb / 1024 * 60 * lambda_gb_second(arch, prices)
