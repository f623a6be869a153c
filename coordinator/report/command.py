"""``mu report TIMING.json [--png FILE] [--html FILE] [--prices FILE]``."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from coordinator.preflight.checks import check_writable
from coordinator.report import schema, tables, timeline
from coordinator.report.analysis import analyze
from coordinator.report.cost import PriceError, load_prices
from coordinator.report.streams import Guarded


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("timing_log", metavar="TIMING.json", help="a timing log written by 'mu run ... -O FILE'")
    p.add_argument("--png", metavar="FILE", help="draw the timeline picture here")
    p.add_argument("--html", metavar="FILE", help="write the report and the picture as one HTML page here")
    p.add_argument("--prices", metavar="FILE",
                   help="JSON object overriding prices of the cost estimate ($MU_PRICES)")  # fmt: skip


def load(path: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(
            f"cannot read {path}: {exc.strerror or exc}; give a timing log written by 'mu run ... -O FILE'"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"{path} is not a timing log (not JSON: {exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ValueError(f"{path} is not a timing log: no 'records' list (write one with mu run -O FILE)")
    try:
        schema.check(doc)
    except schema.ShapeError as exc:
        raise ValueError(
            f"{path} is not a timing log mu report can read: {exc} (write one with mu run -O FILE)"
        ) from exc
    return doc


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The tables on stdout, then the files asked for. A reader that stops reading stdout
    (``| head``) ends the tables quietly; the files are still written."""
    try:
        for path, option in ((args.png, "--png"), (args.html, "--html")):
            if path:
                check_writable(path, option)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        doc = load(args.timing_log)
        prices = load_prices(args.prices) if (args.prices or _env_prices()) else None
    except (ValueError, PriceError) as exc:
        print(f"mu report: {exc}", file=sys.stderr)
        return 1
    a = analyze(doc, prices)
    out = Guarded(sys.stdout)
    console = Console(file=out, record=bool(args.html), highlight=False)  # type: ignore[arg-type]
    if not console.is_terminal:
        console.width = max(console.width, 110)  # files and pipes: wide enough for the tables
    tables.render(a, console)
    picture: bytes | None = None
    if args.png or args.html:
        buffer = io.BytesIO()
        timeline.draw(a, buffer)
        picture = buffer.getvalue()
    for what, where, write in (
        ("timeline picture", args.png, lambda path: Path(path).write_bytes(picture or b"")),
        ("report page", args.html, lambda path: write_html(Path(path), console, picture, doc)),
    ):
        if not where:
            continue
        try:
            write(where)
        except OSError as exc:
            print(f"mu report: cannot write the {what} to {where}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"{what.split()[0]}: {where}", file=out)
    return 0


def _env_prices() -> bool:
    import os

    return bool(os.environ.get("MU_PRICES"))


def write_html(path: Path, console: Console, png: bytes | None, doc: dict[str, Any]) -> None:
    """One self-contained page: the tables as the terminal shows them, and the picture inline."""
    body = console.export_html(
        inline_styles=True, code_format='<pre style="font-family:monospace">{code}</pre>'
    )
    picture = ""
    if png is not None:
        data = base64.b64encode(png).decode()
        picture = f'<img alt="timeline" style="max-width:100%" src="data:image/png;base64,{data}">'
    title = html.escape(f"mu {doc.get('job')} {doc.get('job_id') or ''}")
    path.write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body>\n<h1>{title}</h1>\n{picture}\n{body}\n</body></html>\n"
    )
