"""The Gluon sm90 kernels (kernels/gluon_sm90.py) on an H100/H200, against a float64 reference.

Marked ``gpu``. Skipped only where the kernel cannot run (not sm90, or a Triton other than 3.6, the
reason printed); on an sm90 GPU with Triton 3.6 every test runs. Fresh random operands per test,
outputs poisoned with NaN before the launch, the tuner's accuracy gate (relative error within 1.25x
of the exact result rounded to bf16) up to K = 16384, cosine > 0.9999, NaN never passes.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA GPU; none is visible", allow_module_level=True)

from rocm_fp8.kernels.gluon_support import unavailable_reason  # noqa: E402
from numerics import compare, reference_linear  # noqa: E402

WHY = unavailable_reason()
if WHY:
    pytest.skip(WHY, allow_module_level=True)

from rocm_fp8.kernels import gluon_sm90 as g  # noqa: E402
from rocm_fp8.quant import QUANT_MAX  # noqa: E402

FP8 = torch.float8_e4m3fn
# (v1's ws at 5 stages left the gate when the tuner stopped offering v1: fewer compiles per GPU run)
CONFIGS = {"ws-s4": g.GluonConfig(variant="ws", stages=4),
           "pipelined-s4": g.GluonConfig(variant="pipelined", stages=4),
           # v2: scales staged in the ring by the producer, a TMA-store epilogue; BN 256 as two wgmmas
           "ws2-s4": g.GluonConfig(variant="ws2", stages=4),
           "ws2-256-s3": g.GluonConfig(variant="ws2", block_n=256, stages=3),
           # v3: a 4th ring stage at BN 256, room made by one output buffer per consumer (the second
           # column block waits for the first's store to leave it) and scales loaded from global memory
           "ws2-256-s4-v3": g.GluonConfig(variant="ws2", block_n=256, stages=4, scales="load", epilogue_bufs=1),
           # v3: BN 192, a 128-wide and a 64-wide part per tile, swapped on odd tile columns (N = 7168: the
           # last tile's 128-wide part lies past N; N = 2048: its 64-wide part does)
           "ws2-192-s4": g.GluonConfig(variant="ws2", block_n=192, stages=4)}


def operands(m, n, k, seed, mcontig=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    fmax = QUANT_MAX[FP8]
    kb, nb = k // 128, -(-n // 128)
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
        g.gluon_blockscale_gemm(*ops, out_dtype, config=cfg, out=out)
    torch.cuda.synchronize()
    return out


CELLS = [(1000, 2112, 7168), (4096, 7168, 2048), (333, 24576, 1536), (1, 768, 3072), (64, 3072, 1536),
         (1024, 7168, 16384), (4096, 7168, 16384), (130, 2048, 3072)]


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("m,n,k", CELLS, ids=[f"M{m}-N{n}-K{k}" for m, n, k in CELLS])
def test_accuracy_gate(name, m, n, k):
    ops = operands(m, n, k, seed=m * 7 + n + k)
    gate(run(ops, CONFIGS[name]), reference_linear(*ops))


@pytest.mark.parametrize("name", ["ws-s4", "pipelined-s4", "ws2-s4"])
def test_m_contiguous_scales_and_ragged_n(name):
    ops = operands(777, 2048, 4096, seed=11, mcontig=True)  # activation scales M-contiguous (cuBLASLt's)
    gate(run(ops, CONFIGS[name]), reference_linear(*ops))
    ops = operands(300, 1000, 1024, seed=12)  # N not a multiple of 128: the last tile masked
    gate(run(ops, CONFIGS[name]), reference_linear(*ops))


@pytest.mark.parametrize("name", ["ws-s4", "ws2-s4", "ws2-256-s4-v3", "ws2-192-s4"])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_out_dtypes(out_dtype, name):
    ops = operands(500, 2112, 7168, seed=13)
    y = run(ops, CONFIGS[name], out_dtype)
    assert y.dtype == out_dtype
    gate(y, reference_linear(*ops))


@pytest.mark.parametrize("name", ["ws2-s4", "ws2-256-s3", "ws2-256-s4-v3", "ws2-192-s4"])
def test_ws2_output_views(name):
    """ws2 stores with TMA where the output allows it and with plain stores where it does not; both
    write exactly the view (the poisoned columns past it stay NaN)."""
    ops = operands(700, 1000, 1024, seed=21)
    ref = reference_linear(*ops)
    for width in (1008, 1004):  # rows of 2016 bytes (TMA-able) and 2008 bytes (plain stores)
        big = torch.full((700, width), float("nan"), dtype=torch.bfloat16, device="cuda")
        out = big[:, :1000]
        assert g.tma_storable(out) == (width == 1008)
        with torch.inference_mode():
            g.gluon_blockscale_gemm(*ops, torch.bfloat16, config=CONFIGS[name], out=out)
        torch.cuda.synchronize()
        gate(out, ref)
        assert big[:, 1000:].isnan().all(), f"row width {width}: columns past N were written"
    # an output that is not row-major at all (a transposed view) takes the plain stores too
    out_t = torch.full((1000, 700), float("nan"), dtype=torch.bfloat16, device="cuda").t()
    assert not g.tma_storable(out_t)
    with torch.inference_mode():
        g.gluon_blockscale_gemm(*ops, torch.bfloat16, config=CONFIGS[name], out=out_t)
    torch.cuda.synchronize()
    gate(out_t, ref)


@pytest.mark.parametrize("scales", ["smem", "ahead", "load"])
def test_ws2_scale_sources_and_store_paths(scales):
    """Each v2 change alone (a scale source, the TMA store or not) is a correct kernel, on ragged M
    and N (last tile partly past both), and the store path does not change a bit (the same
    accumulator rounded to bf16 either way)."""
    # (N = 2112 at BN 256: the last tile's second column block lies wholly past N)
    # (BN 256: the tiles whose second column block lies past N take v3's one-half K loop, with the
    # scales staged or loaded; "ahead" keeps the two-half loop)
    cells = [(1000, 2112, 7168, 128, 4)] + ([(333, 2112, 1536, 256, 3)] if scales != "ahead" else [])
    # (BN 192: ragged M and N, both tile parities; N = 1856 ends inside the last (odd) tile's 128-wide
    # part, which sits after its 64-wide part)
    cells += [(333, 1856, 1536, 192, 4)] if scales != "ahead" else []
    for m, n, k, bn, st in cells:
        ops = operands(m, n, k, seed=22 + m)
        ref = reference_linear(*ops)
        plain, tma = (run(ops, g.GluonConfig(variant="ws2", block_n=bn, stages=st, scales=scales, tma_store=s))
                      for s in (False, True))
        gate(plain, ref)
        gate(tma, ref)
        assert torch.equal(plain, tma), f"scales {scales}, BN {bn}: TMA and plain stores differ"


def test_block_n_256_and_64():
    ops = operands(1024, 4096, 7168, seed=14)
    ref = reference_linear(*ops)
    for bn, st in ((256, 3), (64, 6)):
        gate(run(ops, g.GluonConfig(variant="ws", block_n=bn, stages=st)), ref)


@pytest.mark.parametrize("name", ["ws-s4", "ws2-s4", "ws2-256-s4-v3", "ws2-192-s4"])
def test_cuda_graph_replay_equals_eager(name):
    ops = operands(2048, 4096, 7168, seed=15)
    cfg = CONFIGS[name]
    eager = run(ops, cfg)
    out = torch.full_like(eager, float("nan"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        g.launch(*ops, out, cfg)  # warm (compiled already)
        with torch.cuda.graph(graph, stream=stream):
            g.launch(*ops, out, cfg)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


def test_backend_binds_the_gluon_kernel_from_a_table_row():
    from rocm_fp8.backends.base import PreparedWeight
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.triton_blockscale import KernelConfig

    ops = operands(1500, 2112, 7168, seed=16)
    backend = TritonBackend()
    cfg = KernelConfig(block_m=128, block_n=128, num_stages=5, kernel="gluon_ws").validate()
    backend._configs[(2112, 7168, 2048)] = cfg  # what a table row naming the kernel gives
    bound = backend.bind(PreparedWeight("triton", ops[2], ops[3], 2112, 7168), torch.bfloat16, 2048)
    assert isinstance(bound, g.BoundGluonGemm)
    with torch.inference_mode():
        y = bound(ops[0], ops[1])
        gate(y, reference_linear(*ops))
        # an activation TMA cannot load (a view whose base is not 16-byte aligned) takes the Triton tile
        x_big = torch.empty((1501 * 7168 + 16,), dtype=FP8, device="cuda")
        x_view = x_big[1:1 + 1500 * 7168].view(1500, 7168)
        x_view.copy_(ops[0])
        y2 = bound(x_view, ops[1])
    gate(y2, reference_linear(*ops))


# (v2 BN 128 x 4 and BN 256 x 3, v3 BN 256 x 4: the rows the tuner's sm90 candidates offer at M >= 1024)
@pytest.mark.parametrize("bn,stages", [(128, 4), (256, 3), (256, 4), (192, 4)])
def test_backend_binds_ws2_from_a_table_row(bn, stages):
    """A table row naming gluon_ws2 binds the ws2 kernel with the staging that fits (v3's at BN 256
    x 4), passes the accuracy gate in bf16 (TMA store) and fp32 (plain stores), and an activation TMA
    cannot load takes the same tile in Triton."""
    from rocm_fp8.backends.base import PreparedWeight
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.gluon_support import ws2_staging
    from rocm_fp8.kernels.triton_blockscale import KernelConfig

    ops = operands(1500, 2112, 7168, seed=30 + bn + stages)
    ref = reference_linear(*ops)
    backend = TritonBackend()
    cfg = KernelConfig(block_m=128, block_n=bn, num_stages=stages, group_m=8, persistent=True,
                       kernel="gluon_ws2").validate()
    backend._configs[(2112, 7168, 2048)] = cfg  # what a table row naming the kernel gives
    pw = PreparedWeight("triton", ops[2], ops[3], 2112, 7168)
    for out_dtype in (torch.bfloat16, torch.float32):
        bound = backend.bind(pw, out_dtype, 2048)
        assert isinstance(bound, g.BoundGluonGemm)
        staging = ws2_staging(bn, stages)
        assert (bound.gcfg.variant, bound.gcfg.block_n, bound.gcfg.stages) == ("ws2", bn, stages)
        assert (bound.gcfg.scales, bound.gcfg.tma_store, bound.gcfg.epilogue_bufs) == tuple(staging.values())
        with torch.inference_mode():
            y = bound(ops[0], ops[1])
        torch.cuda.synchronize()
        assert y.dtype == out_dtype
        gate(y, ref)
    with torch.inference_mode():
        x_big = torch.empty((1501 * 7168 + 16,), dtype=FP8, device="cuda")
        x_view = x_big[1:1 + 1500 * 7168].view(1500, 7168)
        x_view.copy_(ops[0])
        y2 = bound(x_view, ops[1])
    gate(y2, ref)


def test_bad_input_names_the_argument():
    x_q, x_s, w_q, w_s = operands(64, 256, 384, seed=17)
    with pytest.raises(ValueError, match="x_q: expected K a multiple of 128"):
        k = 320
        g.gluon_blockscale_gemm(x_q[:, :k].contiguous(), torch.ones(64, 3, device="cuda"), w_q[:, :k].contiguous(),
                                torch.ones(2, 3, device="cuda"))
    with pytest.raises(ValueError, match="config.stages"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(block_n=256, stages=8))
    with pytest.raises(ValueError, match="config.stages"):  # + the 64 KiB output tile of the TMA store
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws2", block_n=256, stages=4))
    with pytest.raises(ValueError, match="config.scales: expected one of .*got 'tma'"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws2", scales="tma"))
    with pytest.raises(ValueError, match="config.block_n: ws2 takes 128, 192 or 256, got 64"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws2", block_n=64))
    with pytest.raises(ValueError, match="config.block_n: 192 is ws2's"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws", block_n=192))
    with pytest.raises(ValueError, match="config.scales: ws2 at BN 192 takes 'smem' or 'load', got 'ahead'"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws2", block_n=192, scales="ahead"))
    with pytest.raises(ValueError, match="config.epilogue_bufs: expected 1 or 2, got 3"):
        g.gluon_blockscale_gemm(x_q, x_s, w_q, w_s, config=g.GluonConfig(variant="ws2", epilogue_bufs=3))


@pytest.mark.parametrize("m,n,k", [(1000, 2112, 7168), (4096, 7168, 16384), (77, 1000, 384)])
def test_ws_lag_experiment(m, n, k):
    """The one-wgmma-in-flight consumer (an experiment the bench times; odd K/128 included)."""
    ops = operands(m, n, k, seed=m + n + k + 1)
    gate(run(ops, g.GluonConfig(variant="ws_lag", stages=4)), reference_linear(*ops))
