"""A job module written for this project: every worker echoes a greeting and its actor number.

``mu run ./project_job.py --greeting hi -n 3`` runs it like a bundled job, with no change to
``coordinator/jobs``.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.core.job import Job
from coordinator.core.machine import CommandListState, TerminalState


class Done(TerminalState):
    extra = "(done)"


class Greet(CommandListState):
    """Echo the greeting in a shell and check it came back."""

    nextState = Done
    commandlist = [("OK:HELLO", "run:echo {0} {1}"), ("OK:RETVAL(0):OUTPUT({0} {1}", "quit:")]

    def __init__(self, prevState: Any, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        self.format_commands(self.info["greeting"], self.actorNum)
        self.expects = [e.format(self.info["greeting"], self.actorNum) for e in self.expects]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--workers", type=int, default=2, help="workers (2)")
    p.add_argument("--greeting", default="hello", help="what to echo ('hello')")


def make_job(args: argparse.Namespace) -> Job:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    return Job("greet", Greet, workers=args.workers, info={"greeting": args.greeting})
