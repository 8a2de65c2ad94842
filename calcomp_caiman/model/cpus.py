"""How many CPUs this process may use (cgroup limits included)."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by the cgroup v2 ``cpu.max`` quotas of this process, or None.

    Reads ``cpu.max`` of the process's own cgroup (``/proc/self/cgroup``) and of every
    cgroup above it, up to ``/sys/fs/cgroup/cpu.max`` (a container's own quota), and
    returns the smallest, rounded up as joblib does: a 1.5-CPU quota allows 2 threads.
    """
    folders = [_CGROUP_ROOT]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::/"):
                own = _CGROUP_ROOT / line[len("0::/") :].strip()
                chain = [own, *own.parents]
                folders = chain[: chain.index(_CGROUP_ROOT) + 1]
                break
    except (OSError, ValueError):
        pass
    limit = None
    for folder in folders:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                cpus = max(1, math.ceil(int(quota) / int(period)))
                limit = cpus if limit is None else min(limit, cpus)
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return limit


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    ``len(os.sched_getaffinity(0))`` where the platform has it (``os.cpu_count()``
    elsewhere), capped by the ``cpu.max`` quota of the process's cgroup v2 (rounded up).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> available_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)
