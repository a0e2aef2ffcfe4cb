"""The GEMM that quantizes its float activation in its prologue (``BoundQuantGemm``) on a real GPU,
and the triton backend's eager/captured choice for float input.

* For every M of the small bucket (1..16), the table's shapes and configs and a few explicit ones
  (split-K, FRAME, a 128-wide N tile, persistent), K with a partial last group: the prologue kernel,
  JIT launch and warmed direct launch, gives the bits of the fused quant kernel + ``BoundGemm``, and
  no NaN. The split-K scratch is poisoned with NaN first, so an unwritten partial shows. On a
  failure the message says where the NaN sit (rows, N tiles, split) to localize it.
* Through the op (backend "triton" and "auto"): the eager call (prologue path) and a CUDA/HIP-graph
  replay of the same call (quant kernel + GEMM, taken under capture) give the same bits; the eager
  call did take the prologue; ``torch.compile(fullgraph=True)`` gives them too.
Fresh random inputs per test; NaN never passes.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

import rocm_fp8  # noqa: E402
from rocm_fp8.quant import quantize_weight  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402

HIP = torch.version.hip is not None
GFX94 = HIP and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName
FP8 = torch.float8_e4m3fnuz if GFX94 else torch.float8_e4m3fn

SHAPES = [(2048, 3072), (2112, 7168), (264, 1424)]  # the last: partial N tile, K = 11 x 128 + 16
EXPLICIT = {
    "split8": dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4),
    "split1-frame": dict(block_m=16, block_n=64, group_m=1, split_k=1, frame=True),
    "n128-split3-frame": dict(block_m=16, block_n=128, group_m=1, split_k=3, frame=True),
    "persistent-split2": dict(block_m=16, block_n=64, group_m=1, split_k=2, persistent=True),
}


def activation(m, k, dtype, seed):
    """Fresh random input with an all-zero group, a group max per row, spread magnitudes, -0.0."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    span = 2.0 if dtype == torch.float16 else 4.0
    scale = torch.logspace(-span, span, k, device="cuda")[torch.randperm(k, device="cuda", generator=g)]
    x = torch.randn(m, k, device="cuda", generator=g) * scale
    x[0, :128] = 0.0
    if m > 1:
        x[m - 1, 1::5] = -0.0
    return x.to(dtype)


