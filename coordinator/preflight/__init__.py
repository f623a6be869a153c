"""Checks made before anything is launched or paid for, and the plan ``--dry-run`` prints.

Each job module declares what it reads and writes (``job_io(job) -> JobIO``); from that alone
the checks find a missing bucket, a missing or mistyped input, an output prefix that would
overwrite or be re-read as input, ``-n`` larger than the input, and a local job that would
start far more processes than the machine has cores.
"""

from coordinator.preflight.checks import Preflight, PreflightError, run_checks, s3_problem
from coordinator.preflight.io import JobIO

__all__ = ["JobIO", "Preflight", "PreflightError", "run_checks", "s3_problem"]
