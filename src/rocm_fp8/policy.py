"""The dispatch policy: a pure function of (toolchain, problem, backends, evidence, overrides).

``decide`` does three things, in this order, and records each backend's fate:

1. filter: the backend must be available on the toolchain and support the problem;
2. remove what evidence marks unsafe for this toolchain, shape and M (probe reports first, then
   the known-issues ledger, see :mod:`rocm_fp8.evidence`);
3. rank what is left with :func:`rank`: by speed measured on this toolchain (probe reports), else
   the figures of the device's kernel table, then the per-platform order.

It never raises for a backend that cannot run: the decision carries the reason, and the runtime
(:mod:`rocm_fp8.dispatch`) turns a failed explicit request into an exception. No detection, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from rocm_fp8 import kernel_configs
from rocm_fp8.backends import BUILTIN_BACKENDS
from rocm_fp8.backends.base import Backend, Problem, safe_call
from rocm_fp8.evidence import EvidenceSource, Verdict, consult, measured_speed
from rocm_fp8.toolchain import Toolchain, format_version

#: The default order per platform, best first. It encodes sglang PR #27111 on AMD: on gfx950 an
#: untuned shape goes to CK bpreshuffle, else plain CK, else Triton; on gfx942 aiter's Triton.
#: Shapes that aiter ships a tuned Triton config for are lifted by ``tuned_for`` (see ``rank``),
#: which reproduces the PR's "tuned list -> Triton on every ROCm version" row. Correctness gates
#: (hipcc versions, per-shape M limits) are *not* here: they are evidence.
PLATFORM_ORDER: dict[str, tuple[str, ...]] = {
    "gfx950": ("aiter-bpreshuffle", "aiter-ck", "aiter-triton", "triton"),
    "gfx942": ("aiter-triton", "triton", "aiter-ck", "aiter-bpreshuffle"),
    "amd": ("aiter-triton", "triton"),
    "nvidia": ("torch-scaled-mm", "triton"),
    # Without a GPU the float reference is the path; the Triton interpreter only when asked for.
    "cpu": (),
}

#: where "reference" sits everywhere: last, as the correct but slow fallback
_REFERENCE_SCORE = 0
_UNLISTED_BUILTIN_SCORE = -10
_TABLE_TOP_SCORE = 100
_TABLE_STEP = 10


def platform_of(toolchain: Toolchain, problem: Problem) -> str:
    if problem.device_type == "cpu" or toolchain.vendor == "cpu":
        return "cpu"
    if toolchain.vendor == "amd":
        return toolchain.arch if toolchain.arch in PLATFORM_ORDER else "amd"
    if toolchain.vendor == "nvidia":
        return "nvidia"
    return "cpu"


def base_score(backend: Backend, platform: str) -> int:
    """Higher runs first. Built-ins get their place in the platform's table; "reference" is last;
    a third-party backend (or a built-in the table does not name) uses its own ``priority``."""
    if backend.name == "reference":
        return _REFERENCE_SCORE
    order = PLATFORM_ORDER.get(platform, ())
    if backend.name in order:
        return _TABLE_TOP_SCORE - _TABLE_STEP * order.index(backend.name)
    if backend.name in BUILTIN_BACKENDS:
        return _UNLISTED_BUILTIN_SCORE  # e.g. Triton on the CPU: only when asked for
    return int(getattr(backend, "priority", 50))


@dataclass(frozen=True)
class RankInfo:
    backend: str
    score: int
    tuned: bool
    tflops: Optional[float]
    order_words: str = "default order"
    #: where ``tflops`` comes from, citable: "probe:<report file>" (measured on this toolchain) or
    #: "table:<table file>" (the kernel table of this device or its family)
    source: Optional[str] = None
    #: the M the figure was measured at
    measured_m: Optional[int] = None

    @property
    def key(self) -> tuple:
        # Measured or tuned first; among those, measured speed; then the platform table.
        informed = self.tuned or self.tflops is not None
        return (0 if informed else 1, -(self.tflops or 0.0), -self.score)

    def describe(self) -> str:
        bits = []
        if self.tflops is not None:
            at = f" at M={self.measured_m}" if self.measured_m is not None else ""
            where = f" [{self.source}]" if self.source else ""
            bits.append(f"measured {self.tflops:.1f} TFLOPS{at}{where}")
        if self.tuned:
            bits.append("tuned config for this shape")
        if not bits:
            bits.append(self.order_words)
        return ", ".join(bits)


def rank(candidates: Sequence[Backend], toolchain: Toolchain, problem: Problem,
         evidence: Sequence[Any] = ()) -> list[RankInfo]:
    """The one ranking function, best first: backends with a measured speed by that speed, then
    the rest by the platform order. Speed measured on this toolchain (``evidence`` sources with a
    ``speed`` method: probe reports written by ``rocm-fp8 tune`` / ``probe --timing``) goes before
    the figures in the device's kernel table. Correctness is not decided here: ``decide`` has
    already removed what evidence marks unsafe."""
    platform = platform_of(toolchain, problem)
    infos = []
    table = None
    if platform != "cpu":
        try:
            table = kernel_configs.find_for(toolchain)
        except Exception:  # noqa: BLE001 - a broken table folder must not break dispatch
            table = None
    for b in candidates:
        words = _order_words(b, platform)
        if platform == "cpu":  # speed tables describe GPUs; on the CPU the table order alone decides
            infos.append(RankInfo(b.name, base_score(b, platform), False, None, words))
            continue
        try:
            tuned = bool(b.tuned_for(problem, toolchain))
        except Exception:  # noqa: BLE001 - a broken hint must not break dispatch
            tuned = False
        measured = measured_speed(evidence, b.name, problem, toolchain)
        if measured is not None:
            infos.append(RankInfo(b.name, base_score(b, platform), tuned, measured.tflops, words, measured.source,
                                  measured.m))
            continue
        try:
            tflops = b.measured_tflops(problem, toolchain)
            tflops = float(tflops) if tflops is not None else None
        except Exception:  # noqa: BLE001
            tflops = None
        source = row_m = None
        if tflops is not None:
            row = table.table.row(problem.m, problem.n, problem.k) if table else None
            if b.name in _TABLE_BACKENDS and row is not None:
                source, row_m = f"table:{table.path}", row.m
            else:
                source = f"{b.name}.measured_tflops"
        infos.append(RankInfo(b.name, base_score(b, platform), tuned, tflops, words, source, row_m))
    return sorted(infos, key=lambda r: r.key)


#: built-ins whose ``measured_tflops`` reads the kernel table
_TABLE_BACKENDS = ("triton", "torch-scaled-mm")


def _order_words(b: Backend, platform: str) -> str:
    order = PLATFORM_ORDER.get(platform, ())
    if b.name in order:
        return f"{platform} default order: {' > '.join(order)}"
    if b.name == "reference":
        return "the float32 reference, used when nothing faster qualifies"
    return f"priority {getattr(b, 'priority', 50)}"


@dataclass(frozen=True)
class Considered:
    backend: str
    ok: bool
    reason: str = ""
    evidence: Optional[str] = None   # the evidence source that spoke, e.g. "ledger:bpreshuffle-rocm70-miscompile"
    rank: Optional[int] = None       # 1 = chosen, among the backends that qualified

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "ok": self.ok, "reason": self.reason, "evidence": self.evidence,
                "rank": self.rank}


@dataclass(frozen=True)
class Decision:
    backend: Optional[str]
    reason: str
    considered: tuple[Considered, ...]
    problem: Problem
    toolchain: Toolchain
    requested: str = "auto"
    #: why no backend was chosen: "unknown", "unavailable", "unsafe", "disabled" or "none"
    failure: Optional[str] = None
    evidence: Optional[str] = None   # the evidence that covers the chosen backend, if any
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.backend is not None

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        return {
            "backend": self.backend,
            "reason": self.reason,
            "requested": self.requested,
            "evidence": self.evidence,
            "problem": {"m": p.m, "n": p.n, "k": p.k, "fp8_dtype": p.fp8_dtype, "out_dtype": p.out_dtype,
                        "block_size": [p.block_n, p.block_k], "device_type": p.device_type},
            "considered": [c.to_dict() for c in self.considered],
            "toolchain": self.toolchain.to_dict(),
            "notes": list(self.notes),
        }


def _toolchain_words(tc: Toolchain) -> str:
    if tc.vendor == "amd":
        hip = tc.hip_version_str or format_version(tc.compiler_hip_version) or "unknown"
        return f"{tc.arch}, hipcc {hip}"
    if tc.vendor == "nvidia":
        return f"{tc.arch}, CUDA {tc.torch_cuda or 'unknown'}"
    return "no GPU"


def _unsafe(v: Optional[Verdict], m: int) -> bool:
    if v is None:
        return False
    if not v.safe:
        return True
    return v.max_safe_m is not None and m > v.max_safe_m


def decide(toolchain: Toolchain, problem: Problem, backends: Iterable[Backend],
           evidence: Sequence[EvidenceSource] = (), requested: str = "auto",
           disabled: Iterable[str] = (), allow_unsafe: bool = False) -> Decision:
    backends = list(backends)
    names = [b.name for b in backends]
    disabled = set(disabled)
    where = _toolchain_words(toolchain)
    shape = f"M={problem.m} N={problem.n} K={problem.k}"

    if requested != "auto" and requested not in names:
        return Decision(None, f"unknown backend {requested!r}; expected one of {', '.join(names)} or 'auto'",
                        (), problem, toolchain, requested, failure="unknown")

    considered: dict[str, Considered] = {}
    qualified: list[Backend] = []
    verdicts: dict[str, Optional[Verdict]] = {}
    for b in backends:
        if requested != "auto" and b.name != requested:
            continue
        if b.name in disabled:
            considered[b.name] = Considered(b.name, False, f"{b.name}: disabled by ROCM_FP8_DISABLE")
            continue
        ok, why = safe_call(b.available, toolchain)
        if ok:
            ok, why = safe_call(b.supports, problem, toolchain)
        if not ok:
            considered[b.name] = Considered(b.name, False, why if why.startswith(b.name) else f"{b.name}: {why}")
            continue
        v = consult(evidence, b.name, problem, toolchain)
        verdicts[b.name] = v
        if _unsafe(v, problem.m) and not allow_unsafe:
            reason = v.reason if v.reason.startswith(b.name) else f"{b.name}: {v.reason}"
            considered[b.name] = Considered(b.name, False, reason, evidence=v.source)
            continue
        qualified.append(b)

    ranked = rank(qualified, toolchain, problem, evidence)
    for i, r in enumerate(ranked, start=1):
        v = verdicts.get(r.backend)
        considered[r.backend] = Considered(r.backend, True, r.describe(), evidence=v.source if v else None, rank=i)
    # qualifying backends in rank order, then the rest in registry order
    ordered = tuple(sorted((considered[n] for n in names if n in considered),
                           key=lambda c: (c.rank is None, c.rank or 0)))

    if not ranked:
        if requested != "auto":
            c = considered.get(requested)
            kind = "unsafe" if c and c.evidence else ("disabled" if requested in disabled else "unavailable")
            return Decision(None, c.reason if c else f"{requested}: cannot run here", ordered, problem, toolchain,
                            requested, failure=kind, evidence=c.evidence if c else None)
        return Decision(None, f"no backend can run {shape} safely on {where}: "
                        + "; ".join(c.reason for c in ordered if not c.ok),
                        ordered, problem, toolchain, requested, failure="none")

    best = ranked[0]
    v = verdicts.get(best.backend)
    if requested != "auto":
        reason = f"{best.backend}: requested explicitly"
    else:
        reason = (f"{best.backend}: best of {len(ranked)} qualifying backend{'s' if len(ranked) > 1 else ''} "
                  f"for {shape} on {where} ({best.describe()})")
        passed_over = [c for c in ordered if not c.ok and c.evidence]
        if passed_over:
            # named with what ruled them out; the full account is in `considered`
            reason += "; passed over: " + ", ".join(f"{c.backend} (unsafe: {c.evidence})" for c in passed_over)
    if v is not None:
        reason += f"; evidence {v.source}: {v.reason}"
    notes = ()
    if allow_unsafe and _unsafe(v, problem.m):
        notes = (f"{best.backend} is marked unsafe by {v.source} and was used because unsafe backends were allowed",)
    return Decision(best.backend, reason, ordered, problem, toolchain, requested,
                    evidence=v.source if v else None, notes=notes)
