"""Overhead of ``rocm_fp8.w8a8_block_fp8_linear`` (pre-quantized input) over a direct kernel launch.

    PYTHONPATH=src python3 bench/overhead.py [--out bench/results]

Host: wall time per call of a long run of back-to-back calls on a small problem (the GPU finishes
each kernel before the next launch is ready, so the host path is what is timed), median of 7 runs.
GPU: the same calls captured in a CUDA graph and replayed, which also answers whether the public
call is capturable (and whether the replay reproduces the eager output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import rocm_fp8
from rocm_fp8 import kernel_configs
from rocm_fp8.backends.triton import TritonBackend
from rocm_fp8.kernels import triton_blockscale as tb
from rocm_fp8.toolchain import detect
from rocm_fp8.tune import make_sets, time_calls, versions


def host_us(fn, calls=2000, runs=7) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    per = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per.append((time.perf_counter() - t0) * 1e6 / calls)
    return statistics.median(per)


def graph_check(fn, ref) -> dict:
    """Capture ``fn`` in a CUDA graph, replay, compare with the eager ``ref``."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = fn()
        g.replay()
        torch.cuda.synchronize()
        same = bool(torch.equal(y, ref))
        return {"capturable": True, "replay_matches_eager": same}
    except Exception as exc:  # noqa: BLE001
        torch.cuda.synchronize()
        return {"capturable": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def measure(n, k, m) -> dict:
    x_q, x_s, w_q, w_s = make_sets(m, n, k, torch.float8_e4m3fn, 1, seed=5)[0]
    tc = detect()
    cfg = TritonBackend().config_for(m, n, k, tc)
    out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")

    def direct():
        tb.launch(x_q, x_s, w_q, w_s, out, cfg)
        return out

    def launcher():
        return tb.blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=cfg)

    def api_triton():
        return rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend="triton")

    def api_auto():
        return rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)

    res = {"n": n, "k": k, "m": m, "config": cfg.to_dict()}
    ref = direct().clone()
    for name, fn in (("direct_launch", direct), ("checked_launcher", launcher), ("api_triton", api_triton),
                     ("api_auto", api_auto)):
        try:
            y = fn()
            torch.cuda.synchronize()
            r = {"host_us": host_us(fn), "gpu_us": time_calls([fn])["us"]}
            if name.startswith("api"):
                r["graph"] = graph_check(fn, fn().clone())
                r["matches_direct"] = bool(torch.equal(y, ref)) if name == "api_triton" else None
            res[name] = r
        except Exception as exc:  # noqa: BLE001
            torch.cuda.synchronize()
            res[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    try:
        res["auto_choice"] = rocm_fp8.explain(n=n, k=k, m=m).backend
    except Exception as exc:  # noqa: BLE001
        res["auto_choice"] = f"{type(exc).__name__}: {exc}"
    d = res.get("direct_launch", {}).get("host_us")
    for name in ("checked_launcher", "api_triton", "api_auto"):
        if d and "host_us" in res.get(name, {}):
            res[name]["host_overhead_us"] = res[name]["host_us"] - d
            res[name]["gpu_overhead_us"] = res[name]["gpu_us"] - res["direct_launch"]["gpu_us"]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/overhead.py: no GPU is visible", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    results = [measure(768, 3072, 1), measure(2112, 7168, 16), measure(4096, 7168, 1024)]
    out = {"device": device, "versions": versions(), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"overhead-{kernel_configs.slug(device)}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    for r in results:
        print(f"N={r['n']} K={r['k']} M={r['m']}:")
        for name in ("direct_launch", "checked_launcher", "api_triton", "api_auto"):
            v = r.get(name, {})
            if "error" in v:
                print(f"  {name}: ERROR {v['error']}")
            else:
                print(f"  {name}: host {v['host_us']:.2f} us/call (+{v.get('host_overhead_us', 0):.2f}), "
                      f"GPU {v['gpu_us']:.2f} us (+{v.get('gpu_overhead_us', 0):.2f}) {v.get('graph', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
