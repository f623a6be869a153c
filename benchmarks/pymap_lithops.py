"""The Lithops side of ``benchmarks/pymap.py``: the same maps on Lithops' own localhost backend.

Run by ``benchmarks/pymap.py`` with the interpreter of a separate virtualenv that holds Lithops
from PyPI (``make bench-pymap`` makes it, ``.venv-lithops``), so Lithops never enters mu's own
environment or its tests. Lithops runs with its defaults, its ``localhost`` compute backend
and ``localhost`` storage (files under ``$TMPDIR``), offline. Prints one JSON object.

    python benchmarks/pymap_lithops.py '{"workloads": [["trivial", 2000], ["mib", 200]]}'
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import lithops
from lithops.wait import ANY_COMPLETED


def trivial(x: int) -> int:
    return x + 1


def mib(x: int) -> bytes:
    return bytes([x % 256]) * (1 << 20)


FUNCTIONS = {"trivial": trivial, "mib": mib}


def run(name: str, calls: int) -> dict[str, Any]:
    config = {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
        # Its default runtime is 'python' from PATH; this venv's interpreter is the one with Lithops.
        "localhost": {"runtime": sys.executable},
    }
    started = time.monotonic()
    fexec = lithops.FunctionExecutor(config=config)
    futures = fexec.map(FUNCTIONS[name], range(calls))
    done_at: dict[int, float] = {}
    pending = list(futures)
    while pending:
        done, pending = fexec.wait(pending, return_when=ANY_COMPLETED, show_progressbar=False)
        for future in done:
            value = future.result()  # the result read back, as a caller would use it
            if (len(value) != 1 << 20) if name == "mib" else not isinstance(value, int):
                raise AssertionError(f"{name}: a wrong result {value!r:.40}")
            done_at[id(future)] = time.monotonic()
    wall = time.monotonic() - started
    fexec.clean()
    latencies = sorted(t - started for t in done_at.values())
    return {"calls": calls, "wall": wall, "latencies": latencies}


def main() -> int:
    logging.disable(logging.WARNING)
    spec = json.loads(sys.argv[1])
    out = {
        "lithops": lithops.__version__,
        "runs": {name: run(name, calls) for name, calls in spec["workloads"]},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
