"""Backend registry.

Built-in backends are named here and imported on first use, so that importing ``rocm_fp8`` pulls
in neither triton nor aiter.  A built-in whose module fails to import still appears, as a backend
that is unavailable with the import error as its reason.  Third parties call
:func:`register_backend` with an instance of :class:`~rocm_fp8.backends.base.Backend`.
"""

from __future__ import annotations

import importlib
import threading
from typing import Optional

from rocm_fp8 import invalidation
from rocm_fp8.backends.base import OK, Backend, PreparedWeight, Problem, refuse, safe_call

__all__ = [
    "Backend", "PreparedWeight", "Problem", "OK", "refuse", "safe_call",
    "register_backend", "unregister_backend", "get_backend", "all_backends", "backend_names",
    "BUILTIN_BACKENDS",
]

#: name -> "module:attribute" of the built-in backends, in no particular order (ranking is policy's).
BUILTIN_BACKENDS: dict[str, str] = {
    "reference": "rocm_fp8.backends.reference:ReferenceBackend",
    "triton": "rocm_fp8.backends.triton:TritonBackend",
    "torch-scaled-mm": "rocm_fp8.backends.torch_scaled_mm:TorchScaledMMBackend",
    "aiter-triton": "rocm_fp8.backends.aiter_triton:AiterTritonBackend",
    "aiter-ck": "rocm_fp8.backends.aiter_ck:AiterCKBackend",
    "aiter-bpreshuffle": "rocm_fp8.backends.aiter_bpreshuffle:AiterBpreshuffleBackend",
}

_lock = threading.Lock()
_instances: dict[str, Backend] = {}
_third_party: dict[str, Backend] = {}


class _Broken(Backend):
    """Stands in for a built-in backend whose module could not be imported."""

    def __init__(self, name: str, error: str):
        self.name = name
        self._error = error

    def available(self, toolchain):
        return refuse(f"{self.name}: its module failed to import ({self._error})")

    def supports(self, problem, toolchain):
        return refuse(f"{self.name}: its module failed to import ({self._error})")


def _load_builtin(name: str) -> Backend:
    target = BUILTIN_BACKENDS[name]
    module_name, attr = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
        backend = cls()
    except Exception as exc:  # noqa: BLE001 - a broken module is a reason, never a crash
        backend = _Broken(name, f"{type(exc).__name__}: {exc}")
    return backend


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend. Its ``name`` must be new unless ``replace=True``. Returns it."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend: expected an object with a non-empty str 'name', got {backend!r}")
    for method in ("available", "supports", "prepare_weight", "run"):
        if not callable(getattr(backend, method, None)):
            raise TypeError(f"backend {name!r}: expected a callable {method}(), as in rocm_fp8.Backend")
    with _lock:
        if not replace and (name in BUILTIN_BACKENDS or name in _third_party):
            raise ValueError(f"backend: a backend named {name!r} is already registered (pass replace=True)")
        if name in BUILTIN_BACKENDS:
            _instances[name] = backend
        else:
            _third_party[name] = backend
    invalidation.invalidate()  # cached decisions may name a backend that changed
    return backend


def unregister_backend(name: str) -> None:
    with _lock:
        if name in _third_party:
            del _third_party[name]
        elif name in BUILTIN_BACKENDS:
            _instances.pop(name, None)  # back to the built-in implementation
        else:
            raise ValueError(f"backend: no backend named {name!r} is registered")
    invalidation.invalidate()


def backend_names() -> list[str]:
    return list(BUILTIN_BACKENDS) + [n for n in _third_party if n not in BUILTIN_BACKENDS]


def get_backend(name: str) -> Backend:
    with _lock:
        if name in _third_party:
            return _third_party[name]
        if name in BUILTIN_BACKENDS:
            if name not in _instances:
                _instances[name] = _load_builtin(name)
            return _instances[name]
    raise ValueError(f"backend: expected one of {', '.join(backend_names())} or 'auto', got {name!r}")


def all_backends() -> list[Backend]:
    return [get_backend(n) for n in backend_names()]


def find(name: str) -> Optional[Backend]:
    try:
        return get_backend(name)
    except ValueError:
        return None
