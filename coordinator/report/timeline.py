"""The timeline picture: one row per worker connection, one colour per state, with the moment
its invocation was sent and the moment it connected marked (mu had plot_coordinator.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

from coordinator.report.analysis import Analysis

WIDTH_IN, DPI = 14.0, 100
ROW_IN, MIN_HEIGHT_IN, MAX_HEIGHT_IN = 0.3, 4.0, 18.0
MAX_TICK_LABELS = 40

# Distinct, colour-blind friendly first (Okabe-Ito), then matplotlib's tab20; red is kept for errors.
PALETTE = [
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#56b4e9",
    "#f0e442",
    "#cc79a7",
    "#8c564b",
    "#7f7f7f",
    "#17becf",
    "#bcbd22",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
]
ERROR_COLOUR = "#d62728"
WAIT_COLOUR = "#bbbbbb"  # launched, not yet connected
STRAGGLER_COLOUR = "#6a3d9a"


def state_colours(names: list[str]) -> dict[str, str]:
    """A colour per state name, in the order given; error states are red."""
    colours: dict[str, str] = {}
    i = 0
    for name in names:
        if name in colours:
            continue
        if name.lower() in ("error", "error state"):
            colours[name] = ERROR_COLOUR
        else:
            colours[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return colours


def visible_states(a: Analysis) -> list[str]:
    """States some worker spent a visible time in (0.2 % of the picture's span); the others (a
    loop's counter, a terminal state) would be hairlines, so they get no colour or legend."""
    span = max([float(a.doc.get("elapsed") or 0.0), *(r.ended for r in a.rows)], default=0.0)
    return [s.name for s in a.states if s.time.max > 0 and s.time.max >= 0.002 * span]


def figure_size(rows: int) -> tuple[float, float]:
    """Inches; the PNG is this times DPI pixels."""
    return WIDTH_IN, min(MAX_HEIGHT_IN, max(MIN_HEIGHT_IN, 1.8 + ROW_IN * rows))


def draw(a: Analysis, target: str | Path | BinaryIO) -> None:
    """Write the timeline as a PNG to ``target`` (a path or a binary file)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(
            "the timeline picture needs matplotlib: pip install 'mu[report]' (make venv installs it)"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = a.rows
    visible = visible_states(a)
    colours = state_colours(visible)
    fig, ax = plt.subplots(figsize=figure_size(len(rows)), dpi=DPI, layout="constrained")
    height = 0.8 if len(rows) < 200 else 1.0
    # Markers shrink as rows get thinner, so a thousand-worker picture is not a black smear.
    marker = max(1.5, min(14.0, 2400.0 / max(1, len(rows))))
    for y, row in enumerate(rows):
        start = row.launch_sent if row.launch_sent is not None else row.launch_accepted
        if start is not None and start < row.connected:
            ax.broken_barh(
                [(start, row.connected - start)], (y - 0.12, 0.24), facecolors=WAIT_COLOUR, linewidth=0
            )
        shown = [s for s in row.segments if s.name in colours and s.end > s.start]
        bars = [(s.start, s.end - s.start) for s in shown]
        faces = [colours[s.name] for s in shown]
        if bars:
            ax.broken_barh(
                bars,
                (y - height / 2, height),
                facecolors=faces,
                linewidth=0,
                alpha=0.45 if row.superseded else 1.0,
            )
    if len(rows) <= 10_000:
        sent = [(r.launch_sent, y) for y, r in enumerate(rows) if r.launch_sent is not None]
        if sent:
            ax.scatter(
                [t for t, _ in sent],
                [y for _, y in sent],
                marker="|",
                s=4 * marker,
                c="#444444",
                linewidths=0.8,
                zorder=3,
            )
        ax.scatter(
            [r.connected for r in rows],
            range(len(rows)),
            marker="o",
            s=marker,
            c="black",
            linewidths=0,
            zorder=3,
        )
    slow = {id(r) for r in a.stragglers}
    stragglers = [(r.ended, y) for y, r in enumerate(rows) if id(r) in slow]
    if stragglers:
        ax.scatter(
            [t for t, _ in stragglers],
            [y for _, y in stragglers],
            marker="<",
            s=max(20.0, 4 * marker),
            c=STRAGGLER_COLOUR,
            zorder=4,
        )
    failed = [(r.ended, y) for y, r in enumerate(rows) if r.error and not r.superseded]
    if failed:
        ax.scatter(
            [t for t, _ in failed],
            [y for _, y in failed],
            marker="X",
            s=70,
            c=ERROR_COLOUR,
            edgecolors="black",
            linewidths=0.5,
            zorder=4,
        )

    step = max(1, math.ceil(len(rows) / MAX_TICK_LABELS))
    ticks = list(range(0, len(rows), step))
    labels = row_labels(rows)
    ax.set_yticks(ticks, [labels[y] for y in ticks])
    for tick, y in zip(ax.get_yticklabels(), ticks, strict=True):
        if rows[y].error and not rows[y].superseded:
            tick.set_color(ERROR_COLOUR)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    end = max([float(a.doc.get("elapsed") or 0.0), *(r.ended for r in rows)], default=1.0)
    ax.set_xlim(0, end * 1.02 or 1.0)
    ax.set_xlabel("seconds since the coordinator started listening")
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    doc = a.doc
    outcome = "ok" if doc.get("ok") else f"{len(a.failures)} failed"
    ax.set_title(
        f"mu {doc.get('job_id') or doc.get('job')}: {doc.get('workers')} actors, "
        f"{len(rows)} workers, {float(doc.get('elapsed') or 0):.1f} s, {outcome}",
        loc="left",
    )
    handles: list[Any] = [Patch(facecolor=colours[n], label=n) for n in visible]
    handles += [
        Patch(facecolor=WAIT_COLOUR, label="launched, not yet connected"),
        Line2D([], [], marker="|", linestyle="", color="#444444", markersize=10, label="invocation sent"),
        Line2D([], [], marker="o", linestyle="", color="black", markersize=5, label="connected"),
    ]
    if stragglers:
        handles.append(
            Line2D(
                [],
                [],
                marker="<",
                linestyle="",
                color=STRAGGLER_COLOUR,
                markersize=8,
                label="straggler (ends here)",
            )
        )
    if failed:
        handles.append(
            Line2D([], [], marker="X", linestyle="", color=ERROR_COLOUR, markersize=8, label="failed")
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    try:
        fig.savefig(target, dpi=DPI, format="png")
    finally:
        plt.close(fig)


def row_labels(rows: list[Any]) -> list[str]:
    """``actor 3``, then ``actor 3 (attempt 2)`` for a replacement, ``(duplicate)`` for a speculative copy."""
    seen: dict[int, int] = {}
    labels = []
    for row in rows:
        seen[row.actor] = seen.get(row.actor, 0) + 1
        kind = (
            " (duplicate)"
            if row.duplicate
            else (f" (attempt {seen[row.actor]})" if seen[row.actor] > 1 else "")
        )
        labels.append(f"actor {row.actor}{kind}")
    return labels
