"""What the dispatcher's caches promise, through public functions only: the M bucket, invalidation
(generation counter, listeners), which events invalidate, and the evidence the dispatcher wires.

These hold whatever the caches look like inside; tests of the execution path live in test_ops.py.
"""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close

import rocm_fp8
from rocm_fp8 import dispatch, invalidation, ledger, probe_report
from rocm_fp8.backends import OK, Backend
from rocm_fp8.quant import dequantize_activation, dequantize_weight
from rocm_fp8.toolchain import Toolchain, detect


class Counting(Backend):
    """Correct (float32 dequantize + matmul), and counts its runs and weight preparations."""

    name = "counting-test"
    description = "test helper: counts calls"
    priority = 99

    def __init__(self):
        self.runs = 0
        self.prepared = 0

    def available(self, toolchain):
        return OK

    def supports(self, problem, toolchain):
        return OK

    def prepare_weight(self, weight, weight_scale):
        self.prepared += 1
        return super().prepare_weight(weight, weight_scale)

    def run(self, x_q, x_scale, prepared, out_dtype):
        self.runs += 1
        x = dequantize_activation(x_q, x_scale, 128)
        w = dequantize_weight(prepared.weight, prepared.weight_scale, (128, 128))
        return (x @ w.t()).to(out_dtype)


@pytest.fixture
def counting():
    backend = rocm_fp8.register_backend(Counting())
    yield backend
    if backend.name in rocm_fp8.backend_names():
        rocm_fp8.unregister_backend(backend.name)


@pytest.fixture
def operands(rng):
    w_q, w_s = rocm_fp8.quantize_weight(torch.randn(256, 384, generator=rng) * 0.05, dtype="e4m3fn")
    return w_q, w_s


@pytest.mark.parametrize("m, expected", [(0, 1), (1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (128, 128), (129, 256),
                                         (16384, 16384), (16385, 32768)])
def test_bucket_is_the_next_power_of_two(m, expected):
    assert invalidation.bucket(m) == expected
    assert dispatch.bucket(m) == expected  # the dispatcher's name for it


def test_generation_is_live_and_bumped_by_clear_caches():
    before = dispatch.generation
    assert before == invalidation.generation
    rocm_fp8.clear_caches()
    assert dispatch.generation == invalidation.generation == before + 1
    rocm_fp8.clear_caches(redetect=True)
    assert dispatch.generation > before + 1


def test_listeners_run_on_every_invalidating_event_once_each(tmp_path, counting):
    calls = []

    def listener():
        calls.append(invalidation.generation)

    invalidation.on_invalidate(listener)
    invalidation.on_invalidate(listener)  # registering twice still calls it once
    try:
        rocm_fp8.clear_caches()
        assert len(calls) == 1
        rocm_fp8.unregister_backend(counting.name)
        assert len(calls) == 2
        rocm_fp8.register_backend(counting)
        assert len(calls) == 3
        user = tmp_path / "mine.toml"
        user.write_text('schema = 1\n[[issue]]\nid = "test-entry"\nbackends = ["aiter-ck"]\narch = ["gfx950"]\n'
                        'symptom = "wrong"\nsummary = "test"\nremedy = "none"\nsources = ["test"]\n')
        ledger.add_ledger_file(user)
        assert len(calls) == 4
        ledger.reset()
        assert len(calls) == 5
        report = probe_report.new_report(detect(), static=True)
        probe_report.write_report(report, path=tmp_path / "report.json", merge_existing=False)
        assert len(calls) == 6
        assert calls == sorted(calls) and len(set(calls)) == 6  # each saw a new generation
    finally:
        invalidation._listeners.remove(listener)


def test_on_invalidate_refuses_what_it_cannot_call():
    with pytest.raises(TypeError, match=r"listener: expected a callable"):
        invalidation.on_invalidate("not callable")


def test_an_unregistered_backend_is_not_used_from_a_cached_decision(counting, operands, rng):
    w_q, w_s = operands
    x = torch.randn(3, 384, generator=rng)
    y = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend=counting.name)
    assert counting.runs == 1
    rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend=counting.name)
    assert counting.runs == 2 and counting.prepared == 1  # the prepared weight is kept for the weight
    ref = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend="reference")
    assert_close(y, ref, rel_tol=1e-6, cos_min=0.99999)
    rocm_fp8.unregister_backend(counting.name)
    with pytest.raises(ValueError, match=r"backend: expected one of .*got 'counting-test'"):
        rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend=counting.name)
    assert counting.runs == 2


def test_clear_caches_rereads_the_environment(monkeypatch, operands, rng):
    w_q, w_s = operands
    x = torch.randn(2, 384, generator=rng)
    rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s)
    monkeypatch.setenv(dispatch.ENV_BACKEND, "no-such-backend")
    rocm_fp8.clear_caches()
    with pytest.raises(ValueError, match=r"ROCM_FP8_BACKEND: expected one of .*got 'no-such-backend'"):
        rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s)
    monkeypatch.setenv(dispatch.ENV_BACKEND, "reference")
    monkeypatch.setenv(dispatch.ENV_DISABLE, "triton, nope")
    rocm_fp8.clear_caches()
    with pytest.raises(ValueError, match=r"ROCM_FP8_DISABLE: expected comma-separated names .*got unknown nope"):
        rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s)


def test_redetect_forgets_the_toolchain():
    rocm_fp8.toolchain.set_current(Toolchain.hypothetical("gfx950", hip="7.2.26015"))
    assert detect().arch == "gfx950"
    rocm_fp8.clear_caches()
    assert detect().arch == "gfx950"  # a plain clear keeps the toolchain
    rocm_fp8.clear_caches(redetect=True)
    assert detect().source != "hypothetical"


def test_default_sources_put_probe_reports_before_the_ledger():
    hypothetical = Toolchain.hypothetical("gfx950", hip="7.0.51831")
    sources = dispatch.default_sources(hypothetical)
    assert [type(s).__name__ for s in sources] == ["Ledger"]  # a machine we do not have has no measurements
    here = detect()
    probe_report.write_report(probe_report.new_report(here), toolchain=here)  # into the test's cache
    sources = dispatch.default_sources(here)
    assert [type(s).__name__ for s in sources] == ["ProbeEvidence", "Ledger"]
