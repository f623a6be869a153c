"""mu.map against Lithops' localhost backend, side by side in one run, on this machine.

Two maps on each side, each with a fresh executor (so worker start-up counts; a small map
first on each side, not measured, pays the one-time set-up): 2,000 calls of a trivial
function and 200 calls that return 1 MiB each. For each: calls/s, p50/p95 latency from
submitting the map to each result being in the caller's hands, and total wall time. mu runs
local workers (the real worker in its bubblewrap sandbox, calls over mutual TLS); Lithops runs
in its own virtualenv (``.venv-lithops``, made by ``make bench-pymap``) on its ``localhost``
backend and storage, with as many worker processes as mu runs calls at once, once with each
of its two localhost backends (version 2, its default, and version 1). The last line compares
mu with the faster of the two. Then, where mu's time goes: CPU per call in the coordinator and
on the worker side, the cost of forking the call's process, and the coordinator's profile.

    make bench-pymap       # or: python benchmarks/pymap.py [--lithops-python PATH] [--workers N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machineinfo import machine_line

import mu

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = (("trivial", 2000), ("mib", 200))


def trivial(x: int) -> int:
    return x + 1


def mib(x: int) -> bytes:
    return bytes([x % 256]) * (1 << 20)


FUNCTIONS = {"trivial": trivial, "mib": mib}


def cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of its reaped descendants (the workers, once they exit)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_mu(
    name: str, calls: int, workers: int, slots: int, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    cpu0 = cpu()
    started = time.monotonic()
    done_at: list[float] = []
    ex = mu.Executor(workers, slots=slots, progress=False)
    futures = ex.map(FUNCTIONS[name], range(calls))
    for future in futures:
        future.add_done_callback(lambda _: done_at.append(time.monotonic()))
    values = futures.results(timeout=600)
    wall = time.monotonic() - started
    ex.shutdown()
    if name == "mib" and any(len(v) != 1 << 20 for v in values):
        raise AssertionError("a wrong result")
    cpu1 = cpu()
    return {
        "calls": calls,
        "wall": wall,
        "latencies": sorted(t - started for t in done_at),
        "coordinator_cpu": cpu1[0] - cpu0[0],
        "workers_cpu": cpu1[1] - cpu0[1],
    }


def run_lithops(python: str, processes: int) -> dict[str, Any]:
    """The Lithops side in its own interpreter, its files in a temporary folder removed after."""
    scratch = tempfile.mkdtemp(prefix="mu-bench-lithops-")
    try:
        env = {**os.environ, "TMPDIR": scratch, "HOME": scratch}
        spec = json.dumps({"workloads": WORKLOADS, "processes": processes})
        proc = subprocess.run(
            [os.path.abspath(python), str(ROOT / "benchmarks" / "pymap_lithops.py"), spec],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
            cwd=scratch,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"the Lithops side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fork_cost(samples: int = 300) -> float:
    """Seconds to fork, run nothing and reap a child of a process that has loaded cloudpickle:
    the floor of what each call's own process costs on the worker."""
    code = (
        "import os, time, cloudpickle, pickle\n"
        f"n = {samples}\nt = time.monotonic()\n"
        "for _ in range(n):\n"
        "    pid = os.fork()\n"
        "    if pid == 0: os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "print((time.monotonic() - t) / n)\n"
    )
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu() -> dict[str, float]:
    """CPU seconds of this process's descendants by role, read from /proc while they live: the
    workers, their call runners, and the calls' own processes (reaped by the runners, so counted
    in the runners' children's time)."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
                cmdline = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            stats[int(entry)] = [*text.rsplit(")", 1)[1].split(), cmdline]
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    out = {"workers": 0.0, "call runners": 0.0, "calls' processes": 0.0}
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        fields = stats[pid]
        own = (int(fields[11]) + int(fields[12])) / TICK
        reaped = (int(fields[13]) + int(fields[14])) / TICK
        if "lambda_worker.pycall.runner" in fields[-1]:
            out["call runners"] += own
            out["calls' processes"] += reaped
        elif "-m lambda_worker" in fields[-1]:
            out["workers"] += own
    return out


def breakdown(workers: int, slots: int, calls: int) -> tuple[dict[str, float], float, str]:
    """A warm run of the trivial map (workers already up): CPU per call by process, and the
    coordinator's profile (its event-loop thread)."""
    ex = mu.Executor(workers, slots=slots, progress=False)
    ex.map(trivial, range(20)).results(timeout=120)
    profile = cProfile.Profile()
    before, me0 = process_cpu(), cpu()[0]
    ex._engine.loop.call_soon_threadsafe(profile.enable)
    started = time.monotonic()
    ex.map(trivial, range(calls)).results(timeout=600)
    wall = time.monotonic() - started
    ex._engine.loop.call_soon_threadsafe(profile.disable)
    after, me1 = process_cpu(), cpu()[0]
    ex.shutdown()
    per_call = {"coordinator": (me1 - me0) / calls, **{k: (after[k] - before[k]) / calls for k in after}}
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(14)
    busy = [
        line.strip()
        for line in text.getvalue().splitlines()
        if line.strip()[:1].isdigit() and "epoll" not in line and "function calls" not in line
    ][:6]
    return per_call, wall, "\n".join(busy)


