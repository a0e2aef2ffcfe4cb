"""Numerical checks shared by the tests: float64 reference, relative error, cosine, NaN never passes."""

from __future__ import annotations

import torch


def reference_linear(x_q, x_scale, w_q, w_scale, block=(128, 128), bias=None) -> torch.Tensor:
    """float64 dequantize + matmul: the ground truth the tests compare with."""
    bn, bk = block
    n, k = w_q.shape
    x = x_q.double() * x_scale.double().repeat_interleave(bk, -1)[..., :k]  # K may end in a partial group
    s = w_scale.double().repeat_interleave(bn, 0)[:n].repeat_interleave(bk, 1)[:, :k]
    y = x @ (w_q.double() * s).t()
    if bias is not None:
        y = y + bias.double()
    return y


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(relative Frobenius error, cosine similarity); NaN/Inf in ``out`` fail loudly."""
    out64 = out.double().cpu()
    ref64 = ref.double().cpu()
    assert out64.shape == ref64.shape, f"shape {tuple(out64.shape)} != reference {tuple(ref64.shape)}"
    assert torch.isfinite(out64).all(), f"{(~torch.isfinite(out64)).sum().item()} non-finite values in the output"
    rel = ((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30)).item()
    cos = torch.nn.functional.cosine_similarity(out64.flatten(), ref64.flatten(), dim=0).item()
    return rel, cos


def assert_close(out, ref, rel_tol: float, cos_min: float = 0.9999) -> None:
    rel, cos = compare(out, ref)
    assert rel <= rel_tol, f"relative error {rel:.3e} > {rel_tol:.1e} (cosine {cos:.6f})"
    assert cos >= cos_min, f"cosine {cos:.6f} < {cos_min} (relative error {rel:.3e})"
