"""``psutil.virtual_memory()`` from ``/proc/meminfo`` (an exported benchmark's runner, where psutil is not
installed): what the replay's memory check reads. Anything else raises AttributeError, which the callers
treat as unknown."""

from __future__ import annotations

from collections import namedtuple

_VM = namedtuple("_VM", ["total", "available"])


def virtual_memory() -> _VM:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * 1024
    return _VM(total=info["MemTotal"], available=info.get("MemAvailable", info.get("MemFree", 0)))
