"""The three aiter adapters on the CPU: selection, argument layouts, failure handling.

aiter's kernels need a ROCm GPU, which no machine of this project has. The layouts are checked
against a *stand-in* for aiter (``AiterContract`` below, labelled as such): it exposes the entry points
our adapters call, with aiter's signatures, and asserts the argument contract documented for them
(docs/reference.md section 5) before computing the product in float64:

* ``gemm_a8w8_blockscale(XQ [M,K] fp8, WQ [N,K] fp8 not shuffled, x_scale [M,K/128] row-major, w_scale)``
* ``gemm_a8w8_blockscale_bpreshuffle(XQ, WQ = shuffle_weight(W, (16,16)), x_scale M-contiguous
  ([M,K/128] view, strides (1, M)), w_scale)``
* ``aiter.ops.triton.gemm_a8w8_blockscale.gemm_a8w8_blockscale(x, w, x_scale, w_scale, dtype=...)``
* ``get_hip_quant(QuantType.per_1x128)(x, quant_dtype=...) -> (fp8 [M,K], fp32 [M,K/128])``

What the stand-in cannot show is that aiter's real kernels compute correctly on a given toolchain:
that is the probe's job on the GPU.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from numerics import assert_close, reference_linear

import rocm_fp8
from rocm_fp8 import Toolchain, quantize_activation, quantize_weight
from rocm_fp8.backends import _aiter
from rocm_fp8.backends.aiter_bpreshuffle import AiterBpreshuffleBackend, m_contiguous
from rocm_fp8.backends.aiter_ck import AiterCKBackend
from rocm_fp8.backends.aiter_triton import AiterTritonBackend
from rocm_fp8.backends.base import Problem
from rocm_fp8.errors import BackendUnavailableError

GFX950 = Toolchain.hypothetical("gfx950", hip="7.2.26015")
GFX942 = Toolchain.hypothetical("gfx942", hip="7.2.26015")


class AiterContract:
    """STAND-IN for aiter's compiled entry points (no ROCm here); asserts the documented contract."""

    class QuantType:
        per_1x128 = "per_1x128"

    def __init__(self):
        self.calls: list[str] = []
        self.shuffled: dict[int, torch.Tensor] = {}   # id(shuffled) -> the weight it came from

    # aiter.get_hip_quant
    def get_hip_quant(self, qtype):
        assert qtype == "per_1x128", qtype

        def quant(x, quant_dtype):
            assert x.dim() == 2 and x.is_contiguous(), "per_1x128 quant takes a contiguous [M, K] tensor"
            self.calls.append("quant")
            return quantize_activation(x, 128, dtype=quant_dtype)

        return quant

    # aiter.ops.shuffle.shuffle_weight
    def shuffle_weight(self, w, layout=(16, 16)):
        assert layout == (16, 16), layout
        assert w.shape[0] % 16 == 0 and w.shape[1] % 32 == 0, f"shuffle (16,16) of {tuple(w.shape)}"
        out = w.flip(0).contiguous()   # some other arrangement of the same bytes, same shape
        self.shuffled[id(out)] = w
        return out

    def _product(self, XQ, WQ, x_scale, w_scale, dtype):
        assert XQ.dtype == WQ.dtype and XQ.dtype in (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
        assert XQ.shape[1] == WQ.shape[1], "K mismatch"
        m, k = XQ.shape
        n = WQ.shape[0]
        assert x_scale.shape == (m, k // 128) and x_scale.dtype == torch.float32
        assert w_scale.shape == (-(-n // 128), k // 128) and w_scale.dtype == torch.float32
        assert dtype in (torch.bfloat16, torch.float16), f"output dtype {dtype}"
        return reference_linear(XQ, x_scale, WQ, w_scale).to(dtype)

    # aiter.gemm_a8w8_blockscale
    def gemm_a8w8_blockscale(self, XQ, WQ, x_scale, w_scale, dtype=torch.bfloat16):
        assert id(WQ) not in self.shuffled, "plain CK got a shuffled weight"
        assert XQ.is_contiguous() and WQ.is_contiguous()
        assert x_scale.is_contiguous(), f"CK wants row-major x_scale, got strides {x_scale.stride()}"
        self.calls.append("ck")
        return self._product(XQ, WQ, x_scale, w_scale, dtype)

    # aiter.gemm_a8w8_blockscale_bpreshuffle
    def gemm_a8w8_blockscale_bpreshuffle(self, XQ, WQ, x_scale, w_scale, dtype=torch.bfloat16):
        assert id(WQ) in self.shuffled, "bpreshuffle got a weight that was not shuffled (16,16)"
        m, groups = x_scale.shape
        # physically [K/128, M]: element (i, g) at offset g * M + i (strides of size-1 dims do not matter)
        m_contig = (m == 1 or x_scale.stride(0) == 1) and (groups == 1 or x_scale.stride(1) == m)
        assert m_contig, f"bpreshuffle wants M-contiguous x_scale, got strides {x_scale.stride()} for {tuple(x_scale.shape)}"
        self.calls.append("bpreshuffle")
        return self._product(XQ, self.shuffled[id(WQ)], x_scale, w_scale, dtype)

    # aiter.ops.triton.gemm_a8w8_blockscale.gemm_a8w8_blockscale
    def triton_gemm(self, x, w, x_scale, w_scale, dtype=torch.bfloat16, y=None, config=None):
        self.calls.append("aiter-triton")
        return self._product(x, w, x_scale, w_scale, dtype)


@pytest.fixture
def contract(monkeypatch):
    """Installs the stand-in as the 'aiter' our adapters import (modules and the cached import)."""
    c = AiterContract()
    pkg = types.ModuleType("aiter")
    pkg.__path__ = []  # a package, for the submodule imports below
    pkg.get_hip_quant, pkg.QuantType = c.get_hip_quant, c.QuantType
    pkg.gemm_a8w8_blockscale = c.gemm_a8w8_blockscale
    pkg.gemm_a8w8_blockscale_bpreshuffle = c.gemm_a8w8_blockscale_bpreshuffle
    shuffle = types.ModuleType("aiter.ops.shuffle")
    shuffle.shuffle_weight = c.shuffle_weight
    tri = types.ModuleType("aiter.ops.triton.gemm_a8w8_blockscale")
    tri.gemm_a8w8_blockscale = c.triton_gemm
    for name, mod in {"aiter": pkg, "aiter.ops": types.ModuleType("aiter.ops"), "aiter.ops.shuffle": shuffle,
                      "aiter.ops.triton": types.ModuleType("aiter.ops.triton"),
                      "aiter.ops.triton.gemm_a8w8_blockscale": tri}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(_aiter, "_aiter_module", pkg)
    return c


@pytest.mark.parametrize("backend_cls,kind", [(AiterCKBackend, "ck"), (AiterBpreshuffleBackend, "bpreshuffle"),
                                              (AiterTritonBackend, "aiter-triton")])
@pytest.mark.parametrize("m,n,k", [(1, 256, 256), (7, 2112, 384), (64, 512, 1024)])
def test_adapters_pass_the_documented_layouts(contract, backend_cls, kind, m, n, k, rng):
    b = backend_cls()
    w_q, w_s = quantize_weight(torch.randn(n, k, generator=rng), dtype="e4m3fn")
    x = torch.randn(m, k, generator=rng, dtype=torch.bfloat16)
    prepared = b.prepare_weight(w_q, w_s)
    x_q, x_s = b.quantize_input(x, torch.float8_e4m3fn)
    assert contract.calls == ["quant"], "activations are quantized by aiter's HIP quant"
    y = b.run(x_q, x_s, prepared, torch.bfloat16)
    assert contract.calls[-1] == kind
    ref_q, ref_s = quantize_activation(x, 128, dtype=torch.float8_e4m3fn)
    assert_close(y, reference_linear(ref_q, ref_s, w_q, w_s), rel_tol=8e-3)


def test_bpreshuffle_scale_layout_is_m_contiguous_whatever_comes_in(rng):
    s = torch.rand(9, 24, generator=rng) + 0.1
    mc = m_contiguous(s)
    assert mc.shape == (9, 24) and mc.stride() == (1, 9) and torch.equal(mc, s)
    assert m_contiguous(mc) is mc  # already M-contiguous: no copy on the hot path


def test_bpreshuffle_supports_only_what_the_shuffle_accepts():
    b = AiterBpreshuffleBackend()
    ok, _ = b.supports(Problem(64, 2112, 7168), GFX950)
    assert ok
    ok, why = b.supports(Problem(64, 2120, 7168), GFX950)
    assert not ok and "N % 16 == 0" in why


@pytest.mark.parametrize("backend_cls", [AiterCKBackend, AiterBpreshuffleBackend, AiterTritonBackend])
def test_selection_checks(backend_cls):
    b = backend_cls()
    name = b.name
    assert b.available(GFX950) == (True, "")
    assert b.available(Toolchain.hypothetical("sm90"))[1].startswith(f"{name}: needs an AMD Instinct GPU")
    assert "aiter is not installed" in b.available(Toolchain.hypothetical("gfx950", hip="7.2", aiter=False))[1]
    unusable = GFX950.with_(aiter_reason="aiter 0.1.7 is installed but ROCm is not (hipconfig not found)")
    assert "hipconfig not found" in b.available(unusable)[1]
    assert not b.supports(Problem(64, 256, 256, device_type="cpu"), GFX950)[0]
    ok, why = b.supports(Problem(64, 256, 256, fp8_dtype="e4m3fn"), GFX942)
    assert not ok and "e4m3fnuz" in why and "e4m3fn_to_e4m3fnuz" in why
    assert b.supports(Problem(64, 256, 256, fp8_dtype="e4m3fnuz"), GFX942) == (True, "")
    ok, why = b.supports(Problem(64, 256, 256, out_dtype="float32"), GFX950)
    assert not ok and "output dtype" in why
    assert not b.supports(Problem(64, 256, 256, block_n=64, block_k=64), GFX950)[0]


def test_aiter_triton_is_tuned_for_the_listed_shapes_only():
    b = AiterTritonBackend()
    assert b.tuned_for(Problem(64, 4096, 7168), GFX950)
    assert not b.tuned_for(Problem(64, 2048, 3072), GFX950)   # MiniMax qkv: not in the list


def test_a_failed_aiter_import_is_a_clear_error_not_a_crash(monkeypatch, rng):
    # the real aiter, where installed, fails to import without ROCm; where absent, import fails too
    monkeypatch.setattr(_aiter, "_aiter_module", None)
    monkeypatch.setitem(sys.modules, "aiter", None)  # makes `import aiter` raise ImportError
    w_q, w_s = quantize_weight(torch.randn(256, 256, generator=rng), dtype="e4m3fn")
    for b in (AiterCKBackend(), AiterBpreshuffleBackend(), AiterTritonBackend()):
        with pytest.raises(BackendUnavailableError, match=r"aiter could not be imported .*needs a ROCm install"):
            b.prepare_weight(w_q, w_s)


def test_explicit_aiter_backend_whose_import_fails_raises_a_clear_error(monkeypatch, rng):
    """A toolchain that says aiter is usable, an aiter that fails to import after all: the explicit
    request raises BackendFailedError naming the backend and the cause (auto would fall back, as
    tests/test_registry.py checks for any backend that fails at run time)."""
    monkeypatch.setattr(_aiter, "_aiter_module", None)
    monkeypatch.setitem(sys.modules, "aiter", None)
    from rocm_fp8 import dispatch, toolchain

    monkeypatch.setattr(toolchain, "_DETECTED", Toolchain.hypothetical("gfx950", hip="7.2.26015"))
    rocm_fp8.clear_caches()
    # CPU tensors never reach aiter on their own (supports() refuses them); let them through here
    monkeypatch.setattr(AiterCKBackend, "supports", lambda self, problem, tc: (True, ""))
    w_q, w_s = quantize_weight(torch.randn(256, 256, generator=rng), dtype="e4m3fn")
    x_q, x_s = quantize_activation(torch.randn(4, 256, generator=rng), dtype="e4m3fn")
    with pytest.raises(rocm_fp8.BackendFailedError, match=r"aiter-ck failed for M<=4 N=256 K=256 while preparing the weight .*aiter could not be imported"):
        dispatch.run_2d(x_q, x_s, w_q, w_s, torch.bfloat16, (128, 128), "aiter-ck")
