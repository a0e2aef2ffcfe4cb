"""The execution path (rocm_fp8.dispatch): plans, bound calls, fallback per weight, inference tensors,
output dtypes, and the layouts the serving stacks send, each taken without a copy.

Backends here are registered through the public API and compute the real product (dequantize +
matmul in torch); they only record what they were given, or fail the way a kernel fails.
"""

from __future__ import annotations

import logging

import pytest
import torch
from numerics import assert_close, reference_linear

import rocm_fp8
from rocm_fp8 import Backend, Fp8BlockLinear, dispatch, quantize_activation, quantize_weight, w8a8_block_fp8_linear
from rocm_fp8.backends import OK, refuse
from rocm_fp8.quant import dequantize_activation, dequantize_weight

FN = torch.float8_e4m3fn


def _product(x_q, x_scale, w, w_scale, out_dtype):
    x = dequantize_activation(x_q, x_scale, 128)
    return (x @ dequantize_weight(w, w_scale).t()).to(out_dtype)


class Recording(Backend):
    """Correct; records the operands it was bound and called with."""

    name = "test-recording"
    priority = 99

    def __init__(self, copy_weight=False, out_dtypes=("bfloat16", "float16", "float32")):
        self.copy_weight = copy_weight
        self.out_dtypes = out_dtypes
        self.calls, self.prepared, self.bound = [], 0, []

    def supports(self, problem, toolchain):
        if problem.out_dtype not in self.out_dtypes:
            return refuse(f"{self.name}: writes {', '.join(self.out_dtypes)} only, got {problem.out_dtype}")
        return OK

    def prepare_weight(self, weight, weight_scale):
        self.prepared += 1
        p = super().prepare_weight(weight.clone() if self.copy_weight else weight, weight_scale)
        return p

    def bind(self, prepared, out_dtype, m_bucket):
        self.bound.append((out_dtype, m_bucket))
        return super().bind(prepared, out_dtype, m_bucket)

    def run(self, x_q, x_scale, prepared, out_dtype):
        self.calls.append((x_q, x_scale, prepared, out_dtype))
        return _product(x_q, x_scale, prepared.weight, prepared.weight_scale, out_dtype)


class FailsFor(Recording):
    """Fails like a kernel (a RuntimeError from inside run) for the weights in ``bad``."""

    name = "test-fails-for"
    priority = 98

    def __init__(self, bad=()):
        super().__init__()
        self.bad = list(bad)

    def run(self, x_q, x_scale, prepared, out_dtype):
        if any(prepared.weight is w for w in self.bad):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().run(x_q, x_scale, prepared, out_dtype)


@pytest.fixture
def registered():
    added = []

    def add(b):
        rocm_fp8.register_backend(b, replace=True)
        added.append(b.name)
        return b

    yield add
    for name in added:
        rocm_fp8.unregister_backend(name)


def _weights(n, k, rng, inference=False):
    w = torch.randn(n, k, generator=rng) * 0.05
    if inference:
        with torch.inference_mode():
            return quantize_weight(w, dtype="e4m3fn")
    return quantize_weight(w, dtype="e4m3fn")


# -- inference tensors ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_inference_tensors_work_in_and_out_of_inference_mode(backend, rng):
    w_q, w_s = _weights(256, 384, rng, inference=True)
    x = torch.randn(5, 384, generator=rng, dtype=torch.bfloat16)
    x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    ref = reference_linear(x_q, x_s, w_q, w_s)
    with torch.inference_mode():
        inside = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=backend, out_dtype=torch.float32)
    outside = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=backend, out_dtype=torch.float32)
    assert_close(inside, ref, rel_tol=1e-5)
    torch.testing.assert_close(outside, inside)
    with torch.inference_mode():  # float input, quantized on the fly inside inference mode
        assert_close(w8a8_block_fp8_linear(x, w_q, w_s, backend=backend), ref, rel_tol=8e-3)


def test_an_inference_weight_never_poisons_a_shape(registered, rng):
    """The defect this guards: reading an inference tensor's version counter raised inside dispatch,
    auto recorded every backend failed for the (N, K), and ordinary weights of that shape then failed."""
    rec = registered(Recording())
    inf_q, inf_s = _weights(256, 384, rng, inference=True)
    x_q, x_s = quantize_activation(torch.randn(3, 384, generator=rng), dtype="e4m3fn")
    with torch.inference_mode():
        for _ in range(3):
            w8a8_block_fp8_linear(x_q, inf_q, inf_s, input_scale=x_s)
    w8a8_block_fp8_linear(x_q, inf_q, inf_s, input_scale=x_s)  # and outside it
    assert len(rec.calls) == 4 and rec.prepared == 1
    d = rocm_fp8.explain(256, 384, 3, weight=inf_q)
    assert d.backend == rec.name and not any("fell back" in n for n in d.notes)
    # an ordinary weight of the same shape: same backend, nothing recorded as failed anywhere
    w_q, w_s = _weights(256, 384, rng)
    y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.float32)
    assert len(rec.calls) == 5
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-5)
    assert all(not p.failed for p in list(dispatch._all_plans))


