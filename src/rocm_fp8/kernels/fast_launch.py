"""Launching a warmed Triton kernel without ``JITFunction.__call__``'s per-call work.

Each ``kernel[grid](...)`` call binds the arguments through a generated binder, builds the
specialization key (dtype, 16-byte alignment and value-1 checks of every argument), looks the
compiled kernel up, reads the runtime knobs and builds launch metadata, and only then calls the
compiled kernel's launcher: tens of microseconds of host time for a GEMM with 25 arguments.

For a layer whose constexprs, compiler options and argument specialization are fixed, all of that
can be done once: the first launch goes through the JIT (compiling if needed) and returns the
``CompiledKernel``; :class:`WarmKernel` keeps its launcher, function handle and packed metadata, and
later launches call ``CompiledKernel.run(grid, stream, function, metadata, hooks, *args)`` directly,
which is what the JIT itself calls last. The caller must pass arguments that specialize the same way
as the warm-up's (same dtypes, same alignment, ints of the same class); see ``BoundGemm``.

The fast path is taken only where it is known to work (:func:`fast_launch_supported`): compiled
mode (not ``TRITON_INTERPRET=1``), a Triton with ``triton.knobs`` (3.4 and later, where the JIT hands
every bound argument, constexprs included, to the launcher) and a ``CompiledKernel`` exposing
``run``/``function``/``packed_metadata``. While a launch hook is installed (a profiler such as
proton), :func:`hooks_idle` is False and callers take the normal launch so the hook sees every call.
Capturable in CUDA graphs: the stream is read from torch on every call.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

import triton


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _runtime_knobs() -> Optional[Any]:
    knobs = getattr(triton, "knobs", None)
    runtime = getattr(knobs, "runtime", None)
    if runtime is None or not hasattr(runtime, "launch_enter_hook") or not hasattr(runtime, "launch_exit_hook"):
        return None
    return runtime


def fast_launch_supported() -> bool:
    """Whether this Triton, in this mode, can launch a warmed kernel directly."""
    return not interpreting() and _runtime_knobs() is not None


def _hook_idle(hook: Any) -> bool:
    # Triton 3.4-3.6: a callable or None; later: a HookChain whose ``calls`` list is empty when unused.
    return hook is None or getattr(hook, "calls", None) == []


def hooks_idle() -> bool:
    """No launch enter/exit hook is installed (so launching without launch metadata loses nothing)."""
    rt = _runtime_knobs()
    return rt is not None and _hook_idle(rt.launch_enter_hook) and _hook_idle(rt.launch_exit_hook)


@functools.lru_cache(maxsize=None)
def stream_getter() -> Callable[[int], int]:
    """``device index -> raw current stream``, the function Triton's JIT uses (torch's current stream)."""
    from triton.runtime import driver

    return driver.active.get_current_stream


class WarmKernel:
    """A compiled kernel's launcher, bound once. ``(grid_x, grid_y, stream, *args)`` launches it.

    ``args`` are all of the kernel's parameters in order, constexprs included (their values are
    ignored by the launcher but keep the positions).
    """

    __slots__ = ("_run", "_function", "_packed", "name")

    def __init__(self, compiled: Any) -> None:
        self._run = compiled.run  # loads the module on first access
        self._function = compiled.function
        self._packed = compiled.packed_metadata
        self.name = getattr(compiled, "name", "?")

    def __call__(self, grid_x: int, grid_y: int, stream: int, *args: Any) -> None:
        self._run(grid_x, grid_y, 1, stream, self._function, self._packed, None, None, None, *args)


def warm(compiled: Any) -> Optional[WarmKernel]:
    """A :class:`WarmKernel` for what a JIT launch returned, or None where there is none (interpreter)."""
    if compiled is None or not fast_launch_supported():
        return None
    if not hasattr(compiled, "packed_metadata"):
        return None
    try:
        return WarmKernel(compiled)  # reading ``run`` loads the module, which sets ``function``
    except Exception:  # noqa: BLE001 - a launcher we cannot bind means "use the normal launch"
        return None
