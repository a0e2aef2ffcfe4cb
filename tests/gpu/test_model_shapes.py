"""Model-shape correctness on the GPU: MiniMax-M2.5 and DeepSeek-V3 linear layers through backend="auto".

For each (N, K) of the probe presets (docs/reference.md section 7) and a few M on both sides of 16-row tile
boundaries, the op runs with whatever backend the dispatcher picks on this GPU and image, and is
compared with a float64 dequantize-and-matmul of the same FP8 operands:

* NaN/Inf anywhere fails (``numerics.compare``);
* relative Frobenius error and cosine over the whole output;
* the worst row's relative error, because a wrong kernel can break a few rows near tile boundaries
  while the global norm still looks fine (docs/reference.md section 2, defect 3).

The chosen backend goes into the JUnit XML as a property, so the matrix report can show what ran.
Runs on ROCm (gfx942 uses e4m3fnuz, gfx950 e4m3fn) and on NVIDIA (e4m3fn).
"""

from __future__ import annotations

import pytest
import torch
from numerics import compare, reference_linear

import rocm_fp8
from rocm_fp8 import quantize_activation, quantize_weight, w8a8_block_fp8_linear
from rocm_fp8.probe import PRESETS

pytestmark = pytest.mark.gpu

MODELS = {
    "minimax-m2.5": ("minimax-m2.5-tp4", "minimax-m2.5-ep", "minimax-m2.5-tp1"),
    "deepseek-v3": ("deepseek-v3-tp1", "deepseek-v3-tp8"),
}
#: decode, just past a 16-row tile, just below a 256 boundary, and a prefill-sized M past a boundary
MS = (1, 17, 255, 2049)
#: bf16 output rounding dominates: ~2^-9 per element
REL_TOL = 8e-3
ROW_REL_TOL = 5e-2
COS_MIN = 0.9999


def _shapes() -> list[tuple[str, int, int]]:
    out = []
    for model, presets in MODELS.items():
        seen = set()
        for preset in presets:
            for n, k in PRESETS[preset]:
                if (n, k) not in seen:
                    seen.add((n, k))
                    out.append((model, n, k))
    return out


SHAPES = _shapes()


@pytest.fixture(scope="module")
def fp8_dtype():
    from rocm_fp8.quant import resolve_fp8_dtype
    from rocm_fp8.toolchain import detect

    return resolve_fp8_dtype(detect().fp8_flavour)


def test_every_model_preset_is_covered():
    """The presets this module sweeps exist in the probe (a rename must not silently shrink the sweep)."""
    for presets in MODELS.values():
        for preset in presets:
            assert PRESETS.get(preset), f"probe preset {preset!r} is missing or empty"
    assert len(SHAPES) >= 15


@pytest.mark.parametrize("m", MS, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("model,n,k", SHAPES, ids=[f"{m}-N{n}-K{k}" for m, n, k in SHAPES])
def test_auto_backend_matches_float64_reference(model, n, k, m, fp8_dtype, rng, record_property):
    device = torch.device("cuda", torch.cuda.current_device())
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng).item())
    gen = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(n, k, generator=gen, device=device) * 0.05
    wq, ws = quantize_weight(w, (128, 128), dtype=fp8_dtype)
    del w
    x = torch.randn(m, k, generator=gen, device=device) * 3
    xq, xs = quantize_activation(x, 128, dtype=fp8_dtype)

    decision = rocm_fp8.explain(n, k, m)
    record_property("backend", decision.backend)
    record_property("fp8", str(fp8_dtype).replace("torch.", ""))

    y = w8a8_block_fp8_linear(xq, wq, ws, input_scale=xs, backend="auto")
    torch.cuda.synchronize()
    assert y.shape == (m, n) and y.dtype == torch.bfloat16, f"got {tuple(y.shape)} {y.dtype}"

    ref = reference_linear(xq, xs, wq, ws)
    rel, cos = compare(y, ref)  # raises on NaN/Inf
    diff = (y.double() - ref).norm(dim=1)
    row_rel = (diff / ref.norm(dim=1).clamp_min(1e-30)).cpu()
    worst = int(row_rel.argmax())
    record_property("rel_err", f"{rel:.3e}")
    record_property("cosine", f"{cos:.6f}")
    where = f"{model} N={n} K={k} M={m} backend={decision.backend} seed={seed}"
    assert rel <= REL_TOL, f"{where}: relative error {rel:.3e} > {REL_TOL:.0e} (cosine {cos:.6f})"
    assert cos >= COS_MIN, f"{where}: cosine {cos:.6f} < {COS_MIN}"
    assert row_rel[worst] <= ROW_REL_TOL, (
        f"{where}: row {worst} has relative error {row_rel[worst]:.3e} > {ROW_REL_TOL:.0e} "
        f"({int((row_rel > ROW_REL_TOL).sum())} bad rows of {m})")
