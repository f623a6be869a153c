"""Lambda entry point: validate the event, connect back to the coordinator, serve, clean up.

The handler never raises: Lambda retries an asynchronous invocation whose handler raised, and
the retry would be a ghost worker connecting to a coordinator that has moved on. Every way it
ends is a summary dict instead, and the same summary is what ``python -m lambda_worker`` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

from .event import EventError, WorkerEvent, parse_event
from .process import protect_memory
from .session import Session
from .tlsconf import client_context

CLOSE_WAIT = 2.0  # seconds to let cancelled S3 transfers wind down before returning


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one worker and return a summary of how it ended. Never raises."""
    started = time.monotonic()
    unprotected = protect_memory()  # before any command can run
    if unprotected is not None:
        print(f"mu worker: commands could read this process's memory and environment: {unprotected}",
              file=sys.stderr, flush=True)  # fmt: skip
    try:
        summary = _serve(event, context)
    except Exception as exc:  # the last line of defence: no exception reaches Lambda
        trace = "".join(traceback.format_exception(exc)).rstrip()
        print(f"mu worker: unexpected error\n{trace}", file=sys.stderr, flush=True)
        summary = {"ok": False, "exit": "crashed", "error": f"unexpected {type(exc).__name__}: {exc}"}
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


def _remaining_ms(context: Any) -> int | None:
    try:
        return int(context.get_remaining_time_in_millis())
    except Exception:  # no context (local run) or not Lambda's
        return None


def _fresh_lambda_tmp() -> None:
    """mu's ``rm_tmpdir``: a warm Lambda environment keeps /tmp, so the last invocation's files go.
    Only on Lambda, where /tmp belongs to this function alone; never on a shared machine."""
    if not (os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("LAMBDA_TASK_ROOT")):
        return
    root = tempfile.gettempdir()
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _serve(event: Any, context: Any) -> dict[str, Any]:
    try:
        ev = parse_event(event)
    except EventError as exc:
        print(f"mu worker: bad invocation event: {exc}", file=sys.stderr, flush=True)
        return {"ok": False, "error": f"bad invocation event: {exc}"}
    try:
        ctx = client_context(ev.ca_pem, ev.cert_pem, ev.key_pem)
        if event["tls"].get("verify_name") is False:  # a user certificate (mu -s) names no fixed host
            ctx.check_hostname = False
    except (ssl.SSLError, ValueError, OSError) as exc:
        msg = f"event field 'tls' holds unusable keys ({exc}); relaunch with the job's CA, cert and key"
        print(f"mu worker {ev.worker}: {msg}", file=sys.stderr, flush=True)
        return {"ok": False, "worker": ev.worker, "job": ev.job, "error": msg}
    if ev.flags["rm_tmpdir"]:
        _fresh_lambda_tmp()
    tmpdir = tempfile.mkdtemp(prefix=f"mu-{ev.worker}-")
    session = Session(ev, tmpdir, ctx, deadline_ms=_remaining_ms(context))
    summary: dict[str, Any] = {"worker": ev.worker, "job": ev.job}
    try:
        summary["exit"] = asyncio.run(session.run())
        summary["ok"] = summary["exit"] == "quit"
    except ConnectionError as exc:
        session.log(str(exc))
        summary.update(ok=False, exit="connect_failed", error=str(exc))
    finally:
        _close(session, ev, tmpdir)
    summary["commands"] = session.commands_served
    return summary


def _close(session: Session, ev: WorkerEvent, tmpdir: str) -> None:
    closer = threading.Thread(target=session.s3.close, name="mu-s3-close", daemon=True)
    closer.start()
    closer.join(CLOSE_WAIT)
    if ev.flags["rm_tmpdir"]:
        shutil.rmtree(tmpdir, ignore_errors=True)
    else:
        session.log(f"rm_tmpdir is 0: keeping {tmpdir}")
