"""The lines every run ends with: what was written, where the logs are, what it cost."""

from __future__ import annotations

from typing import Any

from coordinator.report.cost import Cost, CostInputs, estimate

MAX_LOCATIONS = 5
MAX_ACTORS_NAMED = 12
NOT_RUN_WHY = {127: "was not found", 126: "could not be executed (not executable, or built for another CPU)"}


def not_run_warnings(entries: list[dict[str, Any]]) -> list[str]:
    """One line per program a ``run:`` could not find or execute, naming the actors: said even
    when the job's states accepted the reply and went on (mu's linpack job takes any OK)."""
    lines = []
    for entry in entries:
        actors = list(entry.get("actors") or [])
        status = int(entry.get("status", 127))
        who = f"{len(actors)} actor{'' if len(actors) == 1 else 's'} ({actor_ranges(actors)})"
        why = NOT_RUN_WHY.get(status, "could not be run")
        lines.append(f"warning: {entry.get('program')} {why} (run: exit status {status}) on {who}; "
                     "put a static Linux build in binaries/bin (Lambda workers: before 'make deploy') "
                     "or in a folder named by MU_BIN_DIR (local workers)")  # fmt: skip
    return lines


def actor_ranges(actors: list[int]) -> str:
    """``0-3, 7, 9-10``; past MAX_ACTORS_NAMED runs, ``...``."""
    runs: list[list[int]] = []
    for actor in sorted(set(actors)):
        if runs and actor == runs[-1][1] + 1:
            runs[-1][1] = actor
        else:
            runs.append([actor, actor])
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in runs[:MAX_ACTORS_NAMED]]
    return ", ".join(shown) + (", ..." if len(runs) > MAX_ACTORS_NAMED else "")


def timing_line(written: list[str], wanted: bool) -> str:
    """Where the timing log went (``deliver``'s answer: the file asked for, or the fallback it
    had to use), said once; or why there is none."""
    if written:
        local = next((w for w in written if not w.startswith("s3://")), None)
        how = f"see 'mu report {local} --png timeline.png'" if local else "copy it here for 'mu report'"
        return f"timing log: {', '.join(written)} ({how})"
    if wanted:
        return "timing log: not written (see the warning above)"
    return "timing log: not kept (add -O FILE, then 'mu report FILE')"


def run_summary(
    doc: dict[str, Any] | None,
    *,
    timing_logs: list[str],
    timing_wanted: bool,
    worker_logs: str | None,
    s3_endpoint: str | None = None,
    prices: dict[str, float] | None = None,
) -> list[str]:
    doc = doc or {}
    lines = not_run_warnings(doc.get("commands_not_run") or [])
    out = doc.get("outputs") or {}
    locations = out.get("locations") or []
    if locations:
        where = ", ".join(
            f"s3://{x['bucket']}/{x['prefix']} ({x['count']})" for x in locations[:MAX_LOCATIONS]
        )
        more = f" and {len(locations) - MAX_LOCATIONS} more places" if len(locations) > MAX_LOCATIONS else ""
        lines.append(f"wrote {out.get('count', 0)} objects: {where}{more}")
        endpoint = f" --endpoint-url {s3_endpoint}" if s3_endpoint else ""
        first = locations[0]
        lines.append(
            f"  fetch them with: aws s3 cp --recursive{endpoint} s3://{first['bucket']}/{first['prefix']} ."
        )
    else:
        lines.append("wrote no objects")
    lines.append(timing_line(timing_logs, timing_wanted))
    if worker_logs:
        lines.append(f"worker logs: {worker_logs}")
    elif doc.get("backend", "local") == "local":
        lines.append("(the workers' logs are kept only when an actor fails; --log-dir DIR keeps them always)")
    if doc.get("backend") == "aws" and doc.get("cost_inputs"):
        cost: Cost = estimate(CostInputs.from_dict(doc["cost_inputs"]), prices)
        lines.append(f"estimated cost: {cost.one_line()}")
    return lines
