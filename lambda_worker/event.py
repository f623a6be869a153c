"""The invocation event, checked before anything else so a bad launch fails with one clear line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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
    nonblock: int
    idle_timeout: float

    @property
    def coordinator(self) -> str:
        return f"{self.host}:{self.port}"


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


def _pem(tls: dict[str, Any], name: str, marker: str) -> str:
    value = tls.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"event field 'tls.{name}' is missing; it must hold a PEM {marker}")
    if f"-----BEGIN {marker}" not in value and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in value):
        raise EventError(f"event field 'tls.{name}' is not a PEM {marker}")
    return value


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
    nonblock = _field(event, "nonblock", int, 0)
    if nonblock not in (0, 1):
        raise EventError(f"event field 'nonblock' must be 0 or 1, got {nonblock}")
    idle_timeout = _field(event, "idle_timeout", (int, float), 300)
    if idle_timeout <= 0:
        raise EventError(f"event field 'idle_timeout' must be > 0 seconds, got {idle_timeout}")
    s3_endpoint = _field(event, "s3_endpoint", str, None) or os.environ.get("AWS_ENDPOINT_URL_S3")
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
        nonblock=nonblock,
        idle_timeout=float(idle_timeout),
    )
