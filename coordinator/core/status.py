"""The operator's view of a running job; the display itself lives in ``coordinator.report.progress``."""

from coordinator.report.progress import Status

__all__ = ["Status"]
