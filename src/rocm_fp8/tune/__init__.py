"""``rocm-fp8 tune``: measure kernel configurations on the local GPU and write the config table.

    rocm-fp8 tune --n 2112 --k 7168 [--n N --k K ...] | --preset NAME | --from-config config.json [--tp N ...]
                  | --table-shapes nvidia_h100_80gb_hbm3   [--m 1 --m 16 ...] [--output PATH]

For each (N, K) and M it times every candidate configuration of the Triton kernel (CUDA-graph
replays over rotating input sets that span 3x the L2, median; see :func:`time_calls`), keeps the
fastest one that is also accurate (within 1.25x of the bf16 rounding floor), measures cuBLASLt
blockwise FP8 (``torch-scaled-mm``) beside it where that runs, and merges the rows into ``--output``
(default: ``./<device>.json``; the package reads ``rocm_fp8/configs/`` and the folders in
``ROCM_FP8_TABLES``). The table records the device, its arch and SM/CU count, and the versions.

Speed evidence: at each (N, K, M) every other backend that is available and not marked unsafe by
the evidence (ledger, probe reports) is timed the same way, as the dispatcher runs it, after a check
against the float32 reference. All the figures go into this toolchain's probe report in the cache
(``$ROCM_FP8_CACHE/probe/<fingerprint>.json``), where ``auto`` reads them, and to ``--speed-output``.

Time: 7 M values by default (1 to 16384) and at most 37 candidates per M (11 at M <= 16), compiled
in parallel worker processes first (``--jobs``), which fill Triton's on-disk cache; the timing
process then only loads them. About 10 s per shape on an H200 (the four MiniMax-M2.5 TP4 shapes took
37 s). When the projected time passes ``--time-budget`` (300 s) the remaining shapes use the quick
candidate set, so a model's shapes stay within about 5 minutes. Progress and ETA go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

DEFAULT_MS = (1, 16, 64, 256, 1024, 4096, 16384)
#: a model's shapes should tune within this (seconds); past it the remaining shapes use --quick
DEFAULT_TIME_BUDGET_S = 300.0


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or getattr(props, "l2_cache_size", 0) or 50 * 2**20)


def rotation_sets(set_bytes: int, cap: int = 32) -> int:
    """Enough input sets that cycling through them spans 3x the L2, so each call reads from memory
    (a weight in L2 would flatter decode-sized problems); one set when it exceeds L2 already."""
    if set_bytes <= 0:
        return 1
    return max(1, min(cap, math.ceil(3 * l2_bytes() / set_bytes)))


def time_calls(calls: Sequence[Callable[[], Any]], target_us: float = 1500.0, replays: int = 15,
               use_graph: bool = True) -> dict[str, Any]:
    """Median time of one call, in microseconds, cycling through ``calls`` (one per input set).

    The calls are captured in a CUDA graph (``inner`` passes over all sets, enough for about
    ``target_us`` per replay) and the replays are timed with CUDA events, so launch gaps and
    Python overhead stay out of the numbers. Falls back to timing plain launches if capture fails.
    """
    import torch

    torch.cuda.synchronize()
    for c in calls:  # compile, autotune caches, cuBLAS handles
        c()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for c in calls:
        c()
    end.record()
    end.synchronize()
    est_us = max(start.elapsed_time(end) * 1000.0 / len(calls), 0.5)
    inner = max(1, min(64, int(target_us / (est_us * len(calls)))))
    n_calls = inner * len(calls)
    times = []
    graph_ok = False
    if use_graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for c in calls:
                    c()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    for c in calls:
                        c()
            graph.replay()
            torch.cuda.synchronize()
            for _ in range(replays):
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1000.0 / n_calls)
            graph_ok = True
            del graph
        except Exception:  # noqa: BLE001 - not capturable: time plain launches instead
            torch.cuda.synchronize()
            times = []
    if not graph_ok:
        for _ in range(replays):
            start.record()
            for _ in range(inner):
                for c in calls:
                    c()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1000.0 / n_calls)
    return {"us": statistics.median(times), "min_us": min(times), "graph": graph_ok, "sets": len(calls),
            "calls_per_replay": n_calls}


def tflops(m: int, n: int, k: int, us: Optional[float]) -> Optional[float]:
    return None if not us else 2.0 * m * n * k / (us * 1e-6) / 1e12


# ------------------------------------------------------------------------------------------------
# Operands and checks
# ------------------------------------------------------------------------------------------------


def make_sets(m: int, n: int, k: int, fp8, nsets: int, device: str = "cuda", seed: int = 0):
    """``nsets`` independent random operand sets (x_q, x_scale, w_q, w_scale), never zeros."""
    import torch

    from rocm_fp8.quant import QUANT_MAX

    g = torch.Generator(device=device).manual_seed(seed)
    kb, nb = -(-k // 128), -(-n // 128)
    fmax = QUANT_MAX[fp8]
    sets = []
    for _ in range(nsets):
        x_q = ((torch.rand(m, k, device=device, generator=g) * 2 - 1) * fmax).to(fp8)
        w_q = ((torch.rand(n, k, device=device, generator=g) * 2 - 1) * fmax).to(fp8)
        x_s = torch.rand(m, kb, device=device, generator=g) * 1e-3 + 1e-4
        w_s = torch.rand(nb, kb, device=device, generator=g) * 1e-3 + 1e-4
        sets.append((x_q, x_s, w_q, w_s))
    return sets


def reference(x_q, x_s, w_q, w_s):
    """float32 dequantize-and-multiply on the GPU, TF32 off (the tests compare with float64 on the CPU)."""
    import torch

    k = x_q.shape[1]
    xs = x_s.float().repeat_interleave(128, 1)[:, :k]
    ws = w_s.float().repeat_interleave(128, 0)[: w_q.shape[0]].repeat_interleave(128, 1)[:, :k]
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return (x_q.float() * xs) @ (w_q.float() * ws).t()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


#: a candidate's relative error may exceed the best an output of this dtype can do (the exact
#: result rounded to it) by at most this factor; configs that lose accuracy never enter a table
ACCURACY_SLACK = 1.25


def accuracy_floor(ref, out_dtype) -> float:
    """Relative error of the float32 reference merely rounded to ``out_dtype``: no kernel does better."""
    return rel_error(ref.to(out_dtype), ref)


def accurate_enough(err: float, floor: float) -> bool:
    return err <= ACCURACY_SLACK * floor + 1e-7  # False for NaN; rel_error gives inf for non-finite output


def rel_error(y, ref) -> float:
    import torch

    if not torch.isfinite(y).all():
        return float("inf")
    return ((y.float() - ref).norm() / ref.norm()).item()


# ------------------------------------------------------------------------------------------------
# Candidates
# ------------------------------------------------------------------------------------------------


def candidates(m: int, *, quick: bool = False, hopper: bool = True, arch: Optional[str] = None) -> list[dict[str, Any]]:
    """Configurations worth timing at this M (dicts for KernelConfig) whose shared memory fits ``arch``
    (default: an H100's budget; see :mod:`rocm_fp8.kernels.arch_limits`).

    Small M is weight-bandwidth bound: narrow tiles and split-K to occupy every SM. Large M is
    tensor-core bound: wide tiles, the rescaled-accumulator scheme (``frame``), TMA loads and a
    persistent grid where this GPU has them.
    """
    out: list[dict[str, Any]] = []
    if m <= 16:
        for bn, split in ((64, 1), (64, 2), (64, 4), (64, 8), (128, 1), (128, 2), (128, 4), (32, 2), (32, 4)):
            out.append(dict(block_m=16, block_n=bn, group_m=1, split_k=split, num_warps=4, num_stages=4))
        if not quick:
            out += [dict(block_m=16, block_n=64, group_m=1, split_k=s, num_warps=4, num_stages=6) for s in (2, 4)]
    elif m <= 64:
        for bm, bn in ((64, 64), (64, 128), (32, 64)):
            for split in (1, 2, 4):
                out.append(dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=4, num_stages=4))
    elif m <= 256:
        for bm, bn, w in ((64, 128, 4), (128, 128, 8), (64, 256, 8), (64, 64, 4)):
            for split in (1, 2):
                out.append(dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=w, num_stages=4,
                                frame=True))
        out += [dict(block_m=64, block_n=128, group_m=8, split_k=s, num_warps=4, num_stages=4) for s in (1, 2)]
        if hopper:
            out += [dict(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=3, persistent=True, tma=True,
                         programs_per_sm=2, frame=True),
                    dict(block_m=64, block_n=128, group_m=8, num_warps=4, num_stages=4, persistent=True, tma=True,
                         programs_per_sm=2, frame=True),
                    dict(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=4, persistent=True, tma=True)]
    else:
        tiles = ((128, 128, 8, 3), (128, 128, 8, 4), (128, 256, 8, 3), (256, 128, 8, 3), (64, 256, 4, 3),
                 (64, 128, 4, 4))
        modes = ((False, False), (True, True), (False, True)) if hopper else ((False, False), (True, False))
        for bm, bn, w, st in tiles:
            for persistent, tma in modes:
                if quick and (persistent or tma) and (bm, bn) != (128, 128):
                    continue
                out.append(dict(block_m=bm, block_n=bn, group_m=8, num_warps=w, num_stages=st,
                                persistent=persistent, tma=tma, frame=True))
        out += [dict(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=4, persistent=p, tma=p and hopper)
                for p in (False, True)]
        # two CTAs per SM fit (about 116 registers, 96 KB shared): a persistent grid of 2 x SMs
        out += [dict(block_m=bm, block_n=bn, group_m=8, num_warps=w, num_stages=st, persistent=True, tma=t,
                     programs_per_sm=2, frame=True)
                for bm, bn, w, st in ((128, 128, 8, 3), (64, 128, 4, 4)) for t in ((False, True) if hopper else (False,))]
        if hopper:  # the two leaders of the first H100 sweep, with other L2 groupings
            out += [dict(block_m=128, block_n=128, group_m=g, num_warps=8, num_stages=3, persistent=True, tma=True,
                         programs_per_sm=2, frame=True) for g in (4, 16)]
            out += [dict(block_m=128, block_n=128, group_m=g, num_warps=8, num_stages=4, persistent=True, tma=True)
                    for g in (4, 16)]
            # Plain promotion keeps full accuracy at any K where the rescaled accumulator does not
            # (Hopper's FP8 wgmma accumulates with reduced precision): more of its variants.
            out += [dict(block_m=128, block_n=128, group_m=g, num_warps=8, num_stages=3, persistent=True, tma=True)
                    for g in (8, 32)]
            out += [dict(block_m=64, block_n=128, group_m=8, num_warps=4, num_stages=st, persistent=True, tma=True,
                         programs_per_sm=pps) for st, pps in ((4, 2), (3, 3))]
            out += [dict(block_m=128, block_n=64, group_m=8, num_warps=4, num_stages=st, persistent=True, tma=True,
                         programs_per_sm=pps) for st, pps in ((4, 2), (3, 3))]
            out += [dict(block_m=64, block_n=128, group_m=16, num_warps=4, num_stages=4, persistent=True, tma=True,
                         programs_per_sm=2),
                    dict(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=5, persistent=True, tma=True),
                    dict(block_m=64, block_n=256, group_m=8, num_warps=8, num_stages=3, persistent=True, tma=True)]
    # drop configs whose software pipeline cannot fit in the arch's shared memory / LDS
    from rocm_fp8.kernels.arch_limits import estimate_lds_bytes, limits_for

    lim = limits_for(arch or "sm90")
    if lim is None:
        return out
    return [c for c in out if estimate_lds_bytes(c, lim.arch) <= lim.lds_bytes]


def launchable(cands: list[dict[str, Any]], arch: Optional[str], n: int, k: int) -> list[dict[str, Any]]:
    """The candidates that can launch on ``arch``. On AMD each one is cross-compiled first and
    dropped (with the reason printed) if the code object spills, needs scratch, exceeds the LDS or
    misses its waves_per_eu: Triton would only find out at launch, or run it slowly."""
    from rocm_fp8.kernels.amd_compile import fits_compiled
    from rocm_fp8.kernels.arch_limits import AMD_ARCHS, fits

    check = fits_compiled if arch in AMD_ARCHS else (lambda c, a, n_, k_: fits(c, a))
    kept = []
    for c in cands:
        ok, why = check(c, arch, n, k)
        if ok:
            kept.append(c)
        else:
            print(f"skipped (cannot launch well): {why}", flush=True)
    return kept


def _precompile_worker(payload):
    """Compile configurations for one representative shape (fills Triton's on-disk cache)."""
    n, k, fp8_name, items = payload
    import torch

    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm
    from rocm_fp8.quant import FP8_DTYPES

    fp8 = FP8_DTYPES[fp8_name]
    errors = []
    ops = {m: make_sets(m, n, k, fp8, 1)[0] for m in {m for m, _ in items}}
    for m, cfg in items:
        try:
            blockscale_gemm(*ops[m], torch.bfloat16, config=KernelConfig.from_dict(cfg))
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - reported; the candidate is dropped later
            errors.append((m, cfg, f"{type(exc).__name__}: {str(exc)[:300]}"))
    return errors


def precompile(shape_items: list[tuple[int, int, int, dict]], fp8_name: str, jobs: int,
               timeout_s: float = 240.0) -> None:
    """Compile each distinct config once, in ``jobs`` processes (M, N, K are not specialized, so one
    representative shape serves all). A worker that crashes or hangs costs only its chunk: the
    timing pass compiles what is missing, and drops what does not build."""
    if jobs <= 1 or not shape_items:
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait

    seen, work = set(), []
    n0, k0 = shape_items[0][1], shape_items[0][2]
    for m, n, k, cfg in shape_items:
        key = json.dumps(cfg, sort_keys=True)
        if key not in seen:
            seen.add(key)
            work.append((16, cfg))
    chunks = [c for c in (work[i::jobs] for i in range(jobs)) if c]
    t0 = time.time()
    failed = 0
    pool = ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(_precompile_worker, (n0, k0, fp8_name, c)) for c in chunks]
        done, pending = wait(futures, timeout=timeout_s)
        for f in done:
            try:
                errs = f.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker
                print(f"precompile worker failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            failed += len(errs)
            for m, cfg, err in errs:
                print(f"does not compile: {cfg}: {err.splitlines()[0][:200] if err else ''}", flush=True)
        if pending:
            print(f"precompile: {len(pending)} workers still running after {timeout_s:.0f}s; going on", flush=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    print(f"precompiled {len(work)} configs in {time.time() - t0:.0f}s with {len(chunks)} processes "
          f"({failed} failed)", flush=True)


# ------------------------------------------------------------------------------------------------
# Tuning one shape
# ------------------------------------------------------------------------------------------------


def measure_scaled_mm(sets, out_dtype) -> Optional[dict[str, Any]]:
    import torch

    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend, scaled_mm_blockwise

    try:
        backend = TorchScaledMMBackend()  # its own weight layout: K zero-padded to a multiple of 512
        prepared = []
        for x, s, w, ws in sets:
            pw = backend.prepare_weight(w, ws)
            prepared.append((x, s, pw.extra["b"], pw.extra["scale_b"]))
        calls = [lambda p=p: scaled_mm_blockwise(p[0], p[1], p[2], p[3], out_dtype) for p in prepared]
        x_q, x_s, w_q, w_s = sets[0]
        err = rel_error(calls[0](), reference(x_q, x_s, w_q, w_s))
        res = time_calls(calls)
        res["rel_err"] = err
        return res
    except Exception as exc:  # noqa: BLE001
        torch.cuda.synchronize()
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def tune_shape(n: int, k: int, ms: Sequence[int], fp8, *, quick: bool = False, with_scaled_mm: bool = True,
               log: Optional[list] = None, say: Callable[[str], None] = print,
               on_m: Optional[Callable[[int, Any, Any, Optional[dict]], None]] = None) -> list[dict[str, Any]]:
    """Tune the Triton kernel for (N, K) at each M. ``on_m(m, sets, ref, row)`` runs after each M
    with that M's operand sets still alive (``tune`` times the other backends there)."""
    import torch

    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm, default_config

    from rocm_fp8.toolchain import detect

    hopper = torch.version.hip is None and torch.cuda.get_device_capability()[0] >= 9
    arch = detect().arch
    rows = []
    for m in ms:
        set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
        sets = make_sets(m, n, k, fp8, rotation_sets(set_bytes), seed=m + n + k)
        ref = reference(*sets[0])
        floor = accuracy_floor(ref, torch.bfloat16)
        cands = candidates(m, quick=quick, hopper=hopper, arch=arch)
        default = default_config(m, n, k, arch=arch).to_dict()
        if default not in cands:
            cands.append(default)
        cands = launchable(cands, arch, n, k)
        best = None
        results = []
        for cfg_d in cands:
            cfg = KernelConfig.from_dict(cfg_d)
            rec: dict[str, Any] = {"m": m, "n": n, "k": k, "config": cfg_d}
            try:
                y = blockscale_gemm(*sets[0], torch.bfloat16, config=cfg)
                err = rel_error(y, ref)
                rec["rel_err"] = err
                if not accurate_enough(err, floor):
                    rec["error"] = (f"not accurate enough: relative error {err:.3g}, more than "
                                    f"{ACCURACY_SLACK}x the bf16 rounding floor {floor:.3g}")
                else:
                    calls = [lambda s=s: blockscale_gemm(*s, torch.bfloat16, config=cfg, check=False)
                             for s in sets]
                    rec.update(time_calls(calls))
                    rec["tflops"] = tflops(m, n, k, rec["us"])
                    if best is None or rec["us"] < best["us"]:
                        best = rec
            except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped
                torch.cuda.synchronize()
                rec["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            results.append(rec)
        # Winner's curse: re-time the three fastest and keep the best of the second measurement.
        timed = sorted((r for r in results if "us" in r), key=lambda r: r["us"])[:3]
        if len(timed) > 1:
            for r in timed:
                cfg = KernelConfig.from_dict(r["config"])
                calls = [lambda s=s: blockscale_gemm(*s, torch.bfloat16, config=cfg, check=False) for s in sets]
                r["first_us"] = r["us"]
                r["us"] = time_calls(calls)["us"]
                r["tflops"] = tflops(m, n, k, r["us"])
            best = min(timed, key=lambda r: r["us"])
        if log is not None:
            log.extend(results)
        row: dict[str, Any] = {"m": m}
        if best is not None:
            row.update(config=best["config"], triton_tflops=round(best["tflops"], 2), triton_us=round(best["us"], 3))
            dflt = next((r for r in results if r["config"] == default and "us" in r), None)
            if dflt is not None:
                row["default_us"] = round(dflt["us"], 3)
        if with_scaled_mm:
            sm = measure_scaled_mm(sets, torch.bfloat16)
            if sm and "us" in sm and sm.get("rel_err", 1) < 1e-2:
                row["scaled_mm_tflops"] = round(tflops(m, n, k, sm["us"]), 2)
                row["scaled_mm_us"] = round(sm["us"], 3)
        msg = (f"N={n} K={k} M={m}: best {row.get('triton_us')} us ({row.get('triton_tflops')} TFLOPS) "
               f"default {row.get('default_us')} us, cuBLASLt {row.get('scaled_mm_us')} us; "
               f"{sum('us' in r for r in results)}/{len(results)} configs ran")
        say(msg)
        if best is not None:
            rows.append(row)
        if on_m is not None:
            on_m(m, sets, ref, row if best is not None else None)
        del sets, ref
        torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------
# Speed of every backend (the evidence ``auto`` ranks by)
# ------------------------------------------------------------------------------------------------

#: a backend's output must be this close to the float32 reference to be timed (bf16 output: ~4e-3)
SPEED_MAX_REL_ERR = 1e-2


def _backend_inputs(backend, sets, fp8):
    """Each set's activation in the backend's own production layout: re-quantized with its
    ``quantize_input`` when it has one (aiter's scale layout), which gives back the same FP8
    values; the operands are otherwise the tuner's."""
    from rocm_fp8.backends.base import Backend

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
    from rocm_fp8 import backends as registry
    from rocm_fp8 import policy
    from rocm_fp8.backends.base import Problem
    from rocm_fp8.dispatch import default_sources

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

    from rocm_fp8.quant import FP8_DTYPES

    fp8 = FP8_DTYPES[fp8_name]
    entries = []
    for n, k in shapes:
        for m in ms:
            set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
            sets = make_sets(m, n, k, fp8, rotation_sets(set_bytes), seed=3 * m + n + k)
            ref = reference(*sets[0])
            entries += _speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, names, say, evidence_extra=evidence_extra)
            del sets, ref
            torch.cuda.empty_cache()
            if progress is not None:
                progress.advance(1, f"N={n} K={k} M={m}")
    return entries


def _speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, names, say, skip=(), known=None,
                evidence_extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
    from rocm_fp8.dispatch import default_sources

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
    from rocm_fp8 import probe_report as pr

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


# ------------------------------------------------------------------------------------------------
# Table file
# ------------------------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    import torch

    try:
        import triton

        tv = triton.__version__
    except Exception:  # noqa: BLE001
        tv = None
    return {"torch": torch.__version__, "triton": tv, "cuda": torch.version.cuda, "hip": torch.version.hip,
            "date": time.strftime("%Y-%m-%d")}


def write_table(path: Path, device: str, arch: str, shapes: dict[str, list], merge: bool = True,
                sm_count: Optional[int] = None) -> None:
    """Merge rows into a table file (atomically; see :func:`rocm_fp8.kernel_configs.write_table`)."""
    from rocm_fp8 import kernel_configs

    kernel_configs.write_table(path, device, arch, shapes, merge=merge, sm_count=sm_count, versions=versions())


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from rocm_fp8 import shapes as shape_mod

    p = argparse.ArgumentParser(prog="rocm-fp8 tune", description=__doc__.split("\n\n")[0],
                                epilog="Shapes: --n/--k pairs, --preset, --from-config (with --tp), --table-shapes; "
                                       "they add up. Progress and ETA go to stderr.")
    p.add_argument("--n", type=int, action="append", default=[], help="N (output features); repeat with --k")
    p.add_argument("--k", type=int, action="append", default=[], help="K (input features); one per --n")
    p.add_argument("--preset", action="append", default=[], choices=shape_mod.preset_names(),
                   help="a model's shapes (repeatable)")
    p.add_argument("--from-config", action="append", default=[], metavar="CONFIG_JSON",
                   help="an HF model config.json: tune its block-FP8 linear shapes (repeatable)")
    p.add_argument("--tp", type=int, action="append", default=[], metavar="N",
                   help="tensor-parallel degree for --from-config (repeatable; default 1)")
    p.add_argument("--ep", action="store_true", help="--from-config: experts are expert-parallel (whole, not TP-split)")
    p.add_argument("--table-shapes", metavar="TABLE",
                   help="the (N, K) of a kernel table, a path or a name such as nvidia_h100_80gb_hbm3")
    p.add_argument("--m", type=int, action="append", default=[],
                   help=f"M to tune at (repeatable; default {' '.join(map(str, DEFAULT_MS))})")
    p.add_argument("--output", type=Path, default=None,
                   help="table to write/merge (default ./<device>.json; the package reads rocm_fp8/configs/ and "
                        "the folders in ROCM_FP8_TABLES)")
    p.add_argument("--fp8", choices=("e4m3fn", "e4m3fnuz"), default=None,
                   help="FP8 flavour (default: the device's)")
    p.add_argument("--quick", action="store_true", help="fewer candidates")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="S",
                   help="when the projected time passes S seconds, the remaining shapes use --quick "
                        "(default %(default)s; 0: never)")
    p.add_argument("--no-scaled-mm", action="store_true", help="do not measure cuBLASLt beside")
    p.add_argument("--no-speed", action="store_true",
                   help="do not time the other backends, nor record speed evidence for the dispatcher")
    p.add_argument("--speed-output", type=Path, default=None,
                   help="also write the speed evidence (a probe report) here")
    p.add_argument("--no-cache", action="store_true",
                   help="do not merge the speed evidence into this toolchain's probe report in the cache")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes that compile candidates in parallel (1: compile while timing)")
    p.add_argument("--log", type=Path, default=None, help="also write every candidate's timing here (JSON)")
    args = p.parse_args(argv)
    for v in args.n + args.k + args.m + args.tp:
        if v <= 0:
            p.error(f"--n/--k/--m/--tp: expected positive integers, got {v}")
    try:
        args.shapes = shape_mod.resolve(args.n, args.k, args.preset, args.from_config, args.tp, args.ep,
                                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
        if args.table_shapes:
            args.shapes += [s for s in shape_mod.table_shapes(args.table_shapes) if s not in args.shapes]
    except ValueError as exc:
        p.error(str(exc))
    if not args.shapes:
        p.error("shapes: expected --n N --k K, --preset NAME, --from-config config.json or --table-shapes TABLE")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("rocm-fp8 tune: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("rocm-fp8 tune: no GPU is visible (tuning measures on the local GPU)", file=sys.stderr)
        return 2
    from rocm_fp8.kernel_configs import slug
    from rocm_fp8.progress import Progress
    from rocm_fp8.quant import FP8_DTYPES
    from rocm_fp8.toolchain import detect

    tc = detect()
    fp8_name = args.fp8 or tc.fp8_flavour
    fp8 = FP8_DTYPES[fp8_name]
    device = torch.cuda.get_device_name()
    sm_count = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    output = args.output or Path(f"{slug(device)}.json")
    ms = args.m or list(DEFAULT_MS)
    with_sm = not args.no_scaled_mm and torch.version.hip is None and fp8_name == "e4m3fn"
    hopper = torch.version.hip is None and torch.cuda.get_device_capability()[0] >= 9
    shapes = args.shapes
    print(f"tuning {len(shapes)} shape(s) x {len(ms)} M on {device} ({tc.arch}, {sm_count} SMs/CUs): "
          f"{' '.join(f'{n},{k}' for n, k in shapes)}", file=sys.stderr, flush=True)
    items = [(m, n, k, c) for n, k in shapes for m in ms for c in candidates(m, quick=args.quick, hopper=hopper, arch=tc.arch)]
    precompile(items, fp8_name, args.jobs)
    bar = Progress(len(shapes) * len(ms), "tune")
    say = bar.note
    log: list = []
    speed: list[dict[str, Any]] = []
    quick = args.quick
    t0 = time.monotonic()
    for i, (n, k) in enumerate(shapes):
        if args.time_budget and not quick and i:
            projected = (time.monotonic() - t0) / i * len(shapes)
            if projected > args.time_budget:
                quick = True
                say(f"projected {projected:.0f}s > --time-budget {args.time_budget:.0f}s: the remaining "
                    f"{len(shapes) - i} shape(s) use the quick candidate set")

        def after_m(m, sets, ref, row, n=n, k=k):
            if not args.no_speed:
                known = []
                if row is not None and row.get("triton_us"):
                    known.append(speed_entry("triton", n, k, m, fp8_name, {"us": row["triton_us"], "sets": len(sets)},
                                             config=row.get("config")))
                if row is not None and row.get("scaled_mm_us"):
                    known.append(speed_entry("torch-scaled-mm", n, k, m, fp8_name,
                                             {"us": row["scaled_mm_us"], "sets": len(sets)}))
                speed.extend(_speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, None, say,
                                         skip={e["backend"] for e in known} | ({"torch-scaled-mm"} if with_sm else set()),
                                         known=known))
            bar.advance(1, f"N={n} K={k} M={m}")

        rows = tune_shape(n, k, ms, fp8, quick=quick, with_scaled_mm=with_sm, log=log, say=say, on_m=after_m)
        write_table(output, device, tc.arch, {f"{n},{k}": rows}, sm_count=sm_count)
        if args.log:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            args.log.write_text(json.dumps({"device": device, "versions": versions(), "results": log}) + "\n")
        if speed and not args.no_speed:
            paths = write_speed(tc, speed, output=args.speed_output, cache=not args.no_cache, device=device)
            speed_paths = paths
    bar.close()
    print(f"wrote {output} ({len(shapes)} shapes, {time.monotonic() - t0:.0f}s)")
    if speed and not args.no_speed:
        print("speed evidence: " + ", ".join(str(p) for p in speed_paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