# -- fallback --------------------------------------------------------------------------------------
def test_a_kernel_failure_falls_back_for_that_weight_only_logged_once_and_explained(registered, rng, caplog):
    bad_q, bad_s = _weights(256, 384, rng)
    good_q, good_s = _weights(256, 384, rng)
    other_q, other_s = _weights(256, 384, rng)
    fails = registered(FailsFor(bad=[bad_q, other_q]))
    x_q, x_s = quantize_activation(torch.randn(4, 384, generator=rng), dtype="e4m3fn")
    with caplog.at_level(logging.WARNING, logger="rocm_fp8"):
        y = w8a8_block_fp8_linear(x_q, bad_q, bad_s, input_scale=x_s, out_dtype=torch.float32)
        w8a8_block_fp8_linear(x_q, bad_q, bad_s, input_scale=x_s)          # already fallen back: no retry
        w8a8_block_fp8_linear(x_q, other_q, other_s, input_scale=x_s)      # another weight, same failure
    assert_close(y, reference_linear(x_q, x_s, bad_q, bad_s), rel_tol=1e-5)
    warnings = [r for r in caplog.records if "test-fails-for failed" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "illegal memory access" in warnings[0].getMessage()
    # the failure is this weight's: a good weight of the same shape still runs on the backend
    before = len(fails.calls)
    w8a8_block_fp8_linear(x_q, good_q, good_s, input_scale=x_s)
    assert len(fails.calls) == before + 1
    assert rocm_fp8.explain(256, 384, 4, weight=good_q).backend == fails.name
    # and explain tells the fallback for the failed weight
    d = rocm_fp8.explain(256, 384, 4, weight=bad_q)
    assert d.backend == "reference"
    c = {c.backend: c for c in d.considered}[fails.name]
    assert not c.ok and "failed at run time for this weight" in c.reason and "illegal memory access" in c.reason
    assert any(n.startswith("fell back from test-fails-for") for n in d.notes)
    # explicit requests never fall back
    with pytest.raises(rocm_fp8.BackendFailedError, match=r"test-fails-for failed for M=4 N=256 K=384 .*illegal"):
        w8a8_block_fp8_linear(x_q, bad_q, bad_s, input_scale=x_s, backend=fails.name)


def test_bad_input_marks_nothing_failed(registered, rng):
    rec = registered(Recording())
    w_q, w_s = _weights(256, 384, rng)
    x_q, x_s = quantize_activation(torch.randn(4, 384, generator=rng), dtype="e4m3fn")
    w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)
    with pytest.raises(ValueError, match=r"input_scale: expected shape \(4, 3\)"):
        w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s[:, :2])
    with pytest.raises(TypeError, match=r"out_dtype: expected"):
        w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.int32)
    w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)
    assert len(rec.calls) == 2 and not dispatch._plans[id(w_q)].failed


def test_a_backend_failing_while_preparing_falls_back(registered, rng):
    class BadPrepare(Recording):
        name = "test-bad-prepare"

        def prepare_weight(self, weight, weight_scale):
            raise RuntimeError("hipErrorOutOfMemory")

    registered(BadPrepare())
    w_q, w_s = _weights(256, 256, rng)
    x_q, x_s = quantize_activation(torch.randn(2, 256, generator=rng), dtype="e4m3fn")
    y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.float32)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-5)
    assert "test-bad-prepare" in rocm_fp8.explain(256, 256, 2, weight=w_q).notes[-1]


# -- output dtypes -----------------------------------------------------------------------------------
def test_a_dtype_the_backend_cannot_write_is_computed_in_bf16_and_cast_once(registered, rng):
    bf16_only = registered(Recording(out_dtypes=("bfloat16",)))
    w_q, w_s = _weights(256, 384, rng)
    x_q, x_s = quantize_activation(torch.randn(3, 384, generator=rng), dtype="e4m3fn")
    y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.float32, backend=bf16_only.name)
    assert y.dtype == torch.float32
    assert bf16_only.bound == [(torch.bfloat16, 4)]    # the kernel was asked for bf16
    # exactly one rounding, to bf16, of what the backend computes in fp32 (compared with the backend's own
    # fp32 product: reference_linear sums in another order, which can move a value across a bf16 boundary)
    torch.testing.assert_close(y, _product(x_q, x_s, w_q, w_s, torch.float32).to(torch.bfloat16).float(),
                               rtol=0, atol=0)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-2)
    d = rocm_fp8.explain(256, 384, 3, out_dtype="float32", backend=bf16_only.name)
    assert f"{bf16_only.name} computes bfloat16, cast once to float32" in d.notes
    # auto prefers a backend that writes the dtype itself (here the reference)
    d = rocm_fp8.explain(256, 384, 3, out_dtype="float32")
    assert d.backend == "reference" and "reference writes float32" in d.notes


