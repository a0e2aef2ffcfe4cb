"""Experiment: wider CTAs with more warpgroups for large M (prediction in docs/kernel.md, v4).

16 warps = 4 warpgroups per CTA, each owning a 64-row (or 64-column) slice of a 256x128 / 128x256
tile: the same 64 accumulator registers per thread as today's 128x128 x 8 warps, but one B (or A)
tile load serves twice the MMA work, and four warpgroups can interleave one's scale multiply with
another's wgmma. Times them against the current best large-M config on the shapes where we lose most.

    PYTHONPATH=src python3 bench/experiment_wide_tiles.py --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm
from rocm_fp8.tune import make_sets, reference, rel_error, rotation_sets, tflops, time_calls

SHAPES = [(4096, 7168), (7168, 16384), (2048, 3072), (7168, 2048), (24576, 1536)]
MS = [4096, 16384]
BASE = dict(group_m=8, persistent=True, tma=True)
CANDIDATES = {
    "current-best 128x128 w8 s3 frame 2/SM": dict(block_m=128, block_n=128, num_warps=8, num_stages=3, frame=True,
                                                  programs_per_sm=2),
    "128x128 w8 s4 plain": dict(block_m=128, block_n=128, num_warps=8, num_stages=4),
    "256x128 w16 s3 frame": dict(block_m=256, block_n=128, num_warps=16, num_stages=3, frame=True),
    "256x128 w16 s3 plain": dict(block_m=256, block_n=128, num_warps=16, num_stages=3),
    "128x256 w16 s3 frame": dict(block_m=128, block_n=256, num_warps=16, num_stages=3, frame=True),
    "128x256 w16 s3 plain": dict(block_m=128, block_n=256, num_warps=16, num_stages=3),
    "256x128 w16 s4 frame": dict(block_m=256, block_n=128, num_warps=16, num_stages=4, frame=True),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args()
    results = []
    for n, k in SHAPES:
        for m in MS:
            set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
            sets = make_sets(m, n, k, torch.float8_e4m3fn, rotation_sets(set_bytes), seed=m + n + k)
            ref = reference(*sets[0])
            row = {"n": n, "k": k, "m": m}
            for name, c in CANDIDATES.items():
                cfg = KernelConfig(**BASE, **c)
                try:
                    err = rel_error(blockscale_gemm(*sets[0], torch.bfloat16, config=cfg), ref)
                    if not err < 1e-2:
                        row[name] = f"wrong ({err:.3g})"
                        continue
                    r = time_calls([lambda s=s: blockscale_gemm(*s, torch.bfloat16, config=cfg, check=False)
                                    for s in sets])
                    row[name] = round(tflops(m, n, k, r["us"]), 1)
                except Exception as exc:  # noqa: BLE001 - a config that fails to compile is a result too
                    torch.cuda.synchronize()
                    row[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            print(json.dumps(row), flush=True)
            results.append(row)
            del sets, ref
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiment-wide-tiles.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
