"""The Triton kernel's candidate configurations per M (those that fit the arch), and their compilation
in parallel processes before timing (which fills Triton's on-disk cache)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, wait
from typing import Any, Optional

from rocm_fp8.quant import FP8_DTYPES
from rocm_fp8.tune.operands import make_sets


def candidates(m: int, *, quick: bool = False, hopper: bool = True, arch: Optional[str] = None) -> list[dict[str, Any]]:
    """Configurations worth timing at this M (dicts for KernelConfig) whose shared memory fits ``arch``
    (default: an H100's budget; see :mod:`rocm_fp8.kernels.arch_limits`).

    Small M is weight-bandwidth bound: narrow tiles and split-K to occupy every SM. Large M is
    tensor-core bound: wide tiles, the rescaled-accumulator scheme (``frame``), TMA loads and a
    persistent grid where this GPU has them.
    """
    out: list[dict[str, Any]] = []
    if m <= 1:
        out += fma_candidates(quick=quick)
    if m <= 16:
        for bn, split in ((64, 1), (64, 2), (64, 4), (64, 8), (128, 1), (128, 2), (128, 4), (32, 2), (32, 4)):
            out.append(dict(block_m=16, block_n=bn, group_m=1, split_k=split, num_warps=4, num_stages=4))
        if not quick:
            out += [dict(block_m=16, block_n=64, group_m=1, split_k=s, num_warps=4, num_stages=6) for s in (2, 4)]
    elif m <= 64:
        for bm, bn in ((64, 64), (64, 128), (32, 64)):
            for split in (1, 2, 4):
                out.append(dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=4, num_stages=4))
        if not quick:  # narrower tiles and deeper pipelines: more CTAs and bytes in flight for small N
            out += [dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=4, num_stages=st)
                    for bm, bn, split, st in ((32, 32, 4, 4), (32, 64, 8, 4), (64, 64, 8, 4), (64, 32, 4, 4),
                                              (64, 64, 2, 6), (64, 128, 2, 3), (32, 128, 2, 4))]
    elif m <= 256:
        for bm, bn, w in ((64, 128, 4), (128, 128, 8), (64, 256, 8), (64, 64, 4)):
            for split in (1, 2):
                out.append(dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=w, num_stages=4,
                                frame=True))
        out += [dict(block_m=64, block_n=128, group_m=8, split_k=s, num_warps=4, num_stages=4) for s in (1, 2)]
        if not quick:  # split 4 for long K, narrower and deeper variants of the plain-promotion tile
            out += [dict(block_m=bm, block_n=bn, group_m=8, split_k=split, num_warps=w, num_stages=st)
                    for bm, bn, split, w, st in ((64, 128, 4, 4, 4), (64, 64, 2, 4, 4), (64, 64, 4, 4, 4),
                                                 (128, 64, 1, 4, 4), (128, 64, 2, 4, 4), (64, 128, 1, 4, 3),
                                                 (64, 128, 2, 4, 5), (128, 128, 2, 8, 3))]
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
        if hopper and m >= 1024 and arch in (None, "sm90") and _gluon_compiles():
            # the Gluon sm90 kernel (kernels/gluon_sm90.py), version 2 (ws2: warp-specialized TMA
            # producer, two consumer warpgroups, staged scales, TMA-store epilogue): on the H200 its
            # BN 256 x 3 stages reached 0.90x cuBLASLt geomean at M >= 1024 and BN 128 x 4 stages
            # 0.84x, best at M = 1024 on small shapes (more tiles); v1 (gluon_ws, 0.63x) is left out.
            # v3: BN 256 x 4 stages (one output buffer per consumer makes room for the 4th stage) and
            # BN 192 x 4 (N = 2112 in 11 tiles; more tiles than BN 256 where SMs would idle).
            out += [dict(block_m=128, block_n=bn, group_m=8, num_warps=4, num_stages=st, persistent=True,
                         kernel="gluon_ws2") for bn, st in ((256, 3), (128, 4), (256, 4), (192, 4))]
    # drop configs whose software pipeline cannot fit in the arch's shared memory / LDS
    from rocm_fp8.kernels.arch_limits import estimate_lds_bytes, limits_for

    lim = limits_for(arch or "sm90")
    if lim is None:
        return out
    return [c for c in out if estimate_lds_bytes(c, lim.arch) <= lim.lds_bytes]


def fma_candidates(*, quick: bool = False) -> list[dict[str, Any]]:
    """The fma kernel (vector-ALU FMAs, one launch, quantizing float input itself; one row per
    program): narrow column tiles (many programs, each streaming its weight rows once) and several K
    groups per step (more bytes in flight per program). ``candidates`` offers them at M = 1 only: on
    the H200 multi-row tiles took 13-60x the tensor-core kernel's GPU time at M = 16 (121-2153 us
    against 7-35 us), and even at M = 1 these take 1.5-4x, so only an eager call, which pays its
    launches on the host, can come out ahead (``tune.search.pick_eager``)."""
    def fma(bn, groups, warps, stages=1, wide=False):
        return dict(kernel="fma", block_m=1, block_n=bn, k_groups=groups, group_m=1, num_warps=warps,
                    num_stages=stages, frame=wide)

    out = [fma(bn, g, 4) for bn in (4, 8, 16, 32) for g in (2, 4, 8)]
    if not quick:
        out += [fma(8, 4, 2), fma(16, 4, 8), fma(16, 4, 4, 3), fma(8, 8, 4, 3)]
    # the wide accumulator (session 6, after the first H200 tune: the per-group cross-lane sums cost
    # more than the weight stream): one sum across K at the end
    out += [fma(bn, g, w, wide=True) for bn, g, w in ((4, 8, 4), (8, 4, 4), (8, 8, 4), (16, 4, 8), (16, 2, 4),
                                                       (32, 2, 8))]
    return out


def _gluon_compiles() -> bool:
    """Whether this Triton can build the Gluon sm90 kernel (the version its Gluon API was written for)."""
    from rocm_fp8.kernels.gluon_support import compiler_reason

    return compiler_reason() is None


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
