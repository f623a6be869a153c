"""``python -m lambda_worker``: read one invocation event as JSON on stdin and run it locally."""

from __future__ import annotations

import json
import sys

from .handler import lambda_handler


def main() -> int:
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
    sys.exit(main())
