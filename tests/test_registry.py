"""Third-party backends through the public protocol; overrides; the never-raise rule."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close, reference_linear

import rocm_fp8
from rocm_fp8 import Backend, quantize_activation, quantize_weight, w8a8_block_fp8_linear
from rocm_fp8.backends.base import OK


class DoubleCheckBackend(Backend):
    """A correct third-party backend (dequantize in float64) that counts its calls."""

    name = "test-float64"
    priority = 60  # above the float32 reference on the CPU

    def __init__(self):
        self.calls = 0
        self.prepared = 0

    def supports(self, problem, toolchain):
        return OK if problem.device_type == "cpu" else (False, "test-float64: CPU tensors only")

    def prepare_weight(self, weight, weight_scale):
        self.prepared += 1
        return super().prepare_weight(weight, weight_scale)

    def run(self, x_q, x_scale, prepared, out_dtype):
        self.calls += 1
        return reference_linear(x_q, x_scale, prepared.weight, prepared.weight_scale).to(out_dtype)


class RaisingBackend(Backend):
    name = "test-raises-in-checks"

    def available(self, toolchain):
        raise RuntimeError("boom")

    def run(self, *a):  # pragma: no cover - never selected
        raise AssertionError


class FailingAtRunBackend(Backend):
    name = "test-fails-at-run"
    priority = 99

    def run(self, *a):
        raise RuntimeError("illegal memory access (simulated kernel failure)")


@pytest.fixture
def registered():
    added = []

    def add(b):
        rocm_fp8.register_backend(b)
        added.append(b.name)
        return b

    yield add
    for name in added:
        rocm_fp8.unregister_backend(name)


def _problem(rng, m=5, n=256, k=256):
    wq, ws = quantize_weight(torch.randn(n, k, generator=rng), dtype="e4m3fn")
    x = torch.randn(m, k, generator=rng)
    return x, wq, ws


def test_third_party_backend_is_ranked_by_its_priority_and_runs(registered, rng):
    b = registered(DoubleCheckBackend())
    x, wq, ws = _problem(rng)
    y = w8a8_block_fp8_linear(x, wq, ws, out_dtype=torch.float32)
    assert b.calls == 1
    xq, xs = quantize_activation(x, dtype="e4m3fn")
    assert_close(y, reference_linear(xq, xs, wq, ws), rel_tol=1e-6)
    d = rocm_fp8.explain(256, 256, 5)
    assert d.backend == "test-float64" and "priority 60" in d.reason
    # the weight is prepared once, not per call
    w8a8_block_fp8_linear(x, wq, ws)
    assert b.prepared == 1 and b.calls == 2


def test_a_backend_that_raises_in_its_checks_becomes_a_reason(registered):
    registered(RaisingBackend())
    d = rocm_fp8.explain(256, 256, 5)
    c = {c.backend: c for c in d.considered}["test-raises-in-checks"]
    assert not c.ok and "raised RuntimeError: boom" in c.reason
    assert d.backend == "reference"


def test_auto_falls_back_when_a_kernel_fails_and_explicit_raises(registered, rng, caplog):
    registered(FailingAtRunBackend())
    x, wq, ws = _problem(rng)
    with caplog.at_level("WARNING", logger="rocm_fp8"):
        y = w8a8_block_fp8_linear(x, wq, ws, out_dtype=torch.float32)
    assert "test-fails-at-run failed for M=5 N=256 K=256" in caplog.text
    xq, xs = quantize_activation(x, dtype="e4m3fn")
    assert_close(y, reference_linear(xq, xs, wq, ws), rel_tol=1e-5)
    with pytest.raises(rocm_fp8.BackendFailedError, match=r"test-fails-at-run failed .*illegal memory access"):
        w8a8_block_fp8_linear(x, wq, ws, backend="test-fails-at-run")


def test_env_backend_and_disable(registered, rng, monkeypatch):
    b = registered(DoubleCheckBackend())
    x, wq, ws = _problem(rng)
    monkeypatch.setenv("ROCM_FP8_DISABLE", "test-float64")
    rocm_fp8.clear_caches()
    w8a8_block_fp8_linear(x, wq, ws)
    assert b.calls == 0
    d = rocm_fp8.explain(256, 256, 5)
    assert "test-float64: disabled by ROCM_FP8_DISABLE" in [c.reason for c in d.considered]
    monkeypatch.delenv("ROCM_FP8_DISABLE")
    monkeypatch.setenv("ROCM_FP8_BACKEND", "reference")
    rocm_fp8.clear_caches()
    w8a8_block_fp8_linear(x, wq, ws)
    assert b.calls == 0
    # the argument beats the environment
    w8a8_block_fp8_linear(x, wq, ws, backend="test-float64")
    assert b.calls == 1


def test_registration_errors(registered):
    with pytest.raises(ValueError, match=r"backend: a backend named 'reference' is already registered"):
        rocm_fp8.register_backend(DoubleCheckBackend.__new__(type("X", (DoubleCheckBackend,), {"name": "reference"})))
    with pytest.raises(TypeError, match=r"expected a callable run\(\)"):
        rocm_fp8.register_backend(type("NoRun", (), {"name": "x", "available": lambda s, t: OK,
                                                     "supports": lambda s, p, t: OK,
                                                     "prepare_weight": lambda s, w, ws: None})())
    with pytest.raises(ValueError, match=r"no backend named 'nope'"):
        rocm_fp8.unregister_backend("nope")
