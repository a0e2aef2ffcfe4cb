"""Fp8BlockLinear: construction, the per-layer plan, state dicts, compile."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close

import rocm_fp8
from rocm_fp8 import Fp8BlockLinear


def test_from_linear_matches_the_float_layer(rng):
    lin = torch.nn.Linear(384, 2112, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2112, 384, generator=rng) * 0.05)
        lin.bias.copy_(torch.randn(2112, generator=rng))
    layer = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    x = torch.randn(2, 7, 384, generator=rng)
    y = layer(x)
    assert y.shape == (2, 7, 2112) and y.dtype == torch.float32
    assert_close(y, lin(x).detach(), rel_tol=0.06, cos_min=0.998)
    # like nn.Linear, the output follows the input's dtype
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_plan_is_per_bucket_and_forward_uses_it(rng):
    lin = torch.nn.Linear(256, 256, bias=False)
    layer = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    plan = layer.plan([1, 3, 100, 5000], input_dtype=torch.float32)
    assert plan == {1: "reference", 4: "reference", 128: "reference", 8192: "reference"}
    before = dict(layer._plan)
    layer(torch.randn(3, 256, generator=rng))
    assert layer._plan == before  # a planned bucket: lookup only


def test_state_dict_round_trip_and_replan(rng):
    lin = torch.nn.Linear(256, 128)
    layer = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    layer.plan([8])
    other = Fp8BlockLinear(256, 128, fp8_dtype="e4m3fn", bias_dtype=torch.float32)
    other.load_state_dict(layer.state_dict())
    assert other._plan == {}
    x = torch.randn(8, 256, generator=rng)
    torch.testing.assert_close(other(x), layer(x))


def test_from_checkpoint_converts_to_fnuz_when_asked(rng):
    wq, ws = rocm_fp8.quantize_weight(torch.randn(256, 256, generator=rng), dtype="e4m3fn")
    layer = Fp8BlockLinear.from_checkpoint(wq, ws, convert_to="e4m3fnuz", out_dtype=torch.float32)
    assert layer.weight.dtype == torch.float8_e4m3fnuz
    torch.testing.assert_close(layer.weight_scale, ws * 2)
    x = torch.randn(4, 256, generator=rng)
    ref = Fp8BlockLinear.from_checkpoint(wq, ws, out_dtype=torch.float32)(x)
    assert_close(layer(x), ref, rel_tol=0.05, cos_min=0.998)


@pytest.mark.slow
def test_layer_compiles_fullgraph(rng):
    lin = torch.nn.Linear(256, 256)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, 256, generator=rng) * 0.05)
        lin.bias.copy_(torch.randn(256, generator=rng))
    layer = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 256, generator=rng)
    y = compiled(x)
    # against the reference backend on the same quantized operands, and against the float layer
    ref = rocm_fp8.w8a8_block_fp8_linear(x, layer.weight, layer.weight_scale, bias=layer.bias, backend="reference")
    assert y.shape == ref.shape == (5, 256) and y.dtype == ref.dtype == torch.float32
    assert_close(y, ref, rel_tol=1e-5, cos_min=0.99999)
    assert_close(y, lin(x).detach(), rel_tol=0.06, cos_min=0.998)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match=r"in_features: expected a positive int, got 0"):
        Fp8BlockLinear(0, 256)
    with pytest.raises(ValueError, match=r"block_size: expected a pair of positive ints"):
        Fp8BlockLinear(256, 256, block_size=(128,))
    with pytest.raises(TypeError, match=r"linear: expected a torch.nn.Linear, got Conv1d"):
        Fp8BlockLinear.from_linear(torch.nn.Conv1d(1, 1, 1))
    with pytest.raises(TypeError, match=r"weight: expected an FP8 tensor"):
        Fp8BlockLinear.from_checkpoint(torch.randn(128, 128), torch.ones(1, 1))


def test_hooks_still_run_when_the_call_skips_nn_module_bookkeeping(rng):
    layer = Fp8BlockLinear.from_linear(torch.nn.Linear(256, 128), fp8_dtype="e4m3fn")
    x = torch.randn(3, 256, generator=rng)
    plain = layer(x)
    seen = []
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(out.shape) or out * 2)
    torch.testing.assert_close(layer(x), plain * 2)
    handle.remove()
    pre = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, args: seen.append("global"))
    try:
        layer(x)
    finally:
        pre.remove()
    assert seen == [(3, 128), "global"]
    torch.testing.assert_close(layer(x), plain)


def test_a_compiled_layer_takes_the_compiled_call(rng):
    """``layer.compile()`` sets nn.Module's compiled call: the layer's own fast __call__ must defer to it."""
    layer = Fp8BlockLinear.from_linear(torch.nn.Linear(256, 128), fp8_dtype="e4m3fn")
    x = torch.randn(3, 256, generator=rng)
    plain = layer(x)
    compiled_graphs = []

    def recording_backend(gm, example_inputs):
        compiled_graphs.append(gm)
        return gm.forward

    layer.compile(backend=recording_backend, fullgraph=True)
    try:
        torch.testing.assert_close(layer(x), plain)
    finally:
        torch._dynamo.reset()
    assert compiled_graphs, "the compiled call was bypassed"


def test_a_replaced_weight_is_validated_and_replanned(rng):
    layer = Fp8BlockLinear.from_linear(torch.nn.Linear(256, 128), fp8_dtype="e4m3fn")
    x = torch.randn(2, 256, generator=rng)
    layer(x)
    assert layer._plan
    layer.weight = torch.zeros(128, 256, dtype=torch.float8_e4m3fn)   # assignment drops the plan
    assert layer._plan == {}
    torch.testing.assert_close(layer(x), layer.bias.detach().float().expand(2, 128))  # zero weight: y = bias
    layer.weight_scale = torch.ones(1, 1)
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \(1, 2\) = \[ceil\(N/128\), ceil\(K/128\)\]"):
        layer(x)


def test_a_layer_called_inside_compiled_code_traces_fullgraph_and_matches_the_reference(rng):
    layer = Fp8BlockLinear.from_linear(torch.nn.Linear(256, 256), fp8_dtype="e4m3fn")

    def f(x):
        return layer(x) * 2 + 1

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 256, generator=rng)
    ref = rocm_fp8.w8a8_block_fp8_linear(x, layer.weight, layer.weight_scale, bias=layer.bias, backend="reference")
    torch.testing.assert_close(compiled(x), ref * 2 + 1)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), ref * 2 + 1)
