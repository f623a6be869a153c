"""``python -m lambda_worker``: read one invocation event as JSON on stdin and run it locally.

A local launcher may add ``"credentials": {"AWS_ACCESS_KEY_ID": ..., ...}`` to the event it
writes here (never to a Lambda event): the keys go into this process's ``os.environ`` for boto3
without being in the environment it was started with, which ``/proc/PID/environ`` of this
process and of every process above it (the sandbox's init) would show its commands.

SIGTERM stops the worker as a lost coordinator does: its commands' process groups are killed
and its temporary directory removed. Once the summary is printed the process ends at once,
without waiting for S3 threads still blocked in a socket read of a cancelled transfer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from types import FrameType

from .handler import lambda_handler
from .process import CREDENTIAL_VARIABLES


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the event loop: every finally block runs


def take_credentials(event: object) -> str | None:
    """Move the event's ``credentials`` into ``os.environ``; returns what is wrong with them."""
    if not isinstance(event, dict) or "credentials" not in event:
        return None
    given = event.pop("credentials")
    names = ", ".join(CREDENTIAL_VARIABLES)
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        return f"the event's 'credentials' must map {names} to text"
    unknown = sorted(set(given) - set(CREDENTIAL_VARIABLES))
    if unknown:
        return f"the event's 'credentials' may hold only {names}, not {', '.join(unknown)}"
    os.environ.update(given)
    return None


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    raw = sys.stdin.read()
    try:
        event = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"mu worker: stdin is not a JSON invocation event: {exc}", file=sys.stderr)
        return 2
    problem = take_credentials(event)
    if problem is not None:
        print(f"mu worker: {problem}", file=sys.stderr)
        return 2
    summary = lambda_handler(event, None)
    print(json.dumps(summary), flush=True)
    if "exit" not in summary:
        return 2  # the event itself was bad
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
