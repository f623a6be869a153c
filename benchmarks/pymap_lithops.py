"""The Lithops side of ``benchmarks/pymap.py``: the same maps on Lithops' own localhost backend.

Run by ``benchmarks/pymap.py`` with the interpreter of a separate virtualenv that holds Lithops
from PyPI (``make bench-pymap`` makes it, ``.venv-lithops``), so Lithops never enters mu's own
environment or its tests. Lithops runs on its ``localhost`` compute backend and ``localhost``
storage (files under ``$TMPDIR``, its fastest storage), offline, with as many worker processes
as mu runs calls at once, and with each of its two localhost backends: ``version`` 2 (its
default: a process per call) and 1 (a process per map that forks its workers). Its status
monitor keeps its localhost default (a look at the status files every 0.1 s). Prints one JSON
object.

    python benchmarks/pymap_lithops.py '{"workloads": [["trivial", 2000]], "processes": 4}'
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import lithops


def trivial(x: int) -> int:
    return x + 1


def mib(x: int) -> bytes:
    return bytes([x % 256]) * (1 << 20)


FUNCTIONS = {"trivial": trivial, "mib": mib}


def config(processes: int, version: int) -> dict[str, Any]:
    return {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
        # Its default runtime is 'python' from PATH; this venv's interpreter is the one with Lithops.
        "localhost": {"runtime": sys.executable, "worker_processes": processes, "version": version},
    }


def run(name: str, calls: int, processes: int, version: int) -> dict[str, Any]:
    """One map on a fresh executor, read back the way Lithops' documentation reads results
    (``get_result``: one wait that downloads each result as its status shows up). A result's
    latency is the moment Lithops had it read and unpickled (``host_result_done_tstamp``)."""
    started = time.time()
    fexec = lithops.FunctionExecutor(config=config(processes, version))
    futures = fexec.map(FUNCTIONS[name], range(calls))
    values = fexec.get_result(futures, show_progressbar=False)
    wall = time.time() - started
    if len(values) != calls or any(
        (len(v) != 1 << 20) if name == "mib" else v != x + 1 for x, v in enumerate(values)
    ):
        raise AssertionError(f"{name}: a wrong result")
    latencies = sorted(f.stats["host_result_done_tstamp"] - started for f in futures)
    interval = fexec.config["lithops"]["monitoring_interval"]
    fexec.clean()
    return {"calls": calls, "wall": wall, "latencies": latencies, "monitoring_interval": interval}


def main() -> int:
    logging.disable(logging.WARNING)
    spec = json.loads(sys.argv[1])
    processes = int(spec["processes"])
    out: dict[str, Any] = {"lithops": lithops.__version__, "processes": processes, "versions": {}}
    for version in (2, 1):
        run("trivial", 4, processes, version)  # not measured: Lithops' one-time set-up in $TMPDIR
        out["versions"][str(version)] = {
            name: run(name, calls, processes, version) for name, calls in spec["workloads"]
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
