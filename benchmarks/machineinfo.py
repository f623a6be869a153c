"""One line describing the machine a benchmark ran on, printed with every result."""

from __future__ import annotations

import os
import platform


def machine_line() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"machine: {cpu}, {os.cpu_count()} cores{mem}, {system}"


def _status_kib(field: str) -> int:
    """One memory figure of this process from /proc/self/status, in KiB (0 where there is none)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM), in KiB."""
    return _status_kib("VmHWM")


def rss_kib() -> int:
    return _status_kib("VmRSS")
