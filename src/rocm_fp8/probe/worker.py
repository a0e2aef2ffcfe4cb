"""The probe's worker: runs in its own process for one backend and streams one JSON event per line
to a pipe (``ready``, ``shape_start``, ``shape``, ``case_start``, ``case``, ``done``, or ``fatal``).

Started by :mod:`rocm_fp8.probe.supervisor` as ``python -c "...worker_main(argv)" SPEC_JSON FD``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

from rocm_fp8 import plugins
from rocm_fp8 import probe_report as pr
from rocm_fp8.backends import find, safe_call
from rocm_fp8.backends.base import Problem
from rocm_fp8.quant import FP8_DTYPES, dequantize_activation, dequantize_weight, quantize_activation, quantize_weight
from rocm_fp8.toolchain import Toolchain, set_current


def worker_main(argv: Sequence[str]) -> int:
    spec_path, fd = argv[0], int(argv[1])
    with open(spec_path) as fh:
        spec = json.load(fh)
    out = os.fdopen(fd, "w", buffering=1)

    def emit(**event: Any) -> None:
        out.write(json.dumps(event, default=float) + "\n")
        out.flush()

    t0 = time.perf_counter()
    import torch  # after the timer starts: its import is part of the worker's setup time

    tc = Toolchain.from_dict(spec["toolchain"])
    set_current(tc)
    try:
        plugins.load_all(spec.get("plugins", ()))
    except Exception as exc:  # noqa: BLE001
        emit(event="fatal", reason=f"loading plugins failed: {type(exc).__name__}: {exc}")
        return 2
    errors = plugins.recreate(spec.get("third_party", ()))
    name = spec["backend"]
    if name in errors:
        emit(event="fatal", reason=errors[name])
        return 2
    backend = find(name)
    if backend is None:
        emit(event="fatal", reason=f"backend {name!r} is not registered in the worker; pass --plugin module:attr")
        return 2
    ok, why = safe_call(backend.available, tc)
    if not ok:
        emit(event="fatal", reason=why)
        return 2
    emit(event="ready", setup_s=time.perf_counter() - t0)

    device = spec["device"]
    fp8 = FP8_DTYPES[spec["fp8_dtype"]]
    out_dtype = getattr(torch, spec["out_dtype"])
    tol = spec["tolerances"]
    gen_seed = int(spec["seed"])

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for n, k in spec["shapes"]:
        emit(event="shape_start", n=n, k=k)
        problem = Problem(1, n, k, spec["fp8_dtype"], spec["out_dtype"], 128, 128, device)
        ok, why = safe_call(backend.supports, problem, tc)
        if not ok:
            emit(event="shape", n=n, k=k, supported=False, reason=why)
            continue
        g = torch.Generator(device="cpu").manual_seed(gen_seed * 1000003 + n * 131 + k)
        w = (torch.randn(n, k, generator=g) * 0.05).to(device)
        try:
            wq, ws = quantize_weight(w, (128, 128), dtype=fp8)
            w_ref = dequantize_weight(wq, ws, (128, 128))
            prepared = backend.prepare_weight(wq, ws)
        except Exception as exc:  # noqa: BLE001
            emit(event="shape", n=n, k=k, supported=True, error=f"prepare_weight raised {type(exc).__name__}: {exc}")
            continue
        emit(event="shape", n=n, k=k, supported=True)
        for m in spec["ms"]:
            if not safe_call(backend.supports, problem.with_m(m), tc)[0]:
                continue
            emit(event="case_start", n=n, k=k, m=m)
            t_case = time.perf_counter()
            # fresh inputs per M, rows of different magnitude so that per-row scales matter
            gx = g if device == "cpu" else torch.Generator(device=device).manual_seed(gen_seed + 7919 * m + n + k)
            x = torch.randn(m, k, generator=gx, device=device) * (torch.rand(m, 1, generator=gx, device=device) * 4
                                                                  + 0.25)
            try:
                quant = getattr(backend, "quantize_input", None)
                xq, xs = quant(x, fp8) if callable(quant) else quantize_activation(x, 128, dtype=fp8)
                ref = dequantize_activation(xq, xs, 128) @ w_ref.t()
                outs, times = [], []
                for _ in range(max(1, int(spec["repeats"]))):
                    sync()
                    t = time.perf_counter()
                    y = backend.run(xq, xs, prepared, out_dtype)
                    sync()
                    times.append(time.perf_counter() - t)
                    outs.append(y)
            except Exception as exc:  # noqa: BLE001
                emit(event="case", n=n, k=k, m=m, symptom="error",
                     detail=f"{type(exc).__name__}: {str(exc)[:300]}", wall_s=time.perf_counter() - t_case)
                continue
            emit(event="case", n=n, k=k, m=m, wall_s=time.perf_counter() - t_case,
                 **compare(outs, ref, m, n, out_dtype, tol, times))
        del prepared, w, wq, ws, w_ref
    emit(event="done")
    return 0


def compare(outs, ref, m, n, out_dtype, tol, times) -> dict[str, Any]:
    import torch

    y = outs[0]
    res: dict[str, Any] = {"us": sorted(times)[len(times) // 2] * 1e6}
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (m, n):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        res.update(symptom="wrong", detail=f"output shape {got}, expected {(m, n)}")
        return res
    if y.dtype != out_dtype:
        res.update(symptom="wrong", detail=f"output dtype {y.dtype}, expected {out_dtype}")
        return res
    yf = y.double()
    rf = ref.double()
    nonfinite = int((~torch.isfinite(yf)).sum().item())
    diff = yf - rf
    ref_norm = rf.norm().item()
    rel = diff.norm().item() / max(ref_norm, 1e-30)
    row_norms = rf.norm(dim=1).clamp_min(1e-30)
    row_rel = (diff.norm(dim=1) / row_norms)
    worst_row = int(torch.nan_to_num(row_rel, nan=float("inf")).argmax().item()) if m else 0
    row_rel_max = float(row_rel.max().item()) if m else 0.0
    cos = float((yf.flatten() @ rf.flatten()).item() / max(yf.norm().item() * ref_norm, 1e-30))
    bits = [o.contiguous().view(torch.uint8) for o in outs]
    deterministic = all(torch.equal(bits[0], b) for b in bits[1:])
    res.update(rel_err=rel, row_rel_err=row_rel_max, cosine=cos, nonfinite=nonfinite, deterministic=deterministic)
    if nonfinite:
        res.update(symptom="nan", detail=f"{nonfinite} NaN/Inf of {m * n} outputs")
    elif not (rel <= tol["rtol"] and row_rel_max <= tol["row_rtol"] and cos >= tol["min_cosine"]):
        res.update(symptom="wrong", detail=f"rel err {rel:.3g}, worst row {worst_row} rel err {row_rel_max:.3g}, "
                                           f"cosine {cos:.6f}")
    elif not deterministic:
        res.update(symptom="nondeterministic", detail=f"{len(outs)} launches not bitwise equal")
    return pr.sanitize(res)
