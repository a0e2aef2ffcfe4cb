"""Speed evidence: every backend that is available and safe, timed at (N, K, M) the way the dispatcher
runs it (its prepared weight, its ``run``), after a check against the float32 reference; the entries
go into this toolchain's probe report, which ``auto`` ranks by."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rocm_fp8 import backends as registry
from rocm_fp8 import policy
from rocm_fp8 import probe_report as pr
from rocm_fp8.backends.base import Backend, Problem
from rocm_fp8.dispatch import default_sources
from rocm_fp8.quant import FP8_DTYPES
from rocm_fp8.tune.operands import make_sets, reference, rel_error
from rocm_fp8.tune.table import versions
from rocm_fp8.tune.timing import rotation_sets, tflops, time_calls


#: a backend's output must be this close to the float32 reference to be timed (bf16 output: ~4e-3)
SPEED_MAX_REL_ERR = 1e-2


def _backend_inputs(backend, sets, fp8):
    """Each set's activation in the backend's own production layout: re-quantized with its
    ``quantize_input`` when it has one (aiter's scale layout), which gives back the same FP8
    values; the operands are otherwise the tuner's."""
    if type(backend).quantize_input is Backend.quantize_input:
        return [(x, s) for x, s, _, _ in sets]
    out = []
    for x, s, _, _ in sets:
        k = x.shape[1]
        xf = (x.float() * s.float().repeat_interleave(128, 1)[:, :k]).to(x.device)
        out.append(backend.quantize_input(xf, fp8, 128))
    return out


def time_backend(backend, sets, ref, fp8, out_dtype=None, timer=None) -> dict[str, Any]:
    """Time ``backend`` the way the dispatcher runs it (its prepared weight, its ``run``) over the
    rotating ``sets``, after checking set 0 against ``ref``. Returns {"us", "rel_err", ...} or {"error"}.
    ``timer`` (default :func:`time_calls`, CUDA graphs) takes the list of calls."""
    import torch

    timer = timer or time_calls

    out_dtype = out_dtype or torch.bfloat16
    try:
        xs = _backend_inputs(backend, sets, fp8)
        prepared = [backend.prepare_weight(w, ws) for _, _, w, ws in sets]
        calls = [lambda x=x, p=p: backend.run(x[0], x[1], p, out_dtype) for x, p in zip(xs, prepared)]
        err = rel_error(calls[0](), ref)
        if not err < SPEED_MAX_REL_ERR:  # NaN fails too
            return {"error": f"output differs from the float32 reference: relative error {err:.3g}", "rel_err": err}
        res = timer(calls)
        res["rel_err"] = err
        return res
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def safe_backends(tc, n: int, k: int, m: int, fp8_name: str, names: Optional[Sequence[str]] = None,
                  evidence=None) -> tuple[list, dict[str, str]]:
    """The registered backends that may be timed at (N, K, M) here: available, supporting the
    problem, and not marked unsafe by the evidence (ledger, probe reports). Also, for those that
    evidence marks unsafe, why."""
    evidence = default_sources(tc) if evidence is None else evidence
    problem = Problem(m, n, k, fp8_name, "bfloat16", 128, 128, "cuda")
    ok, skipped = [], {}
    for b in registry.all_backends():
        if b.name == "reference" or (names and b.name not in names):
            continue
        d = policy.decide(tc, problem, [b], evidence, requested=b.name)
        if d.ok:
            ok.append(b)
        elif d.failure == "unsafe" or any(c.ok is False and c.evidence for c in d.considered):
            skipped[b.name] = d.reason  # worth saying; "not on this GPU" is not
    return ok, skipped


def speed_entry(backend: str, n: int, k: int, m: int, fp8_name: str, res: dict[str, Any], **extra) -> dict[str, Any]:
    return {"backend": backend, "n": n, "k": k, "m": m, "fp8_dtype": fp8_name, "device_type": "cuda",
            "us": round(res["us"], 3), "tflops": round(tflops(m, n, k, res["us"]), 2),
            "rel_err": res.get("rel_err"), "sets": res.get("sets"), **extra}


def measure_speed(tc, shapes: Sequence[tuple[int, int]], ms: Sequence[int], fp8_name: str,
                  names: Optional[Sequence[str]] = None, say: Callable[[str], None] = print,
                  progress=None, evidence_extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Time every safe backend (or ``names``) at every (N, K, M), as the dispatcher runs it (our
    kernel with this device's table config). Returns speed entries for a probe report."""
    import torch


    fp8 = FP8_DTYPES[fp8_name]
    entries = []
    for n, k in shapes:
        for m in ms:
            set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
            sets = make_sets(m, n, k, fp8, rotation_sets(set_bytes), seed=3 * m + n + k)
            ref = reference(*sets[0])
            entries += speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, names, say, evidence_extra=evidence_extra)
            del sets, ref
            torch.cuda.empty_cache()
            if progress is not None:
                progress.advance(1, f"N={n} K={k} M={m}")
    return entries


def speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, names, say, skip=(), known=None,
                evidence_extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
    backends, skipped = safe_backends(tc, n, k, m, fp8_name, names, list(evidence_extra) + default_sources(tc))
    entries = list(known or [])
    words = [f"{e['backend']} {e['tflops']:.1f}" for e in entries]
    for b in backends:
        if b.name in skip:
            continue
        res = time_backend(b, sets, ref, fp8)
        if "us" in res:
            e = speed_entry(b.name, n, k, m, fp8_name, res)
            entries.append(e)
            words.append(f"{b.name} {e['tflops']:.1f}")
        else:
            words.append(f"{b.name} not timed ({res['error'][:120]})")
    for name, why in skipped.items():
        if name not in skip:
            words.append(f"{name} skipped ({why[:120]})")
    say(f"speed N={n} K={k} M={m} (TFLOPS): " + "; ".join(words))
    return entries


def write_speed(tc, entries: list[dict[str, Any]], *, output: Optional[Path] = None,
                cache: bool = True, device: Optional[str] = None) -> list[Path]:
    """Merge speed entries into this toolchain's probe report (the cache, keyed by fingerprint,
    where the dispatcher reads evidence) and/or ``output``."""
    report = pr.new_report(tc)
    report["speed"] = entries
    report["speed_settings"] = {"device": device or tc.device_name, "created": pr.now_iso(),
                                "versions": versions(),
                                "method": "median of CUDA-graph replays over input sets spanning 3x L2 "
                                          "(rocm_fp8.tune.time_calls)"}
    paths = []
    if cache and tc.source != "hypothetical":
        paths.append(pr.write_report(report))
    if output is not None:
        paths.append(pr.write_report(report, output))
    return paths
