"""The invocation event, checked before anything else so a bad launch fails with one clear line.

Besides the project's own fields (DESIGN.md), the event carries the fields mu's job files put
in theirs, with mu's names and defaults (``lambda_function_template.py``): the flags
``nonblock``, ``bg_silent``, ``expect_statefile``, ``send_statefile``, ``rm_tmpdir``,
``minimal_recode``, ``hash_s3keys``, and the ``run:`` template values ``infile``, ``outfile``,
``args``, ``vars``, ``quality``. Fields the worker does not know (mu's ``mode``, ``addr``,
``cacert`` ...) are ignored, so an event built for mu is not refused for what it also holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# mu's flags and their defaults (lambda_function_template.py reads each with int(event.get(...))).
FLAGS: dict[str, int] = {
    "nonblock": 0,
    "expect_statefile": 0,
    "send_statefile": 0,
    "rm_tmpdir": 1,
    "bg_silent": 0,
    "minimal_recode": 0,
    "hash_s3keys": 0,
}
# Values ``run:`` falls back to when the variable cmdNAME is not set (mu's vals_lookup).
TEMPLATE_TEXT = ("infile", "outfile", "quality")
TEMPLATE_LISTS = ("args", "vars")


class EventError(ValueError):
    """The invocation event is missing a field or has one of the wrong kind."""


@dataclass(frozen=True)
class WorkerEvent:
    host: str
    port: int
    worker: int
    job: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    bucket: str
    region: str
    s3_endpoint: str | None
    command: str
    idle_timeout: float
    flags: dict[str, int] = field(default_factory=lambda: dict(FLAGS))
    templates: dict[str, str | list[str]] = field(default_factory=dict)
    pymap: dict[str, Any] | None = None  # mu.map's settings; present only for Python-call jobs

    @property
    def coordinator(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def nonblock(self) -> int:
        return self.flags["nonblock"]


def _field(event: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in event or (event[name] is None and default is not ...):
        if default is ...:
            raise EventError(f"event field '{name}' is missing; the launcher must set it")
        return default
    value = event[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EventError(f"event field '{name}' must be {want}, got {type(value).__name__} {value!r:.60}")
    return value


def _flag(event: dict[str, Any], name: str) -> int:
    value = event.get(name)
    if value is None:
        return FLAGS[name]
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or value not in (0, 1):
        raise EventError(f"event field '{name}' must be 0 or 1, got {value!r:.60}")
    return value


def _templates(event: dict[str, Any]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for name in TEMPLATE_TEXT:
        value = event.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise EventError(f"event field '{name}' must be text, got {type(value).__name__} {value!r:.60}")
        out[name] = str(value)
    for name in TEMPLATE_LISTS:
        value = event.get(name)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise EventError(f"event field '{name}' must be text or a list of text, got {value!r:.60}")
        out[name] = list(items)
    return out


def _pem(tls: dict[str, Any], name: str, marker: str) -> str:
    value = tls.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"event field 'tls.{name}' is missing; it must hold a PEM {marker}")
    if f"-----BEGIN {marker}" not in value and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in value):
        raise EventError(f"event field 'tls.{name}' is not a PEM {marker}")
    return value


def _endpoint(value: str | None) -> str | None:
    """Refuse an unusable S3 endpoint here: boto3 would only raise when the first transfer starts."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EventError(f"event field 's3_endpoint' must be an http(s) URL such as http://127.0.0.1:5000, "
                         f"got {value!r:.80}")  # fmt: skip
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise EventError(f"event field 's3_endpoint' has a bad port: {exc}") from None
    return value


PYMAP_NUMBERS = ("slots", "inline_limit", "memory_mb")  # whole numbers >= 1


def _pymap(event: dict[str, Any]) -> dict[str, Any] | None:
    """``pymap``: ``{"slots": N, "inline_limit": BYTES, "prefix": "KEY/", "memory_mb": MB}``."""
    section = event.get("pymap")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise EventError(f"event field 'pymap' must be an object, got {type(section).__name__}")
    for name in PYMAP_NUMBERS:
        value = section.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EventError(f"event field 'pymap.{name}' must be a whole number >= 1, got {value!r:.40}")
    if not isinstance(section.get("prefix", ""), str):
        raise EventError("event field 'pymap.prefix' must be text (a key prefix in the job's bucket)")
    return dict(section)


def parse_event(event: Any) -> WorkerEvent:
    """Validate an invocation event (see DESIGN.md) and return it typed."""
    if not isinstance(event, dict):
        raise EventError(f"event must be a JSON object, got {type(event).__name__}")
    coordinator = _field(event, "coordinator", str)
    host, sep, port_text = coordinator.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EventError(
            f"event field 'coordinator' must be HOST:PORT with a port 1-65535, got {coordinator!r}"
        )
    host = host.strip("[]")  # allow [::1]:port
    worker = _field(event, "worker", int)
    if worker < 0:
        raise EventError(f"event field 'worker' must be >= 0, got {worker}")
    job = _field(event, "job", str)
    if not job:
        raise EventError("event field 'job' is empty; it names the job for logs")
    tls = _field(event, "tls", dict)
    flags = {name: _flag(event, name) for name in FLAGS}
    idle_timeout = _field(event, "idle_timeout", (int, float), 300)
    if idle_timeout <= 0:
        raise EventError(f"event field 'idle_timeout' must be > 0 seconds, got {idle_timeout}")
    s3_endpoint = _endpoint(_field(event, "s3_endpoint", str, None) or os.environ.get("AWS_ENDPOINT_URL_S3"))
    return WorkerEvent(
        host=host,
        port=int(port_text),
        worker=worker,
        job=job,
        ca_pem=_pem(tls, "ca", "CERTIFICATE"),
        cert_pem=_pem(tls, "cert", "CERTIFICATE"),
        key_pem=_pem(tls, "key", "PRIVATE KEY"),
        bucket=_field(event, "bucket", str, ""),
        region=_field(event, "region", str, None) or os.environ.get("AWS_REGION", "us-east-1"),
        s3_endpoint=s3_endpoint,
        command=_field(event, "command", str, ""),
        idle_timeout=float(idle_timeout),
        flags=flags,
        templates=_templates(event),
        pymap=_pymap(event),
    )
