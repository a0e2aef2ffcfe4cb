"""A progress bar with an ETA for long measurements (``tune``, ``probe``), on stderr.

On a terminal it redraws one line; otherwise (CI logs, ``| tee``, a container's log stream) it
prints a plain line per step, so logs stay readable. The ETA is the mean time per finished step
times the steps left, weighted by each step's declared cost when the steps differ in size.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total: float, what: str = "", stream: Optional[TextIO] = None, width: int = 28,
                 tty: Optional[bool] = None, clock=time.monotonic):
        if total <= 0:
            raise ValueError(f"total: expected a positive amount of work, got {total!r}")
        self.total = float(total)
        self.done = 0.0
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self._clock = clock
        self.t0 = clock()
        self._drawn = False

    def eta_s(self) -> Optional[float]:
        if self.done <= 0:
            return None
        elapsed = self._clock() - self.t0
        return elapsed / self.done * (self.total - self.done)

    def line(self, label: str = "") -> str:
        frac = min(1.0, self.done / self.total)
        filled = int(round(frac * self.width))
        eta = self.eta_s()
        elapsed = self._clock() - self.t0
        return (f"{self.what + ' ' if self.what else ''}[{'#' * filled}{'.' * (self.width - filled)}] "
                f"{frac * 100:5.1f}%  {_clock(elapsed)} elapsed, ETA {'?' if eta is None else _clock(eta)}"
                + (f"  {label}" if label else ""))

    def advance(self, amount: float = 1.0, label: str = "") -> None:
        self.done = min(self.total, self.done + amount)
        self.show(label)

    def show(self, label: str = "") -> None:
        text = self.line(label)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A message that must not be overwritten by the bar."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
        self.stream.write(message + "\n")
        self.stream.flush()
        self._drawn = False

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
