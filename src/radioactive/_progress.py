"""Progress of long library work: a progress bar on a terminal, else a log line now and then.

The library never prints. On a terminal the bar (tqdm, on stderr) shows the count, the rate and the time left;
when stderr is not a terminal (a log file, a notebook's captured output, tests) the same progress goes to the
caller's logger at INFO, at most one line every ``every`` seconds, with an estimate of the time left.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["Progress", "duration"]


def duration(seconds: float) -> str:
    """``"about 40 s"``-style rounding for estimates: seconds under 2 minutes, then minutes, then hours."""
    if seconds < 120:
        return f"{max(1, round(seconds))} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts ``total`` units of work.

    Args:
        log: the logger the lines go to when no bar is shown.
        total: units expected (None: unknown).
        desc: what is being done, e.g. ``"marking probes"``.
        unit: the unit's name, e.g. ``"img"``.
        every: seconds between two log lines (no bar).
        bar: show a bar (True), log lines (False) or a bar only when stderr is a terminal (None).
    """

    def __init__(self, log: logging.Logger, total: int | None, desc: str, unit: str, *, every: float = 30.0,
                 bar: bool | None = None):
        self.log, self.total, self.desc, self.unit, self.every = log, total, desc, unit, every
        self.done = 0
        self.start = self._last = time.monotonic()
        if bar is None:
            bar = bool(getattr(sys.stderr, "isatty", lambda: False)()) and log.isEnabledFor(logging.INFO)
        self._bar: Any = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, smoothing=0.1, leave=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last < self.every or (self.total is not None and self.done >= self.total):
            return
        self._last = now
        elapsed = now - self.start
        if self.total:
            left = elapsed / max(self.done, 1) * (self.total - self.done)
            self.log.info("%s: %d / %d %s (%d %%), about %s left", self.desc, self.done, self.total, self.unit,
                          100 * self.done // self.total, duration(left))
        else:
            self.log.info("%s: %d %s in %s", self.desc, self.done, self.unit, duration(elapsed))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
