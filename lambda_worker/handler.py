"""Lambda entry point: validate the event, connect back to the coordinator, serve, clean up."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import sys
import tempfile
import time
from typing import Any

from .event import EventError, parse_event
from .session import Session
from .tlsconf import client_context


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one worker. Never raises: Lambda would retry an async invocation that raised."""
    started = time.monotonic()
    try:
        ev = parse_event(event)
    except EventError as exc:
        print(f"mu worker: bad invocation event: {exc}", file=sys.stderr, flush=True)
        return {"ok": False, "error": f"bad invocation event: {exc}"}
    try:
        ctx = client_context(ev.ca_pem, ev.cert_pem, ev.key_pem)
    except (ssl.SSLError, ValueError) as exc:
        msg = f"event field 'tls' holds unusable keys ({exc}); relaunch with the job's CA, cert and key"
        print(f"mu worker {ev.worker}: {msg}", file=sys.stderr, flush=True)
        return {"ok": False, "worker": ev.worker, "job": ev.job, "error": msg}
    deadline_ms = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        deadline_ms = int(context.get_remaining_time_in_millis())
    tmpdir = tempfile.mkdtemp(prefix=f"mu-{ev.worker}-")
    session = Session(ev, tmpdir, ctx, deadline_ms=deadline_ms)
    summary: dict[str, Any] = {"worker": ev.worker, "job": ev.job}
    try:
        summary["exit"] = asyncio.run(session.run())
        summary["ok"] = summary["exit"] == "quit"
    except ConnectionError as exc:
        session.log(str(exc))
        summary.update(ok=False, exit="connect_failed", error=str(exc))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    summary["commands"] = session.commands_served
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary
