"""The runtime side of dispatch: overrides, caches, prepared weights, fallback on failure.

Decisions are made once per (shape, dtypes, device, request, M bucket) and cached; the bucket is
the next power of two >= M, and the decision for a bucket is taken at its upper end, so an M limit
from the ledger or the probe is never exceeded inside a bucket. Prepared weights (the bpreshuffle
shuffle, contiguous copies) are made once per weight tensor and backend, and dropped with the weight.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from rocm_fp8 import backends as _registry
from rocm_fp8 import policy
from rocm_fp8.backends.base import Backend, PreparedWeight, Problem
from rocm_fp8.errors import BackendFailedError, BackendUnavailableError, NoBackendError, UnsafeBackendError
from rocm_fp8.quant import FP8_NAMES

log = logging.getLogger("rocm_fp8")

ENV_BACKEND = "ROCM_FP8_BACKEND"
ENV_DISABLE = "ROCM_FP8_DISABLE"
ENV_ALLOW_UNSAFE = "ROCM_FP8_ALLOW_UNSAFE"

_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}

_lock = threading.RLock()
_decisions: dict[tuple, policy.Decision] = {}
_prepared = WeakTensorKeyDictionary()        # weight -> {backend name: PreparedWeight}
_failed: set[tuple] = set()                   # (backend, n, k, bucket) that raised at run time
_backend_of: dict = {}                        # Decision -> its backend object (saves a locked lookup)
_logged: set[tuple] = set()
_settings: Optional[dict] = None
_evidence: Optional[list] = None
#: bumped by clear_caches, so per-layer plans (Fp8BlockLinear) know to re-plan
generation = 0


def clear_caches(redetect: bool = False) -> None:
    """Forget decisions, prepared weights, env settings and evidence (after registering a backend,
    writing a probe report or changing the environment). ``redetect=True`` also forgets the detected
    toolchain and the loaded ledger files (after changing ROCM_FP8_CONFIG or ROCM_FP8_LEDGER)."""
    global _settings, _evidence, generation
    if redetect:
        from rocm_fp8 import ledger
        from rocm_fp8.toolchain import set_current

        set_current(None)
        ledger.reset()
    with _lock:
        generation += 1
        _decisions.clear()
        _backend_of.clear()
        _prepared.clear()
        _failed.clear()
        _logged.clear()
        _settings = None
        _evidence = None


def bucket(m: int) -> int:
    """The M bucket: the next power of two >= m (1 for m <= 1)."""
    return 1 if m <= 1 else 1 << (m - 1).bit_length()


def settings() -> dict:
    """Environment overrides, read once (``clear_caches`` re-reads them)."""
    global _settings
    if _settings is None:
        requested = os.environ.get(ENV_BACKEND, "").strip() or "auto"
        disabled = frozenset(n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip())
        allow_unsafe = os.environ.get(ENV_ALLOW_UNSAFE, "0") not in ("", "0")
        known = set(_registry.backend_names())
        if requested != "auto" and requested not in known:
            raise ValueError(f"{ENV_BACKEND}: expected one of {', '.join(sorted(known))} or 'auto', got {requested!r}")
        unknown = disabled - known
        if unknown:
            raise ValueError(f"{ENV_DISABLE}: expected comma-separated names among {', '.join(sorted(known))}, "
                             f"got unknown {', '.join(sorted(unknown))}")
        _settings = {"requested": requested, "disabled": disabled, "allow_unsafe": allow_unsafe}
    return _settings


def current_evidence(toolchain) -> list:
    global _evidence
    if _evidence is None:
        from rocm_fp8.evidence import default_sources

        _evidence = default_sources(toolchain)
    return _evidence


def resolve_request(backend: str) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str) or 'auto', got {type(backend).__name__}")
    if backend == "auto":
        return settings()["requested"]
    if backend not in _registry.backend_names():
        raise ValueError(f"backend: expected one of {', '.join(_registry.backend_names())} or 'auto', got {backend!r}")
    return backend


def decide(n: int, k: int, m: int, fp8_dtype: str, out_dtype: str, device_type: str, requested: str,
           block: tuple[int, int] = (128, 128)) -> policy.Decision:
    """The cached decision for the bucket holding ``m``."""
    b = bucket(m)
    key = (n, k, b, fp8_dtype, out_dtype, device_type, requested, block)
    d = _decisions.get(key)
    if d is not None:
        return d
    with _lock:
        d = _decisions.get(key)
        if d is None:
            d = _decide_uncached(n, k, b, fp8_dtype, out_dtype, device_type, requested, block)
            _decisions[key] = d
    return d


def _decide_uncached(n, k, b, fp8_dtype, out_dtype, device_type, requested, block) -> policy.Decision:
    from rocm_fp8.toolchain import detect

    tc = detect()
    s = settings()
    problem = Problem(b, n, k, fp8_dtype, out_dtype, block[0], block[1], device_type)
    # a backend that failed at run time for this shape is skipped by auto, still tried when asked for
    candidates = [be for be in _registry.all_backends()
                  if requested != "auto" or (be.name, n, k, b) not in _failed]
    d = policy.decide(tc, problem, candidates, current_evidence(tc), requested=requested,
                      disabled=s["disabled"], allow_unsafe=s["allow_unsafe"])
    if d.ok and requested == "auto":
        tag = (n, k, d.backend)
        if tag not in _logged:
            _logged.add(tag)
            log.info("rocm_fp8: N=%d K=%d M<=%d -> %s", n, k, b, d.reason)
    return d


def raise_for(decision: policy.Decision) -> None:
    if decision.ok:
        return
    cls = {"unsafe": UnsafeBackendError, "none": NoBackendError}.get(decision.failure, BackendUnavailableError)
    hint = ""
    if decision.failure == "unsafe":
        hint = f" (set {ENV_ALLOW_UNSAFE}=1 to use it anyway, or backend='auto')"
    elif decision.failure in ("unavailable", "disabled"):
        hint = " (use backend='auto' to let rocm_fp8 choose)"
    raise cls(decision.reason + hint)


def prepared_weight(backend: Backend, weight: torch.Tensor, weight_scale: torch.Tensor,
                    block: tuple[int, int]) -> PreparedWeight:
    """The weight in ``backend``'s layout, made once and kept while ``weight`` lives."""
    per_weight = _prepared.get(weight)
    # inference tensors (vLLM makes its weights under inference_mode) have no version counter
    version = None if weight.is_inference() else weight._version
    if per_weight is not None:
        p = per_weight.get(backend.name)
        if p is not None and p.extra.get("_version") == version and p.extra.get("_scale") is weight_scale:
            return p
    with _lock:
        p = backend.prepare_weight(weight, weight_scale)
        p.block = block
        p.extra["_version"] = version
        p.extra["_scale"] = weight_scale
        if per_weight is None:
            per_weight = {}
            _prepared[weight] = per_weight
        per_weight[backend.name] = p
    return p


