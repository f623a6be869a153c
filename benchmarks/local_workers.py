"""What the local workers' sandbox costs, and how fast a job that is stopped lets go.

For N workers that each run one command: the wall time of the whole job (listen, start N
workers, each connects over mutual TLS, runs ``true``, quits) in bubblewrap sandboxes and as
plain processes (``--no-sandbox``); then the time from ``--deadline`` passing to ``run_job``
returning with N workers killed in the middle of a 300 s command (the old launcher waited 5 s
before it killed anything).

    python benchmarks/local_workers.py [--workers 10,40] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machineinfo import machine_line

from coordinator.core.job import Job
from coordinator.core.machine import CommandListState, MachineState, TerminalState
from coordinator.core.runner import run_job
from coordinator.core.server import ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import JobKeys, make_job_keys
from coordinator.launch.local import LocalLauncher
from coordinator.launch.sandbox import Isolation, NoSandbox, Sandbox


class Done(TerminalState):
    pass


class RunOne(CommandListState):
    """Run ``info['cmd']`` once, then quit."""

    nextState = Done
    commandlist = [("OK:HELLO", "run:{cmd}"), ("OK:RETVAL(0)", "quit:")]

    def __init__(self, prevState: MachineState | None, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        self.format_commands(cmd=self.info["cmd"])


class Quiet(Status):
    def event(self, text: str) -> None:
        pass


def one_job(isolation: Isolation, keys: JobKeys, workers: int, cmd: str, deadline: float | None) -> float:
    """Seconds from the start of ``run_job`` to its return (with a deadline: from the deadline)."""
    job = Job("bench", RunOne, workers=workers, info={"cmd": cmd})
    opts = ServerOptions(host="127.0.0.1", port=0, kill_time=120, connect_timeout=120, deadline=deadline)
    with tempfile.TemporaryDirectory(prefix="mu-bench-") as logs:
        launcher = LocalLauncher(logs, concurrency=workers, isolation=isolation)
        t = time.monotonic()
        result = asyncio.run(run_job(job, launcher, keys, opts, Quiet("bench", workers, tty=False)))
        elapsed = time.monotonic() - t
    if deadline is None and not result.ok:
        raise SystemExit(f"the job failed: {result.describe()}")
    return elapsed - (deadline or 0.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="10,40", help="comma-separated worker counts (10,40)")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed (3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = p.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    keys = make_job_keys()
    modes: dict[str, Isolation] = {"sandbox": Sandbox(), "no sandbox": NoSandbox()}
    print(machine_line())
    figures: dict[str, dict[str, float]] = {}
    for n in counts:
        for name, isolation in modes.items():
            runs = range(args.repeat)
            job = statistics.median(one_job(isolation, keys, n, "true", None) for _ in runs)
            stop = statistics.median(one_job(isolation, keys, n, "sleep 300", 1.0) for _ in runs)
            figures[f"{n} {name}"] = {"job_s": round(job, 3), "stop_after_deadline_s": round(stop, 3)}
            print(
                f"{n:4d} workers, {name:10s}: job {job:6.2f} s ({job / n * 1000:5.1f} ms per worker), "
                f"--deadline to return {stop:5.2f} s"
            )
    if args.json:
        print(json.dumps({"machine": machine_line(), "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
