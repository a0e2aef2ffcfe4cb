"""Split-K in one launch on a real GPU: deterministic, accurate, capturable, counters left at zero.

The last split of each output tile to arrive (a gpu-scope acq_rel counter per tile) sums the fp32
partials in the fixed order s = 0..split-1 (``blockscale_jit._splitk_epilogue``). Arrival order
changes from launch to launch on a GPU; the result bits must not. Checked here:

* 50 launches per config on fresh random activations: a rerun on the same input, the direct
  (warmed) launch and the JIT launch (into a NaN-poisoned output) give the same bits; each result
  passes the tuner's accuracy gate (within 1.25x of the bf16 rounding floor of the float32
  reference); the per-stream counter buffer is all zeros afterwards. Configs: the H200 table's
  M = 16 row for (2048, 3072) (split 8), a split-4 64x64 tile, a persistent grid with split 2, and
  TMA loads with split 4.
* CUDA/HIP graphs of split-K bound calls: replays over fresh inputs copied into the captured
  buffers (output poisoned before each) give the eager bits every time, and the graph's own
  counter buffer (allocated and zeroed inside the capture) is zero after the replays; two graphs
  captured back to back replay correctly in either order, the later one first (before the
  earlier one has ever run).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

from rocm_fp8.kernels import triton_blockscale as tb  # noqa: E402
from rocm_fp8.quant import QUANT_MAX  # noqa: E402
from rocm_fp8.tune.operands import accuracy_floor, accurate_enough, reference, rel_error  # noqa: E402

HIP = torch.version.hip is not None
GFX94 = HIP and "gfx94" in torch.cuda.get_device_properties(0).gcnArchName
FP8 = torch.float8_e4m3fnuz if GFX94 else torch.float8_e4m3fn
N, K = 2048, 3072
REPEATS = 50

CONFIGS = {
    "h200-M16-split8": dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4),
    "64x64-split4": dict(block_m=64, block_n=64, group_m=8, split_k=4, num_warps=4, num_stages=4),
    "persistent-split2": dict(block_m=64, block_n=128, split_k=2, persistent=True, programs_per_sm=2),
    "tma-split4": dict(block_m=64, block_n=128, split_k=4, tma=True),
}


def activation(m, k, g):
    kb = -(-k // 128)
    x_q = ((torch.rand(m, k, device="cuda", generator=g) * 2 - 1) * QUANT_MAX[FP8]).to(FP8)
    x_s = torch.rand(m, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    return x_q, x_s


def weight(n, k, g):
    nb, kb = -(-n // 128), -(-k // 128)
    w_q = ((torch.rand(n, k, device="cuda", generator=g) * 2 - 1) * QUANT_MAX[FP8]).to(FP8)
    w_s = torch.rand(nb, kb, device="cuda", generator=g) * 1e-3 + 1e-4
    return w_q, w_s


def gate(y, x_q, x_s, w_q, w_s, what):
    ref = reference(x_q, x_s, w_q, w_s)
    err, floor = rel_error(y, ref), accuracy_floor(ref, y.dtype)
    assert accurate_enough(err, floor), f"{what}: relative error {err:.3e} > 1.25 x floor {floor:.3e}"


def counters_zero() -> bool:
    torch.cuda.synchronize()
    return all(int(cnt.count_nonzero()) == 0 for _, cnt in tb._splitk.values())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_split_k_reruns_are_bit_identical_and_accurate(name):
    cfg = tb.KernelConfig(**CONFIGS[name]).validate()
    g = torch.Generator(device="cuda").manual_seed(1234)
    with torch.inference_mode():
        w_q, w_s = weight(N, K, g)
        bound = tb.BoundGemm(w_q, w_s, torch.bfloat16, cfg)
        ms = (16, 1, 13, 64, 40) if cfg.block_m >= 64 else (16, 1, 13, 5, 16)
        for i in range(REPEATS):
            m = ms[i % len(ms)]
            x_q, x_s = activation(m, K, g)
            y = bound(x_q, x_s)
            assert bound.warmed, "the first canonical call should have warmed the direct launch"
            again = bound(x_q, x_s)
            poisoned = torch.full((m, N), float("nan"), dtype=torch.bfloat16, device="cuda")
            jit = tb.blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=cfg, out=poisoned)
            assert torch.equal(y, again), f"launch {i} (M={m}): a rerun on the same input differs"
            assert torch.equal(y, jit), f"launch {i} (M={m}): the JIT launch differs from the direct one"
            gate(y, x_q, x_s, w_q, w_s, f"launch {i} (M={m})")
    assert tb._splitk and counters_zero(), "a split-K launch left a tile counter set"


def test_split_k_graph_replays_stay_correct_and_counters_zero(monkeypatch):
    cfg = tb.KernelConfig(**CONFIGS["h200-M16-split8"]).validate()
    g = torch.Generator(device="cuda").manual_seed(99)
    m = 16
    w_q, w_s = weight(N, K, g)
    bound = tb.BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    x_q, x_s = activation(m, K, g)
    bound(x_q, x_s)  # warm: later calls, the captured one included, take the direct launch
    assert bound.warmed

    taken = []
    real = tb._splitk_state

    def recording(*args):  # the real function; keeps what the captured call got
        state = real(*args)
        taken.append(state)
        return state

    monkeypatch.setattr(tb, "_splitk_state", recording)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        bound(x_q, x_s)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    taken.clear()
    with torch.cuda.graph(graph):
        y_graph = bound(x_q, x_s)
    assert len(taken) == 1, "the captured call should have taken one split-K state"
    graph_counters = taken[0][1]
    assert all(graph_counters is not cnt for _, cnt in tb._splitk.values()), "the graph shares eager counters"

    for i in range(20):
        fresh_x, fresh_s = activation(m, K, g)
        x_q.copy_(fresh_x)
        x_s.copy_(fresh_s)
        y_graph.fill_(float("nan"))  # poison: the replay must write every element
        graph.replay()
        want = bound(fresh_x, fresh_s)  # eager, on the per-stream buffers
        torch.cuda.synchronize()
        assert torch.equal(y_graph, want), f"replay {i} differs from the eager call"
        gate(y_graph, fresh_x, fresh_s, w_q, w_s, f"replay {i}")
        assert int(graph_counters.count_nonzero()) == 0, f"replay {i} left a counter of the graph set"
    assert counters_zero()


def test_split_k_graph_replayed_before_an_earlier_capture_ever_runs():
    """Two graphs captured back to back (as serving stacks capture one per batch size); the second is
    replayed first. Its counters must not depend on anything the first graph's (never run) replay
    would have done."""
    cfg = tb.KernelConfig(**CONFIGS["h200-M16-split8"]).validate()
    g = torch.Generator(device="cuda").manual_seed(7)
    w_q, w_s = weight(N, K, g)
    bound = tb.BoundGemm(w_q, w_s, torch.bfloat16, cfg)
    inputs = {m: activation(m, K, g) for m in (1, 16)}
    for x_q, x_s in inputs.values():
        bound(x_q, x_s)  # warm, eager
    torch.cuda.synchronize()
    graphs, outs = {}, {}
    for m, (x_q, x_s) in inputs.items():
        graphs[m] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[m]):
            outs[m] = bound(x_q, x_s)
    for m in (16, 1, 16, 1):
        outs[m].fill_(float("nan"))
        graphs[m].replay()
        x_q, x_s = inputs[m]
        want = bound(x_q, x_s)
        torch.cuda.synchronize()
        assert torch.equal(outs[m], want), f"graph M={m} differs from the eager call"
        gate(outs[m], x_q, x_s, w_q, w_s, f"graph M={m}")
    assert counters_zero()
