"""Quantization helpers: per-group activations, per-block weights, their inverses, the fnuz
conversion for gfx942 (docs/reference.md section 4), and FP8 dtype names."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close, compare

import rocm_fp8
from rocm_fp8 import (
    dequantize_activation,
    dequantize_weight,
    e4m3fn_to_e4m3fnuz,
    quantize_activation,
    quantize_weight,
)
from rocm_fp8.quant import FP8_DTYPES, QUANT_MAX, fp8_name, resolve_fp8_dtype
from rocm_fp8.toolchain import Toolchain, set_current

FLAVOURS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]


@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("shape", [(1, 128), (7, 384), (2, 3, 256)])
def test_activation_round_trip_and_scales(fp8, shape, rng):
    x = torch.randn(*shape, generator=rng) * 3
    x_q, x_s = quantize_activation(x, 128, dtype=fp8)
    assert x_q.dtype == fp8 and x_q.shape == x.shape
    assert x_s.dtype == torch.float32 and x_s.shape == (*shape[:-1], shape[-1] // 128)
    groups = x.reshape(*shape[:-1], -1, 128)
    torch.testing.assert_close(x_s, groups.abs().amax(-1) / QUANT_MAX[fp8])
    # the largest magnitude of each group lands on the largest value we quantize to
    peak = x_q.float().reshape(*shape[:-1], -1, 128).abs().amax(-1)
    torch.testing.assert_close(peak, torch.full_like(peak, QUANT_MAX[fp8]))
    assert_close(dequantize_activation(x_q, x_s, 128), x, rel_tol=0.05, cos_min=0.998)


def test_activation_groups_are_independent(rng):
    x = torch.randn(4, 256, generator=rng)
    loud = x.clone()
    loud[:, 128:] *= 1000
    q1, s1 = quantize_activation(x, dtype="e4m3fn")
    q2, s2 = quantize_activation(loud, dtype="e4m3fn")
    assert torch.equal(q1[:, :128].view(torch.uint8), q2[:, :128].view(torch.uint8))
    torch.testing.assert_close(s1[:, 0], s2[:, 0])
    torch.testing.assert_close(s2[:, 1], s1[:, 1] * 1000, rtol=1e-5, atol=0)


def test_an_all_zero_group_quantizes_to_zero_without_nan(rng):
    x = torch.randn(2, 256, generator=rng)
    x[1, :128] = 0
    x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    back = dequantize_activation(x_q, x_s)
    assert torch.isfinite(back).all() and torch.equal(back[1, :128], torch.zeros(128))
    assert (x_s > 0).all()


@pytest.mark.parametrize("fp8", FLAVOURS)
@pytest.mark.parametrize("n, k", [(256, 384), (200, 256), (130, 128)])
def test_weight_round_trip_and_partial_row_blocks(fp8, n, k, rng):
    w = torch.randn(n, k, generator=rng) * 0.02
    w_q, w_s = quantize_weight(w, (128, 128), dtype=fp8)
    assert w_q.shape == (n, k) and w_q.dtype == fp8 and w_q.is_contiguous()
    assert w_s.shape == (-(-n // 128), k // 128) and w_s.dtype == torch.float32
    for i in range(w_s.shape[0]):
        for j in range(w_s.shape[1]):
            block = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            torch.testing.assert_close(w_s[i, j], block.abs().max() / QUANT_MAX[fp8])
    assert_close(dequantize_weight(w_q, w_s), w, rel_tol=0.05, cos_min=0.998)


def test_weight_with_another_block_size(rng):
    w = torch.randn(96, 192, generator=rng)
    w_q, w_s = quantize_weight(w, (32, 64), dtype="e4m3fn")
    assert w_s.shape == (3, 3)
    assert_close(dequantize_weight(w_q, w_s, (32, 64)), w, rel_tol=0.05, cos_min=0.998)


def test_quantizing_inference_mode_tensors(rng):
    with torch.inference_mode():
        w = torch.randn(128, 256, generator=rng)
        x = torch.randn(3, 256, generator=rng)
        w_q, w_s = quantize_weight(w, dtype="e4m3fn")
        x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    y = dequantize_activation(x_q, x_s) @ dequantize_weight(w_q, w_s).t()
    assert_close(y, x @ w.t(), rel_tol=0.06, cos_min=0.998)


def test_fnuz_conversion_keeps_every_value_and_clears_the_nan_pattern(rng):
    w = torch.randn(256, 256, generator=rng)
    w_q, w_s = quantize_weight(w, dtype="e4m3fn")
    w_q.view(torch.uint8)[0, :4] = 0x80  # -0 in e4m3fn, NaN in e4m3fnuz
    f_q, f_s = e4m3fn_to_e4m3fnuz(w_q, w_s)
    assert f_q.dtype == torch.float8_e4m3fnuz and f_q.shape == w_q.shape
    torch.testing.assert_close(f_s, w_s * 2)
    back = dequantize_weight(f_q, f_s)
    assert torch.isfinite(back).all() and torch.equal(back[0, :4], torch.zeros(4))
    torch.testing.assert_close(back, dequantize_weight(w_q, w_s), rtol=0, atol=0)
    x_scale = torch.rand(3, 2, generator=rng) + 0.5
    *_, in_s = e4m3fn_to_e4m3fnuz(w_q, w_s, x_scale)
    torch.testing.assert_close(in_s, x_scale * 2)
    rel, cos = compare(back, w)
    assert rel < 0.05 and cos > 0.998


def test_fnuz_conversion_refuses_other_dtypes():
    with pytest.raises(TypeError, match=r"w_q: expected a torch.float8_e4m3fn tensor, got torch.float8_e4m3fnuz"):
        e4m3fn_to_e4m3fnuz(torch.zeros(2, 2, dtype=torch.float8_e4m3fnuz), torch.ones(1, 1))
    with pytest.raises(TypeError, match=r"w_q: expected a torch.float8_e4m3fn tensor, got list"):
        e4m3fn_to_e4m3fnuz([1, 2], torch.ones(1, 1))


def test_fp8_dtype_names():
    for name, dtype in FP8_DTYPES.items():
        assert fp8_name(dtype) == name
        assert resolve_fp8_dtype(name) is dtype
        assert resolve_fp8_dtype(f"float8_{name}") is dtype
        assert resolve_fp8_dtype(dtype) is dtype
    with pytest.raises(TypeError, match=r"expected an FP8 dtype .*got torch.bfloat16"):
        fp8_name(torch.bfloat16)
    with pytest.raises(ValueError, match=r"convert_to: expected 'e4m3fn' or 'e4m3fnuz', got 'e5m2'"):
        resolve_fp8_dtype("e5m2", "convert_to")
    with pytest.raises(TypeError, match=r"dtype: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got "
                                        r"torch.float8_e5m2"):
        resolve_fp8_dtype(torch.float8_e5m2)


@pytest.mark.parametrize("arch, expected", [("gfx942", torch.float8_e4m3fnuz), ("gfx950", torch.float8_e4m3fn),
                                            ("sm90", torch.float8_e4m3fn)])
def test_no_dtype_means_the_flavour_of_the_device(arch, expected, rng):
    set_current(Toolchain.hypothetical(arch))
    try:
        assert resolve_fp8_dtype(None) is expected
        x_q, _ = rocm_fp8.quantize_activation(torch.randn(1, 128, generator=rng))
        assert x_q.dtype is expected
    finally:
        set_current(None)
