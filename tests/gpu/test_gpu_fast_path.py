"""The lean launch path on a real GPU: the bound GEMM launcher, the fused quant kernel, graphs, compile.

* BoundGemm takes the direct launch after its first call (``warmed``) and gives, for every M of its
  bucket and for activations it must route to the JIT (strided rows, an unaligned scale view), the
  same bits as ``blockscale_gemm``; split-K, persistent and TMA configs included.
* The fused quant kernel equals ``rocm_fp8.quant.quantize_activation`` bit for bit (values and
  scales), row- and column-major scales, partial last group (against the zero-padded input).
* It also writes the zero-padded operands torch-scaled-mm reads (M to a multiple of 4, K to the
  weight's padded K) in the same launch; torch-scaled-mm's fused bf16 call equals its unfused one.
* Bound calls and the public op are capturable in a CUDA/HIP graph and replay to the eager bits;
  the op compiles with ``torch.compile(fullgraph=True)``.
Fresh random inputs per test; NaN never passes.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

import rocm_fp8  # noqa: E402
from rocm_fp8.quant import QUANT_MAX, quantize_activation, quantize_weight  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402

HIP = torch.version.hip is not None
GFX94 = HIP and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName
FP8 = torch.float8_e4m3fnuz if GFX94 else torch.float8_e4m3fn
# e4m3fnuz needs AMD hardware conversions; NVIDIA Triton has none
FLAVOURS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz] if HIP else [torch.float8_e4m3fn]


def operands(m, n, k, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    fmax = QUANT_MAX[FP8]
    kb, nb = -(-k // 128), -(-n // 128)
    x_q = ((torch.rand(m, k, device="cuda", generator=g) * 2 - 1) * fmax).to(FP8)
    w_q = ((torch.rand(n, k, device="cuda", generator=g) * 2 - 1) * fmax).to(FP8)
    x_s = torch.rand(m, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    w_s = torch.rand(nb, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    return x_q, x_s, w_q, w_s


CONFIGS = {
    "decode-splitk": dict(block_m=16, block_n=64, group_m=1, split_k=4, num_stages=4),
    "plain": dict(block_m=64, block_n=128, group_m=8),
    "persistent": dict(block_m=64, block_n=128, persistent=True, programs_per_sm=2),
    "tma-frame": dict(block_m=64, block_n=128, tma=True, frame=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("n,k", [(2048, 3072), (264, 1408), (320, 208)], ids=["N2048-K3072", "N264-K1408",
                                                                              "N320-K208"])
def test_bound_gemm_matches_blockscale_gemm(name, n, k):
    from rocm_fp8.kernels.triton_blockscale import BoundGemm, KernelConfig, blockscale_gemm

    cfg = KernelConfig(**CONFIGS[name]).validate()
    _, _, w_q, w_s = operands(1, n, k, seed=n + k)
    bound = BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    for i, m in enumerate([16, 9, 1, 16, 13, 2]):  # one bucket's worth of M, in no order
        x_q, x_s, _, _ = operands(m, n, k, seed=i + 100 * m)
        y = bound(x_q, x_s)
        assert bound.warmed, "the first canonical call should have warmed the direct launch"
        want = blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=cfg)
        assert torch.equal(y, want), f"M={m}: direct launch differs from blockscale_gemm"
        assert_close(y, reference_linear(x_q, x_s, w_q, w_s), 1e-2)


def test_bound_gemm_routes_unusual_activations_to_the_jit():
    from rocm_fp8.kernels.triton_blockscale import BoundGemm, KernelConfig, blockscale_gemm

    n, k, m = 512, 1024, 8
    cfg = KernelConfig(block_m=16, block_n=64, split_k=2)
    x_q, x_s, w_q, w_s = operands(m + 1, n, k, seed=3)
    bound = BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    bound(x_q[:m], x_s[:m])
    assert bound.warmed
    # rows longer than K (a column slice), and a scale view 4 bytes off 16-byte alignment
    wide = torch.empty(m, k + 128, dtype=FP8, device="cuda")
    wide[:, :k] = x_q[:m]
    strided = wide[:, :k]
    kb = x_s.shape[1]
    unaligned = torch.empty(m * kb + 1, device="cuda")[1:].view(m, kb)
    unaligned.copy_(x_s[:m])
    cases = [(strided, x_s[:m]), (x_q[:m], unaligned), (x_q[1:], x_s[1:]),
             (x_q[:m], x_s.t().contiguous().t()[:m])]
    for xq, xs in cases:
        want = blockscale_gemm(xq.contiguous(), xs.contiguous(), w_q, w_s, torch.bfloat16, config=cfg)
        assert torch.equal(bound(xq, xs), want)


@pytest.mark.parametrize("fp8", FLAVOURS, ids=lambda d: str(d).split("_")[-1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("m,k", [(1, 3072), (33, 7168), (1000, 1536), (5, 3884)])
def test_fused_quant_is_bit_exact(fp8, dtype, layout, m, k):
    from rocm_fp8.kernels.quant_fp8 import quantize_fp8

    g = torch.Generator(device="cuda").manual_seed(m + k)
    # magnitudes spanning 1e-4 .. 1e4 along K, one all-zero group, negative zeros
    x = torch.randn(m, k, device="cuda", generator=g) * torch.logspace(-4, 4, k, device="cuda")
    x[0, :128] = 0.0
    x[-1, 130:140] = -0.0
    x = x.to(dtype)
    for _ in range(2):  # the JIT launch, then the direct one
        q, s = quantize_fp8(x, fp8, 128, layout)
        kp = -(-k // 128) * 128
        padded = torch.zeros(m, kp, dtype=dtype, device="cuda")
        padded[:, :k] = x
        rq, rs = quantize_activation(padded, 128, fp8)
        assert torch.equal(q.view(torch.uint8), rq[:, :k].view(torch.uint8)), "quantized values differ"
        assert torch.equal(s, rs), "scales differ"
        assert s.stride() == ((1, m) if layout == "col" else (s.shape[1], 1))
        assert torch.isfinite(s).all() and not torch.isnan(q.float()).any()


@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("m,k,rows,cols", [(1, 3072, 4, 3072), (3, 392, 4, 512), (5, 3884, 8, 4096),
                                           (16, 7168, 16, 7168)])
def test_fused_quant_writes_padded_operands_bit_exact(layout, m, k, rows, cols):
    """The padded outputs torch-scaled-mm reads: equal to quantizing the zero-padded input."""
    from rocm_fp8.kernels.quant_fp8 import quantize_fp8

    g = torch.Generator(device="cuda").manual_seed(m * 7 + k)
    x = (torch.randn(m, k, device="cuda", generator=g) * torch.logspace(-3, 3, k, device="cuda")).to(torch.bfloat16)
    padded = torch.zeros(rows, cols, dtype=torch.bfloat16, device="cuda")
    padded[:m, :k] = x
    rq, rs = quantize_activation(padded, 128, FP8)
    for _ in range(2):  # the JIT launch, then the direct one
        q, s = quantize_fp8(x, FP8, 128, layout, rows=rows, cols=cols)
        assert q.shape == (rows, cols) and s.shape == rs.shape
        assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8)), "quantized values differ"
        assert torch.equal(s, rs), "scales differ"
        assert s.stride() == ((1, rows) if layout == "col" else (s.shape[1], 1))


@pytest.mark.skipif(HIP, reason="cuBLASLt blockwise FP8 is NVIDIA-only")
@pytest.mark.parametrize("n,k", [(2048, 3072), (200, 392), (2112, 7168)], ids=["N2048-K3072", "N200-K392",
                                                                              "N2112-K7168"])
@pytest.mark.parametrize("m", [1, 3, 5, 16, 33])
def test_torch_scaled_mm_float_input_quantizes_into_padded_operands(n, k, m):
    """bf16 input through torch-scaled-mm's fused bound call (one quant launch writing the padded
    operands) gives the bits of quantize_input + the FP8 bound call, close to the float reference."""
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend
    from rocm_fp8.dispatch import bucket
    from rocm_fp8.toolchain import detect

    backend = TorchScaledMMBackend()
    if not backend.available(detect())[0]:
        pytest.skip(backend.available(detect())[1])
    g = torch.Generator(device="cuda").manual_seed(m + n + k)
    w_q, w_s = quantize_weight(torch.randn(n, k, device="cuda", generator=g) * 0.05, (128, 128), FP8)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    prepared = backend.prepare_weight(w_q, w_s)
    fused = backend.bind_float_input(prepared, torch.bfloat16, bucket(m), FP8, 128)
    assert fused is not None
    xq, xs = backend.quantize_input(x, FP8)
    want = backend.bind(prepared, torch.bfloat16, bucket(m))(xq, xs)
    for _ in range(2):
        y = fused(x)
        assert y.shape == (m, n) and torch.equal(y, want)
    assert_close(y, reference_linear(xq, xs, w_q, w_s), 1e-2)
    y_op = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend="torch-scaled-mm")
    assert torch.equal(y_op, want)


def test_backends_quantize_with_the_fused_kernel():
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend
    from rocm_fp8.backends.triton import TritonBackend

    x = torch.randn(7, 2048, device="cuda", dtype=torch.bfloat16)
    rq, rs = quantize_activation(x, 128, FP8)
    q, s = TritonBackend().quantize_input(x, FP8)
    assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(s, rs)
    if not HIP:
        q, s = TorchScaledMMBackend().quantize_input(x, FP8)
        assert s.stride() == (1, 7)
        assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(s, rs)


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


def test_bound_gemm_and_fused_quant_capture_in_a_graph():
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.triton_blockscale import KernelConfig

    n, k, m = 2048, 3072, 4
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.05
    w_q, w_s = quantize_weight(w, (128, 128), FP8)
    backend = TritonBackend()
    prepared = backend.prepare_weight(w_q, w_s)
    bound = backend.bind(prepared, torch.bfloat16, 4)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)

    def step():
        return bound(*backend.quantize_input(x, FP8))

    eager = step().clone()
    graph, y = _capture(step)
    x.copy_(torch.randn_like(x))
    eager2 = step().clone()
    graph.replay()
    torch.cuda.synchronize()
    assert not torch.equal(eager, eager2)
    if getattr(bound, "eager_config", None) is None:
        assert torch.equal(y, eager2)
    else:  # the bucket's eager config ran eagerly, its graph config in the capture: the last bits may differ
        assert_close(y, eager2.double(), 1e-2)
    assert isinstance(bound.config, KernelConfig)


@pytest.mark.parametrize("backend", ["auto", "triton", "torch-scaled-mm"])
@pytest.mark.parametrize("fp8_input", [False, True], ids=["bf16-in", "fp8-in"])
def test_op_captures_and_compiles(backend, fp8_input, monkeypatch):
    """With the tables' eager configs off, a captured call gives the eager call's bits (with them on, a
    bucket may run another config eagerly: see test_gpu_fma's eager test)."""
    from rocm_fp8.backends.triton import ENV_EAGER_CONFIGS

    monkeypatch.setenv(ENV_EAGER_CONFIGS, "0")  # read when this fresh weight's buckets are bound
    if backend == "torch-scaled-mm" and (HIP or torch.cuda.get_device_capability()[0] != 9):
        pytest.skip("cuBLASLt blockwise FP8 is used on sm90 only")
    n, k, m = 2048, 3072, 3
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.05
    w_q, w_s = quantize_weight(w, (128, 128), FP8)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    xq, xs = quantize_activation(x, 128, FP8)

    def op():
        if fp8_input:
            return rocm_fp8.w8a8_block_fp8_linear(xq, w_q, w_s, input_scale=xs, backend=backend)
        return rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend=backend)

    eager = op().clone()
    assert_close(eager, reference_linear(xq, xs, w_q, w_s), 1e-2)
    graph, y = _capture(op)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, eager)
    compiled = torch.compile(op, fullgraph=True)
    assert_close(compiled(), reference_linear(xq, xs, w_q, w_s), 1e-2)


