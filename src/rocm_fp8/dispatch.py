"""The runtime side of dispatch: one execution path for the op and the layer.

Decisions are made once per (shape, dtypes, device, request, M bucket) and cached; the bucket is
the next power of two >= M, and the decision for a bucket is taken at its upper end, so an M limit
from the ledger or the probe is never exceeded inside a bucket.

Every weight the op or a layer uses gets a :class:`WeightPlan`, validated once. It holds

* the weight in each backend's layout (``Backend.prepare_weight``, made once);
* the backends that failed at run time *for this weight* (so a failure never leaks to another);
* its bound calls, one per (M bucket, output dtype, input kind, request): the decision, its backend,
  the prepared weight and the callable ``Backend.bind`` returned.

The per-call path is bucket arithmetic, one dictionary lookup of plain values and the call.

In-place weight updates: a weight that tracks a version counter (an ordinary tensor) is re-prepared
when its version changes. Inference tensors (made under ``torch.inference_mode()``) have no version
counter: an in-place update to one must be announced with :func:`invalidate_weight` (or
``Fp8BlockLinear.reset_plan()``), and so must a change made through ``.data``.

Lifetime: a layer's plan lives with the layer. The functional op keeps its plans (and so the
weights it has seen, which the prepared layouts reference) until ``clear_caches()`` or
``invalidate_weight(w)``: a process that replaces its weights should call one of them.

Fallback: with ``backend="auto"``, an exception raised inside a backend's own methods
(``prepare_weight``, ``bind``, ``quantize_input`` or the bound call) marks that backend failed for
this weight and M bucket, is logged once, shows in the decision's ``considered`` and ``notes``, and
the next backend runs. ``ValueError``/``TypeError`` (bad arguments) and errors in rocm_fp8's own
code outside a backend propagate and mark nothing. An explicit backend that fails raises
:class:`~rocm_fp8.errors.BackendFailedError`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from typing import Callable, Mapping, Optional

import torch

from rocm_fp8 import backends as _registry
from rocm_fp8 import invalidation, ledger, policy, probe_report
from rocm_fp8.backends.base import Backend, PreparedWeight, Problem
from rocm_fp8.errors import BackendFailedError, BackendUnavailableError, NoBackendError, UnsafeBackendError
from rocm_fp8.evidence import EvidenceSource
from rocm_fp8.invalidation import bucket  # noqa: F401 - re-exported: dispatch.bucket
from rocm_fp8.quant import FP8_NAMES
from rocm_fp8.toolchain import detect, set_current

log = logging.getLogger("rocm_fp8")

ENV_BACKEND = "ROCM_FP8_BACKEND"
ENV_DISABLE = "ROCM_FP8_DISABLE"
ENV_ALLOW_UNSAFE = "ROCM_FP8_ALLOW_UNSAFE"

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
_DTYPE_NAMES = DTYPE_NAMES  # the old private name

_lock = threading.RLock()
_decisions: dict[tuple, policy.Decision] = {}
_plans: dict[int, "WeightPlan"] = {}           # id(weight) -> plan, for the functional op
_all_plans: "weakref.WeakSet[WeightPlan]" = weakref.WeakSet()   # layers' plans too, for clear_caches
_logged: set[tuple] = set()
_settings: Optional[dict] = None
_evidence: Optional[list] = None


def __getattr__(name: str):
    # ``dispatch.generation`` is invalidation's counter, read live (per-layer plans compare it)
    if name == "generation":
        return invalidation.generation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def clear_caches(redetect: bool = False) -> None:
    """Forget decisions, prepared weights, bound calls, run-time failures, env settings and evidence
    (after registering a backend, writing a probe report or changing the environment).
    ``redetect=True`` also forgets the detected toolchain and the loaded ledger files (after
    changing ROCM_FP8_CONFIG or ROCM_FP8_LEDGER)."""
    if redetect:
        set_current(None)
        ledger.reset()  # invalidates too
    else:
        invalidation.invalidate()


def default_sources(toolchain) -> list[EvidenceSource]:
    """The evidence the policy consults: probe reports for this toolchain first, then the
    known-issues ledger (the prior)."""
    return [*probe_report.sources_for(toolchain), ledger.default_ledger()]


@invalidation.on_invalidate
def _forget() -> None:
    global _settings, _evidence
    with _lock:
        _decisions.clear()
        _plans.clear()
        for plan in list(_all_plans):
            plan.reset()
        _logged.clear()
        _settings = None
        _evidence = None


def invalidate_weight(weight: torch.Tensor) -> None:
    """Announce an in-place update of ``weight`` (or of its scale) that its version counter cannot
    show: inference tensors have none, and ``.data`` assignments bypass it. Every plan for it is
    re-prepared on the next call."""
    with _lock:
        _plans.pop(id(weight), None)
        for plan in list(_all_plans):
            if plan.weight is weight:
                plan.reset()



def settings() -> dict:
    """Environment overrides, read once (``clear_caches`` re-reads them)."""
    global _settings
    if _settings is None:
        requested = os.environ.get(ENV_BACKEND, "").strip() or "auto"
        disabled = frozenset(n.strip() for n in os.environ.get(ENV_DISABLE, "").split(",") if n.strip())
        allow_unsafe = os.environ.get(ENV_ALLOW_UNSAFE, "0") not in ("", "0")
        names = _registry.backend_names()
        known = frozenset(names)
        if requested != "auto" and requested not in known:
            raise ValueError(f"{ENV_BACKEND}: expected one of {', '.join(sorted(known))} or 'auto', got {requested!r}")
        unknown = disabled - known
        if unknown:
            raise ValueError(f"{ENV_DISABLE}: expected comma-separated names among {', '.join(sorted(known))}, "
                             f"got unknown {', '.join(sorted(unknown))}")
        _settings = {"requested": requested, "disabled": disabled, "allow_unsafe": allow_unsafe,
                     "names": names}
    return _settings


def current_evidence(toolchain) -> list:
    global _evidence
    if _evidence is None:
        _evidence = default_sources(toolchain)
    return _evidence


def resolve_request(backend: str) -> str:
    """``backend`` argument -> the backend name to use, or "auto" (``ROCM_FP8_BACKEND`` applied)."""
    s = _settings or settings()
    if backend == "auto":
        return s["requested"]
    # a list, not the frozenset: torch.compile traces this, and older dynamo misjudges frozenset membership
    if isinstance(backend, str) and backend in s["names"]:
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str) or 'auto', got {type(backend).__name__}")
    raise ValueError(f"backend: expected one of {', '.join(s['names'])} or 'auto', got {backend!r}")


# -- decisions -------------------------------------------------------------------------------------
def decide(n: int, k: int, m: int, fp8_dtype: str, out_dtype: str, device_type: str, requested: str,
           block: tuple[int, int] = (128, 128), failed: Optional[Mapping[str, str]] = None) -> policy.Decision:
    """The cached decision for the bucket holding ``m``. ``failed`` maps backends that failed at run
    time for the weight at hand to why; auto skips them (the decision says so)."""
    b = bucket(m)
    key = (n, k, b, fp8_dtype, out_dtype, device_type, requested, tuple(block),
           tuple(sorted(failed.items())) if failed else ())
    d = _decisions.get(key)
    if d is not None:
        return d
    with _lock:
        d = _decisions.get(key)
        if d is None:
            tc = detect()
            s = settings()
            problem = Problem(b, n, k, fp8_dtype, out_dtype, block[0], block[1], device_type)
            d = decide_problem(tc, problem, _registry.all_backends(), current_evidence(tc), requested=requested,
                               disabled=s["disabled"], allow_unsafe=s["allow_unsafe"], failed=failed)
            if d.ok and requested == "auto":
                tag = (n, k, d.backend)
                if tag not in _logged:
                    _logged.add(tag)
                    log.info("rocm_fp8: N=%d K=%d M<=%d -> %s", n, k, b, d.reason)
            _decisions[key] = d
    return d


def decide_problem(toolchain, problem: Problem, candidates, evidence, *, requested: str = "auto",
                   disabled=(), allow_unsafe: bool = False,
                   failed: Optional[Mapping[str, str]] = None) -> policy.Decision:
    """:func:`policy.decide`, plus what the runtime adds: backends that failed for this weight
    (skipped by auto, listed in ``considered``), and how the output dtype is produced.

    A backend that cannot write the requested output dtype but can write bfloat16 still serves it
    (the result is cast once); the note says which: "writes float32" or "computes bfloat16, cast
    once to float32". The dispatcher reads the compute dtype back from :func:`compute_dtype`.
    """
    failed = dict(failed or {})
    pool = [b for b in candidates if requested != "auto" or b.name not in failed]
    d = policy.decide(toolchain, problem, pool, evidence, requested=requested, disabled=disabled,
                      allow_unsafe=allow_unsafe)
    out = problem.out_dtype
    if d.ok:
        note = f"{d.backend} writes {out}"
    elif out != "bfloat16":
        bf16 = dataclasses.replace(problem, out_dtype="bfloat16")
        d2 = policy.decide(toolchain, bf16, pool, evidence, requested=requested, disabled=disabled,
                           allow_unsafe=allow_unsafe)
        if not d2.ok:
            return _with_failures(d, failed, problem)
        d = dataclasses.replace(d2, problem=problem)
        note = f"{d.backend} computes bfloat16, cast once to {out}"
    else:
        return _with_failures(d, failed, problem)
    return _with_failures(dataclasses.replace(d, notes=d.notes + (note,)), failed, problem)


def _with_failures(d: policy.Decision, failed: dict, problem: Problem) -> policy.Decision:
    if not failed:
        return d
    extra = tuple(policy.Considered(name, False, f"{name}: failed at run time for this weight at M<={problem.m} "
                                    f"({why}); auto skips it for this weight")
                  for name, why in failed.items() if name not in {c.backend for c in d.considered})
    notes = tuple(f"fell back from {name} (failed at run time for this weight: {why})" for name, why in failed.items())
    return dataclasses.replace(d, considered=d.considered + extra, notes=d.notes + notes)


def compute_dtype(d: policy.Decision) -> str:
    """The dtype the chosen backend writes: the problem's, or bfloat16 when the note says it casts."""
    for note in d.notes:
        if note.startswith(f"{d.backend} computes bfloat16, cast once"):
            return "bfloat16"
    return d.problem.out_dtype


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


