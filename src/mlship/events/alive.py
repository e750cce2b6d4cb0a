"""Liveness of a long-running loop by a heartbeat file: the loop touches it (at most every few
seconds), and the container's liveness probe checks its age, so a loop stuck anywhere — not only
a dead process — gets the container restarted.

    python -m mlship.events.alive /tmp/record.alive 120    # exit 0 if touched in the last 120 s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

EVERY_S = 5.0


class Heartbeat:
    def __init__(self, path: str, every_s: float = EVERY_S) -> None:
        self.path, self.every_s, self._last = Path(path) if path else None, every_s, -every_s

    def beat(self, now: float | None = None) -> None:
        if self.path is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last >= self.every_s:
            self.path.touch()
            self._last = now


def age(path: str) -> float | None:
    """Seconds since the file was last touched; None when it does not exist."""
    try:
        return max(0.0, time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mlship.events.alive FILE MAX_AGE_SECONDS", file=sys.stderr)
        return 2
    seconds = age(argv[0])
    if seconds is None or seconds > float(argv[1]):
        shown = "never" if seconds is None else f"{seconds:.0f}s ago"
        print(f"{argv[0]} last touched {shown} (limit {argv[1]}s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
