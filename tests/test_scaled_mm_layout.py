"""torch-scaled-mm's operand layouts and padding, on the CPU.

cuBLASLt does not run here, so the product is computed by an emulation of what blockwise
1x128 x 128x128 scaling means, which also asserts the layout invariants the backend promises
cuBLASLt: M a multiple of 4, activation scales M-contiguous, K/128 a multiple of 4 (the H100
probe measured wrong results without that). The real kernel is checked on the GPU
(tests/gpu/test_gpu_kernels.py and the probe).
"""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close, reference_linear

from rocm_fp8 import quantize_activation, quantize_weight
from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend, padded_k


def emulated_blockwise(x_q, b, scale_a, scale_b, out_dtype):
    m, k = x_q.shape
    kb, n = b.shape
    assert k == kb, "A and B disagree on K"
    assert n % 16 == 0, f"N={n} is not a multiple of 16"
    assert m % 4 == 0, f"M={m} is not a multiple of 4"
    assert (k // 128) % 4 == 0, f"K/128={k // 128} is not a multiple of 4"
    assert scale_a.shape == (m, k // 128) and scale_a.stride() == (1, m), "activation scales not M-contiguous"
    assert scale_b.shape == (k // 128, -(-n // 128)), f"weight scales {tuple(scale_b.shape)}"
    x = x_q.double() * scale_a.double().repeat_interleave(128, 1)
    sb = scale_b.double().t().repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)
    return (x @ (b.t().double() * sb).t()).to(out_dtype)


# (200, 392): N not a multiple of 16 and a partial last K group (392 = 3 x 128 + 8)
@pytest.mark.parametrize("n,k", [(256, 384), (384, 256), (128, 2304), (256, 512), (200, 392)])
@pytest.mark.parametrize("m", [1, 5, 8, 33])
def test_padding_keeps_the_product_exact(n, k, m, rng):
    backend = TorchScaledMMBackend()
    backend._api = ("private", emulated_blockwise)
    w_q, w_s = quantize_weight(torch.randn(n, k, generator=rng), dtype="e4m3fn")
    x_q, x_s = quantize_activation(torch.randn(m, k, generator=rng), dtype="e4m3fn")
    prepared = backend.prepare_weight(w_q, w_s)
    assert prepared.extra["b"].shape == (padded_k(k), -(-n // 16) * 16)
    ref = reference_linear(x_q, x_s, w_q, w_s)
    # run() and the bound call the dispatcher uses both drop the padding (N = 200 -> 208 inside)
    for y in (backend.run(x_q, x_s, prepared, torch.float32), backend.bind(prepared, torch.float32, m)(x_q, x_s)):
        assert y.shape == (m, n)
        assert_close(y, ref, rel_tol=1e-6)


def test_aligned_k_is_not_copied(rng):
    w_q, w_s = quantize_weight(torch.randn(256, 1024, generator=rng), dtype="e4m3fn")
    prepared = TorchScaledMMBackend().prepare_weight(w_q, w_s)
    assert prepared.weight.data_ptr() == w_q.data_ptr()
    assert padded_k(1024) == 1024 and padded_k(384) == 512 and padded_k(2304) == 2560


def test_inference_tensors_prepared_inside_and_run_outside_inference_mode(rng):
    backend = TorchScaledMMBackend()
    backend._api = ("private", emulated_blockwise)
    with torch.inference_mode():
        w_q, w_s = quantize_weight(torch.randn(200, 392, generator=rng), dtype="e4m3fn")
        x_q, x_s = quantize_activation(torch.randn(5, 392, generator=rng), dtype="e4m3fn")
        prepared = backend.prepare_weight(w_q, w_s)
    y = backend.run(x_q, x_s.t().contiguous().t(), prepared, torch.float32)   # outside, column-major scales
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-6)


def test_fp8_input_pad_is_one_op_per_operand_without_the_pad_kernel(rng):
    """Where the Triton pad kernel does not run (here: CPU tensors, no interpreter), M = 1 against a
    weight with padded K: each operand padded by one torch op (no zero/one fills followed by slice
    copies), zeros in x and ones in the scales."""
    from torch.profiler import ProfilerActivity, profile

    backend = TorchScaledMMBackend()
    backend._api = ("private", emulated_blockwise)
    w_q, w_s = quantize_weight(torch.randn(200, 392, generator=rng), dtype="e4m3fn")
    x_q, x_s = quantize_activation(torch.randn(1, 392, generator=rng), dtype="e4m3fn")
    prepared = backend.prepare_weight(w_q, w_s)
    run = backend.bind(prepared, torch.bfloat16, 1)
    run(x_q, x_s)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y = run(x_q, x_s)
    ops = [e.name for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in ops if e in ("aten::pad", "aten::constant_pad_nd", "aten::zeros", "aten::ones", "aten::copy_")]
    assert ops.count("aten::constant_pad_nd") == 2 and "aten::zeros" not in ops and "aten::ones" not in ops, top
    assert_close(y.float(), reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-2)


def test_bf16_input_suite_under_interpreter():
    """Runs the fused-quant tests below in a child pytest with TRITON_INTERPRET=1 (as test_quant_kernel.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("already running under the interpreter")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "test_bf16_input_quantizes or test_fp8_input_padded_by_one_launch"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "\n24 passed" in proc.stdout, f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("n,k", [(256, 384), (200, 392), (128, 1024)])
@pytest.mark.parametrize("m", [1, 3, 5, 8])
def test_bf16_input_quantizes_into_the_padded_operands(n, k, m, rng):
    """The fused path: one quant launch writes x_q [Mp, Kp] and M-contiguous scales (the emulation
    asserts the layout), then the GEMM; equal to the unfused quantize_input + bound call."""
    pytest.importorskip("triton")
    import os

    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("runs in test_bf16_input_suite_under_interpreter's child process")
    backend = TorchScaledMMBackend()
    backend._api = ("private", emulated_blockwise)
    w_q, w_s = quantize_weight(torch.randn(n, k, generator=rng), dtype="e4m3fn")
    x = torch.randn(m, k, generator=rng).to(torch.bfloat16)
    prepared = backend.prepare_weight(w_q, w_s)
    fused = backend.bind_float_input(prepared, torch.float32, max(1, 1 << (m - 1).bit_length()),
                                     torch.float8_e4m3fn, 128)
    assert fused is not None
    y = fused(x)
    x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    assert y.shape == (m, n)
    assert torch.equal(y, backend.bind(prepared, torch.float32, m)(x_q, x_s))
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-6)


@pytest.mark.parametrize("n,k", [(256, 384), (200, 392), (128, 1024)])
@pytest.mark.parametrize("m", [1, 3, 5, 8])
def test_fp8_input_padded_by_one_launch(n, k, m, rng, monkeypatch):
    """FP8 input with M or K to pad goes through the Triton pad kernel (one launch for both operands);
    the emulation asserts the layout; equal to torch's padding path and to the reference."""
    pytest.importorskip("triton")
    import os

    from rocm_fp8.backends.torch_scaled_mm import _pad_operands
    from rocm_fp8.kernels import quant_fp8

    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("runs in test_bf16_input_suite_under_interpreter's child process")
    backend = TorchScaledMMBackend()
    backend._api = ("private", emulated_blockwise)
    w_q, w_s = quantize_weight(torch.randn(n, k, generator=rng), dtype="e4m3fn")
    x_q, x_s = quantize_activation(torch.randn(m, k, generator=rng), dtype="e4m3fn")
    prepared = backend.prepare_weight(w_q, w_s)
    padded = []
    real_pad = quant_fp8.pad_fp8
    monkeypatch.setattr(quant_fp8, "pad_fp8", lambda *a: padded.append(a[2:]) or real_pad(*a))
    y = backend.bind(prepared, torch.float32, max(1, 1 << (m - 1).bit_length()))(x_q, x_s)
    kb = prepared.extra["b"].shape[0]
    assert len(padded) == (1 if m % 4 or kb != k else 0)
    if padded:
        mp = max(4, -(-m // 4) * 4)
        xp, sp = _pad_operands(x_q, x_s, mp, kb)
        want = emulated_blockwise(xp, prepared.extra["b"], sp, prepared.extra["scale_b"], torch.float32)[:m, :n]
        assert torch.equal(y, want)
    assert y.shape == (m, n)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-6)
