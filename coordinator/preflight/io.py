"""What a job reads and writes, declared by each job module's ``job_io``."""

from __future__ import annotations

from dataclasses import dataclass


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
