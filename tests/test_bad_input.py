"""Bad input gets a ValueError/TypeError naming the argument, the expectation and what came."""

from __future__ import annotations

import pytest
import torch

import rocm_fp8
from rocm_fp8 import quantize_activation, quantize_weight, w8a8_block_fp8_linear


@pytest.fixture
def layer(rng):
    wq, ws = quantize_weight(torch.randn(256, 256, generator=rng), dtype=torch.float8_e4m3fn)
    return wq, ws


def test_weight_not_fp8(layer):
    _, ws = layer
    with pytest.raises(TypeError, match=r"weight: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got torch.bfloat16"):
        w8a8_block_fp8_linear(torch.randn(2, 256), torch.randn(256, 256, dtype=torch.bfloat16), ws)


def test_mismatched_k(layer):
    wq, ws = layer
    with pytest.raises(ValueError, match=r"input: expected last dimension K=256 .* got shape \(2, 384\)"):
        w8a8_block_fp8_linear(torch.randn(2, 384), wq, ws)


def test_partial_k_group_needs_ceil_k_scales():
    # K = 200 is allowed (a partial last group), but the scale then has ceil(200/128) = 2 columns
    wq = torch.randn(128, 200).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \(1, 2\) = \[ceil\(N/128\), ceil\(K/128\)\] .* got \(1, 1\)"):
        w8a8_block_fp8_linear(torch.randn(2, 200), wq, torch.ones(1, 1))
    xq, xs = quantize_activation(torch.randn(2, 200), dtype=torch.float8_e4m3fn)
    assert xs.shape == (2, 2)
    with pytest.raises(ValueError, match=r"input_scale: expected shape \(2, 2\) = \[..., ceil\(K/128\)\], got \(2, 1\)"):
        w8a8_block_fp8_linear(xq, wq, torch.ones(1, 2), input_scale=xs[:, :1])


def test_empty_weight():
    with pytest.raises(ValueError, match=r"weight: expected a non-empty \[N, K\] tensor, got shape \(0, 128\)"):
        w8a8_block_fp8_linear(torch.randn(2, 128), torch.empty(0, 128, dtype=torch.float8_e4m3fn), torch.ones(0, 1))


def test_scale_of_wrong_shape(layer):
    wq, _ = layer
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \(2, 2\) .* got \(2, 1\)"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, torch.ones(2, 1))


def test_scale_of_wrong_dtype(layer):
    wq, ws = layer
    with pytest.raises(TypeError, match=r"weight_scale: expected torch.float32, got torch.float16"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws.half())


def test_fp8_input_without_scale(layer):
    wq, ws = layer
    xq, _ = quantize_activation(torch.randn(2, 256), dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"input_scale: required when input is already FP8, got None"):
        w8a8_block_fp8_linear(xq, wq, ws)


def test_fp8_input_with_wrong_scale_shape(layer):
    wq, ws = layer
    xq, xs = quantize_activation(torch.randn(2, 256), dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"input_scale: expected shape \(2, 2\) .* got \(2, 1\)"):
        w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs[:, :1])


def test_fp8_flavour_mismatch(layer):
    wq, ws = layer
    xq, xs = quantize_activation(torch.randn(2, 256), dtype=torch.float8_e4m3fnuz)
    with pytest.raises(TypeError, match=r"input: FP8 input must match weight's FP8 flavour"):
        w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs)


def test_integer_input(layer):
    wq, ws = layer
    with pytest.raises(TypeError, match=r"input: expected bfloat16/float16/float32, or FP8 with input_scale, got torch.int32"):
        w8a8_block_fp8_linear(torch.ones(2, 256, dtype=torch.int32), wq, ws)


def test_bias_of_wrong_shape(layer):
    wq, ws = layer
    with pytest.raises(ValueError, match=r"bias: expected shape \(256,\) = \[N\], got \(128,\)"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws, bias=torch.randn(128))


def test_tensors_on_different_devices(layer):
    wq, ws = layer
    with pytest.raises(ValueError, match=r"weight_scale: expected the input's device cpu, got meta"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws.to("meta"))


def test_unknown_backend_name(layer):
    wq, ws = layer
    with pytest.raises(ValueError, match=r"backend: expected one of .*reference.* or 'auto', got 'cutlass'"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws, backend="cutlass")


def test_unknown_backend_in_environment(layer, monkeypatch):
    wq, ws = layer
    monkeypatch.setenv("ROCM_FP8_BACKEND", "fastest")
    rocm_fp8.clear_caches()
    with pytest.raises(ValueError, match=r"ROCM_FP8_BACKEND: expected one of .* got 'fastest'"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws)


def test_bad_block_size(layer):
    wq, ws = layer
    with pytest.raises(ValueError, match=r"block_size: expected a pair of positive ints"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws, block_size=(128,))


def test_not_a_tensor(layer):
    wq, ws = layer
    with pytest.raises(TypeError, match=r"input: expected a torch.Tensor, got list"):
        w8a8_block_fp8_linear([[1.0] * 256], wq, ws)


def test_bad_out_dtype(layer):
    wq, ws = layer
    with pytest.raises(TypeError, match=r"out_dtype: expected torch.bfloat16, torch.float16 or torch.float32, got torch.int8"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws, out_dtype=torch.int8)


def test_explicit_backend_that_cannot_run_raises_with_its_reason(layer):
    wq, ws = layer
    with pytest.raises(rocm_fp8.BackendUnavailableError, match=r"aiter-ck: needs an AMD Instinct GPU"):
        w8a8_block_fp8_linear(torch.randn(2, 256), wq, ws, backend="aiter-ck")


def test_quantize_errors_name_their_argument():
    with pytest.raises(ValueError, match=r"x: expected a non-empty last dimension \(K\), got shape \(2, 0\)"):
        quantize_activation(torch.randn(2, 0), dtype="e4m3fn")
    with pytest.raises(ValueError, match=r"dtype: expected 'e4m3fn' or 'e4m3fnuz', got 'e5m2'"):
        quantize_weight(torch.randn(128, 128), dtype="e5m2")
    with pytest.raises(TypeError, match=r"w: expected a float32/float16/bfloat16 tensor, got torch.int64"):
        quantize_weight(torch.ones(128, 128, dtype=torch.long), dtype="e4m3fn")
