"""Host cost per call of the FP8 linear, against a bare Triton launch and a torch add, in one process.

    PYTHONPATH=src python3 bench/overhead.py [--out bench/results] [--calls 2000] [--runs 5]

GPU: for each shape (M=1, N=2048, K=3072 and M=16, N=2112, K=7168) it times the host (enqueue) cost
per call, no CUDA graph: the wall time of ``calls`` back-to-back calls before the final synchronize,
the minimum of ``runs`` runs. Paths: torch add (one kernel), a Triton no-op kernel launch,
torch.matmul bf16, our GEMM through ``blockscale_gemm(check=False)`` and through the bound launcher
(``TritonBackend.bind``), ``quantize_activation`` (torch) and the fused quant kernel, the public op
with FP8 and bf16 input for auto and every explicit backend that runs here, and ``Fp8BlockLinear``
(planned). Then the GPU time per call of the same under CUDA-graph replay. Both with the
harness of every published number (``rocm_fp8.tune.timing``: ``host_us``, ``time_calls``).
Ratios are to the no-op launch and to torch add; the targets of the lean-path work are marked
met / not met: FP8 input <= 2x the no-op launch; bf16 input <= 3x it and <= 1.5x torch.matmul bf16; module <= op.

CPU (no GPU visible): the dispatcher alone, the op with a registered no-op backend vs a tiny
``torch.add`` (target <= 2x), functional and module.

Writes bench/results/overhead-<device slug>.{json,md} with device, torch and triton versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import rocm_fp8  # noqa: E402
from rocm_fp8 import kernel_configs  # noqa: E402
from rocm_fp8.quant import quantize_activation, quantize_weight  # noqa: E402
from rocm_fp8.tune.timing import host_us, time_calls  # noqa: E402

SHAPES = [(1, 2048, 3072), (16, 2112, 7168)]


def _sync(on_gpu: bool) -> None:
    if on_gpu:
        torch.cuda.synchronize()


def graph_us(fn: Callable) -> dict:
    """GPU time per call under CUDA-graph replay (:func:`rocm_fp8.tune.timing.time_calls`, the
    harness of every published number), or why the path cannot be captured."""
    r = time_calls([fn])
    return {"gpu_us": r["us"]} if r["graph"] else {"graph_error": r.get("graph_error", "capture failed")}


def _noop_kernel():
    import triton

    @triton.jit
    def noop(x_ptr):
        pass

    return noop


def gpu_paths(m: int, n: int, k: int) -> dict[str, Callable]:
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.dispatch import bucket
    from rocm_fp8.kernels import quant_fp8
    from rocm_fp8.kernels.triton_blockscale import blockscale_gemm
    from rocm_fp8.toolchain import detect

    tc = detect()
    fp8 = torch.float8_e4m3fnuz if tc.fp8_flavour == "e4m3fnuz" else torch.float8_e4m3fn
    g = torch.Generator(device="cuda").manual_seed(m + n + k)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g) * 0.05
    w_q, w_s = quantize_weight(w, (128, 128), fp8)
    x_q, x_s = quantize_activation(x, 128, fp8)
    a, b = torch.randn(m, n, device="cuda"), torch.randn(m, n, device="cuda")
    noop, tiny = _noop_kernel(), torch.empty(16, device="cuda")
    triton_backend = TritonBackend()
    cfg = triton_backend.config_for(m, n, k, tc)
    bound = triton_backend.bind(triton_backend.prepare_weight(w_q, w_s), torch.bfloat16, bucket(m))

    paths: dict[str, Callable] = {
        "torch add": lambda: a + b,
        "triton no-op launch": lambda: noop[(1,)](tiny),
        "torch.matmul bf16": lambda: torch.matmul(x, w.t()),
        "gemm: blockscale_gemm(check=False)": lambda: blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16,
                                                                      config=cfg, check=False),
        "gemm: bound launcher": lambda: bound(x_q, x_s),
        "quant: quantize_activation (torch)": lambda: quantize_activation(x, 128, fp8),
        "quant: fused kernel": lambda: quant_fp8.quantize_fp8(x, fp8, 128, "row", check=False),
        "bf16 -> fused quant + bound launcher": lambda: bound(*quant_fp8.quantize_fp8(x, fp8, 128, "row",
                                                                                      check=False)),
    }
    for backend in ["auto"] + list(rocm_fp8.backend_names()):
        paths[f"op fp8-in {backend}"] = (lambda be=backend: rocm_fp8.w8a8_block_fp8_linear(
            x_q, w_q, w_s, input_scale=x_s, backend=be))
        paths[f"op bf16-in {backend}"] = (lambda be=backend: rocm_fp8.w8a8_block_fp8_linear(
            x, w_q, w_s, backend=be))
    for kind, args in (("bf16-in", (x,)), ("fp8-in", (x_q, x_s))):
        try:
            layer = rocm_fp8.Fp8BlockLinear.from_checkpoint(w_q, w_s, None, out_dtype=torch.bfloat16)
            layer.plan([m], input_dtype=args[0].dtype)
            paths[f"module {kind} auto"] = (lambda layer=layer, args=args: layer(*args))
        except Exception as exc:  # noqa: BLE001
            paths[f"module {kind} auto"] = _raiser(exc)
    return paths


def _raiser(exc: BaseException) -> Callable:
    def fail():
        raise exc

    return fail


class _NoopBackend(rocm_fp8.Backend):
    """Returns a preallocated output: what is left to time is the dispatcher itself."""

    name = "bench-noop"
    description = "bench/overhead.py: does nothing"
    priority = 1000

    def __init__(self, out: torch.Tensor) -> None:
        self._out = out

    def supports(self, problem, toolchain):
        return (True, "")

    def run(self, x_q, x_scale, prepared, out_dtype):
        return self._out


def cpu_paths(m: int, n: int, k: int) -> dict[str, Callable]:
    w_q, w_s = quantize_weight(torch.randn(n, k) * 0.05, (128, 128), torch.float8_e4m3fn)
    x_q, x_s = quantize_activation(torch.randn(m, k), 128, torch.float8_e4m3fn)
    rocm_fp8.register_backend(_NoopBackend(torch.empty(m, n, dtype=torch.bfloat16)), replace=True)
    a = torch.ones(4)
    paths: dict[str, Callable] = {
        "torch add": lambda: a + a,
        "op fp8-in bench-noop": lambda: rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s,
                                                                       backend="bench-noop"),
    }
    try:
        layer = rocm_fp8.Fp8BlockLinear.from_checkpoint(w_q, w_s, None, out_dtype=torch.bfloat16,
                                                        backend="bench-noop")
        layer.plan([m], input_dtype=x_q.dtype)
        paths["module fp8-in bench-noop"] = lambda: layer(x_q, x_s)
    except Exception as exc:  # noqa: BLE001
        paths["module fp8-in bench-noop"] = _raiser(exc)
    return paths


def targets(results: dict[str, dict], on_gpu: bool) -> dict[str, dict]:
    """The issue's targets, each {"limit": ..., "value": ..., "met": bool}, from host times."""
    host = {name: r["host_us"] for name, r in results.items() if "host_us" in r}
    out: dict[str, dict] = {}

    def mark(label: str, value: Optional[float], ref: Optional[float], factor: float) -> None:
        if value is None or ref is None:
            return
        out[label] = {"ratio": value / ref, "limit": factor, "met": value <= factor * ref}

    if not on_gpu:
        mark("op <= 2x torch add", host.get("op fp8-in bench-noop"), host.get("torch add"), 2.0)
        mark("module <= op", host.get("module fp8-in bench-noop"), host.get("op fp8-in bench-noop"), 1.0)
        return out
    noop, matmul = host.get("triton no-op launch"), host.get("torch.matmul bf16")
    for name, value in host.items():
        if name.startswith("op fp8-in"):
            mark(f"{name} <= 2x no-op launch", value, noop, 2.0)
        elif name.startswith("op bf16-in"):
            mark(f"{name} <= 3x no-op launch", value, noop, 3.0)
            mark(f"{name} <= 1.5x torch.matmul bf16", value, matmul, 1.5)
    mark("module bf16-in auto <= op bf16-in auto", host.get("module bf16-in auto"), host.get("op bf16-in auto"), 1.0)
    mark("module fp8-in auto <= op fp8-in auto", host.get("module fp8-in auto"), host.get("op fp8-in auto"), 1.0)
    return out


