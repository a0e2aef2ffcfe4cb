"""The Triton kernel and cuBLASLt blockwise FP8 on a real GPU, against a float64 reference.

Marked ``gpu``: skipped (by the conftest, and again here) where no GPU is visible, so a CPU-only
run can never pass them vacuously. Fresh random operands per test, outputs poisoned with NaN,
relative error and cosine against float64 of the dequantized operands; NaN never passes.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

from rocm_fp8.backends.base import Problem  # noqa: E402
from rocm_fp8.quant import QUANT_MAX  # noqa: E402
from rocm_fp8.toolchain import detect  # noqa: E402
from numerics import reference_linear  # noqa: E402

HIP = torch.version.hip is not None
FP8 = torch.float8_e4m3fnuz if HIP and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName \
    else torch.float8_e4m3fn

SHAPES = [(2112, 7168), (3072, 1536), (768, 3072), (24576, 1536), (7168, 2048)]
MS = [1, 3, 16, 33, 64, 256, 1000, 4096]


def operands(m, n, k, seed, mcontig=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    fmax = QUANT_MAX[FP8]
    kb, nb = -(-k // 128), -(-n // 128)
    x_q = ((torch.rand(m, k, device="cuda", generator=g) * 2 - 1) * fmax).to(FP8)
    w_q = ((torch.rand(n, k, device="cuda", generator=g) * 2 - 1) * fmax).to(FP8)
    x_s = torch.rand(m, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    w_s = torch.rand(nb, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    if mcontig:
        x_s = x_s.t().contiguous().t()
    return x_q, x_s, w_q, w_s


def assert_close(y, ref, tol=1e-2):
    assert torch.isfinite(y).all(), "NaN/Inf in the output (unwritten poisoned elements?)"
    yd = y.double()
    rel = ((yd - ref).norm() / ref.norm()).item()
    cos = torch.nn.functional.cosine_similarity(yd.flatten(), ref.flatten(), dim=0).item()
    assert rel < tol, f"relative error {rel:.3g}"
    assert cos > 0.9999, f"cosine {cos:.6f}"


@pytest.mark.parametrize("n,k", SHAPES, ids=[f"N{n}-K{k}" for n, k in SHAPES])
@pytest.mark.parametrize("m", MS)
def test_triton_tuned_config(n, k, m):
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.triton_blockscale import blockscale_gemm

    ops = operands(m, n, k, seed=m * 7 + n + k)
    cfg = TritonBackend().config_for(m, n, k, detect())
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    y = blockscale_gemm(*ops, torch.bfloat16, config=cfg, out=out)
    assert_close(y, reference_linear(*ops))


def _table_rows():
    from rocm_fp8 import kernel_configs

    tc = detect()
    table = kernel_configs.table_for(tc.device_name, tc.arch, tc.cu_count)  # own or family table
    if table is None:
        return []
    return [(n, k, row.m, row.config) for (n, k), rows in sorted(table.shapes.items()) for row in rows]


TABLE_ROWS = _table_rows()


@pytest.mark.skipif(not TABLE_ROWS, reason="no tuned table ships for this GPU")
@pytest.mark.parametrize("n,k,m,cfg", TABLE_ROWS, ids=[f"N{n}-K{k}-M{m}" for n, k, m, _ in TABLE_ROWS])
def test_every_tuned_row_is_as_accurate_as_its_output_dtype_allows(n, k, m, cfg):
    """A table row may be fast only if it is also accurate: within tune.ACCURACY_SLACK of the error of
    the exact result rounded to bf16 (no kernel can do better), at the row's own M (capped at 4096)."""
    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm
    from rocm_fp8.tune.operands import ACCURACY_SLACK, accuracy_floor, rel_error

    m = min(m, 4096)
    ops = operands(m, n, k, seed=m + n + 3 * k)
    ref = reference_linear(*ops)
    floor = accuracy_floor(ref, torch.bfloat16)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    y = blockscale_gemm(*ops, torch.bfloat16, config=KernelConfig.from_dict(cfg), out=out)
    assert torch.isfinite(y).all(), "NaN/Inf in the output"
    rel = rel_error(y, ref)
    assert rel <= ACCURACY_SLACK * floor, f"relative error {rel:.3g} vs bf16 floor {floor:.3g} with {cfg}"


