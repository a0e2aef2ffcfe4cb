"""Loading third-party backends by name, so that another process (a probe worker) can re-create them.

A backend registered with :func:`rocm_fp8.register_backend` lives in one process. The probe runs
each backend in a subprocess, so that process must be able to register it again. Three ways:

* a plugin spec: ``"package.module"`` (importing it registers its backends) or
  ``"package.module:attr"`` where ``attr`` is a :class:`~rocm_fp8.Backend` instance, a class
  (instantiated with no arguments) or a function (called; it may return backends or register them
  itself). Given to ``rocm-fp8 probe --plugin SPEC`` or listed, comma-separated, in the env var
  ``ROCM_FP8_PLUGINS``;
* an entry point in the group ``rocm_fp8.backends`` (``[project.entry-points."rocm_fp8.backends"]``
  in the plugin's pyproject), pointing at the same kinds of object;
* nothing: the probe passes the defining module and class of every third-party backend registered
  in the calling process to its workers, which import the module and, if that did not register the
  backend, instantiate the class. This needs the class to live in an importable module (not
  ``__main__``) and to take no constructor arguments.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Iterable

from rocm_fp8.backends import BUILTIN_BACKENDS, Backend, all_backends, find, register_backend

ENV_PLUGINS = "ROCM_FP8_PLUGINS"
ENTRY_POINT_GROUP = "rocm_fp8.backends"


def _register_object(obj: Any, spec: str) -> list[str]:
    if isinstance(obj, type):
        obj = obj()
    elif callable(obj) and not hasattr(obj, "run"):
        obj = obj()
    if obj is None:
        return []
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    names = []
    for b in items:
        if not (isinstance(b, Backend) or all(callable(getattr(b, m, None)) for m in ("available", "supports", "run"))):
            raise TypeError(f"plugin {spec!r}: expected a rocm_fp8.Backend (instance, class or factory), "
                            f"got {type(b).__name__}")
        register_backend(b, replace=True)
        names.append(b.name)
    return names


def load_plugin(spec: str) -> list[str]:
    """Import one plugin spec (see the module docstring); returns the names it registered through
    an attribute (a module that registers on import returns [])."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"plugin: expected 'module' or 'module:attr', got {spec!r}")
    module_name, _, attr = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"plugin {spec!r}: module {module_name!r} cannot be imported ({exc})") from None
    if not attr:
        return []
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"plugin {spec!r}: {module_name} has no attribute {attr!r}") from None
    return _register_object(obj, spec)


def env_plugins() -> list[str]:
    return [s.strip() for s in os.environ.get(ENV_PLUGINS, "").split(",") if s.strip()]


def load_entry_points() -> list[str]:
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names += _register_object(ep.load(), f"entry point {ep.name}")
    return names


def load_all(specs: Iterable[str] = ()) -> list[str]:
    """Entry points, then $ROCM_FP8_PLUGINS, then ``specs``."""
    names = load_entry_points()
    for spec in [*env_plugins(), *specs]:
        names += load_plugin(spec)
    return names


def describe_third_party() -> list[dict[str, str]]:
    """How to re-create each registered backend that is not a built-in, in another process."""
    out = []
    for b in all_backends():
        cls = type(b)
        if BUILTIN_BACKENDS.get(b.name) == f"{cls.__module__}:{cls.__qualname__}":
            continue
        if cls.__module__.startswith("rocm_fp8.backends") and b.name in BUILTIN_BACKENDS:
            continue
        out.append({"name": b.name, "module": cls.__module__, "qualname": cls.__qualname__})
    return out


def recreate(described: Iterable[dict[str, str]]) -> dict[str, str]:
    """In a worker: make sure each described backend is registered. Returns {name: error} for those
    that could not be re-created."""
    errors = {}
    for d in described:
        name, module_name, qualname = d["name"], d["module"], d["qualname"]
        if module_name == "__main__":
            errors[name] = (f"backend {name!r} is defined in __main__, which a probe worker cannot import; define it "
                            f"in an importable module or pass --plugin module:attr")
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors[name] = f"backend {name!r}: module {module_name!r} cannot be imported in the worker ({exc})"
            continue
        existing = find(name)
        if existing is not None and type(existing).__qualname__ == qualname:
            continue
        try:
            obj: Any = module
            for part in qualname.split("."):
                obj = getattr(obj, part)
            _register_object(obj, f"{module_name}:{qualname}")
        except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
            errors[name] = (f"backend {name!r}: could not re-create {module_name}.{qualname}() in the worker "
                            f"({type(exc).__name__}: {exc}); pass --plugin module:attr")
    return errors
