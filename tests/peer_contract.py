"""The contract vLLM and sglang hold their block-FP8 GEMMs to, written for ``w8a8_block_fp8_linear``.

Read from the peers' own tests (our code, their recipe and criterion):

* vLLM ``tests/kernels/quantization/test_block_fp8.py`` (``test_w8a8_block_fp8_matmul``):
  M in {1, 7, 8, 83, 4096}, N in {128, 512, 576, 7168, 13824}, K in {256, 3884, 4096, 13824, 16384},
  bfloat16 out, everything made under ``torch.inference_mode()``;
* sglang ``python/sglang/test/test_block_fp8.py`` (``TestW8A8BlockFP8Matmul``): M in {1, 7, 83, 512,
  2048}, N in {128, 512, 1024, 4096, 7748, 13824}, K in {256, 4096, 5120, 3884, 13824}, out float32,
  float16 and bfloat16;
* sgl-kernel ``tests/test_fp8_blockwise_gemm.py``: column-major (M-contiguous) activation scales.

Input recipe: FP8 operands from values uniform in [-fp8 max, fp8 max), scales uniform in
[0, 0.01). Reference: float32, accumulated one 128-wide K tile at a time, each tile's product
scaled by its activation and weight scales, then rounded to the output dtype. Criterion:
mean|out - ref| / mean|ref| < 1e-3 (NaN never passes).

Two documented roundings change what "the reference" means:

* a backend that cannot write the requested dtype computes bfloat16 and casts once (the decision's
  note says so): it is judged against the reference rounded to bfloat16 first, then to the output
  dtype, because bfloat16 rounding alone is ~1.4e-3 of mean|ref|, above the criterion;
* Triton's interpreter (``TRITON_INTERPRET=1``, the CPU) converts float32 to bfloat16 by truncation
  (toward zero) where GPUs round to nearest even: under the interpreter a bfloat16 result is judged
  against the float32 reference truncated the same way.
"""

from __future__ import annotations

import os

import torch

CRITERION = 1e-3

VLLM_M = (1, 7, 8, 83, 4096)
VLLM_N = (128, 512, 576, 7168, 13824)
VLLM_K = (256, 3884, 4096, 13824, 16384)
SGLANG_M = (1, 7, 83, 512, 2048)
SGLANG_N = (128, 512, 1024, 4096, 7748, 13824)
SGLANG_K = (256, 4096, 5120, 3884, 13824)
OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def make_case(m: int, n: int, k: int, fp8: torch.dtype, device, seed: int, mcontig_scale: bool = False):
    """The peers' recipe, made under inference mode as their tests (and their servers) make it."""
    g = torch.Generator(device=device).manual_seed(seed)
    fmax = torch.finfo(fp8).max
    kt, nt = -(-k // 128), -(-n // 128)
    with torch.inference_mode():
        a = ((torch.rand(m, k, generator=g, device=device) - 0.5) * 2 * fmax).clamp(-fmax, fmax).to(fp8)
        b = ((torch.rand(n, k, generator=g, device=device) - 0.5) * 2 * fmax).clamp(-fmax, fmax).to(fp8)
        a_s = torch.rand(m, kt, generator=g, device=device) * 0.01
        b_s = torch.rand(nt, kt, generator=g, device=device) * 0.01
        if mcontig_scale:  # physically [K/128, M], seen as [M, K/128]: strides (1, M)
            a_s = a_s.t().contiguous().t()
    return a, b, a_s, b_s


def reference_per_tile(a, b, a_s, b_s, block=(128, 128)) -> torch.Tensor:
    """float32, one K tile at a time (the peers' reference), before rounding to the output dtype."""
    bn, bk = block
    m, k = a.shape
    n = b.shape[0]
    af, bf = a.float(), b.float()
    w_scale_rows = b_s.float().repeat_interleave(bn, 0)[:n]          # [N, K tiles]
    c = torch.zeros(m, n, dtype=torch.float32, device=a.device)
    for t in range(-(-k // bk)):
        lo, hi = t * bk, min((t + 1) * bk, k)
        c += (af[:, lo:hi] @ bf[:, lo:hi].t()) * a_s[:, t:t + 1].float() * w_scale_rows[:, t][None, :]
    return c


def truncate_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """float32 -> bfloat16 rounding toward zero (what Triton's interpreter does)."""
    return (x.float().contiguous().view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)


def expected(ref32: torch.Tensor, out_dtype: torch.dtype, computes: torch.dtype, truncating: bool) -> torch.Tensor:
    """The reference as the backend writes it: computed in ``computes`` (rounded the way the device
    rounds), then cast once to ``out_dtype``."""
    if computes == torch.bfloat16:
        r = truncate_to_bf16(ref32) if truncating else ref32.to(torch.bfloat16)
        return r.to(out_dtype)
    return ref32.to(out_dtype)


def rel_mean_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    o, r = out.float(), ref.float()
    assert o.shape == r.shape, f"shape {tuple(o.shape)} != reference {tuple(r.shape)}"
    bad = (~torch.isfinite(o)).sum().item()
    assert bad == 0, f"{bad} non-finite values in the output"
    return ((o - r).abs().mean() / r.abs().mean()).item()
