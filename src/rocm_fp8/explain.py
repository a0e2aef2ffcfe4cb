"""``explain``: the decision for a problem, on this machine or a hypothetical one."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from rocm_fp8 import backends as _registry
from rocm_fp8 import dispatch, policy
from rocm_fp8 import kernel_configs
from rocm_fp8.backends.base import Problem
from rocm_fp8.toolchain import Toolchain, detect


def explain(n: int, k: int, m: int, *, toolchain: Optional[Toolchain] = None, backend: str = "auto",
            fp8_dtype: Optional[str] = None, out_dtype: str = "bfloat16", device_type: Optional[str] = None,
            block_size: Sequence[int] = (128, 128), evidence: Optional[Sequence] = None,
            disabled: Optional[Iterable[str]] = None, weight=None,
            failed: Optional[Mapping[str, str]] = None) -> policy.Decision:
    """Which backend would run ``[m, k] x [n, k]^T``, why, and what happened to every other one.

    ``toolchain`` defaults to the detected one (``Toolchain.hypothetical(...)`` describes another
    machine). ``evidence`` defaults to the probe reports and ledger for that toolchain; ``disabled``
    to ``ROCM_FP8_DISABLE``. Unlike the op, this never raises for a backend that cannot run: the
    decision says why.

    The decision also says how the output dtype is produced (a note "<backend> writes float32" or
    "<backend> computes bfloat16, cast once to float32"). ``weight`` (a tensor the op has run with)
    or ``failed`` ({backend: why}) add the backends that failed at run time for that weight: auto
    skipped them, and they appear in ``considered`` and ``notes``.
    """
    for name, v in (("n", n), ("k", k), ("m", m)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if toolchain is None:
        toolchain = detect()
    if backend != "auto" and backend not in _registry.backend_names():
        raise ValueError(f"backend: expected one of {', '.join(_registry.backend_names())} or 'auto', got {backend!r}")
    if fp8_dtype is None:
        fp8_dtype = toolchain.fp8_flavour
    if fp8_dtype not in ("e4m3fn", "e4m3fnuz"):
        raise ValueError(f"fp8_dtype: expected 'e4m3fn' or 'e4m3fnuz', got {fp8_dtype!r}")
    if out_dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"out_dtype: expected 'bfloat16', 'float16' or 'float32', got {out_dtype!r}")
    if device_type is None:
        device_type = "cuda" if toolchain.has_gpu else "cpu"
    if evidence is None:
        evidence = dispatch.default_sources(toolchain)
    if disabled is None:
        disabled = dispatch.settings()["disabled"]
    if failed is None and weight is not None:
        failed = dispatch.failures_for(weight, m)
    problem = Problem(m, n, k, fp8_dtype, out_dtype, int(block_size[0]), int(block_size[1]), device_type)
    return dispatch.decide_problem(toolchain, problem, _registry.all_backends(), evidence, requested=backend,
                                   disabled=disabled, failed=failed)


def table_info(toolchain: Toolchain) -> Optional[dict]:
    """The kernel table this machine uses: path, how it was matched, the device it was measured on."""
    if not toolchain.has_gpu:
        return None
    m = kernel_configs.find_for(toolchain)
    return m.to_dict() if m else None


def table_words(toolchain: Toolchain) -> str:
    """One line for ``explain`` and ``info``: which table, found how, measured on which device."""
    if not toolchain.has_gpu:
        return "none (no GPU: the kernel tables describe GPUs)"
    m = kernel_configs.find_for(toolchain)
    if m is None:
        unit = "CUs" if toolchain.vendor == "amd" else "SMs"
        return (f"none for {toolchain.device_name or 'this device'} ({toolchain.arch}, {toolchain.cu_count or '?'} "
                f"{unit}): no table of its own, its family or its arch; our kernel uses its size-based default")
    return m.describe()


def speed_sources(evidence: Sequence) -> list[str]:
    """The evidence files that hold speed measurements (probe reports with a "speed" list)."""
    out = []
    for src in evidence:
        report = getattr(src, "parsed", None)  # a ProbeEvidence's typed report (rocm_fp8.probe_report.Report)
        if report is not None and report.speed:
            out.append(f"{getattr(src, 'origin', '?')} ({len(report.speed)} measurements)")
    return out


def format_decision(d: policy.Decision) -> str:
    """A human-readable block for the CLI."""
    p = d.problem
    lines = [f"problem:  M={p.m} N={p.n} K={p.k}  fp8={p.fp8_dtype} out={p.out_dtype} on {p.device_type}"]
    tc = d.toolchain
    lines.append(f"machine:  {tc.arch} ({tc.source})" + (f", hipcc {tc.hip_version_str}" if tc.hip_version_str else "")
                 + (f", ROCm {'.'.join(map(str, tc.rocm_version))}" if tc.rocm_version else ""))
    if tc.has_gpu:
        lines.append(f"table:    {table_words(tc)}")
    lines.append(f"backend:  {d.backend or '(none)'}")
    lines.append(f"reason:   {d.reason}")
    if d.evidence:
        lines.append(f"evidence: {d.evidence}")
    lines.append("considered:")
    for c in d.considered:
        mark = f"#{c.rank}" if c.ok else "no"
        lines.append(f"  {c.backend:<18} {mark:<4} {c.reason}" + (f"  [{c.evidence}]" if c.evidence and c.ok else ""))
    for note in d.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
