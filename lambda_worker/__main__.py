"""``python -m lambda_worker``: read one invocation event as JSON on stdin and run it locally.

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


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the event loop: every finally block runs


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    raw = sys.stdin.read()
    try:
        event = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"mu worker: stdin is not a JSON invocation event: {exc}", file=sys.stderr)
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