CONFIGS = [
    dict(block_m=16, block_n=64, split_k=4),
    dict(block_m=64, block_n=128, split_k=3, num_stages=3),
    dict(block_m=128, block_n=128, num_warps=8, persistent=True),
    dict(block_m=128, block_n=256, num_warps=8, num_stages=3),
    dict(block_m=128, block_n=128, num_warps=8, tma=True),
    dict(block_m=128, block_n=128, num_warps=8, tma=True, persistent=True),
    dict(block_m=128, block_n=128, num_warps=8, frame=True),
    dict(block_m=128, block_n=256, num_warps=8, num_stages=3, frame=True, tma=True, persistent=True),
    dict(block_m=64, block_n=128, split_k=2, frame=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("m", [1, 77, 1030])
def test_triton_config_variants(cfg, m):
    """Every kernel variant the tuner may pick, on a partial-N shape, M-contiguous scales, fp16 out."""
    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm

    n, k = 2112, 1536
    ops = operands(m, n, k, seed=m + len(cfg), mcontig=True)
    out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
    try:
        y = blockscale_gemm(*ops, torch.float16, config=KernelConfig(**cfg), out=out)
    except Exception as exc:  # a variant this Triton cannot compile is not a wrong answer
        if cfg.get("tma"):
            pytest.skip(f"this Triton cannot build the variant: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    assert_close(y, reference_linear(*ops), tol=2e-3)


def test_triton_deterministic_and_no_races():
    from rocm_fp8.kernels.triton_blockscale import KernelConfig, blockscale_gemm

    ops = operands(64, 2112, 7168, seed=1)
    cfg = KernelConfig(block_m=64, block_n=64, split_k=8)
    first = blockscale_gemm(*ops, torch.bfloat16, config=cfg)
    for _ in range(5):
        assert torch.equal(blockscale_gemm(*ops, torch.bfloat16, config=cfg), first)


needs_scaled_mm = pytest.mark.skipif(
    HIP or torch.cuda.get_device_capability()[0] != 9, reason="cuBLASLt blockwise FP8 is used on sm90 only")


#: K/128 not a multiple of 4: cuBLASLt gave wrong results / NaN there until the backend padded K
UNALIGNED_K = [(3072, 384), (7168, 2304), (7168, 256)]


@needs_scaled_mm
@pytest.mark.parametrize("n,k", SHAPES + UNALIGNED_K, ids=[f"N{n}-K{k}" for n, k in SHAPES + UNALIGNED_K])
@pytest.mark.parametrize("m", [1, 2, 5, 16, 33, 256, 4096])
def test_torch_scaled_mm(n, k, m):
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend

    b = TorchScaledMMBackend()
    tc = detect()
    assert b.available(tc) == (True, ""), b.available(tc)
    assert b.supports(Problem(m, n, k), tc) == (True, "")
    x_q, x_s, w_q, w_s = operands(m, n, k, seed=m + 3 * n + k)
    prepared = b.prepare_weight(w_q, w_s)
    y = b.run(x_q, x_s, prepared, torch.bfloat16)
    assert y.shape == (m, n)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s))


@pytest.mark.parametrize("backend", ["triton", "torch-scaled-mm", "auto"])
def test_public_op_and_graph_capture(backend):
    import rocm_fp8

    if backend == "torch-scaled-mm" and (HIP or torch.cuda.get_device_capability()[0] != 9):
        pytest.skip("sm90 only")
    x_q, x_s, w_q, w_s = operands(16, 2112, 7168, seed=99)
    ref = reference_linear(x_q, x_s, w_q, w_s)
    y = rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=backend)
    assert_close(y, ref)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=backend)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        yg = rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend=backend)
    yg.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    # a bucket whose table row keeps an eager config runs another kernel outside the graph: both
    # pass the gate, and may differ in the last bits (another summation order)
    assert_close(yg, ref)
    first = yg.clone()
    yg.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(yg, first)  # replays are deterministic
