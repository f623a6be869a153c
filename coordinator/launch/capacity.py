"""Can Lambda run all of a job's workers at once? Asked before the first invocation is sent.

Asynchronous invocations are accepted (HTTP 202) even when no concurrency is left: the excess
waits in Lambda's queue and starts minutes later, against a coordinator that has given up on
it. So before launching, the launcher reads each region's account settings
(``GetAccountSettings``) and each function's reserved concurrency
(``GetFunctionConcurrency``), spreads the workers over the (function, region) targets as the
launcher will, and refuses a job whose share does not fit, with the numbers and what to do.

:func:`shortfalls` is the sans-I/O decision; :func:`read_capacity` does the reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

QUOTA = "Service Quotas > AWS Lambda > 'Concurrent executions' (L-B99A9384)"
# Lambda keeps this much of a region's concurrency unreserved: functions may reserve at most
# the account limit less this, all of them together.
UNRESERVED_MINIMUM = 100


@dataclass
class RegionCapacity:
    region: str
    account_limit: int  # ConcurrentExecutions
    unreserved: int  # UnreservedConcurrentExecutions: what functions without a reservation share
    reserved: dict[str, int | None] = field(default_factory=dict)  # function -> its reservation

    def reservable(self, functions: Sequence[str]) -> int:
        """The most ``functions`` could reserve together: what they hold now plus what is
        unreserved, less the 100 Lambda keeps unreserved."""
        held = sum(n for f in functions if (n := self.reserved.get(f)) is not None)
        return max(0, self.unreserved + held - UNRESERVED_MINIMUM)


def shares(workers: int, targets: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Workers per (function, region), dealt round-robin as the launcher deals invocations."""
    count = len(targets)
    return {t: len(range(i, workers, count)) for i, t in enumerate(targets)}


def shortfalls(
    workers: int, targets: Sequence[tuple[str, str]], regions: dict[str, RegionCapacity]
) -> list[str]:
    """What does not fit, one phrase per region and cause; empty when every share fits.

    Identical copies of the function in a region draw on the same account pool, so only another
    region or a higher quota adds concurrency; a reservation (``-c reserved=N``, for each copy)
    only sets part of the pool aside, and Lambda keeps 100 of it unreserved.
    """
    need = shares(workers, targets)
    problems = []
    for name, cap in regions.items():
        here = {function: n for (function, region), n in need.items() if region == name and n > 0}
        pooled: dict[str, int] = {}
        short = False
        for function, n in here.items():
            reserved = cap.reserved.get(function)
            if reserved is None:
                pooled[function] = n
            elif reserved == 0:
                problems.append(
                    f"{name}: {function} has reserved concurrency 0, so Lambda refuses every invocation "
                    f"(remove it: aws lambda delete-function-concurrency --function-name {function} "
                    f"--region {name})"
                )
            elif n > reserved:
                problems.append(f"{name}: {function} would run {n} workers but has {reserved} reserved")
                short = True
        total = sum(pooled.values())
        if total > cap.unreserved:
            names = " and ".join(sorted(pooled))
            problems.append(
                f"{name}: {names} would run {total} workers in the account's unreserved concurrency of "
                f"{cap.unreserved} (account limit {cap.account_limit}), which other functions share too"
            )
            short = True
        if short:
            problems.append(_reservation_note(name, cap, here))
    return problems


def _reservation_note(region: str, cap: RegionCapacity, here: dict[str, int]) -> str:
    """Whether ``-c reserved=N`` could hold this region's share, with the most it may be."""
    copies, per_copy = len(here), max(here.values())
    most = cap.reservable(list(here)) // copies
    why = (
        f"at most {most} for each of the {copies} worker function(s) there, as Lambda keeps "
        f"{UNRESERVED_MINIMUM} of the account's {cap.account_limit} unreserved"
    )
    if per_copy <= most:
        return f"{region}: -c reserved={per_copy} would hold them ({why})"
    return f"{region}: no reservation can hold them ({why})"


def advice(workers: int, problems: list[str]) -> str:
    return (
        f"this job needs {workers} Lambda workers running at once, more than it can get. "
        + "; ".join(problems)
        + f". Ask AWS for more ({QUOTA}, in each region named), spread the job over more regions "
        "(-c regions=..., then --regions; copies of the function in one region share its pool), "
        "or run fewer workers"
    )


class MissingFunctionError(LookupError):
    def __init__(self, function: str, region: str) -> None:
        super().__init__(
            f"no worker function '{function}' in {region}: check --function and --regions "
            "(deploy the stack there with -c regions=...)"
        )


def read_region(client: Any, region: str, functions: Sequence[str]) -> RegionCapacity:
    """One GetAccountSettings and one GetFunctionConcurrency per function, with a botocore client."""
    limit = client.get_account_settings()["AccountLimit"]
    cap = RegionCapacity(
        region, int(limit["ConcurrentExecutions"]), int(limit["UnreservedConcurrentExecutions"])
    )
    for function in functions:
        try:
            answer = client.get_function_concurrency(FunctionName=function)
        except client.exceptions.ResourceNotFoundException:
            raise MissingFunctionError(function, region) from None
        reserved = answer.get("ReservedConcurrentExecutions")
        cap.reserved[function] = None if reserved is None else int(reserved)
    return cap
