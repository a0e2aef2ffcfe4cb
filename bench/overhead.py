"""Host cost per call of the FP8 linear, against a bare Triton launch and a torch add, in one process.

    PYTHONPATH=src python3 bench/overhead.py [--out bench/results] [--calls 2000] [--runs 5]

GPU: for each shape (M=1, N=2048, K=3072 and M=16, N=2112, K=7168) it times the host (enqueue) cost
per call, no CUDA graph: the wall time of ``calls`` back-to-back calls before the synchronize. The
paths are measured interleaved: ``runs`` rounds, each timing every path once, and the minimum per
path is kept, so that a slow drift of the host (H200 host timings move by +-40% between runs) hits
every path alike. Paths: torch add (one kernel), a Triton no-op kernel launch, torch.matmul bf16,
our GEMM through ``blockscale_gemm(check=False)`` and through the bound launcher
(``TritonBackend.bind``), the bare ``torch._scaled_mm`` with blockwise scales on operands padded
beforehand (what torch itself costs: the floor of the torch-scaled-mm backend), ``quantize_activation``
(torch) and the fused quant kernel, the public op with FP8 and bf16 input for auto and every explicit
backend that runs here, and ``Fp8BlockLinear`` (planned). Then the GPU time per call of each under
CUDA-graph replay (``rocm_fp8.tune.timing.time_calls``, the harness of every published number).

Ratios are to the no-op launch and to torch add. The targets of the lean-path work are marked met /
NOT met: FP8 input <= 2x the no-op launch; bf16 input <= 3x it and <= 1.5x torch.matmul bf16; module
<= op. The ``reference`` backend (the float reference, not a serving kernel) is listed, not judged.
torch-scaled-mm is judged like every backend and its overhead over the bare ``torch._scaled_mm`` is
reported beside.

CPU (no GPU visible): the dispatcher alone, the op with a registered no-op backend (the one of
bench/overhead_cpu.py) vs a tiny ``torch.add`` (target <= 2x), functional and module, interleaved too.

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
from rocm_fp8.tune.timing import time_calls  # noqa: E402

SHAPES = [(1, 2048, 3072), (16, 2112, 7168)]
#: backends listed but not judged against the targets, and why
NOT_JUDGED = {"reference": "not judged: float reference"}
BARE_SCALED_MM = "torch._scaled_mm, operands padded beforehand"


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
    # the one-launch fma kernel (the table's eager or main config for this bucket where it is one, else
    # the tuner's first candidate): its floor for FP8 input and for bf16 input quantized in the kernel
    from rocm_fp8.kernels.triton_blockscale import FMA_KERNEL, BoundFma, KernelConfig
    from rocm_fp8.tune.candidates import fma_candidates

    eager = triton_backend.eager_config_for(m, n, k, tc)
    fcfg = next((c for c in (eager, cfg) if c is not None and c.kernel == FMA_KERNEL), None)
    if fcfg is None and m <= 16:
        fcfg = KernelConfig.from_dict(fma_candidates()[0])
    if fcfg is not None:
        fb = BoundFma(w_q, w_s, torch.bfloat16, fcfg)
        paths["fma: bound launcher, fp8 in"] = lambda: fb(x_q, x_s)
        paths["fma: bound launcher, bf16 in (quantized in the kernel)"] = lambda: fb.float_input(x)
    bare = _bare_scaled_mm(x_q, x_s, w_q, w_s, tc)
    if bare is not None:
        from rocm_fp8.backends.torch_scaled_mm import padded_k

        paths[BARE_SCALED_MM] = bare
        mp, kp = max(4, -(-m // 4) * 4), padded_k(k)
        if (mp, kp) != (m, k):  # what torch-scaled-mm adds for FP8 input here: one pad launch
            paths["pad: quant_fp8.pad_fp8 (FP8 operands)"] = lambda: quant_fp8.pad_fp8(x_q, x_s, mp, kp)
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


def _bare_scaled_mm(x_q, x_s, w_q, w_s, tc) -> Optional[Callable]:
    """``torch._scaled_mm`` alone, blockwise scales, on the operands torch-scaled-mm hands it (M and K
    padded, scales M-contiguous) made once: the backend's floor. None where the backend cannot run."""
    from rocm_fp8.backends.torch_scaled_mm import ALIGN_M, MIN_M, TorchScaledMMBackend, _mm, _pad_operands

    backend = TorchScaledMMBackend()
    if not backend.available(tc)[0] or x_q.dtype != torch.float8_e4m3fn:
        return None
    try:
        prepared = backend.prepare_weight(w_q, w_s)
    except Exception as exc:  # noqa: BLE001
        return _raiser(exc)
    b, scale_b = prepared.extra["b"], prepared.extra["scale_b"]
    m = x_q.shape[0]
    mp = max(MIN_M, -(-m // ALIGN_M) * ALIGN_M)
    xp, sp = _pad_operands(x_q, x_s, mp, b.shape[0])
    kind, fn = backend._api
    if kind == "private":
        return lambda: fn(xp, b, sp, scale_b, out_dtype=torch.bfloat16)
    mm = _mm(backend._api)
    return lambda: mm(xp, b, sp, scale_b, torch.bfloat16)


def _raiser(exc: BaseException) -> Callable:
    def fail():
        raise exc

    return fail


def _overhead_cpu():
    """bench/overhead_cpu.py as a module (its no-op backend)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("overhead_cpu", Path(__file__).with_name("overhead_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_paths(m: int, n: int, k: int) -> dict[str, Callable]:
    """The dispatcher alone: bench/overhead_cpu.py's no-op backend (registered, so auto picks it)."""
    noop = _overhead_cpu()
    rocm_fp8.register_backend(noop.NoopBackend(), replace=True)
    name = noop.NOOP
    w_q, w_s = quantize_weight(torch.randn(n, k) * 0.05, (128, 128), torch.float8_e4m3fn)
    x = torch.randn(m, k, dtype=torch.bfloat16)
    x_q, x_s = quantize_activation(x, 128, torch.float8_e4m3fn)
    a = torch.ones(4)
    op = rocm_fp8.w8a8_block_fp8_linear
    paths: dict[str, Callable] = {
        "torch add": lambda: a + a,
        f"op fp8-in {name}": lambda: op(x_q, w_q, w_s, input_scale=x_s, backend=name),
        "op fp8-in auto": lambda: op(x_q, w_q, w_s, input_scale=x_s),
        "op bf16-in auto": lambda: op(x, w_q, w_s),
    }
    for kind, args in (("fp8-in", (x_q, x_s)), ("bf16-in", (x,))):
        try:
            layer = rocm_fp8.Fp8BlockLinear.from_checkpoint(w_q, w_s, None, out_dtype=torch.bfloat16)
            layer.plan([m], input_dtype=args[0].dtype)
            paths[f"module {kind} auto"] = (lambda layer=layer, args=args: layer(*args))
        except Exception as exc:  # noqa: BLE001
            paths[f"module {kind} auto"] = _raiser(exc)
    return paths


def targets(results: dict[str, dict], on_gpu: bool) -> dict[str, dict]:
    """The issue's targets from host times, each {"ratio", "limit", "met"}; ``met`` is None for a
    row that is reported, not judged (with a ``note``)."""
    host = {name: r["host_us"] for name, r in results.items() if "host_us" in r}
    out: dict[str, dict] = {}

    def mark(label: str, value: Optional[float], ref: Optional[float], factor: Optional[float],
             note: str = "") -> None:
        if value is None or ref is None:
            return
        row = {"ratio": value / ref, "limit": factor, "met": None if factor is None else value <= factor * ref}
        if note:
            row["note"] = note
        out[label] = row

    if not on_gpu:
        op, module = host.get("op fp8-in auto"), host.get("module fp8-in auto")
        mark("op fp8-in auto <= 2x torch add", op, host.get("torch add"), 2.0)
        mark("op bf16-in auto <= 2x torch add", host.get("op bf16-in auto"), host.get("torch add"), 2.0)
        mark("module fp8-in auto <= op fp8-in auto", module, op, 1.0)
        mark("module bf16-in auto <= op bf16-in auto", host.get("module bf16-in auto"), host.get("op bf16-in auto"),
             1.0)
        return out
    noop, matmul = host.get("triton no-op launch"), host.get("torch.matmul bf16")
    for name, value in host.items():
        if not name.startswith(("op fp8-in", "op bf16-in")):
            continue
        backend = name.split(" ", 2)[2]
        why = NOT_JUDGED.get(backend)
        limit = (lambda f: None if why else f)
        if name.startswith("op fp8-in"):
            mark(f"{name} <= 2x no-op launch", value, noop, limit(2.0), why or "")
        else:
            mark(f"{name} <= 3x no-op launch", value, noop, limit(3.0), why or "")
            mark(f"{name} <= 1.5x torch.matmul bf16", value, matmul, limit(1.5), why or "")
        if backend == "torch-scaled-mm" and host.get(BARE_SCALED_MM):
            bare = host[BARE_SCALED_MM]
            mark(f"{name} / bare torch._scaled_mm", value, bare, None,
                 f"overhead over the bare call: {value - bare:+.1f} us (reported, not a target)")
    mark("module bf16-in auto <= op bf16-in auto", host.get("module bf16-in auto"), host.get("op bf16-in auto"), 1.0)
    mark("module fp8-in auto <= op fp8-in auto", host.get("module fp8-in auto"), host.get("op fp8-in auto"), 1.0)
    return out


def interleaved_host_us(paths: dict[str, Callable], calls: int, runs: int, on_gpu: bool,
                        warmup: int = 20) -> dict[str, dict]:
    """Host (enqueue) us per call of every path: ``runs`` rounds, each timing ``calls`` back-to-back
    calls of every path in turn (synchronizing between paths, outside the timed region); the minimum
    over rounds per path. A path that raises is reported with its error and left out of later rounds."""
    results: dict[str, dict] = {}
    live: dict[str, Callable] = {}
    for name, fn in paths.items():
        try:
            for _ in range(warmup):  # plans bound, caches filled, kernels compiled
                fn()
            _sync(on_gpu)
            live[name] = fn
            results[name] = {"host_us": float("inf")}
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            _sync(on_gpu)
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    for _ in range(runs):
        for name, fn in list(live.items()):
            try:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                t1 = time.perf_counter()
                _sync(on_gpu)
            except Exception as exc:  # noqa: BLE001
                _sync(on_gpu)
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                del live[name]
                continue
            results[name]["host_us"] = min(results[name]["host_us"], (t1 - t0) * 1e6 / calls)
    return results


def measure(m: int, n: int, k: int, on_gpu: bool, calls: int, runs: int) -> dict:
    paths = gpu_paths(m, n, k) if on_gpu else cpu_paths(m, n, k)
    try:
        results = interleaved_host_us(paths, calls, runs, on_gpu)
    finally:
        if not on_gpu:
            rocm_fp8.unregister_backend(_overhead_cpu().NOOP)
    if on_gpu:
        for name, fn in paths.items():
            if "host_us" in results[name]:
                try:
                    results[name].update(graph_us(fn))
                except Exception as exc:  # noqa: BLE001
                    _sync(on_gpu)
                    results[name]["graph_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
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
             f"{report['calls']} calls x {report['runs']} rounds (min per path; the paths interleaved in "
             "every round), enqueue time, no graph; GPU time per call under CUDA-graph replay.", ""]
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
            verdict = t.get("note", "-") if t["met"] is None else ("met" if t["met"] else "NOT met")
            lines.append(f"| {label} | {t['ratio']:.2f} | {verdict} |")
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
