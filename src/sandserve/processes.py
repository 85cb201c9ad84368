"""The processes running on this machine, as Linux's /proc lists them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def live_processes(proc: Path = Path("/proc")) -> Iterator[tuple[int, str, list[str]]]:
    """Each process that still runs: its pid, its command name and the fields of its ``stat`` after the name
    (state first; zombies waiting to be reaped are left out). Nothing where the system has no /proc."""
    for stat_file in proc.glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue  # ended while we looked, or not ours to read
        # The command name may contain spaces and parentheses: it runs from the first "(" to the last ")".
        name = stat[stat.find("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields and fields[0] not in ("Z", "X"):
            yield int(stat_file.parent.name), name, fields
