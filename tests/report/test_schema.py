"""A malformed timing log is one line naming the bad field, never a traceback: ``mu report``
checks the document's shape (``coordinator/report/schema.py``) before drawing anything."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from coordinator.report import schema, tables, timeline
from coordinator.report.analysis import analyze
from tests.report.runs import mu

GOOD: dict[str, Any] = {
    "schema": 2, "job": "png2y4m", "job_id": "png2y4m-1", "backend": "aws", "elapsed": 2.5, "ok": False,
    "workers": 2, "relaunched": 0,
    "launches": [{"worker": 0, "sent": 0.1, "accepted": 0.2}, {"worker": 1, "sent": 0.1, "accepted": None}],
    "records": [
        {"actor": 0, "worker": 0, "label": "chunk 0", "connected": 0.5, "ended": 2.0, "ok": True,
         "error": None, "superseded": False, "launch": {"worker": 0, "sent": 0.1, "accepted": 0.2},
         "states": [{"state": "0:a", "name": "configuring", "t": 0.5}, {"state": "0:b", "t": 1.0}]},
        {"actor": 1, "connected": 0.7, "ended": None, "ok": False, "error": "FAIL(x)", "launch": None,
         "states": []},
    ],
    "failures": {"actor 1 (chunk 1)": "FAIL(x)"},
    "outputs": {"count": 1, "locations": [{"bucket": "bkt", "prefix": "o/", "count": 1}]},
    "cost_inputs": {"invocations": 2, "lambda_seconds": 3.0, "lambda_arch": "arm64"},
    "calls": [{"outcome": "ok", "attempts": 1, "submitted": 0.0, "started": 0.5, "finished": 1.0}],
}  # fmt: skip


def render(doc: dict[str, Any], picture: bool = True) -> None:
    """Everything ``mu report --png`` does with a document that passed the check."""
    a = analyze(doc)
    tables.render(a, Console(file=io.StringIO(), width=120))
    if picture:
        timeline.draw(a, io.BytesIO())


def test_a_good_document_passes_and_renders():
    schema.check(GOOD)
    render(copy.deepcopy(GOOD))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["records"].__setitem__(0, 5), "records[0] is 5, not an object"),
        (lambda d: d["records"][0].__setitem__("states", "x"), "records[0].states is 'x', not a list"),
        (lambda d: d.__setitem__("elapsed", "abc"), "elapsed is 'abc', not a number"),
        (lambda d: d.__setitem__("launches", 3), "launches is 3, not a list"),
        (
            lambda d: d["records"][1].__setitem__("connected", None),
            "records[1].connected is null, not a number",
        ),
        (lambda d: d["records"][0]["states"][1].pop("t"), "records[0].states[1] has no time 't'"),
        (lambda d: d["failures"].__setitem__("actor 1", 7), "failures['actor 1'] is 7, not text"),
        (lambda d: d["cost_inputs"].__setitem__("lambda_seconds", "1"), "cost_inputs.lambda_seconds is '1'"),
        (lambda d: d["outputs"]["locations"][0].pop("bucket"), "outputs.locations[0] has no bucket"),
        (lambda d: d.__setitem__("elapsed", float("inf")), "elapsed is inf, not a number"),
    ],
)
def test_mu_report_names_the_bad_field_in_one_line(tmp_path, change, named):
    doc = copy.deepcopy(GOOD)
    change(doc)
    log = tmp_path / "t.json"
    log.write_text(json.dumps(doc))
    proc = mu("report", str(log), "--png", str(tmp_path / "t.png"))
    assert proc.returncode == 1 and proc.stdout == "" and not (tmp_path / "t.png").exists()
    assert proc.stderr.startswith(f"mu report: {log} is not a timing log mu report can read: {named}")
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("(write one with mu run -O FILE)\n")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-10, 10) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=4,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document a value sits."""
    found = [at] if at else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*at, i))
    return found


PLACES = paths(GOOD)


@settings(max_examples=150)
@given(st.sampled_from(PLACES), JSON)
def test_any_field_of_any_kind_is_either_refused_or_reported(place, value):
    """Put any JSON value anywhere in a good log: the check refuses it with its path, or the
    tables (the picture for the first examples too) are made from it without an exception."""
    doc = copy.deepcopy(GOOD)
    target = doc
    for step in place[:-1]:
        target = target[step]
    target[place[-1]] = value
    try:
        schema.check(doc)
    except schema.ShapeError as exc:
        assert str(place[0]) in str(exc)
        return
    render(doc, picture=True)
