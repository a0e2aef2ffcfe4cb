"""Whether the Gluon sm90 kernel (:mod:`rocm_fp8.kernels.gluon_sm90`) can run here, without importing it.

The kernel uses Triton 3.6's Gluon API (``triton.experimental.gluon``: warp_specialize, Hopper
warpgroup_mma, mbarrier, TMA), which changes between Triton releases, and Hopper-only instructions
(wgmma, setmaxnreg). :func:`unavailable_reason` says why it cannot run (None when it can);
:func:`rocm_fp8.kernels.triton_blockscale.gluon_module` imports the kernel only then, so
``import rocm_fp8`` and other Triton versions never touch Gluon.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional

#: the Triton releases whose Gluon API the kernel was written against and compiled with
SUPPORTED_TRITON = ("3.6.",)


def triton_version() -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("triton")
    except PackageNotFoundError:
        import triton

        return getattr(triton, "__version__", None)


@functools.lru_cache(maxsize=None)
def compiler_reason() -> Optional[str]:
    """Why the kernel cannot be compiled by this Python's Triton (None when it can)."""
    v = triton_version()
    if v is None:
        return "gluon_ws: the 'triton' package is not installed"
    if not v.startswith(SUPPORTED_TRITON):
        return (f"gluon_ws: written for Triton {'/'.join(s + 'x' for s in SUPPORTED_TRITON)} (its Gluon API), "
                f"this is Triton {v}")
    return None


def unavailable_reason(device=None) -> Optional[str]:
    """Why the Gluon kernel cannot run on ``device`` (default: the current CUDA device); None if it can."""
    why = compiler_reason()
    if why:
        return why
    import torch

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "gluon_ws: Gluon kernels do not run under TRITON_INTERPRET=1"
    if torch.version.hip is not None:
        return "gluon_ws: an NVIDIA Hopper kernel; this is a ROCm build of torch"
    if not torch.cuda.is_available():
        return "gluon_ws: no CUDA GPU is visible (needs an sm90 GPU: H100/H200)"
    if device is not None and getattr(device, "type", "cuda") != "cuda":
        return f"gluon_ws: needs a CUDA tensor, got one on {device}"
    idx = getattr(device, "index", None)
    cap = _capability(idx if idx is not None else torch.cuda.current_device())
    if cap != (9, 0):
        return f"gluon_ws: needs an sm90 GPU (wgmma, setmaxnreg), this one is sm{cap[0]}{cap[1]}"
    return None


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(index)


def tma_ready(t) -> bool:
    """Whether a 2-D FP8 operand suits the kernel's TMA loads: K-contiguous, K % 128 == 0, base
    pointer and row stride 16-byte aligned (the checks of gluon_sm90.check_tma_operands, as a test)."""
    return (t.dim() == 2 and t.stride(1) == 1 and t.shape[1] % 128 == 0 and t.data_ptr() % 16 == 0
            and (t.stride(0) * t.element_size()) % 16 == 0)


#: the most shared memory one block may opt in to on sm90 (H100/H200): 227 KiB
SM90_SHARED_BYTES = 232448


def gluon_shared_bytes(variant: str, block_n: int, stages: int, scales: str = "smem", tma_store: bool = True,
                       epilogue_bufs: int = 2, out_bytes: int = 2) -> int:
    """Shared memory of a Gluon sm90 config (what the compiled kernel reports, within 1 KiB), in
    plain arithmetic so a table row can be checked without importing Gluon: the ring's FP8 A
    (128 x 128) and B (block_n x 128) tiles and the barriers; for ws2 the output staging of its TMA
    store (per consumer ``epilogue_bufs`` 64 x 128 buffers, 2 at block_n 256 unless told 1) and the
    staged scales (scales "smem": 128 activation scales and 64 per 128-wide weight block, per slot)."""
    ring = stages * (128 + block_n) * 128 + 1024
    if variant == "ws2" and tma_store:
        if block_n == 192:  # per consumer a 64 x 128 and a 64 x 64 buffer
            ring += 2 * 64 * 192 * out_bytes
        else:
            sub = min(block_n, 128)
            bufs = min(epilogue_bufs, block_n // sub)
            ring += 2 * bufs * 64 * sub * out_bytes
    if variant == "ws2" and scales == "smem":
        ring += stages * (128 + -(-block_n // 128) * 64) * 4
    return ring


def ws2_staging(block_n: int, stages: int) -> Optional[dict]:
    """The richest ws2 staging that fits ``block_n`` x ``stages`` in sm90's shared memory, as
    GluonConfig fields (``scales``, ``tma_store``, ``epilogue_bufs``), or None when none does. In
    order: staged scales and one output buffer per consumer and 128-wide column block (v2); one
    output buffer per consumer, reused by the second column block (v3); that with the scales loaded
    from global memory (v3, BN 256 x 4 stages); plain stores (no output staging)."""
    for scales, tma_store, bufs in (("smem", True, 2), ("smem", True, 1), ("load", True, 1), ("smem", False, 1),
                                    ("load", False, 1)):
        if gluon_shared_bytes("ws2", block_n, stages, scales, tma_store, bufs) <= SM90_SHARED_BYTES:
            return {"scales": scales, "tma_store": tma_store, "epilogue_bufs": bufs}
    return None
