"""A process's resident memory and CPU time, read from /proc (Linux), for the benches."""

from __future__ import annotations

import os
from pathlib import Path


def rss_mib(pid: int) -> float:
    """The process's resident set, MiB (NaN where /proc does not tell)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
