"""The lines every run ends with: what was written, where the logs are, what it cost."""

from __future__ import annotations

from typing import Any

from coordinator.report.cost import Cost, CostInputs, estimate

MAX_LOCATIONS = 5


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
    lines = []
    doc = doc or {}
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
