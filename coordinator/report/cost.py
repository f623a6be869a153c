"""What a job cost on AWS, estimated from its timing log.

Prices are a small table of AWS list prices (us-east-1, x86-64 Lambda, Linux Fargate, S3
Standard) with the date they were taken. They change rarely but they do change, and other
regions differ: ``--prices FILE`` (or ``$MU_PRICES``) points at a JSON object that overrides
any of them, e.g. ``{"lambda_gb_second": 0.0000133334}`` for arm64.

The estimate covers what a job adds: Lambda compute (GB-seconds at the function's memory, for
the time each worker was connected; start-up before connecting is not seen by the
coordinator) and requests, the coordinator's Fargate task for the job's duration (with its
public IPv4 address), and S3 requests (one GET per object fetched, one PUT per object written,
LIST pages of the pre-flight check). Not included: storage, data transfer out of the region,
CloudWatch Logs, free tiers.
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
    "lambda_request": 0.20 / 1e6,
    "fargate_vcpu_hour": 0.04048,  # Linux/x86
    "fargate_gb_hour": 0.004445,
    "public_ipv4_hour": 0.005,
    "s3_put_request": 0.005 / 1000,  # PUT, COPY, POST and LIST
    "s3_get_request": 0.0004 / 1000,  # GET and all other requests
}

PRICE_NOTES = {
    "lambda_gb_second": "Lambda compute, per GB-second (x86-64)",
    "lambda_request": "Lambda, per request",
    "fargate_vcpu_hour": "Fargate, per vCPU-hour (Linux/x86)",
    "fargate_gb_hour": "Fargate, per GB-hour",
    "public_ipv4_hour": "public IPv4 address, per hour",
    "s3_put_request": "S3 Standard PUT/COPY/POST/LIST, per request",
    "s3_get_request": "S3 Standard GET, per request",
}

# The stack's defaults (stacks/): what a job runs on unless told otherwise.
DEFAULT_WORKER_MEMORY_MB = 3008
DEFAULT_TASK_VCPU = 1.0
DEFAULT_TASK_GB = 2.0


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
    lambda_seconds: float = 0.0  # summed over workers
    lambda_memory_mb: int = DEFAULT_WORKER_MEMORY_MB
    coordinator_seconds: float = 0.0
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


def estimate(inputs: CostInputs, prices: dict[str, float] | None = None) -> Cost:
    p = prices or DEFAULT_PRICES
    gb = inputs.lambda_memory_mb / 1024
    gb_seconds = gb * inputs.lambda_seconds
    hours = inputs.coordinator_seconds / 3600
    task_rate = (
        inputs.coordinator_vcpu * p["fargate_vcpu_hour"]
        + inputs.coordinator_gb * p["fargate_gb_hour"]
        + p["public_ipv4_hour"]
    )
    s3_put = inputs.s3_put + inputs.s3_list
    return Cost(
        [
            CostLine(
                "Lambda compute",
                f"{gb_seconds:,.1f} GB-s ({inputs.lambda_seconds:,.1f} s at {inputs.lambda_memory_mb} MB)",
                gb_seconds * p["lambda_gb_second"],
            ),
            CostLine(
                "Lambda requests",
                f"{inputs.invocations:,} invocations",
                inputs.invocations * p["lambda_request"],
            ),
            CostLine(
                "coordinator task",
                f"{inputs.coordinator_seconds:,.1f} s of {inputs.coordinator_vcpu:g} vCPU, "
                f"{inputs.coordinator_gb:g} GB and a public IPv4 address",
                hours * task_rate,
            ),
            CostLine(
                "S3 requests",
                f"{inputs.s3_get:,} GET, {s3_put:,} PUT/LIST",
                inputs.s3_get * p["s3_get_request"] + s3_put * p["s3_put_request"],
            ),
        ]
    )


def per_worker_minute(memory_mb: int, prices: dict[str, float] | None = None) -> float:
    """Lambda compute for one worker busy one minute, for plans made before anything ran."""
    p = prices or DEFAULT_PRICES
    return memory_mb / 1024 * 60 * p["lambda_gb_second"]
