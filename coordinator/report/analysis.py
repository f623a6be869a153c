"""Numbers drawn from a timing log: time per state, launch latency, stragglers, failures, cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coordinator.report.cost import Cost, CostInputs, estimate
from coordinator.report.names import name_from_label

# A worker is a straggler when its wall time is both this many times the median and this many
# seconds above it: short jobs have noisy medians, long ones small relative spreads.
STRAGGLER_FACTOR = 1.5
STRAGGLER_MIN_SECONDS = 1.0


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Spread:
    count: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(len(values), percentile(values, 50), percentile(values, 95), max(values, default=math.nan))


@dataclass
class StateStat:
    name: str
    workers: int  # workers (records) that entered the state
    visits: int
    time: Spread  # per worker: the total time it spent in the state


@dataclass
class Segment:
    name: str
    start: float
    end: float


@dataclass
class Row:
    """One worker's connection: what the timeline draws on one row."""

    actor: int
    label: str
    duplicate: bool
    connected: float
    ended: float
    ok: bool
    error: str | None
    superseded: bool
    launch_sent: float | None
    launch_accepted: float | None
    segments: list[Segment]

    @property
    def wall(self) -> float:
        return self.ended - self.connected

    @property
    def slowest(self) -> Segment | None:
        return max(self.segments, key=lambda s: s.end - s.start, default=None)


@dataclass
class Analysis:
    doc: dict[str, Any]
    rows: list[Row]
    states: list[StateStat]
    launch_to_connect: Spread | None
    send_to_accept: Spread | None
    wall: Spread | None
    stragglers: list[Row]
    failures: dict[str, str]
    attempts_failed: list[Row]  # failed attempts of actors that a replacement may have saved
    cost: Cost | None
    prices_overridden: bool = False
    state_order: list[str] = field(default_factory=list)


def rows_of(doc: dict[str, Any]) -> list[Row]:
    elapsed = float(doc.get("elapsed") or 0.0)
    rows = []
    for rec in doc.get("records", []):
        ended = rec.get("ended")
        ended = elapsed if ended is None else float(ended)
        states = rec.get("states", [])
        segments = []
        for i, st in enumerate(states):
            start = float(st["t"])
            end = float(states[i + 1]["t"]) if i + 1 < len(states) else max(ended, start)
            name = st.get("name") or name_from_label(str(st.get("state", "?")))
            segments.append(Segment(name, start, end))
        launch = rec.get("launch") or {}
        rows.append(
            Row(
                actor=int(rec.get("actor", -1)),
                label=str(rec.get("label") or ""),
                duplicate=bool(rec.get("duplicate")),
                connected=float(rec.get("connected", 0.0)),
                ended=ended,
                ok=bool(rec.get("ok")),
                error=rec.get("error"),
                superseded=bool(rec.get("superseded")),
                launch_sent=launch.get("sent"),
                launch_accepted=launch.get("accepted"),
                segments=segments,
            )
        )
    rows.sort(key=lambda r: (r.actor, r.connected))
    return rows


def analyze(doc: dict[str, Any], prices: dict[str, float] | None = None) -> Analysis:
    rows = rows_of(doc)
    per_state: dict[str, dict[int, float]] = {}
    visits: dict[str, int] = {}
    for i, row in enumerate(rows):
        for seg in row.segments:
            per_state.setdefault(seg.name, {})
            per_state[seg.name][i] = per_state[seg.name].get(i, 0.0) + (seg.end - seg.start)
            visits[seg.name] = visits.get(seg.name, 0) + 1
    states = [
        StateStat(name, len(times), visits[name], Spread.of(list(times.values())))
        for name, times in per_state.items()
    ]
    latency = [r.connected - r.launch_accepted for r in rows if r.launch_accepted is not None]
    launches = doc.get("launches", [])
    accept = [
        e["accepted"] - e["sent"]
        for e in launches
        if e.get("accepted") is not None and e.get("sent") is not None
    ]
    finished = [r for r in rows if r.ok and not r.superseded]
    walls = [r.wall for r in finished]
    median = percentile(walls, 50) if walls else math.nan
    stragglers = (
        sorted(
            (
                r
                for r in finished
                if r.wall > STRAGGLER_FACTOR * median and r.wall > median + STRAGGLER_MIN_SECONDS
            ),
            key=lambda r: -r.wall,
        )
        if len(walls) >= 3
        else []
    )
    failures = dict(doc.get("failures") or {})
    if not failures:  # logs written before failures were recorded: the records say it
        for r in rows:
            if r.error and not r.superseded:
                failures[f"actor {r.actor}"] = r.error
    cost = None
    overridden = prices is not None
    if doc.get("backend") == "aws" and doc.get("cost_inputs") is not None:
        cost = estimate(CostInputs.from_dict(doc["cost_inputs"]), prices)
    return Analysis(
        doc=doc,
        rows=rows,
        states=states,
        launch_to_connect=Spread.of(latency) if latency else None,
        send_to_accept=Spread.of(accept) if accept else None,
        wall=Spread.of(walls) if walls else None,
        stragglers=stragglers,
        failures=failures,
        attempts_failed=[r for r in rows if r.error and not r.superseded],
        cost=cost,
        prices_overridden=overridden,
        state_order=[s.name for s in states],
    )