def measure(m: int, n: int, k: int, on_gpu: bool, calls: int, runs: int) -> dict:
    paths = gpu_paths(m, n, k) if on_gpu else cpu_paths(m, n, k)
    results: dict[str, dict] = {}
    for name, fn in paths.items():
        try:
            fn()
            _sync(on_gpu)
            r = {"host_us": host_us(fn, calls, runs, sync=torch.cuda.synchronize if on_gpu else None)}
            if on_gpu:
                r.update(graph_us(fn))
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            _sync(on_gpu)
            r = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        results[name] = r
    base = {key: results.get(key, {}).get("host_us") for key in ("triton no-op launch", "torch add")}
    for r in results.values():
        if "host_us" in r:
            if base["triton no-op launch"]:
                r["x_noop_launch"] = r["host_us"] / base["triton no-op launch"]
            if base["torch add"]:
                r["x_torch_add"] = r["host_us"] / base["torch add"]
    return {"m": m, "n": n, "k": k, "paths": results, "targets": targets(results, on_gpu)}


def markdown(report: dict) -> str:
    lines = [f"# Host cost per call: {report['device']}", "",
             f"torch {report['versions']['torch']}, triton {report['versions']['triton']}, "
             f"{report['calls']} calls x {report['runs']} runs (min), enqueue time, no graph; "
             "GPU time per call under CUDA-graph replay.", ""]
    for shape in report["results"]:
        lines += [f"## M={shape['m']}, N={shape['n']}, K={shape['k']}", "",
                  "| path | host us | x no-op launch | x torch add | GPU us (graph) |", "|---|---|---|---|---|"]
        for name, r in shape["paths"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:120]} | | | |")
                continue

            def f(key, fmt="{:.2f}"):
                return fmt.format(r[key]) if key in r else "-"

            gpu = f("gpu_us") if "gpu_us" in r else ("capture failed" if "graph_error" in r else "-")
            lines.append(f"| {name} | {f('host_us')} | {f('x_noop_launch')} | {f('x_torch_add')} | {gpu} |")
        lines += ["", "| target | ratio | met |", "|---|---|---|"]
        for label, t in shape["targets"].items():
            lines.append(f"| {label} | {t['ratio']:.2f} | {'met' if t['met'] else 'NOT met'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    report = {"device": device, "versions": {"torch": torch.__version__, "triton": triton_version,
                                             "cuda": torch.version.cuda, "hip": torch.version.hip,
                                             "date": time.strftime("%Y-%m-%d")},
              "calls": args.calls, "runs": args.runs,
              "results": [measure(m, n, k, on_gpu, args.calls, args.runs) for m, n, k in SHAPES]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"overhead-{kernel_configs.slug(device)}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