def weight(n, k, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return quantize_weight(torch.randn(n, k, device="cuda", generator=g) * 0.05, (128, 128), FP8)


def poison_scratch():
    from rocm_fp8.kernels import triton_blockscale

    for buf in triton_blockscale._scratch.values():
        buf.fill_(float("nan"))


def where_nan(y, cfg) -> str:
    bad = torch.isnan(y)
    if not bad.any():
        return "no NaN"
    rows = sorted(set(bad.nonzero()[:, 0].tolist()))
    tiles = sorted(set((bad.nonzero()[:, 1] // cfg.block_n).tolist()))
    return f"{int(bad.sum())} NaN in rows {rows[:16]} and N tiles {tiles[:16]} of {y.shape[1] // cfg.block_n + 1}"


def _capture(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = fn()
    return graph, y


@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_eager_prologue_and_captured_two_kernels_give_the_same_bits(backend, m):
    from rocm_fp8 import dispatch
    from rocm_fp8.backends.triton import TritonBackend

    n, k = 2112, 7168
    w_q, w_s = weight(n, k, seed=m + 1)
    x = activation(m, k, torch.bfloat16, seed=m + 2)
    static_x = x.clone()

    def op():
        return rocm_fp8.w8a8_block_fp8_linear(static_x, w_q, w_s, backend=backend)

    eager = [op() for _ in range(3)]  # the first call cross-checks, the later ones take the prologue alone
    calls = [c for key, c in dispatch.plan_for(w_q, w_s, (128, 128)).calls.items() if key[2]]
    chosen = calls[0].backend.name
    if chosen == "triton" and TritonBackend().prologue_quant_applies(m, n, k):
        assert calls[0].fn_float is not None, "eager float input should take the prologue"
        kernels = calls[0].fn_float.prologue_kernels
        kept = kernels.get(torch.bfloat16)
        assert kept is not None, "the first call's cross-check dropped the prologue path (it disagreed; see the log)"
        launches = []

        def counted(x):  # which route each call takes: eager calls count, captured ones must not
            launches.append(torch.cuda.is_current_stream_capturing())
            return kept(x)

        kernels[torch.bfloat16] = counted
    graph, captured = _capture(op)
    if chosen == "triton" and TritonBackend().prologue_quant_applies(m, n, k):
        assert launches == [False], f"the capture took the prologue route (calls, capturing?): {launches}"
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        assert not torch.isnan(captured).any()
        for y in eager:
            assert torch.equal(y, captured), f"{chosen}: eager and captured float-input calls differ"
    static_x.copy_(activation(m, k, torch.bfloat16, seed=m + 3))  # a fresh input, replayed and eager
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(op(), captured)
    x_q, x_s = rocm_fp8.quantize_activation(static_x, 128, FP8)
    assert_close(captured, reference_linear(x_q, x_s, w_q, w_s), 1e-2)
    if m == 16 and backend == "triton":  # one compile is enough (each costs seconds)
        compiled = torch.compile(op, fullgraph=True)
        assert torch.equal(compiled(), captured)


def check_every_m(n, k, cfg, in_dtype=torch.bfloat16, out_dtype=torch.bfloat16):
    from rocm_fp8.kernels.quant_fp8 import quantize_fp8
    from rocm_fp8.kernels.triton_blockscale import BoundGemm, BoundQuantGemm

    w_q, w_s = weight(n, k, seed=n + k)
    fused = BoundQuantGemm(w_q, w_s, out_dtype, cfg, in_dtype)
    bound = BoundGemm(w_q, w_s, out_dtype, cfg)
    for m in [16, 1, 5, 9, 2, 16, 13, 3, 1, 7, 11, 4, 6, 8, 10, 12, 14, 15]:  # every M, twice for some
        x = activation(m, k, in_dtype, seed=m * 7 + k)
        poison_scratch()
        y = fused(x)
        torch.cuda.synchronize()
        x_q, x_s = quantize_fp8(x, FP8, 128, "row")
        poison_scratch()
        want = bound(x_q, x_s)
        assert not torch.isnan(want).any(), f"M={m}: quant + GEMM itself: {where_nan(want, cfg)}"
        assert not torch.isnan(y).any(), f"M={m} ({'direct' if fused.warmed else 'JIT'}): {where_nan(y, cfg)}"
        assert torch.equal(y, want), (f"M={m}: prologue GEMM differs from quant + GEMM, max |diff| "
                                      f"{(y.float() - want.float()).abs().max().item():.3e}")
        assert_close(y, reference_linear(x_q, x_s, w_q, w_s), 1e-2 if out_dtype != torch.float32 else 2e-3)
    from rocm_fp8.kernels import fast_launch

    if fast_launch.fast_launch_supported():
        assert fused.warmed, "the direct launch should be warm after the first call"


@pytest.mark.parametrize("n,k", SHAPES, ids=[f"N{n}-K{k}" for n, k in SHAPES])
def test_prologue_with_the_backends_small_m_config(n, k):
    from rocm_fp8.backends.triton import PROLOGUE_MAX_M, TritonBackend

    backend = TritonBackend()
    cfg = backend.config_for(PROLOGUE_MAX_M, n, k)
    if not backend.prologue_quant_applies(PROLOGUE_MAX_M, n, k):
        pytest.skip(f"the M<={PROLOGUE_MAX_M} config here takes no prologue route: {cfg.to_dict()}")
    check_every_m(n, k, cfg)


@pytest.mark.parametrize("name,in_dtype,out_dtype", [
    ("split8", torch.bfloat16, torch.bfloat16), ("split1-frame", torch.float16, torch.float32),
    ("n128-split3-frame", torch.float32, torch.float16), ("persistent-split2", torch.bfloat16, torch.float32)])
def test_prologue_explicit_configs(name, in_dtype, out_dtype):
    from rocm_fp8.kernels.triton_blockscale import KernelConfig

    check_every_m(264, 1424, KernelConfig(**EXPLICIT[name]).validate(), in_dtype, out_dtype)