def test_split_k_scratch_is_safe_across_graph_and_streams():
    """Direct split-K launches share a per-stream scratch buffer; a captured graph gets its own."""
    from rocm_fp8.kernels.triton_blockscale import BoundGemm, KernelConfig, blockscale_gemm

    cfg = KernelConfig(block_m=16, block_n=64, split_k=4)
    n, k = 2048, 3072
    _, _, w_q, w_s = operands(1, n, k, seed=1)
    bound = BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    x1, s1, _, _ = operands(3, n, k, seed=2)
    x2, s2, _, _ = operands(3, n, k, seed=3)
    want1 = blockscale_gemm(x1, s1, w_q, w_s, torch.bfloat16, config=cfg)
    want2 = blockscale_gemm(x2, s2, w_q, w_s, torch.bfloat16, config=cfg)
    assert torch.equal(bound(x1, s1), want1) and bound.warmed
    graph, y_graph = _capture(lambda: bound(x1, s1))
    other = torch.cuda.Stream()
    other.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(other):
        y_other = [bound(x2, s2) for _ in range(20)]
    graph.replay()
    y_eager = [bound(x2, s2) for _ in range(20)]
    torch.cuda.synchronize()
    assert torch.equal(y_graph, want1)
    assert all(torch.equal(y, want2) for y in y_other + y_eager)