def test_explain_says_which_gpu_backends_write_and_which_cast():
    sm90 = rocm_fp8.Toolchain(arch="sm90", torch_cuda="13.0", torch_version="2.11.0", triton_version="3.6.0")
    for backend, out, note in (("triton", "float32", "triton writes float32"),
                               ("triton", "float16", "triton writes float16"),
                               ("torch-scaled-mm", "float32", "torch-scaled-mm computes bfloat16, cast once to float32"),
                               ("torch-scaled-mm", "float16", "torch-scaled-mm computes bfloat16, cast once to float16"),
                               ("torch-scaled-mm", "bfloat16", "torch-scaled-mm writes bfloat16")):
        d = rocm_fp8.explain(7748, 3884, 83, toolchain=sm90, backend=backend, out_dtype=out, device_type="cuda",
                             evidence=())
        if d.backend is None and backend == "torch-scaled-mm":
            pytest.skip(f"torch {torch.__version__} has no scaled-mm entry point: {d.reason}")
        assert d.ok, d.reason
        assert note in d.notes, d.notes


# -- what the stacks send --------------------------------------------------------------------------
def test_m_zero_returns_empty_without_running_a_kernel(registered, rng):
    rec = registered(Recording())
    w_q, w_s = _weights(256, 3884, rng, inference=True)
    with torch.inference_mode():
        x_q = torch.empty(0, 3884, dtype=FN)
        x_s = torch.empty(0, 31)
        y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)
        assert y.shape == (0, 256) and y.dtype == torch.bfloat16
        y = w8a8_block_fp8_linear(torch.empty(2, 0, 3884, dtype=torch.float16), w_q, w_s)
        assert y.shape == (2, 0, 256) and y.dtype == torch.float16
        layer = Fp8BlockLinear.from_checkpoint(w_q, w_s)
        assert layer(torch.empty(0, 3884, dtype=torch.bfloat16)).shape == (0, 256)
    assert rec.calls == []


def test_strided_layouts_reach_the_backend_without_a_copy(registered, rng):
    rec = registered(Recording())
    m, n, k = 9, 256, 384
    # a weight with padded rows (row stride K + 256, as vLLM pads on ROCm)
    storage = torch.randn(n, k + 256, generator=rng).to(FN)
    w_q = storage[:, :k]
    _, w_s = _weights(n, k, rng)
    assert w_q.stride() == (k + 256, 1)
    # FP8 activations that are a column slice of a wider buffer, scales column-major (strides (1, M))
    wide = torch.randn(m, k + 128, generator=rng).to(FN)
    x_q = wide[:, :k]
    x_s = (torch.rand(k // 128, m, generator=rng) * 0.01).t()
    assert x_s.stride() == (1, m)
    with torch.inference_mode():
        y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.float32)
    got_x, got_s, prepared, _ = rec.calls[-1]
    assert got_x.data_ptr() == x_q.data_ptr() and got_x.stride() == x_q.stride()
    assert got_s.data_ptr() == x_s.data_ptr() and got_s.stride() == (1, m)
    assert prepared.weight is w_q
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-5)
    # the built-in reference backend keeps the padded weight as it is too
    w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend="reference")
    assert dispatch._plans[id(w_q)].prepared["reference"].weight is w_q
    # non-contiguous float activations (a transposed view) are quantized as they are
    xt = torch.randn(k, m, generator=rng).t()
    ref = w8a8_block_fp8_linear(xt.contiguous(), w_q, w_s, backend="reference")
    torch.testing.assert_close(w8a8_block_fp8_linear(xt, w_q, w_s, backend="reference"), ref)


# -- in-place weight updates ------------------------------------------------------------------------
def test_in_place_updates_are_seen_or_announced(registered, rng):
    rec = registered(Recording(copy_weight=True))   # prepares a copy, as shuffling backends do
    x_q, x_s = quantize_activation(torch.randn(3, 256, generator=rng), dtype="e4m3fn")
    w_q, w_s = _weights(256, 256, rng)
    new_q, new_s = _weights(256, 256, rng)
    w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)
    # an ordinary tensor: its version counter shows the update, the weight is prepared again
    w_q.copy_(new_q)
    w_s.copy_(new_s)
    y = w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, out_dtype=torch.float32)
    assert rec.prepared == 2
    assert_close(y, reference_linear(x_q, x_s, new_q, new_s), rel_tol=1e-5)
    # an inference tensor has no version counter: the update must be announced
    i_q, i_s = _weights(256, 256, rng, inference=True)
    w8a8_block_fp8_linear(x_q, i_q, i_s, input_scale=x_s)
    with torch.inference_mode():
        i_q.copy_(new_q)
        i_s.copy_(new_s)
    assert rec.prepared == 3
    rocm_fp8.invalidate_weight(i_q)
    y = w8a8_block_fp8_linear(x_q, i_q, i_s, input_scale=x_s, out_dtype=torch.float32)
    assert rec.prepared == 4
    assert_close(y, reference_linear(x_q, x_s, new_q, new_s), rel_tol=1e-5)