def figures(run: dict[str, Any]) -> dict[str, float]:
    lat = run["latencies"]
    q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) > 1 else lat * 19
    return {
        "per_s": run["calls"] / run["wall"],
        "p50": statistics.median(lat),
        "p95": q[18],
        "wall": run["wall"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lithops-python",
        default=str(ROOT / ".venv-lithops" / "bin" / "python"),
        help="the interpreter of a virtualenv with Lithops (.venv-lithops/bin/python)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="mu's local workers (cores)")
    parser.add_argument("--slots", type=int, default=2, help="calls at once per mu worker (2)")
    args = parser.parse_args()
    if not Path(args.lithops_python).exists():
        print(
            f"no Lithops interpreter at {args.lithops_python}: 'make bench-pymap' makes .venv-lithops",
            file=sys.stderr,
        )
        return 2
    at_once = args.workers * args.slots
    print(machine_line())
    lithops = run_lithops(args.lithops_python, at_once)
    interval = lithops["versions"]["2"]["trivial"]["monitoring_interval"]
    print(
        f"mu: {args.workers} local workers, {args.slots} calls at once each; Lithops "
        f"{lithops['lithops']}: localhost backend and storage, {lithops['processes']} worker "
        f"processes, status checked every {interval:g} s"
    )
    with mu.Executor(args.workers, slots=args.slots, progress=False) as ex:  # not measured: warm-up
        ex.map(trivial, range(4)).results(timeout=120)
    ours = {name: run_mu(name, calls, args.workers, args.slots) for name, calls in WORKLOADS}
    print(f"{'':40}{'calls/s':>9}{'p50 s':>9}{'p95 s':>9}{'wall s':>9}")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    sides = {"mu": "mu", "2": "Lithops localhost v2", "1": "Lithops localhost v1"}
    for name, calls in WORKLOADS:
        what = f"{calls} x {'trivial' if name == 'trivial' else '1 MiB result'}"
        rows[name] = {"mu": figures(ours[name])}
        rows[name].update({v: figures(runs[name]) for v, runs in lithops["versions"].items()})
        for side, label in sides.items():
            f = rows[name][side]
            print(f"{what + ', ' + label:40}{f['per_s']:9.1f}{f['p50']:9.3f}{f['p95']:9.3f}{f['wall']:9.2f}")
    calls = WORKLOADS[0][1]
    per_call, wall, busy = breakdown(args.workers, args.slots, calls)
    total = sum(per_call.values())
    print(
        f"where mu's time goes: a warm run of {calls} trivial calls ({calls / wall:.0f} calls/s once the "
        f"workers are up), CPU per call {total * 1e3:.2f} ms "
        f"({total * calls / wall / (os.cpu_count() or 1):.0%} of {os.cpu_count()} cores):"
    )
    for what, seconds in per_call.items():
        print(f"  {what:18} {seconds * 1e3:6.3f} ms  {seconds / total:4.0%}")
    print(
        f"  (forking and reaping an empty child of a process that loaded cloudpickle: "
        f"{fork_cost() * 1e3:.2f} ms)"
    )
    print("  the coordinator's busiest functions (cProfile, its event-loop thread; tottime):")
    for line in busy.splitlines():
        print("   ", line)
    for name, calls in WORKLOADS:
        per = ours[name]["coordinator_cpu"] / calls
        print(f"  {name} map (fresh executor): coordinator CPU {per * 1e3:.2f} ms/call")
    fast = rows["trivial"]
    best = max(("2", "1"), key=lambda v: fast[v]["per_s"])
    print(
        f"pymap: calls={WORKLOADS[0][1]} mu_per_s={fast['mu']['per_s']:.1f} "
        f"lithops_per_s={fast[best]['per_s']:.1f} "
        f"ratio={fast['mu']['per_s'] / fast[best]['per_s']:.1f} lithops_backend=localhost-v{best}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