@pytest.mark.parametrize("m,k,rows,cols", [(1, 3072, 4, 3072), (3, 392, 4, 512), (5, 7168, 8, 7168)])
def test_pad_fp8_equals_torch_padding(m, k, rows, cols):
    """torch-scaled-mm's one-launch pad of FP8 operands: zeros around x, ones around the scales."""
    from rocm_fp8.kernels.quant_fp8 import pad_fp8

    x_q, x_s, _, _ = operands(m, 256, k, seed=m + k)
    want_q = torch.zeros(rows, cols, dtype=torch.uint8, device="cuda")
    want_q[:m, :k] = x_q.view(torch.uint8)
    want_s = torch.ones(rows, cols // 128, device="cuda")
    want_s[:m, : x_s.shape[1]] = x_s
    for scales in (x_s, x_s.t().contiguous().t(), x_s, x_s):  # the JIT launch, then the direct one
        q, s = pad_fp8(x_q, scales, rows, cols)
        assert torch.equal(q.view(torch.uint8), want_q) and torch.equal(s, want_s)
        assert s.stride() == (1, rows) and q.is_contiguous()


@pytest.mark.skipif(HIP, reason="cuBLASLt blockwise FP8 is NVIDIA-only")
@pytest.mark.parametrize("n,k", [(2048, 3072), (200, 392)], ids=["N2048-K3072", "N200-K392"])
@pytest.mark.parametrize("m", [1, 5, 8])
def test_torch_scaled_mm_bind_matches_run(m, n, k):
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend
    from rocm_fp8.toolchain import detect

    backend = TorchScaledMMBackend()
    if not backend.available(detect())[0]:
        pytest.skip(backend.available(detect())[1])
    w_q, w_s = quantize_weight(torch.randn(n, k, device="cuda") * 0.05, (128, 128), FP8)
    prepared = backend.prepare_weight(w_q, w_s)
    run = backend.bind(prepared, torch.bfloat16, max(1, 1 << (m - 1).bit_length()))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    xq, xs = backend.quantize_input(x, FP8)
    y = run(xq, xs)
    assert torch.equal(y, backend.run(xq, xs, prepared, torch.bfloat16))
    assert_close(y, reference_linear(xq, xs, w_q, w_s), 1e-2)


def test_a_launch_hook_sees_every_call():
    """While a launch hook (a profiler) is installed, bound calls take the JIT launch, which calls it."""
    import triton

    from rocm_fp8.kernels.triton_blockscale import BoundGemm, KernelConfig, blockscale_gemm

    runtime = triton.knobs.runtime
    cfg = KernelConfig(block_m=16, block_n=64)
    x_q, x_s, w_q, w_s = operands(2, 256, 512, seed=6)
    bound = BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    bound(x_q, x_s)
    assert bound.warmed
    seen = []

    def hook(metadata):
        seen.append(metadata)

    chain = hasattr(runtime.launch_enter_hook, "add")  # Triton >= 3.7: a HookChain; before: a callable
    old = runtime.launch_enter_hook
    if chain:
        runtime.launch_enter_hook.add(hook)
    else:
        runtime.launch_enter_hook = hook
    try:
        y = bound(x_q, x_s)
    finally:
        if chain:
            runtime.launch_enter_hook.remove(hook)
        else:
            runtime.launch_enter_hook = old
    assert seen, "the launch hook was not called"
    assert torch.equal(y, blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=cfg))
