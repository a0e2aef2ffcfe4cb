"""What the counters' zeroing costs a split-K call inside a CUDA graph, on one GPU.

    PYTHONPATH=src python3 bench/splitk_graph_cost.py [--out bench/results]

The one-launch split-K needs its per-tile counters at zero. Eager calls share a per-stream buffer
that every launch leaves at zero; a captured call takes fresh counters from the graph's pool and
zeroes them with a captured fill kernel, one per call (``triton_blockscale._splitk_state``). Per
cell (the H200 table's split-K configs at M = 1, 16, 64), timed the way bench/gemm.py times (CUDA-graph
replays over input sets spanning 3x the L2, ``rocm_fp8.tune.timing.time_calls``):

- ``fresh``: the bound call as shipped (a fill node per call);
- ``shared``: the same launch with one counter buffer zeroed once, before the capture: what one
  buffer per capture would cost (safe here: one graph, replayed in order);
- ``split1``: the same tile without split-K, for scale.

Every variant is checked against the float32 reference first. Writes
``splitk-graph-cost-<device>.{json,md}`` with the device and the torch/triton/CUDA versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from rocm_fp8 import kernel_configs  # noqa: E402
from rocm_fp8.kernels import triton_blockscale as tb  # noqa: E402
from rocm_fp8.tune.operands import accuracy_floor, accurate_enough, make_sets, reference, rel_error  # noqa: E402
from rocm_fp8.tune.table import versions  # noqa: E402
from rocm_fp8.tune.timing import rotation_sets, time_calls  # noqa: E402

#: (N, K, M, config): the H200 table's split-K rows for the MiniMax-M2.5 / DeepSeek-V3 shapes
CELLS = [
    (2048, 3072, 1, dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4)),
    (2048, 3072, 16, dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4)),
    (2048, 3072, 64, dict(block_m=64, block_n=64, group_m=8, split_k=4, num_warps=4, num_stages=4)),
    (2112, 7168, 16, dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4)),
    (3072, 1536, 16, dict(block_m=16, block_n=32, group_m=1, split_k=4, num_warps=4, num_stages=4)),
    (7168, 2048, 16, dict(block_m=16, block_n=64, group_m=1, split_k=2, num_warps=4, num_stages=4)),
]


def time_variant(sets, cfg, shared: bool) -> dict:
    bound = [tb.BoundGemm(w_q, w_s, torch.bfloat16, cfg) for _, _, w_q, w_s in sets]
    for (x_q, x_s, w_q, w_s), b in zip(sets, bound):  # correct before timed
        ref = reference(x_q, x_s, w_q, w_s)
        err, floor = rel_error(b(x_q, x_s), ref), accuracy_floor(ref, torch.bfloat16)
        if not accurate_enough(err, floor):
            return {"error": f"relative error {err:.3e} > 1.25 x floor {floor:.3e}"}
    calls = [lambda b=b, x=x_q, s=x_s: b(x, s) for (x_q, x_s, _, _), b in zip(sets, bound)]
    real = tb._splitk_state
    if shared:
        m, k = sets[0][0].shape
        n = sets[0][2].shape[0]
        dev = sets[0][0].device
        ws = torch.empty(cfg.split_k * m * n, dtype=torch.float32, device=dev)
        cnt = torch.zeros(-(-m // cfg.block_m) * -(-n // cfg.block_n), dtype=torch.int32, device=dev)
        tb._splitk_state = lambda *args: (ws, cnt)
    try:
        res = time_calls(calls)
    finally:
        tb._splitk_state = real
    if shared:
        torch.cuda.synchronize()
        res["counters_left_zero"] = int(cnt.count_nonzero()) == 0
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/splitk_graph_cost.py: no GPU is visible", file=sys.stderr)
        return 2
    fp8 = torch.float8_e4m3fnuz if torch.version.hip and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName \
        else torch.float8_e4m3fn
    device = torch.cuda.get_device_name()
    rows = []
    for n, k, m, cfg_d in CELLS:
        cfg = tb.KernelConfig(**cfg_d).validate()
        sets = make_sets(m, n, k, fp8, rotation_sets(n * k + m * k))
        row = {"n": n, "k": k, "m": m, "config": cfg.to_dict(), "sets": len(sets),
               "fresh": time_variant(sets, cfg, shared=False),
               "shared": time_variant(sets, cfg, shared=True),
               "split1": time_variant(sets, cfg.with_(split_k=1), shared=False)}
        rows.append(row)
        us = {v: row[v].get("us") for v in ("fresh", "shared", "split1")}
        print(f"N={n} K={k} M={m} split {cfg.split_k}: " +
              ", ".join(f"{v} {u:.2f} us" if u else f"{v} {row[v]}" for v, u in us.items()), flush=True)
    result = {"device": device, "versions": versions(), "cells": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"splitk-graph-cost-{kernel_configs.slug(device)}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    vers = result["versions"]
    lines = [f"# Split-K counters inside a CUDA graph on {device}", "",
             ", ".join(f"{key} {val}" for key, val in vers.items()) + ". Median us per call over graph replays "
             "(inputs rotated over 3x L2). fresh: shipped (a captured fill per call); shared: one counter buffer "
             "zeroed before the capture; split1: the same tile without split-K.", "",
             "| N,K | M | config | fresh | shared | fresh - shared | split1 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f, s, one = (r[v].get("us") for v in ("fresh", "shared", "split1"))
        fmt = (lambda u: f"{u:.2f}" if u else "error")
        diff = f"{f - s:.2f}" if f and s else "-"
        cfg = r["config"]
        lines.append(f"| {r['n']},{r['k']} | {r['m']} | {cfg['block_m']}x{cfg['block_n']} sk{cfg.get('split_k', 1)} | "
                     f"{fmt(f)} | {fmt(s)} | {diff} | {fmt(one)} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
