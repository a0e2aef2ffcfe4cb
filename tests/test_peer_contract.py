"""The op held to the contract vLLM and sglang hold their block-FP8 kernels to (see peer_contract.py).

On the CPU: the ``reference`` backend (what auto picks here) over a subset of the peers' grid that
keeps every edge of it (N not a multiple of 128 or 16, a partial last K group as K = 3884, every
output dtype, both FP8 flavours), and our Triton kernel under ``TRITON_INTERPRET=1`` on a few small
shapes (re-run in a child process, since Triton reads the variable when it is imported). The GPU
backends run over the full grids in tests/gpu/test_peer_contract.py. Everything is made under
``torch.inference_mode()``, as vLLM's tests and model runner make it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peer_contract import (
    CRITERION,
    expected,
    interpreting,
    make_case,
    reference_per_tile,
    rel_mean_error,
)

import rocm_fp8
from rocm_fp8 import dispatch, w8a8_block_fp8_linear

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
INTERPRETED = interpreting()

# the grids' edges at CPU-friendly sizes: N = 576 (not a multiple of 128), 7748 (not a multiple of
# 16, sglang's), K = 3884 (a partial last group, both grids), 256 (the smallest)
CPU_M = (1, 7, 83)
CPU_NK = ((128, 256), (576, 3884), (7748, 256), (512, 640))


def _computes(n, k, m, out_dtype, backend="auto", weight=None) -> tuple[str, torch.dtype]:
    d = rocm_fp8.explain(n, k, m, out_dtype=NAMES[out_dtype], backend=backend, fp8_dtype=None, weight=weight)
    return d.backend, dispatch._NAME_DTYPES[dispatch.compute_dtype(d)]


@pytest.mark.skipif(INTERPRETED, reason="the interpreter child runs only the triton subset")
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("n,k", CPU_NK, ids=[f"N{n}-K{k}" for n, k in CPU_NK])
@pytest.mark.parametrize("m", CPU_M)
def test_reference_meets_the_peers_criterion(m, n, k, out_dtype):
    a, b, a_s, b_s = make_case(m, n, k, FN, "cpu", seed=m * 31 + n + k)
    with torch.inference_mode():
        y = w8a8_block_fp8_linear(a, b, b_s, input_scale=a_s, out_dtype=out_dtype)
    assert y.dtype == out_dtype and y.shape == (m, n)
    backend, computes = _computes(n, k, m, out_dtype, weight=b)
    assert backend == "reference" and computes == out_dtype
    err = rel_mean_error(y, expected(reference_per_tile(a, b, a_s, b_s), out_dtype, computes, truncating=False))
    assert err < CRITERION, f"mean relative error {err:.2e} >= {CRITERION:.0e}"


@pytest.mark.skipif(INTERPRETED, reason="the interpreter child runs only the triton subset")
@pytest.mark.parametrize("mcontig", [False, True], ids=["row-scales", "mcontig-scales"])
def test_fnuz_and_column_major_scales_used_outside_inference_mode(mcontig):
    # made in inference mode, used outside it (a server warming up, then a plain eager call)
    m, n, k = 7, 576, 3884
    a, b, a_s, b_s = make_case(m, n, k, FNUZ, "cpu", seed=3, mcontig_scale=mcontig)
    assert a.is_inference() and b.is_inference()
    y = w8a8_block_fp8_linear(a, b, b_s, input_scale=a_s)
    err = rel_mean_error(y, reference_per_tile(a, b, a_s, b_s).to(torch.bfloat16))
    assert err < CRITERION


# -- our Triton kernel under the interpreter: a few small shapes with the grids' edges -------------
TRITON_CASES = [
    # m, n, k, out dtype, M-contiguous scales
    (7, 200, 300, torch.float32, False),    # K = 2 x 128 + 44 (not even a multiple of 16), N % 16 != 0
    (3, 136, 208, torch.bfloat16, True),    # partial K group, column-major activation scales
    (1, 128, 256, torch.float16, False),    # decode, aligned
]


@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_triton_subset_under_interpreter():
    """Run the interpreted subset in a child process that starts with TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "interpreted"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"interpreted contract tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert f"{len(TRITON_CASES)} passed" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.skipif(not INTERPRETED, reason="runs in test_triton_subset_under_interpreter's child process")
@pytest.mark.parametrize("m,n,k,out_dtype,mcontig", TRITON_CASES,
                         ids=[f"interpreted-M{c[0]}-N{c[1]}-K{c[2]}-{NAMES[c[3]]}" for c in TRITON_CASES])
def test_triton_interpreted(m, n, k, out_dtype, mcontig):
    a, b, a_s, b_s = make_case(m, n, k, FN, "cpu", seed=k + n, mcontig_scale=mcontig)
    with torch.inference_mode():
        y = w8a8_block_fp8_linear(a, b, b_s, input_scale=a_s, out_dtype=out_dtype, backend="triton")
    backend, computes = _computes(n, k, m, out_dtype, backend="triton")
    assert backend == "triton" and computes == out_dtype  # our kernel writes all three dtypes
    # The interpreter rounds float32 -> bfloat16 toward zero, GPUs to nearest even: judge a bf16
    # result against the reference truncated the same way.
    ref = expected(reference_per_tile(a, b, a_s, b_s), out_dtype, computes, truncating=True)
    err = rel_mean_error(y, ref)
    assert err < CRITERION, f"mean relative error {err:.2e} >= {CRITERION:.0e}"
