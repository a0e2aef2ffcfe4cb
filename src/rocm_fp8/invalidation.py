"""Cache invalidation: when anything a decision rests on changes, everyone who cached one forgets it.

Registering a backend, adding a ledger file or writing a probe report changes what the dispatcher
would decide. Those modules call :func:`invalidate`; whoever caches decisions (the dispatcher, and
anything else) registers a listener with :func:`on_invalidate`. :data:`generation` counts the
invalidations, so a per-layer plan can tell cheaply that it is stale. The M bucket lives here too,
since every cache keyed by M uses it.

This module imports nothing from rocm_fp8, so any module can call it without an import circle.
"""

from __future__ import annotations

import threading
from typing import Callable

#: bumped by every :func:`invalidate`; a plan made at an older generation must be made again
generation = 0

_lock = threading.Lock()
_listeners: list[Callable[[], None]] = []


def on_invalidate(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener()`` on every :func:`invalidate` (once, however often it is registered).
    Returns it, so it can be used as a decorator."""
    if not callable(listener):
        raise TypeError(f"listener: expected a callable taking no arguments, got {listener!r}")
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)
    return listener


def invalidate() -> None:
    """Bump :data:`generation`, then run every listener in the order they registered."""
    global generation
    with _lock:
        generation += 1
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def bucket(m: int) -> int:
    """The M bucket: the next power of two >= m (1 for m <= 1). Decisions are cached per bucket."""
    return 1 if m <= 1 else 1 << (m - 1).bit_length()
