"""Fused activation quantization: ``x [M, K]`` float -> ``(x_q [M, K] fp8, x_scale [M, ceil(K/G)] fp32)``.

One Triton kernel does what :func:`rocm_fp8.quant.quantize_activation` does with about nine eager
torch ops, with the same result bit for bit: per 1 x G group (G = 128 by default),
``scale = max(amax / fmax, 1e-12)`` and ``x_q = fp8(clamp(x / scale, -fmax, fmax))`` with fmax 448
for e4m3fn and 224 for e4m3fnuz (see ``rocm_fp8.quant.QUANT_MAX``). A partial last group (K not a
multiple of G) is quantized over its real elements, as if zero-padded. The scale is written
row-major (strides (ceil(K/G), 1)) or column-major (strides (1, M), what cuBLASLt and aiter's
bpreshuffle GEMM read), so no transposing copy follows.

Bit-exactness on every target: ``x / scale`` is an IEEE round-to-nearest division (``div_rn``;
Triton's ``/`` is approximate on NVIDIA); ``amax / fmax`` is computed as torch computes it on that
device (on a GPU torch multiplies by the fp32 reciprocal of a Python-scalar divisor, on the CPU it
divides); the value is rounded to the FP8 grid in fp32 arithmetic (round to nearest even) before
the cast, so the cast itself is exact and no hardware or interpreter rounding mode is involved (the
interpreter's fp32 -> fp8 cast rounds ties away from zero); the sign bit is set by hand (GPU
conversions turn -0.0 into +0, torch keeps it in e4m3fn).

``rows``/``cols`` make the same launch write zero-padded outputs (the aligned M and K that
torch-scaled-mm's cuBLASLt call needs). :func:`pad_fp8` pads operands that arrive already quantized
(x with zeros, scales with ones, M-contiguous) in one launch.

Launches are warmed per (input dtype, FP8 dtype, K, group, scale layout) like the GEMM's
(:mod:`rocm_fp8.kernels.fast_launch`); anything unusual takes Triton's normal launch.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import torch
import triton
import triton.language as tl  # noqa: F401 - used by the kernel

from rocm_fp8.kernels import fast_launch

_IN_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: the FP8 flavours and the largest magnitude each is quantized to (as rocm_fp8.quant.QUANT_MAX)
_FP8 = {torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 224.0}
SCALE_LAYOUTS = ("row", "col")


@triton.jit
def quantize_groups(x, FP8_TY: tl.constexpr, FNUZ: tl.constexpr, RECIPROCAL: tl.constexpr):
    """``x [R, G]`` fp32, one group per row -> (FP8 values [R, G], fp32 dequant scales [R]).

    Also the GEMM's prologue when it quantizes its activation tile itself (``QUANT_A``).
    """
    FMAX: tl.constexpr = 224.0 if FNUZ else 448.0
    MIN_NORMAL_EXP: tl.constexpr = -7 if FNUZ else -6
    amax = tl.max(tl.abs(x), axis=1)
    if RECIPROCAL:  # torch on a GPU divides by a Python scalar as a product with its fp32 reciprocal
        scale = tl.maximum(amax * (1.0 / FMAX), 1e-12)
    else:
        scale = tl.maximum(tl.math.div_rn(amax, tl.full(amax.shape, FMAX, tl.float32)), 1e-12)
    v = tl.math.div_rn(x, tl.broadcast_to(scale[:, None], x.shape))
    v = tl.minimum(tl.maximum(v, -FMAX), FMAX)
    # Round |v| to the FP8 grid (3 mantissa bits; fixed spacing below the smallest normal) by adding
    # and removing 2^23 ulps: fp32 addition rounds to nearest even at exactly that ulp.
    mag = tl.abs(v)
    biased = (mag.to(tl.int32, bitcast=True) >> 23) & 0xFF
    biased = tl.maximum(biased, MIN_NORMAL_EXP + 127)
    magic = ((biased + 20) << 23).to(tl.float32, bitcast=True)
    mag = (mag + magic) - magic
    # Cast the magnitude (exact now) and set the sign bit ourselves: GPUs convert -0.0 to +0, torch
    # keeps it (0x80) in e4m3fn; e4m3fnuz has no -0 (0x80 is its NaN), so there zero stays unsigned.
    bits = mag.to(FP8_TY).to(tl.uint8, bitcast=True)
    negative = v.to(tl.int32, bitcast=True) < 0
    if FNUZ:
        negative = negative & (bits != 0)
    bits = tl.where(negative, bits | 0x80, bits)
    return bits.to(FP8_TY, bitcast=True), scale


@triton.jit(do_not_specialize=["M", "stride_sm", "stride_sg"])
def _quant_kernel(x_ptr, q_ptr, s_ptr, M, K, KP, stride_xm, stride_xk, stride_qm, stride_sm, stride_sg,
                  RECIPROCAL: tl.constexpr, FNUZ: tl.constexpr, GROUP: tl.constexpr, GROUPS: tl.constexpr):
    # The grid has one program row per output row (MP >= M); rows >= M and columns in [K, KP) are
    # the zero padding: loaded as zeros, they quantize to 0 with the scale of an all-zero group.
    row = tl.program_id(0).to(tl.int64)
    groups = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    cols = groups[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    k_live = K * (row < M).to(tl.int64)  # 0 for a padding row: nothing is loaded
    x = tl.load(x_ptr + row * stride_xm + cols * stride_xk, mask=cols < k_live, other=0.0).to(tl.float32)
    q, scale = quantize_groups(x, q_ptr.dtype.element_ty, FNUZ, RECIPROCAL)
    tl.store(q_ptr + row * stride_qm + cols, q, mask=cols < KP)
    tl.store(s_ptr + row * stride_sm + groups * stride_sg, scale, mask=groups * GROUP < KP)


def _fail(arg: str, expected: str, got: Any) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def check_quant_args(x: torch.Tensor, fp8_dtype: torch.dtype, group_size: int, scale_layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        _fail("x", "a 2-D [M, K] tensor", f"shape {tuple(x.shape)}")
    if x.dtype not in _IN_DTYPES:
        raise TypeError(f"x: expected a bfloat16/float16/float32 tensor, got {x.dtype}")
    if fp8_dtype not in _FP8:
        raise TypeError(f"fp8_dtype: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got {fp8_dtype}")
    if (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 16 or group_size > 1024
            or group_size & (group_size - 1)):
        _fail("group_size", "a power of two in [16, 1024]", repr(group_size))
    if scale_layout not in SCALE_LAYOUTS:
        _fail("scale_layout", "'row' or 'col'", repr(scale_layout))
    if x.device.type == "cpu" and not fast_launch.interpreting():
        _fail("x", "a GPU tensor (or TRITON_INTERPRET=1 for CPU tensors)", "a CPU tensor")


class _QuantLaunch:
    """One warmed launch of the quant kernel: fixed input dtype, FP8 dtype, K, group and layout."""

    __slots__ = ("kernel", "k", "group", "groups_per_program", "constexprs", "col")

    def __init__(self, k: int, fp8_dtype: torch.dtype, group: int, col: bool, on_gpu: bool) -> None:
        n_groups = -(-k // group)
        # Several groups per program (fewer, fuller programs); a power of two for tl.arange.
        self.groups_per_program = 1 if n_groups == 1 else 2 if n_groups == 2 else 4
        self.constexprs = (on_gpu, fp8_dtype == torch.float8_e4m3fnuz, group, self.groups_per_program)
        self.kernel = None
        self.k, self.group, self.col = k, group, col


_launches: dict[tuple, _QuantLaunch] = {}


#: M up to which ``scratch=True`` reuses buffers (decode-sized activations: a few KiB each)
SCRATCH_MAX_M = 64
# (caller, device, stream, thread, fp8 dtype, rows, cols, groups, layout) -> (x_q, x_scale) of scratch calls
_scratch: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _outputs(mp: int, kp: int, n_groups: int, fp8_dtype, col: bool, dev, scratch: bool = False,
             tag: str = "quant") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_q [mp, kp] fp8, x_scale [mp, n_groups] fp32, M-contiguous if col)``: fresh tensors, or with
    ``scratch`` (on a GPU, mp <= SCRATCH_MAX_M, outside a graph capture) the buffers kept for this
    (caller tag, device, stream, thread, shape), made on first use."""
    if scratch and dev.type == "cuda" and 0 < mp <= SCRATCH_MAX_M and not torch.cuda.is_current_stream_capturing():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        key = (tag, index, fast_launch.stream_getter()(index), threading.get_ident(), fp8_dtype, mp, kp, n_groups, col)
        outs = _scratch.get(key)
        if outs is None:
            outs = _scratch[key] = _outputs(mp, kp, n_groups, fp8_dtype, col, dev)
        return outs
    x_q = torch.empty((mp, kp), dtype=fp8_dtype, device=dev)
    if col:
        x_scale = torch.empty((n_groups, mp), dtype=torch.float32, device=dev).t()
    else:
        x_scale = torch.empty((mp, n_groups), dtype=torch.float32, device=dev)
    return x_q, x_scale


