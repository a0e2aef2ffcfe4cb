"""The tuner's operands and checks: random FP8 input sets, the float32 reference, and how accurate a
candidate must be (:func:`accurate_enough`: within ``ACCURACY_SLACK`` of the output dtype's rounding)."""

from __future__ import annotations

from rocm_fp8.quant import QUANT_MAX


def make_sets(m: int, n: int, k: int, fp8, nsets: int, device: str = "cuda", seed: int = 0):
    """``nsets`` independent random operand sets (x_q, x_scale, w_q, w_scale), never zeros."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    kb, nb = -(-k // 128), -(-n // 128)
    fmax = QUANT_MAX[fp8]
    sets = []
    for _ in range(nsets):
        x_q = ((torch.rand(m, k, device=device, generator=g) * 2 - 1) * fmax).to(fp8)
        w_q = ((torch.rand(n, k, device=device, generator=g) * 2 - 1) * fmax).to(fp8)
        x_s = torch.rand(m, kb, device=device, generator=g) * 1e-3 + 1e-4
        w_s = torch.rand(nb, kb, device=device, generator=g) * 1e-3 + 1e-4
        sets.append((x_q, x_s, w_q, w_s))
    return sets


def reference(x_q, x_s, w_q, w_s):
    """float32 dequantize-and-multiply on the GPU, TF32 off (the tests compare with float64 on the CPU)."""
    import torch

    k = x_q.shape[1]
    xs = x_s.float().repeat_interleave(128, 1)[:, :k]
    ws = w_s.float().repeat_interleave(128, 0)[: w_q.shape[0]].repeat_interleave(128, 1)[:, :k]
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return (x_q.float() * xs) @ (w_q.float() * ws).t()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


#: a candidate's relative error may exceed the best an output of this dtype can do (the exact
#: result rounded to it) by at most this factor; configs that lose accuracy never enter a table
ACCURACY_SLACK = 1.25


def accuracy_floor(ref, out_dtype) -> float:
    """Relative error of the float32 reference merely rounded to ``out_dtype``: no kernel does better."""
    return rel_error(ref.to(out_dtype), ref)


def accurate_enough(err: float, floor: float) -> bool:
    return err <= ACCURACY_SLACK * floor + 1e-7  # False for NaN; rel_error gives inf for non-finite output


def rel_error(y, ref) -> float:
    import torch

    if not torch.isfinite(y).all():
        return float("inf")
    return ((y.float() - ref).norm() / ref.norm()).item()
