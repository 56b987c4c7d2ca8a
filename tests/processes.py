"""Whether processes still run: a Ray sweep's workers must be gone after it ends or is
cancelled (read from /proc, independent of Ray)."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def gone(pids: tuple[int, ...], seconds: float = 20.0) -> bool:
    """Whether every process of ``pids`` has ended within ``seconds``."""
    end = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.2)
    return not any(alive(p) for p in pids)
