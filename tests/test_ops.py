"""w8a8_block_fp8_linear on the CPU (reference backend) against a float64 reference."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close, reference_linear

import rocm_fp8
from rocm_fp8 import quantize_activation, quantize_weight, w8a8_block_fp8_linear

FP8 = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]


def _weights(n, k, fp8, rng, block=(128, 128)):
    w = torch.randn(n, k, generator=rng) * 0.05
    return quantize_weight(w, block, dtype=fp8)


def _poisoned_out_check(y):
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("fp8", FP8, ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("m,n,k", [(1, 256, 128), (7, 384, 256), (33, 2112, 256), (128, 128, 512), (250, 640, 384)])
def test_fp8_input_matches_float64_reference(m, n, k, fp8, rng):
    wq, ws = _weights(n, k, fp8, rng)
    x = torch.randn(m, k, generator=rng) * 3
    xq, xs = quantize_activation(x, 128, dtype=fp8)
    y = w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs)
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    # the only error left is the bf16 rounding of the output
    assert_close(y, reference_linear(xq, xs, wq, ws), rel_tol=8e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_float_input_is_quantized_on_the_fly_and_keeps_its_dtype(dtype, rng):
    m, n, k = 19, 2112, 384
    wq, ws = _weights(n, k, torch.float8_e4m3fn, rng)
    x = (torch.randn(m, k, generator=rng) * 2).to(dtype)
    y = w8a8_block_fp8_linear(x, wq, ws, backend="reference")
    assert y.dtype == dtype and y.shape == (m, n)
    xq, xs = quantize_activation(x, 128, dtype=torch.float8_e4m3fn)
    assert_close(y, reference_linear(xq, xs, wq, ws), rel_tol=8e-3 if dtype != torch.float32 else 1e-5)
    # and against the unquantized product: FP8 quantization error only (a few percent)
    w = rocm_fp8.dequantize_weight(wq, ws)
    assert_close(y, x.double() @ w.double().t(), rel_tol=8e-2, cos_min=0.995)


def test_three_dimensional_input_with_bias_and_out_dtype(rng):
    b, s, n, k = 2, 5, 640, 256
    wq, ws = _weights(n, k, torch.float8_e4m3fn, rng)
    x = torch.randn(b, s, k, generator=rng, dtype=torch.bfloat16)
    bias = torch.randn(n, generator=rng)
    y = w8a8_block_fp8_linear(x, wq, ws, bias=bias, out_dtype=torch.float32)
    assert y.shape == (b, s, n) and y.dtype == torch.float32
    xq, xs = quantize_activation(x.reshape(-1, k), 128, dtype=torch.float8_e4m3fn)
    ref = reference_linear(xq, xs, wq, ws, bias=bias).reshape(b, s, n)
    assert_close(y, ref, rel_tol=1e-5)


def test_three_dimensional_fp8_input_with_three_dimensional_scale(rng):
    n, k = 256, 256
    wq, ws = _weights(n, k, torch.float8_e4m3fn, rng)
    x = torch.randn(3, 4, k, generator=rng)
    xq, xs = quantize_activation(x, 128, dtype=torch.float8_e4m3fn)
    assert xs.shape == (3, 4, 2)
    y = w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs, out_dtype=torch.float32)
    ref = reference_linear(xq.reshape(12, k), xs.reshape(12, 2), wq, ws).reshape(3, 4, n)
    assert_close(y, ref, rel_tol=1e-5)


def test_m_contiguous_input_scale_is_accepted(rng):
    m, n, k = 9, 256, 384
    wq, ws = _weights(n, k, torch.float8_e4m3fn, rng)
    xq, xs = quantize_activation(torch.randn(m, k, generator=rng), 128, dtype=torch.float8_e4m3fn)
    xs_mc = xs.t().contiguous().t()
    assert xs_mc.stride() == (1, m)
    y = w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs_mc, out_dtype=torch.float32)
    assert_close(y, reference_linear(xq, xs, wq, ws), rel_tol=1e-5)


def test_empty_batch_gives_empty_output(rng):
    wq, ws = _weights(256, 128, torch.float8_e4m3fn, rng)
    y = w8a8_block_fp8_linear(torch.randn(0, 128), wq, ws)
    assert y.shape == (0, 256)


def test_non_128_block_size_runs_on_reference(rng):
    m, n, k = 5, 96, 128
    wq, ws = quantize_weight(torch.randn(n, k, generator=rng), (64, 64), dtype=torch.float8_e4m3fn)
    xq, xs = quantize_activation(torch.randn(m, k, generator=rng), 64, dtype=torch.float8_e4m3fn)
    y = w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs, block_size=(64, 64), out_dtype=torch.float32)
    assert_close(y, reference_linear(xq, xs, wq, ws, block=(64, 64)), rel_tol=1e-5)


def test_fnuz_conversion_preserves_values_and_kills_negative_zero(rng):
    w = torch.randn(256, 256, generator=rng)
    wq, ws = quantize_weight(w, dtype=torch.float8_e4m3fn)
    wq.view(torch.uint8)[0, :4] = 0x80  # -0 in e4m3fn, NaN in fnuz
    zq, zs = rocm_fp8.e4m3fn_to_e4m3fnuz(wq, ws)
    assert zq.dtype == torch.float8_e4m3fnuz
    assert not torch.isnan(zq.float()).any()
    torch.testing.assert_close(rocm_fp8.dequantize_weight(zq, zs), rocm_fp8.dequantize_weight(wq, ws))
    x = torch.randn(3, 256, generator=rng)
    y_fn = w8a8_block_fp8_linear(x, wq, ws, out_dtype=torch.float32)
    y_fnuz = w8a8_block_fp8_linear(x, zq, zs, out_dtype=torch.float32)
    assert_close(y_fnuz, y_fn, rel_tol=0.05, cos_min=0.998)  # activations quantize per flavour


def test_quantize_uses_the_right_max_per_flavour(rng):
    x = torch.randn(4, 256, generator=rng) * 1000
    for fp8, top in ((torch.float8_e4m3fn, 448.0), (torch.float8_e4m3fnuz, 224.0)):
        q, s = quantize_activation(x, dtype=fp8)
        assert q.float().abs().amax().item() == pytest.approx(top, rel=0.07)
        assert torch.isfinite(q.float()).all()


def test_torch_compile_fullgraph_traces_through_the_custom_op(rng):
    n, k = 256, 256
    wq, ws = _weights(n, k, torch.float8_e4m3fn, rng)
    bias = torch.randn(n, generator=rng)

    def f(x):
        return w8a8_block_fp8_linear(x, wq, ws, bias=bias) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, k, generator=rng)
    torch.testing.assert_close(compiled(x), f(x))
    # the op is a registered custom op with a fake implementation
    assert hasattr(torch.ops.rocm_fp8, "w8a8_block_fp8_linear")
    torch.library.opcheck(torch.ops.rocm_fp8.w8a8_block_fp8_linear.default,
                          (x, wq, ws, None, bias, 128, 128, torch.float32, "reference"),
                          test_utils=("test_faketensor", "test_aot_dispatch_dynamic"))
