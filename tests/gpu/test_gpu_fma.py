"""The fma kernel (one launch at small M; float input quantized in the kernel) on a GPU.

Marked ``gpu``. Fresh random operands per test, outputs poisoned with NaN before the launch, the
tuner's accuracy gate (relative error within 1.25x of the exact result rounded to bf16) and cosine
> 0.9999 against a float64 reference; NaN never passes. Every candidate the tuner offers is checked
at M = 1 and 16 on model shapes; the float-input launch must equal the fused quant kernel followed by
the FP8-input launch bit for bit; the warmed direct launch must equal the JIT one; a bucket with an
eager config must use it outside a graph and the graph config inside a capture.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

from numerics import compare, reference_linear  # noqa: E402
from rocm_fp8.kernels.quant_fp8 import quantize_fp8  # noqa: E402
from rocm_fp8.kernels.triton_blockscale import BoundFma, KernelConfig, blockscale_gemm  # noqa: E402
from rocm_fp8.quant import QUANT_MAX  # noqa: E402
from rocm_fp8.toolchain import detect  # noqa: E402
from rocm_fp8.tune.candidates import fma_candidates  # noqa: E402

FP8 = torch.float8_e4m3fnuz if detect().fp8_flavour == "e4m3fnuz" else torch.float8_e4m3fn


def operands(m, n, k, seed, mcontig=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    fmax = QUANT_MAX[FP8]
    kb, nb = -(-k // 128), -(-n // 128)
    x_q = ((torch.rand(m, k, device="cuda", generator=gen) * 2 - 1) * fmax).to(FP8)
    w_q = ((torch.rand(n, k, device="cuda", generator=gen) * 2 - 1) * fmax).to(FP8)
    x_s = torch.rand(m, kb, device="cuda", generator=gen) * 1e-3 + 1e-4
    w_s = torch.rand(nb, kb, device="cuda", generator=gen) * 1e-3 + 1e-4
    if mcontig:
        x_s = x_s.t().contiguous().t()
    return x_q, x_s, w_q, w_s


def gate(y, ref):
    rel, cos = compare(y, ref)
    floor, _ = compare(ref.to(torch.bfloat16), ref)
    assert rel <= 1.25 * floor + 1e-7, f"relative error {rel:.3e} > 1.25 x bf16 floor {floor:.3e} (cos {cos:.6f})"
    assert cos > 0.9999, f"cosine {cos:.6f}"


def run(ops, cfg, out_dtype=torch.bfloat16):
    m, n = ops[0].shape[0], ops[2].shape[0]
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")
    with torch.inference_mode():
        blockscale_gemm(*ops, out_dtype, config=cfg, out=out)
    torch.cuda.synchronize()
    return out


def _ids(cands):
    return ["bm{block_m}-bn{block_n}-g{k_groups}-w{num_warps}-s{num_stages}-f{frame:d}".format(**c) for c in cands]


@pytest.mark.parametrize("cfg", fma_candidates(), ids=_ids(fma_candidates()))
@pytest.mark.parametrize("n,k", [(2048, 3072), (2112, 7168), (7168, 256)])
def test_every_m1_candidate_passes_the_gate(cfg, n, k):
    ops = operands(1, n, k, seed=n + k)
    gate(run(ops, KernelConfig.from_dict(cfg)), reference_linear(*ops))


@pytest.mark.parametrize("cfg", fma_candidates()[:4], ids=_ids(fma_candidates()[:4]))
@pytest.mark.parametrize("m,n,k", [(16, 2112, 7168), (11, 3072, 1536), (5, 768, 3072)])
def test_several_rows_pass_the_gate(cfg, m, n, k):
    """One program row per activation row: any M is correct (slow past a few rows; tune offers it at M = 1)."""
    ops = operands(m, n, k, seed=m + n + k, mcontig=m % 2 == 1)
    gate(run(ops, KernelConfig.from_dict(cfg)), reference_linear(*ops))


#: one config of each accumulator form
FORMS = {"narrow": fma_candidates()[1], "wide": next(c for c in fma_candidates() if c["frame"])}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("m,n,k", [(1, 2048, 3072), (3, 200, 3884), (16, 2112, 7168)])
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_float_input_equals_quant_kernel_then_fp8(m, n, k, in_dtype, form):
    """Bit for bit (fp32 output): the kernel's own quantization is the fused quant kernel's. K = 3884
    ends in a partial group; N = 200 in a partial tile."""
    gen = torch.Generator(device="cuda").manual_seed(m * 31 + k)
    x = (torch.randn(m, k, device="cuda", generator=gen) * 4).to(in_dtype)
    _, _, w_q, w_s = operands(m, n, k, seed=m + 1)
    cfg = KernelConfig.from_dict(FORMS[form])
    bound = BoundFma(w_q, w_s, torch.float32, cfg)
    with torch.inference_mode():
        for _ in range(3):  # JIT launch, then the warmed direct launches
            y = bound.float_input(x)
            x_q, x_s = quantize_fp8(x, FP8)
            y2 = bound(x_q, x_s)
            torch.cuda.synchronize()
            assert torch.equal(y, y2)
    assert bound.warmed
    gate(y, reference_linear(x_q, x_s, w_q, w_s))


def test_warm_launch_equals_jit_launch_across_m():
    """One BoundFma serves every M of its bucket; the direct launch gives what the JIT launch gives."""
    _, _, w_q, w_s = operands(1, 2112, 7168, seed=5)
    cfg = KernelConfig.from_dict(fma_candidates()[0])
    bound = BoundFma(w_q, w_s, torch.bfloat16, cfg)
    with torch.inference_mode():
        for m in (16, 9, 13, 16, 1):
            x_q, x_s, _, _ = operands(m, 2112, 7168, seed=m)
            y = bound(x_q, x_s)
            ref = blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=cfg)
            torch.cuda.synchronize()
            assert torch.equal(y, ref), m
            gate(y, reference_linear(x_q, x_s, w_q, w_s))
    assert bound.warmed


def test_out_dtypes_and_views():
    ops = operands(7, 1000, 1024, seed=9)
    ref = reference_linear(*ops)
    cfg = KernelConfig.from_dict(fma_candidates()[0])
    for dt in (torch.float16, torch.float32):
        y = run(ops, cfg, dt)
        assert y.dtype == dt
        gate(y, ref)
    big = torch.full((7, 1008), float("nan"), dtype=torch.bfloat16, device="cuda")
    with torch.inference_mode():
        blockscale_gemm(*ops, torch.bfloat16, config=cfg, out=big[:, :1000])
    torch.cuda.synchronize()
    gate(big[:, :1000], ref)
    assert big[:, 1000:].isnan().all()


def test_eager_config_outside_graphs_and_graph_config_inside():
    """A bucket whose table row has an eager fma config: eager calls run it (FP8 and bf16 input), a
    CUDA-graph capture records the row's config; both agree with the reference, replay included."""
    from rocm_fp8.backends.triton import TritonBackend

    m, n, k = 1, 2048, 3072
    x_q, x_s, w_q, w_s = operands(m, n, k, seed=17)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    main = KernelConfig(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4)
    eager = KernelConfig.from_dict(fma_candidates()[0])
    be = TritonBackend()
    be._configs[(n, k, 1)] = main
    be._eager[(n, k, 1)] = eager
    pw = be.prepare_weight(w_q, w_s)
    call = be.bind(pw, torch.bfloat16, 1)
    fcall = be.bind_float_input(pw, torch.bfloat16, 1, FP8, 128)
    fast, graph_side = pw.extra[("pair", torch.bfloat16, 1)][1], pw.extra[("pair", torch.bfloat16, 1)][0]
    assert isinstance(fast, BoundFma) and not isinstance(graph_side, BoundFma)
    with torch.inference_mode():
        y_eager = call(x_q, x_s)
        yf_eager = fcall(x)
        torch.cuda.synchronize()
        assert torch.equal(y_eager, fast(x_q, x_s))
        gate(y_eager, reference_linear(x_q, x_s, w_q, w_s))
        xq2, xs2 = quantize_fp8(x, FP8)
        gate(yf_eager, reference_linear(xq2, xs2, w_q, w_s))
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            call(x_q, x_s)
            fcall(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y_graph = call(x_q, x_s)
            yf_graph = fcall(x)
        g.replay()
        torch.cuda.synchronize()
    assert torch.equal(y_graph, graph_side(x_q, x_s))  # the graph recorded the row's config
    gate(y_graph, reference_linear(x_q, x_s, w_q, w_s))
    gate(yf_graph, reference_linear(xq2, xs2, w_q, w_s))


def test_quant_scratch_reuses_buffers_per_stream_and_not_in_graphs():
    """quantize_fp8(scratch=True): the same buffers for the same shape on one stream (values right
    each time), other buffers on another stream, fresh ones inside a graph capture."""
    x1 = torch.randn(5, 3072, device="cuda", dtype=torch.bfloat16)
    x2 = torch.randn(5, 3072, device="cuda", dtype=torch.bfloat16)
    a = quantize_fp8(x1, FP8, scratch=True)
    ref1 = tuple(t.clone() for t in quantize_fp8(x1, FP8))
    assert torch.equal(a[0].view(torch.uint8), ref1[0].view(torch.uint8)) and torch.equal(a[1], ref1[1])
    b = quantize_fp8(x2, FP8, scratch=True)
    assert b[0].data_ptr() == a[0].data_ptr() and b[1].data_ptr() == a[1].data_ptr()
    ref2 = quantize_fp8(x2, FP8)
    assert torch.equal(b[0].view(torch.uint8), ref2[0].view(torch.uint8)) and torch.equal(b[1], ref2[1])
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        c = quantize_fp8(x1, FP8, scratch=True)
    assert c[0].data_ptr() != a[0].data_ptr()
    g = torch.cuda.CUDAGraph()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        quantize_fp8(x1, FP8, scratch=True)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        d = quantize_fp8(x1, FP8, scratch=True)
    g.replay()
    torch.cuda.synchronize()
    assert d[0].data_ptr() not in (a[0].data_ptr(), c[0].data_ptr())
    assert torch.equal(d[0].view(torch.uint8), ref1[0].view(torch.uint8))
    big = torch.randn(65, 256, device="cuda", dtype=torch.bfloat16)  # past SCRATCH_MAX_M: allocated
    first = quantize_fp8(big, FP8, scratch=True)
    assert quantize_fp8(big, FP8, scratch=True)[0].data_ptr() != first[0].data_ptr()