def quantize_fp8(x: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn, group_size: int = 128,
                 scale_layout: str = "row", check: bool = True, rows: Optional[int] = None,
                 cols: Optional[int] = None, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` bf16/fp16/fp32 (any strides) -> ``(x_q [M, K] fp8 contiguous, x_scale [M, ceil(K/G)] fp32)``.

    ``scale_layout`` "row" gives strides (ceil(K/G), 1), "col" strides (1, M).

    ``rows`` >= M and ``cols`` >= K ask for zero-padded outputs, written by the same launch:
    ``x_q [rows, cols]`` and ``x_scale [rows, ceil(cols/G)]`` (strides (1, rows) for "col"), exactly
    what quantizing ``x`` zero-padded to ``[rows, cols]`` gives (padding quantizes to 0, the scale of
    an all-zero group is 1e-12). This is the operand layout a GEMM that needs aligned M or K reads
    (torch-scaled-mm), with no padding copies after the quantization.

    ``scratch=True`` (the dispatcher's bound calls, which hand the result straight to a GEMM on the
    same stream): on a GPU, for M up to :data:`SCRATCH_MAX_M` and outside a graph capture, the outputs
    are buffers kept per (device, stream, thread, shape) and overwritten by the next such call, so
    the call allocates nothing (two allocations were a third of its host time). Work on one stream
    runs in order, so the GEMM has read them before the next quantization writes them.
    """
    if check:
        check_quant_args(x, fp8_dtype, group_size, scale_layout)
    m, k = x.shape
    mp = m if rows is None else rows
    kp = k if cols is None else cols
    if check and (mp < m or kp < k):
        _fail("rows/cols", f"at least the input's [M={m}, K={k}]", f"rows={rows}, cols={cols}")
    col = scale_layout == "col"
    on_gpu = x.is_cuda
    key = (x.dtype, fp8_dtype, k, kp, group_size, col, on_gpu)
    launch = _launches.get(key)
    if launch is None:
        launch = _launches[key] = _QuantLaunch(kp, fp8_dtype, group_size, col, on_gpu)
    dev = x.device
    n_groups = -(-kp // group_size)
    sm, sg = (1, mp) if col else (n_groups, 1)
    x_q, x_scale = _outputs(mp, kp, n_groups, fp8_dtype, col, dev, scratch)
    if mp == 0:
        return x_q, x_scale
    grid_y = -(-n_groups // launch.groups_per_program)
    kernel = launch.kernel
    x_ptr = x.data_ptr()
    if kernel is not None:
        xs = x.stride()
        if xs[1] == 1 and (xs[0] == k or m == 1) and not x_ptr & 15 and fast_launch.hooks_idle():
            kernel(mp, grid_y, fast_launch.stream_getter()(dev.index), x_ptr, x_q, x_scale, m, k, kp, k, 1, kp,
                   sm, sg, *launch.constexprs)
            return x_q, x_scale
    compiled = _quant_kernel[(mp, grid_y)](x, x_q, x_scale, m, k, kp, x.stride(0), x.stride(1), kp, sm, sg,
                                           *launch.constexprs, num_warps=4)
    if kernel is None and on_gpu and x.stride(1) == 1 and x.stride(0) == k and not x_ptr & 15:
        launch.kernel = fast_launch.warm(compiled)
    return x_q, x_scale


# -- padding FP8 operands that are already quantized ----------------------------------------------------
@triton.jit(do_not_specialize=["M", "stride_xm", "stride_sm", "stride_sg", "stride_om", "stride_og"])
def _pad_kernel(x_ptr, s_ptr, xo_ptr, so_ptr, M, K, KP, G, stride_xm, stride_sm, stride_sg, stride_om, stride_og,
                GROUP: tl.constexpr, GROUPS: tl.constexpr):
    # One program row per output row: x bytes [M, K] -> [MP, KP] (zeros around), scales [M, G] ->
    # [MP, ceil(KP/GROUP)] (ones around), in one launch.
    row = tl.program_id(0).to(tl.int64)
    groups = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    cols = groups[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    live = (row < M).to(tl.int64)  # 0 for a padding row: nothing is loaded
    x = tl.load(x_ptr + row * stride_xm + cols, mask=cols < K * live, other=0)
    tl.store(xo_ptr + row * KP + cols, x, mask=cols < KP)
    s = tl.load(s_ptr + row * stride_sm + groups * stride_sg, mask=groups < G * live, other=1.0)
    tl.store(so_ptr + row * stride_om + groups * stride_og, s, mask=groups * GROUP < KP)


_pad_launches: dict[tuple, list] = {}


def pad_fp8(x_q: torch.Tensor, x_scale: torch.Tensor, rows: int, cols: int,
            group_size: int = 128, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized ``x_q [M, K]`` (FP8, unit column stride) and ``x_scale [M, ceil(K/G)]`` fp32 (any
    strides) -> ``(x_q [rows, cols]`` zero-padded, contiguous; ``x_scale [rows, ceil(cols/G)]`` padded with
    1, strides (1, rows))``, both written by one launch: the M/K padding cuBLASLt needs for FP8 input.
    No argument checks (the caller, torch-scaled-mm's bound call, passes what it validated).
    ``scratch``: as :func:`quantize_fp8`'s (reused per-stream buffers for small M, outside captures)."""
    m, k = x_q.shape
    dev = x_q.device
    n_groups = -(-cols // group_size)
    out, scale = _outputs(rows, cols, n_groups, x_q.dtype, True, dev, scratch, "pad")
    if rows == 0:
        return out, scale
    groups_per_program = 1 if n_groups == 1 else 2 if n_groups == 2 else 4
    grid_y = -(-n_groups // groups_per_program)
    key = (k, cols, group_size, x_q.is_cuda)
    slot = _pad_launches.get(key)
    if slot is None:
        slot = _pad_launches[key] = [None]
    kernel = slot[0]
    xb = x_q.view(torch.uint8)
    x_ptr, s_ptr = xb.data_ptr(), x_scale.data_ptr()
    g = x_scale.shape[1]
    if kernel is not None and not x_ptr & 15 and not s_ptr & 15 and fast_launch.hooks_idle():
        kernel(rows, grid_y, fast_launch.stream_getter()(dev.index), x_ptr, s_ptr, out.view(torch.uint8), scale, m,
               k, cols, g, xb.stride(0), x_scale.stride(0), x_scale.stride(1), 1, rows, group_size,
               groups_per_program)
        return out, scale
    compiled = _pad_kernel[(rows, grid_y)](xb, x_scale, out.view(torch.uint8), scale, m, k, cols, g, xb.stride(0),
                                           x_scale.stride(0), x_scale.stride(1), 1, rows, group_size,
                                           groups_per_program, num_warps=4)
    if kernel is None and x_q.is_cuda and not x_ptr & 15 and not s_ptr & 15:
        slot[0] = fast_launch.warm(compiled)
    return out, scale
