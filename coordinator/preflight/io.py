"""What a job reads and writes, declared by each job module's ``job_io``."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

# S3's rule for new buckets is 3 to 63 of [a-z0-9.-], starting and ending with a letter or a
# digit; buckets made in us-east-1 before March 2018 may also hold capitals and '_', up to 255.
BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def bucket_problem(name: str) -> str | None:
    """Why ``name`` cannot be an S3 bucket's name, or None if it can: a malformed name found
    before anything starts, instead of botocore's parameter dump once the job runs."""
    if BUCKET_NAME.fullmatch(name):
        return None
    if name.startswith("s3://"):
        return f"expected a bucket's name, not a URL: give {name[5:].split('/')[0]!r} without s3://"
    return (
        f"expected an S3 bucket name, got {name!r}: 3 to 63 lowercase letters, digits, '.' and '-', "
        "starting and ending with a letter or a digit"
    )


def bucket_name(text: str) -> str:
    """An argparse type for options naming a bucket (``-b``)."""
    problem = bucket_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


@dataclass
class JobIO:
    """Per actor, the S3 keys it reads and writes.

    ``listed`` is True when the job found its inputs by listing them (``mu map``), so they
    exist and need no second listing. ``hint`` tells the user which options choose the input.
    """

    in_bucket: str
    in_prefix: str
    reads: list[list[str]]
    out_bucket: str
    out_prefix: str
    writes: list[list[str]]
    listed: bool = False
    hint: str = ""

    @property
    def input_keys(self) -> int:
        return sum(len(keys) for keys in self.reads)

    @property
    def output_keys(self) -> int:
        return sum(len(keys) for keys in self.writes)

    def label(self, actor: int) -> str:
        """What an actor works on, by S3 key: ``reads A .. B, writes C``."""
        if not 0 <= actor < len(self.reads):
            return ""
        reads, writes = self.reads[actor], self.writes[actor] if actor < len(self.writes) else []
        parts = []
        if reads:
            parts.append("reads " + _span(reads))
        if writes:
            parts.append("writes " + _span(writes))
        return ", ".join(parts)


def _span(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]} .. {keys[-1]}"