# -- plans and bound calls ---------------------------------------------------------------------------
_NAME_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}


def default_bind(backend, prepared: PreparedWeight, out_dtype: torch.dtype, m_bucket: int) -> Callable:
    """``Backend.bind`` for objects that implement the protocol without subclassing Backend."""
    run = backend.run

    def call(x_q, x_scale):
        return run(x_q, x_scale, prepared, out_dtype)

    return call


class BoundCall:
    """A decision bound to its backend, the prepared weight and the backend's callable."""

    __slots__ = ("decision", "backend", "prepared", "fn", "quantize", "fp8", "group", "cast_to", "bucket", "fn_float")

    def __init__(self, decision, backend, prepared, fn, quantize, fp8, group, cast_to, m_bucket, fn_float=None):
        self.decision = decision
        self.backend = backend
        self.prepared = prepared
        self.fn = fn
        self.quantize = quantize
        self.fp8 = fp8
        self.group = group
        self.cast_to = cast_to
        self.bucket = m_bucket
        self.fn_float = fn_float  # float input, quantized by the backend's own bound call (bind_float_input)

    def __repr__(self) -> str:
        return f"<bound {self.backend.name} M<={self.bucket}>"


def _version(t: torch.Tensor) -> Optional[int]:
    return None if t.is_inference() else t._version


