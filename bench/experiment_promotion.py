"""Experiment: where the per-block scale promotion sits in the K loop (docs/kernel.md, v5).

Candidates, all 128-wide K blocks with fp32 promotion per block:
  frame   rescaled accumulator (the best large-M scheme before this run): the dot accumulates into acc
  plain   acc += dot(a, b) * s
  lag     deferred promotion: block k's dot is folded into acc in iteration k+1, so the multiply-add
          of one block can run while the next block's wgmma is in flight
  *-ws    the same with Triton's automatic warp specialization of the K loop

Per candidate it records, besides TFLOPS and the relative error against a float32 reference, the
compiled kernel's registers, spills and how the PTX waits on wgmma (``wait_group 0`` after every
dot means nothing overlaps inside one CTA). cuBLASLt blockwise FP8 is timed in the same run.

The lag and warp-specialize variants were removed from the kernel after this run (they lost); the
kernel that ran it is commit 3a3267a.

Each candidate runs in its own process (a compiler hang or crash costs one candidate):
    PYTHONPATH=src python3 bench/experiment_promotion.py --list
    PYTHONPATH=src python3 bench/experiment_promotion.py --candidate NAME --out FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

SHAPES = [(4096, 7168), (7168, 16384), (2048, 3072), (2112, 7168), (24576, 1536)]
MS = [1024, 4096, 16384]
P = dict(group_m=8, persistent=True, tma=True)
CANDIDATES = {
    "frame 128x128 w8 s3 2/SM": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=3, frame=True,
                                     programs_per_sm=2),
    "plain 128x128 w8 s4": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=4),
    "lag 128x128 w8 s3": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=3, lag=True),
    "lag 128x128 w8 s4": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=4, lag=True),
    "lag 128x128 w8 s3 2/SM": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=3, lag=True,
                                   programs_per_sm=2),
    "lag 64x128 w4 s4 2/SM": dict(P, block_m=64, block_n=128, num_warps=4, num_stages=4, lag=True,
                                  programs_per_sm=2),
    "lag 256x128 w16 s3": dict(P, block_m=256, block_n=128, num_warps=16, num_stages=3, lag=True),
    "lag 128x128 w8 s4 nonpersistent": dict(group_m=8, tma=True, block_m=128, block_n=128, num_warps=8,
                                            num_stages=4, lag=True),
    "plain-ws 128x128 w8 s3": dict(group_m=8, tma=True, block_m=128, block_n=128, num_warps=8, num_stages=3,
                                   warp_specialize=True),
    "lag-ws 128x128 w8 s3": dict(group_m=8, tma=True, block_m=128, block_n=128, num_warps=8, num_stages=3,
                                 lag=True, warp_specialize=True),
    "frame-ws 128x128 w8 s3": dict(group_m=8, tma=True, block_m=128, block_n=128, num_warps=8, num_stages=3,
                                   frame=True, warp_specialize=True),
    "lag-ws 128x128 w8 s3 persistent": dict(P, block_m=128, block_n=128, num_warps=8, num_stages=3, lag=True,
                                            warp_specialize=True),
}


def ptx_facts(compiled) -> dict:
    facts = {}
    try:
        facts["regs"] = getattr(compiled, "n_regs", None)
        facts["spills"] = getattr(compiled, "n_spills", None)
        ptx = compiled.asm.get("ptx", "")
        waits = re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", ptx)
        facts["wgmma"] = len(re.findall(r"wgmma\.mma_async", ptx))
        facts["wait_groups"] = {w: waits.count(w) for w in sorted(set(waits))}
        facts["setmaxnreg"] = len(re.findall(r"setmaxnreg", ptx))
    except Exception as exc:  # noqa: BLE001 - facts are best effort
        facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def cells():
    for n, k in SHAPES:
        for m in MS:
            yield n, k, m


def run_candidate(name: str) -> list[dict]:
    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm, launch
    from rocm_fp8.tune import (make_sets, measure_scaled_mm, reference, rel_error, rotation_sets, tflops,
                               time_calls)

    rows = []
    facts = None
    for n, k, m in cells():
        set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
        sets = make_sets(m, n, k, torch.float8_e4m3fn, rotation_sets(set_bytes), seed=m + n + k)
        ref = reference(*sets[0])
        row = {"candidate": name, "n": n, "k": k, "m": m}
        try:
            if name == "cublaslt":
                r = measure_scaled_mm(sets, torch.bfloat16)
                if "error" in r:
                    raise RuntimeError(r["error"])
                row["rel_err"] = r["rel_err"]
            else:
                cfg = KernelConfig(**CANDIDATES[name]).validate()
                out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
                compiled = launch(*sets[0], out, cfg)
                if facts is None:
                    facts = ptx_facts(compiled)
                    print(json.dumps({"candidate": name, "compiled": facts}), flush=True)
                row["rel_err"] = rel_error(out, ref)
                if not row["rel_err"] < 1e-2:
                    row["error"] = f"wrong result: relative error {row['rel_err']:.3g}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                r = time_calls([lambda s=s: blockscale_gemm(*s, torch.bfloat16, config=cfg, check=False)
                                for s in sets])
            row["us"] = r["us"]
            row["tflops"] = round(tflops(m, n, k, r["us"]), 1)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is a result too
            torch.cuda.synchronize()
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        del sets, ref
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--list", action="store_true")
    p.add_argument("--candidate")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.list:
        print("\n".join(["cublaslt", *CANDIDATES]))
        return 0
    rows = run_candidate(args.candidate)
    if args.out:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