def run_2d(x2d: torch.Tensor, x_scale: Optional[torch.Tensor], weight: torch.Tensor, weight_scale: torch.Tensor,
           out_dtype: torch.dtype, block: tuple[int, int], requested: str) -> torch.Tensor:
    """Decide (cached), quantize if needed, run. ``x2d`` is float [M, K] when ``x_scale`` is None,
    else FP8 [M, K] with fp32 ``x_scale`` [M, K/block_k]."""
    m, k = x2d.shape
    n = weight.shape[0]
    fp8_name = FP8_NAMES[weight.dtype]
    out_name = _DTYPE_NAMES[out_dtype]
    device_type = x2d.device.type
    while True:
        d = decide(n, k, m, fp8_name, out_name, device_type, requested, block)
        be = _backend_of.get(d)
        if be is None:
            raise_for(d)
            be = _backend_of[d] = _registry.get_backend(d.backend)
        try:
            if x_scale is None:
                xq, xs = be.quantize_input(x2d, weight.dtype, block[1])
            else:
                xq, xs = x2d, x_scale
            prepared = prepared_weight(be, weight, weight_scale, block)
            return be.run(xq, xs, prepared, out_dtype)
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # noqa: BLE001 - a kernel failure becomes a clear error or a fallback
            msg = (f"{be.name} failed for M={m} N={n} K={k} ({type(exc).__name__}: {exc})")
            if requested != "auto":
                raise BackendFailedError(msg + f"; retry with backend='auto' or set {ENV_DISABLE}={be.name}") from exc
            log.warning("rocm_fp8: %s; falling back to the next backend for this shape", msg)
            with _lock:
                _failed.add((be.name, n, k, bucket(m)))
                for key in [key for key in _decisions if key[:3] == (n, k, bucket(m))]:
                    del _decisions[key]
