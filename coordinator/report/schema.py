"""What ``mu report`` needs of a timing log, checked once before anything is drawn.

The log is a JSON file a user may have edited, cut short or made by hand; the tables and the
timeline trust its shape, so a field of the wrong kind is found here and named by its path
(``records[0].states``) instead of surfacing as a traceback from deep in the drawing. Only what
the report reads is checked (``coordinator/report/timing.py`` has the whole schema); unknown
fields and missing optional ones are fine.
"""

from __future__ import annotations

import math
from typing import Any


class ShapeError(ValueError):
    """A field of the wrong kind; the message names it and says what it holds."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _fail(path: str, value: Any, wanted: str) -> ShapeError:
    return ShapeError(f"{path} is {_kind(value)}, not {wanted}")


def _number(doc: dict[str, Any], key: str, path: str, nullable: bool = True, counted: bool = False) -> None:
    """A number, if the field is there (null too when ``nullable``: a time that never came; at
    least 0 when ``counted``: an amount)."""
    if key not in doc or (nullable and doc[key] is None):
        return
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{path}{key}", value, "a number")
    if counted and value < 0:
        raise _fail(f"{path}{key}", value, "a number of at least 0")


def _text(doc: dict[str, Any], key: str, path: str) -> None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(f"{path}{key}", value, "text")


def _objects(
    doc: dict[str, Any], key: str, path: str, required: bool = False, nullable: bool = True
) -> list[dict[str, Any]]:
    """A list of objects; absent is none unless ``required``, null too when ``nullable``."""
    if key not in doc and not required:
        return []
    value = doc.get(key)
    if value is None and nullable and not required:
        return []
    if not isinstance(value, list):
        raise _fail(f"{path}{key}", value, "a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(f"{path}{key}[{i}]", item, "an object")
    return value


def _object(doc: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"{path}{key}", value, "an object")
    return value


def check(doc: Any) -> None:
    """Raise :class:`ShapeError` naming the first field ``mu report`` could not use."""
    if not isinstance(doc, dict):
        raise ShapeError(f"the document is {_kind(doc)}, not an object")
    _number(doc, "elapsed", "")
    _text(doc, "backend", "")
    for i, rec in enumerate(_objects(doc, "records", "", required=True)):
        at = f"records[{i}]."
        _number(rec, "actor", at, nullable=False)
        _number(rec, "connected", at, nullable=False)
        _number(rec, "ended", at)
        _text(rec, "error", at)
        for j, state in enumerate(_objects(rec, "states", at, nullable=False)):
            if "t" not in state:
                raise ShapeError(f"{at}states[{j}] has no time 't'")
            _number(state, "t", f"{at}states[{j}].", nullable=False)
            _text(state, "name", f"{at}states[{j}].")
        launch = _object(rec, "launch", at)
        for key in ("sent", "accepted"):
            _number(launch, key, f"{at}launch.")
    for i, launch in enumerate(_objects(doc, "launches", "", nullable=False)):
        for key in ("sent", "accepted"):
            _number(launch, key, f"launches[{i}].")
    for who, why in _object(doc, "failures", "").items():
        if not isinstance(why, str):
            raise _fail(f"failures[{who!r}]", why, "text")
    for i, place in enumerate(_objects(_object(doc, "outputs", ""), "locations", "outputs.")):
        missing = [k for k in ("bucket", "prefix", "count") if k not in place]
        if missing:
            raise ShapeError(f"outputs.locations[{i}] has no {', '.join(missing)}")
    inputs = _object(doc, "cost_inputs", "")
    for key in ("invocations", "lambda_seconds", "lambda_memory_mb", "coordinator_seconds",
                "coordinator_vcpu", "coordinator_gb", "s3_get", "s3_put", "s3_list"):  # fmt: skip
        _number(inputs, key, "cost_inputs.", nullable=False, counted=True)
    _text(inputs, "lambda_arch", "cost_inputs.")
    for i, call in enumerate(_objects(doc, "calls", "")):
        _number(call, "attempts", f"calls[{i}].", nullable=False)
        for key in ("submitted", "started", "finished"):
            _number(call, key, f"calls[{i}].")
        _text(call, "outcome", f"calls[{i}].")
