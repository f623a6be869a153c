"""The ``mu`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("usage: mu {run,genkeys,demo} ...  (the coordinator is not built yet)", file=sys.stderr)
    return 2
