"""What a process costs, read from /proc (Linux): resident memory and CPU time.

CPU time is the robust measure on a shared machine: wall-clock figures move with whatever else runs, the CPU
seconds a process spends per job do not (much).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """A process' resident set now and its peak (VmHWM) since start or since the last `reset_peak`, in bytes."""

    rss: int
    peak: int


def memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _stat_fields(pid: int) -> list[str]:
    # The command name in parentheses may hold spaces; the fields after it are fixed (proc(5), from `state`).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of `pid`; with `reaped_children`, also of its children that have exited."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a server and its worker processes (PostgreSQL: the postmaster and every backend, past and present)."""
    total = cpu_seconds(pid, reaped_children=True)
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:  # exited meanwhile; its time is now in the parent's reaped-children count
            continue
    return total


def find_process(*needles: str) -> int | None:
    """The first process whose command line contains every needle."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in command for needle in needles):
            return int(entry.name)
    return None
