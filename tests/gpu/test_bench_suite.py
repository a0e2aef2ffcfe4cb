"""The test matrix's `bench` suite: the dispatcher's choice against bf16 on the preset shapes.

Speed is *recorded* (JUnit properties: TFLOPS of the chosen backend, of every other backend that
can run the shape, and of bf16 torch.matmul), not asserted: speed targets are checked by the
committed benchmarks in bench/. What is asserted is that every timed output is correct.
"""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close, reference_linear

import rocm_fp8
from rocm_fp8.backends import all_backends, safe_call
from rocm_fp8.backends.base import Problem
from rocm_fp8.toolchain import detect
from rocm_fp8.tune.timing import time_calls

pytestmark = [pytest.mark.gpu, pytest.mark.bench]

SHAPES = [(2048, 3072), (3072, 1536), (2112, 7168), (7168, 2048)]  # MiniMax-M2.5 TP4, DeepSeek-V3 TP1
MS = [16, 1024, 8192]


def _time_ms(fn) -> float:
    """GPU time per call in milliseconds, with the harness of every published number (CUDA-graph
    replays, median; see rocm_fp8.tune.timing)."""
    return time_calls([fn])["us"] / 1000.0


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", MS)
def test_bench_dispatch_choice_against_bf16(n, k, m, record_property):
    tc = detect()
    fp8 = rocm_fp8.quant.FP8_DTYPES[tc.fp8_flavour]
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(n * 31 + k * 7 + m)
    w = torch.randn(n, k, device=dev, generator=g) * 0.05
    x = torch.randn(m, k, device=dev, generator=g)
    w_q, w_s = rocm_fp8.quantize_weight(w, dtype=fp8)
    x_q, x_s = rocm_fp8.quantize_activation(x, dtype=fp8)
    ref = reference_linear(x_q, x_s, w_q, w_s)
    flops = 2.0 * m * n * k

    chosen = rocm_fp8.explain(n, k, m, toolchain=tc, fp8_dtype=tc.fp8_flavour).backend
    record_property("chosen", chosen)
    problem = Problem(m, n, k, tc.fp8_flavour, "bfloat16", 128, 128, "cuda")
    for b in all_backends():
        if b.name == "reference":
            continue
        ok, _ = safe_call(b.available, tc)
        ok = ok and safe_call(b.supports, problem, tc)[0]
        if not ok:
            continue
        out = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)

        def run(b=b):
            out.copy_(rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=b.name))

        ms = _time_ms(run)
        assert_close(out, ref, rel_tol=2e-2, cos_min=0.999)
        record_property(f"tflops_{b.name}", round(flops / ms / 1e9, 1))
    wb, xb = w.bfloat16(), x.bfloat16()
    ms = _time_ms(lambda: torch.matmul(xb, wb.t()))
    record_property("tflops_bf16", round(flops / ms / 1e9, 1))