class WeightPlan:
    """One weight (and its scale), validated once, with its prepared layouts and bound calls.

    ``calls`` maps (M bucket, out dtype, float input?, request) to a :class:`BoundCall`.
    """

    __slots__ = ("__weakref__", "weight", "weight_scale", "n", "k", "kb", "block", "fp8", "fp8_name", "device",
                 "device_type", "versions", "calls", "prepared", "failed", "bias")

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, block: tuple[int, int]):
        self.weight = weight
        self.weight_scale = weight_scale
        self.n, self.k = weight.shape
        self.block = (int(block[0]), int(block[1]))
        self.kb = -(-self.k // self.block[1])
        self.fp8 = weight.dtype
        self.fp8_name = FP8_NAMES[weight.dtype]
        self.device = weight.device
        self.device_type = weight.device.type
        self.calls: dict[tuple, BoundCall] = {}
        self.prepared: dict[str, PreparedWeight] = {}
        self.failed: dict[int, dict[str, str]] = {}   # bucket -> {backend: why}
        self.bias = None                               # the last bias validated with this weight
        self.versions = self._read_versions()
        _all_plans.add(self)

    def _read_versions(self):
        wv, sv = _version(self.weight), _version(self.weight_scale)
        return None if wv is None or sv is None else (wv, sv)

    def reset(self) -> None:
        with _lock:
            self.calls.clear()
            self.prepared.clear()
            self.failed.clear()
            self.versions = self._read_versions()

    def check_version(self) -> None:
        """Re-prepare after an in-place update the version counters show."""
        v = self.versions
        if v is not None and (self.weight._version != v[0] or self.weight_scale._version != v[1]):
            self.reset()

    # -- the hot path -----------------------------------------------------------------------------
    def run(self, x2d: torch.Tensor, x_scale: Optional[torch.Tensor], out_dtype: torch.dtype,
            requested: str) -> torch.Tensor:
        """``x2d`` float [M, K] (``x_scale`` None) or FP8 [M, K] with fp32 ``x_scale`` [M, ceil(K/bk)]."""
        m = x2d.shape[0]
        key = (1 if m <= 1 else 1 << (m - 1).bit_length(), out_dtype, x_scale is None, requested)
        call = self.calls.get(key)
        if call is None:
            call = self.bind(key)
        try:
            if x_scale is None:
                if call.fn_float is not None:
                    y = call.fn_float(x2d)
                else:
                    x_q, x_s = call.quantize(x2d, call.fp8, call.group)
                    y = call.fn(x_q, x_s)
            else:
                y = call.fn(x2d, x_scale)
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # noqa: BLE001 - the backend's own failure: a clear error or a fallback
            self._failed(call, key, exc, f"M={m}")
            return self.run(x2d, x_scale, out_dtype, requested)
        if call.cast_to is not None:
            y = y.to(call.cast_to)
        return y

    # -- binding ----------------------------------------------------------------------------------
    def bind(self, key: tuple) -> BoundCall:
        """Decide, prepare and bind for ``key`` (once; ``Fp8BlockLinear.plan`` calls it ahead)."""
        b, out_dtype, float_input, requested = key
        with _lock:
            call = self.calls.get(key)
            if call is not None:
                return call
            while True:
                d = decide(self.n, self.k, b, self.fp8_name, DTYPE_NAMES[out_dtype], self.device_type, requested,
                           self.block, self.failed.get(b))
                raise_for(d)
                be = _registry.get_backend(d.backend)
                compute = _NAME_DTYPES[compute_dtype(d)]
                stub = BoundCall(d, be, None, None, None, self.fp8, self.block[1], None, b)
                try:
                    prepared = self.prepared.get(be.name)
                    if prepared is None:
                        prepared = be.prepare_weight(self.weight, self.weight_scale)
                        prepared.block = self.block
                        self.prepared[be.name] = prepared
                    binder = getattr(be, "bind", None)
                    fn = (binder(prepared, compute, b) if binder is not None
                          else default_bind(be, prepared, compute, b))
                    quantize = getattr(be, "quantize_input", None)
                    if quantize is None:  # a duck-typed backend: the torch quantizer
                        quantize = Backend.quantize_input.__get__(be)
                    float_binder = getattr(be, "bind_float_input", None) if float_input else None
                    fn_float = (float_binder(prepared, compute, b, self.fp8, self.block[1])
                                if float_binder is not None else None)
                except (ValueError, TypeError):
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._failed(stub, key, exc, f"M<={b}", " while preparing the weight")
                    continue
                call = BoundCall(d, be, prepared, fn, quantize, self.fp8, self.block[1],
                                 out_dtype if compute != out_dtype else None, b, fn_float)
                self.calls[key] = call
                return call

    def _failed(self, call: BoundCall, key: tuple, exc: BaseException, where: str, what: str = "") -> None:
        """Record a backend's own failure for this weight and bucket, or raise for an explicit request."""
        b, _, _, requested = key
        name = call.backend.name
        msg = f"{name} failed for {where} N={self.n} K={self.k}{what} ({type(exc).__name__}: {exc})"
        if requested != "auto":
            raise BackendFailedError(msg + f"; retry with backend='auto' or set {ENV_DISABLE}={name}") from exc
        with _lock:
            self.failed.setdefault(b, {})[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            for k in [k for k in self.calls if k[0] == b]:
                del self.calls[k]
            tag = ("failed", name, self.n, self.k, b)
            first = tag not in _logged
            _logged.add(tag)
        (log.warning if first else log.debug)(
            "rocm_fp8: %s; falling back to the next backend for this weight and M bucket", msg)


def plan_for(weight: torch.Tensor, weight_scale: torch.Tensor, block: tuple[int, int]) -> WeightPlan:
    """The functional op's plan for ``weight`` (the caller has validated the arguments)."""
    plan = _plans.get(id(weight))
    if plan is not None and plan.weight is weight and plan.weight_scale is weight_scale and plan.block == block:
        return plan
    with _lock:
        plan = WeightPlan(weight, weight_scale, block)
        _plans[id(weight)] = plan
    return plan


def failures_for(weight: torch.Tensor, m: int) -> dict[str, str]:
    """Backends that failed at run time for ``weight`` in the bucket of ``m`` (functional op and layers)."""
    b = bucket(m)
    out: dict[str, str] = {}
    for plan in list(_all_plans):
        if plan.weight is weight:
            out.update(plan.failed.get(b, {}))
    return out


def run_2d(x2d: torch.Tensor, x_scale: Optional[torch.Tensor], weight: torch.Tensor, weight_scale: torch.Tensor,
           out_dtype: torch.dtype, block: tuple[int, int], requested: str) -> torch.Tensor:
    """Decide (cached), quantize if needed, run: the op's path without its argument checks."""
    return plan_for(weight, weight_scale, tuple(block)).run(x2d, x_scale, out_dtype, requested)
