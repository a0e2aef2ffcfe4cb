"""Host cost of the dispatcher alone, on the CPU: the op and the layer around a no-op backend.

    PYTHONPATH=src python3 bench/overhead_cpu.py [--out bench/results] [--calls 2000] [--runs 5]

A backend registered through the public API that does no work (its bound call returns a
preallocated output) stands in for the kernel, so what is timed is rocm_fp8's own per-call path:
the argument check, the plan lookup and the bound call. Each path is timed as the minimum over
``runs`` rounds of ``calls`` back-to-back calls, the rounds interleaved so that a busy moment on a
shared machine hits every path alike, and reported against a tiny ``torch.add`` timed the same way.
Targets (issue "the call costs about one kernel launch"): the op <= 2x torch.add, the layer <= the op.

``measure()`` is importable (tests/test_overhead.py and bench/overhead.py use it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import rocm_fp8
from rocm_fp8.backends import OK, Backend

NOOP = "noop-overhead"


class NoopBackend(Backend):
    """Does nothing: quantize returns its input, the bound call a preallocated output."""

    name = NOOP
    description = "bench helper: returns a preallocated output, computes nothing"
    priority = 1000  # above every built-in, so auto picks it

    def available(self, toolchain):
        return OK

    def supports(self, problem, toolchain):
        return OK

    def quantize_input(self, x, fp8_dtype, group_size=128):
        return x, x

    def bind(self, prepared, out_dtype, m_bucket):
        out = torch.empty((m_bucket, prepared.n), dtype=out_dtype, device=prepared.weight.device)

        def call(x_q, x_scale):
            return out

        return call

    def run(self, x_q, x_scale, prepared, out_dtype):  # the protocol's required method
        return torch.empty((x_q.shape[0], prepared.n), dtype=out_dtype, device=x_q.device)


def _time(fns: dict, calls: int, runs: int) -> dict:
    for fn in fns.values():  # warm: plans bound, caches filled
        for _ in range(50):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e6 / calls)
    return best


def measure(calls: int = 2000, runs: int = 5, m: int = 1, n: int = 2048, k: int = 3072) -> dict:
    """Per-call microseconds and ratios to a tiny torch.add; registers and removes the no-op backend."""
    rocm_fp8.register_backend(NoopBackend(), replace=True)
    try:
        w_q, w_s = rocm_fp8.quantize_weight(torch.randn(n, k) * 0.05, dtype="e4m3fn")
        x = torch.randn(m, k, dtype=torch.bfloat16)
        x_q, x_s = rocm_fp8.quantize_activation(x, dtype="e4m3fn")
        layer = rocm_fp8.Fp8BlockLinear.from_checkpoint(w_q, w_s, backend="auto")
        layer.plan([m], input_dtype=torch.float8_e4m3fn)
        layer.plan([m], input_dtype=torch.bfloat16)
        a, b = torch.randn(4), torch.randn(4)
        op = rocm_fp8.w8a8_block_fp8_linear
        assert rocm_fp8.explain(n, k, m).backend == NOOP
        fns = {
            "torch_add": lambda: torch.add(a, b),
            "op_fp8_auto": lambda: op(x_q, w_q, w_s, input_scale=x_s),
            "op_fp8_explicit": lambda: op(x_q, w_q, w_s, input_scale=x_s, backend=NOOP),
            "op_bf16_auto": lambda: op(x, w_q, w_s),
            "module_fp8": lambda: layer(x_q, x_s),
            "module_bf16": lambda: layer(x),
        }
        us = _time(fns, calls, runs)
    finally:
        rocm_fp8.unregister_backend(NOOP)
    add = us["torch_add"]
    return {
        "what": "host us per call, no-op backend, min of runs x calls (interleaved)",
        "shape": {"m": m, "n": n, "k": k}, "calls": calls, "runs": runs,
        "us": {name: round(v, 3) for name, v in us.items()},
        "ratio_to_torch_add": {name: round(v / add, 2) for name, v in us.items() if name != "torch_add"},
        "module_over_op": {"fp8": round(us["module_fp8"] / us["op_fp8_auto"], 2),
                           "bf16": round(us["module_bf16"] / us["op_bf16_auto"], 2)},
        "host": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                 "processor": platform.processor() or platform.machine()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="write overhead-cpu-dispatcher.json here (bench/overhead.py writes overhead-cpu.{json,md})")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    res = measure(args.calls, args.runs)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "overhead-cpu-dispatcher.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