# -- one path for the op and the layer ---------------------------------------------------------------
def test_the_layer_runs_the_op_path_and_falls_back_per_layer(registered, rng):
    lin = torch.nn.Linear(3884, 256, bias=True)      # a partial last K group
    good = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    bad = Fp8BlockLinear.from_linear(lin, fp8_dtype="e4m3fn")
    fails = registered(FailsFor(bad=[bad.weight]))
    x = torch.randn(2, 3, 3884, generator=rng)
    y_bad, y_good = bad(x), good(x)
    torch.testing.assert_close(y_bad, y_good, rtol=1e-5, atol=1e-5)
    assert_close(y_good, lin(x).detach(), rel_tol=0.06, cos_min=0.998)
    assert {c.backend.name for c in good._plan.values()} == {fails.name}
    assert {c.backend.name for c in bad._plan.values()} == {"reference"}
    assert any(n.startswith("fell back from test-fails-for") for n in bad.explain(6, torch.float32).notes)
    assert not any("fell back" in n for n in good.explain(6, torch.float32).notes)
    # the layer and the functional op give the same result through the same plan machinery
    torch.testing.assert_close(
        w8a8_block_fp8_linear(x, good.weight, good.weight_scale, bias=good.bias), y_good)


def test_plan_binds_before_capture_and_forward_only_looks_up(registered, rng):
    rec = registered(Recording())
    layer = Fp8BlockLinear.from_linear(torch.nn.Linear(256, 256), fp8_dtype="e4m3fn")
    assert layer.plan([1, 5, 300], input_dtype=torch.float32) == {1: rec.name, 8: rec.name, 512: rec.name}
    bound = list(rec.bound)
    for m in (1, 5, 7, 300):
        layer(torch.randn(m, 256, generator=rng))
    assert rec.bound == bound and rec.prepared == 1


# -- a backend that quantizes float input itself (Backend.bind_float_input) --------------------------
class QuantizesItself(Recording):
    """Float input goes through its own bound call (quantize + product in one callable); FP8 input
    through ``bind``'s. ``fail_float`` makes the float call fail like a kernel."""

    name = "test-quantizes-itself"
    priority = 100  # above Recording: auto tries it first

    def __init__(self, fail_float=False):
        super().__init__()
        self.float_calls, self.float_bound, self.fail_float = [], [], fail_float

    def bind_float_input(self, prepared, out_dtype, m_bucket, fp8_dtype, group_size):
        self.float_bound.append((out_dtype, m_bucket, fp8_dtype, group_size))

        def call(x):
            if self.fail_float:
                raise RuntimeError("CUDA error: misaligned address")
            self.float_calls.append(x)
            x_q, x_s = quantize_activation(x, group_size, dtype=fp8_dtype)
            return _product(x_q, x_s, prepared.weight, prepared.weight_scale, out_dtype)

        return call


def test_float_input_takes_the_backends_own_quantizing_call(registered, rng):
    be = registered(QuantizesItself())
    w_q, w_s = _weights(256, 384, rng)
    x = torch.randn(3, 384, generator=rng)
    x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    y = w8a8_block_fp8_linear(x, w_q, w_s, out_dtype=torch.float32)
    assert len(be.float_calls) == 1 and be.float_calls[0] is x and not be.calls
    assert be.float_bound == [(torch.float32, 4, FN, 128)]
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-5)
    w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s)  # FP8 input: bind's call, not the float one
    assert len(be.calls) == 1 and len(be.float_calls) == 1 and len(be.float_bound) == 1


def test_a_failing_quantizing_call_falls_back_like_any_kernel(registered, rng):
    registered(QuantizesItself(fail_float=True))
    rec = registered(Recording())
    w_q, w_s = _weights(256, 384, rng)
    x = torch.randn(2, 384, generator=rng)
    x_q, x_s = quantize_activation(x, dtype="e4m3fn")
    y = w8a8_block_fp8_linear(x, w_q, w_s, out_dtype=torch.float32)
    assert len(rec.calls) == 1
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=1e-5)
    assert "test-quantizes-itself" in dispatch.failures_for(w_q, 2)
    with pytest.raises(rocm_fp8.errors.BackendFailedError, match="test-quantizes-itself failed"):
        w8a8_block_fp8_linear(x, w_q, w_s, backend="test-quantizes-itself")
