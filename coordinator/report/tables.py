"""``mu report``'s text: a few rich tables, plain when printed to a file or pipe."""

from __future__ import annotations

import math

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from coordinator.report.analysis import STRAGGLER_FACTOR, STRAGGLER_MIN_SECONDS, Analysis, Spread
from coordinator.report.cost import PRICES_DATE, PRICES_REGION, dollars

MAX_LISTED = 20


def secs(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _spread_row(table: Table, what: str, spread: Spread | None) -> None:
    if spread is None:
        table.add_row(what, "-", "-", "-", "-")
    else:
        table.add_row(what, str(spread.count), secs(spread.p50), secs(spread.p95), secs(spread.max))


def header(a: Analysis) -> Text:
    doc = a.doc
    outcome = "succeeded" if doc.get("ok") else f"FAILED ({len(a.failures)} of {doc.get('workers')} actors)"
    text = Text()
    text.append(f"mu {doc.get('job')}", style="bold")
    text.append(f" {doc.get('job_id') or ''} on the {doc.get('backend', 'local')} backend, started "
                f"{doc.get('started', '?')}\n")  # fmt: skip
    text.append(f"{doc.get('workers')} actors, {len(a.rows)} worker connections, "
                f"{doc.get('relaunched', 0)} relaunched, wall time {secs(doc.get('elapsed'))}: ")  # fmt: skip
    text.append(outcome, style="green" if doc.get("ok") else "bold red")
    return text


def state_table(a: Analysis) -> Table:
    t = Table(title="Time in each state (per worker)", title_justify="left")
    for col in ("state", "workers", "visits", "p50", "p95", "max"):
        t.add_column(col, justify="left" if col == "state" else "right")
    for s in a.states:
        t.add_row(s.name, str(s.workers), str(s.visits), secs(s.time.p50), secs(s.time.p95), secs(s.time.max))
    return t


def timing_table(a: Analysis) -> Table:
    t = Table(
        title="Launching and running",
        title_justify="left",
        caption="launch -> connect: the k-th worker to connect after the k-th invocation accepted; "
        "wall time: connect -> end, of workers that finished",
        caption_justify="left",
    )
    for col in ("", "count", "p50", "p95", "max"):
        t.add_column(col, justify="left" if not col else "right")
    _spread_row(t, "invocation sent -> accepted", a.send_to_accept)
    _spread_row(t, "launch -> connect", a.launch_to_connect)
    _spread_row(t, "worker wall time", a.wall)
    return t


def straggler_table(a: Analysis) -> RenderableType:
    if not a.stragglers:
        return Text(f"No stragglers (none finished {straggler_rule(a)}).", style="dim")
    t = Table(title=f"Stragglers: wall time {straggler_rule(a)}", title_justify="left")
    for col in ("actor", "wall", "slowest state", "in it", "work"):
        t.add_column(col)
    for r in a.stragglers[:MAX_LISTED]:
        slow = r.slowest
        t.add_row(str(r.actor), secs(r.wall), slow.name if slow else "-",
                  secs(slow.end - slow.start) if slow else "-", r.label)  # fmt: skip
    return t


def straggler_rule(a: Analysis) -> str:
    median = a.wall.p50 if a.wall else math.nan
    rule = f"over {STRAGGLER_FACTOR:g}x the median ({secs(median)})"
    return f"{rule} and over {STRAGGLER_MIN_SECONDS:g} s above it"


def failure_table(a: Analysis) -> RenderableType:
    if not a.failures and not a.attempts_failed:
        return Text("No failures.", style="green")
    t = Table(title="Failures", title_justify="left")
    t.add_column("who")
    t.add_column("why", overflow="fold")
    for who, why in list(a.failures.items())[:MAX_LISTED]:
        t.add_row(Text(who, style="bold red"), why)
    replaced = [r for r in a.attempts_failed if not any(k.startswith(f"actor {r.actor}") for k in a.failures)]
    for r in replaced[:MAX_LISTED]:
        t.add_row(f"actor {r.actor} (an attempt, replaced)", r.error or "")
    more = len(a.failures) + len(replaced) - min(len(a.failures), MAX_LISTED) - min(len(replaced), MAX_LISTED)
    if more > 0:
        t.add_row("...", f"{more} more in the timing log")
    return t


def outputs_text(a: Analysis) -> Text:
    out = a.doc.get("outputs") or {}
    locations = out.get("locations") or []
    if not locations:
        return Text("Outputs: none recorded.")
    where = "; ".join(f"{x['count']} in s3://{x['bucket']}/{x['prefix']}" for x in locations[:MAX_LISTED])
    return Text(f"Outputs: {out.get('count', 0)} objects written ({where}).")


def cost_table(a: Analysis) -> RenderableType:
    if a.cost is None:
        backend = a.doc.get("backend", "local")
        return Text(f"Cost: none on the {backend} backend (workers ran on this machine).", style="dim")
    src = "your prices" if a.prices_overridden else f"{PRICES_REGION} list prices of {PRICES_DATE}"
    t = Table(title=f"Estimated cost ({src})", title_justify="left")
    t.add_column("item")
    t.add_column("quantity")
    t.add_column("USD", justify="right")
    for line in a.cost.lines:
        t.add_row(line.what, line.quantity, dollars(line.dollars))
    t.add_row(Text("total", style="bold"), "", Text(dollars(a.cost.total), style="bold"))
    return t


def calls_table(a: Analysis) -> RenderableType:
    """mu.map's calls (``calls`` in the log): how they ended and how long each step took."""
    calls = a.doc.get("calls") or []
    ends: dict[str, int] = {}
    for c in calls:
        ends[c.get("outcome") or "unfinished"] = ends.get(c.get("outcome") or "unfinished", 0) + 1
    retried = sum(1 for c in calls if c.get("attempts", 0) > 1)
    said = ", ".join(f"{n} {what}" for what, n in sorted(ends.items()))
    t = Table(
        title=f"Python calls: {len(calls)} ({said}); {retried} ran more than once",
        title_justify="left",
        caption="queued: submitted -> first attempt sent to a worker; latency: submitted -> outcome",
        caption_justify="left",
    )
    for col in ("", "count", "p50", "p95", "max"):
        t.add_column(col, justify="left" if not col else "right")

    def spread(start: str, end: str) -> Spread | None:
        values = [c[end] - c[start] for c in calls if c.get(start) is not None and c.get(end) is not None]
        return Spread.of(values) if values else None

    _spread_row(t, "queued", spread("submitted", "started"))
    _spread_row(t, "running (first attempt sent -> outcome)", spread("started", "finished"))
    _spread_row(t, "latency", spread("submitted", "finished"))
    return t


def report(a: Analysis) -> Group:
    blank = Text("")
    calls = [calls_table(a), blank] if a.doc.get("calls") is not None else []
    return Group(
        header(a), blank, timing_table(a), blank, *calls, state_table(a), blank, straggler_table(a), blank,
        failure_table(a), blank, outputs_text(a), blank, cost_table(a),
    )  # fmt: skip


def render(a: Analysis, console: Console) -> None:
    console.print(report(a))
