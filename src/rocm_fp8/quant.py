"""FP8 quantization in plain torch: activations per 1 x group, weights per block.

Scales are dequantization multipliers: ``x ~= x_q.float() * scale``, as in FP8 checkpoints and aiter.

FP8 flavours: OCP ``float8_e4m3fn`` (max 448; gfx950 and NVIDIA) and ``float8_e4m3fnuz`` (gfx942,
finfo max 240). For fnuz we quantize to 224, not 240, as the serving stacks on MI300 do: values near
the top of the fnuz range have been seen to cost accuracy there.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from rocm_fp8.toolchain import detect

FP8_DTYPES = {
    "e4m3fn": torch.float8_e4m3fn,
    "e4m3fnuz": torch.float8_e4m3fnuz,
}
FP8_NAMES = {v: k for k, v in FP8_DTYPES.items()}

#: what a GEMM may write (the op's ``out_dtype``, our kernel's output), and the same by name (a
#: :class:`rocm_fp8.Problem`'s ``out_dtype``); backends that write fewer say so in ``supports``
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
OUT_DTYPE_NAMES = ("bfloat16", "float16", "float32")

#: the largest magnitude we quantize to, per flavour
QUANT_MAX = {
    torch.float8_e4m3fn: 448.0,
    torch.float8_e4m3fnuz: 224.0,
}

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Guards a scale against an all-zero group (scale 0 would make x_q = 0/0).
_MIN_SCALE = 1e-12


def fp8_name(dtype: torch.dtype) -> str:
    try:
        return FP8_NAMES[dtype]
    except KeyError:
        raise TypeError(f"expected an FP8 dtype (torch.float8_e4m3fn or torch.float8_e4m3fnuz), got {dtype}") from None


def resolve_fp8_dtype(dtype: Union[None, str, torch.dtype], arg: str = "dtype") -> torch.dtype:
    """None -> the flavour of the detected device; a name or a torch dtype -> that dtype."""
    if dtype is None:
        return FP8_DTYPES[detect().fp8_flavour]
    if isinstance(dtype, str):
        key = dtype.replace("float8_", "").replace("torch.", "")
        if key in FP8_DTYPES:
            return FP8_DTYPES[key]
        raise ValueError(f"{arg}: expected 'e4m3fn' or 'e4m3fnuz', got {dtype!r}")
    if dtype in QUANT_MAX:
        return dtype
    raise TypeError(f"{arg}: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got {dtype}")


def _check_float(x: torch.Tensor, arg: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{arg}: expected a float32/float16/bfloat16 tensor, got {x.dtype}")


def quantize_activation(x: torch.Tensor, group_size: int = 128,
                        dtype: Union[None, str, torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x [..., K]`` per 1 x ``group_size`` group along K.

    Returns ``(x_q [..., K] fp8, x_scale [..., ceil(K/group_size)] float32)``. K need not be a
    multiple of the group: the last group is partial (its scale covers the columns it has).
    """
    _check_float(x, "x")
    fp8 = resolve_fp8_dtype(dtype)
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size <= 0:
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x: expected a non-empty last dimension (K), got shape {tuple(x.shape)}")
    k = x.shape[-1]
    kb = -(-k // group_size)
    xf = x.float()
    if kb * group_size != k:
        xf = torch.nn.functional.pad(xf, (0, kb * group_size - k))
    groups = xf.reshape(*x.shape[:-1], kb, group_size)
    amax = groups.abs().amax(dim=-1, keepdim=True)
    fmax = QUANT_MAX[fp8]
    scale = (amax / fmax).clamp(min=_MIN_SCALE)
    q = (groups / scale).clamp(-fmax, fmax).to(fp8).reshape(*x.shape[:-1], kb * group_size)
    if kb * group_size != k:
        q = q[..., :k].contiguous()
    return q, scale.squeeze(-1)


def quantize_weight(w: torch.Tensor, block_size: tuple[int, int] = (128, 128),
                    dtype: Union[None, str, torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``w [N, K]`` per ``block_size`` (bn x bk) block.

    Returns ``(w_q [N, K] fp8, w_scale [ceil(N/bn), ceil(K/bk)] float32)``. N need not be a multiple
    of bn: the last row block is partial.
    """
    _check_float(w, "w")
    fp8 = resolve_fp8_dtype(dtype)
    if w.dim() != 2:
        raise ValueError(f"w: expected a 2-D [N, K] tensor, got shape {tuple(w.shape)}")
    bn, bk = _check_block(block_size)
    n, k = w.shape
    nb, kb = -(-n // bn), -(-k // bk)
    padded = torch.zeros(nb * bn, kb * bk, dtype=torch.float32, device=w.device)
    padded[:n, :k] = w.float()
    blocks = padded.reshape(nb, bn, kb, bk)
    amax = blocks.abs().amax(dim=(1, 3), keepdim=True)
    fmax = QUANT_MAX[fp8]
    scale = (amax / fmax).clamp(min=_MIN_SCALE)
    q = (blocks / scale).clamp(-fmax, fmax).to(fp8).reshape(nb * bn, kb * bk)[:n, :k].contiguous()
    return q, scale.reshape(nb, kb).contiguous()


def _check_block(block_size) -> tuple[int, int]:
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(b, int) and b > 0 for b in block_size)):
        raise ValueError(f"block_size: expected a pair of positive ints such as (128, 128), got {block_size!r}")
    return int(block_size[0]), int(block_size[1])


def dequantize_weight(w_q: torch.Tensor, w_scale: torch.Tensor,
                      block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """``w_q [N, K]`` fp8 with ``w_scale [ceil(N/bn), ceil(K/bk)]`` -> float32 ``[N, K]``."""
    bn, bk = _check_block(block_size)
    n, k = w_q.shape
    s = w_scale.float().repeat_interleave(bn, 0)[:n].repeat_interleave(bk, 1)[:, :k]
    return w_q.float() * s


def dequantize_activation(x_q: torch.Tensor, x_scale: torch.Tensor, group_size: int = 128) -> torch.Tensor:
    """``x_q [..., K]`` fp8 with ``x_scale [..., ceil(K/group)]`` -> float32 ``[..., K]``."""
    return x_q.float() * x_scale.float().repeat_interleave(group_size, -1)[..., : x_q.shape[-1]]


def e4m3fn_to_e4m3fnuz(w_q: torch.Tensor, w_scale: torch.Tensor,
                       input_scale: Optional[torch.Tensor] = None):
    """Convert an OCP e4m3fn checkpoint tensor for gfx942, which computes in e4m3fnuz.

    The same bits mean half the value in fnuz (its exponent bias is one larger), so the bits are
    reinterpreted and the scales doubled. 0x80 is -0 in e4m3fn but NaN in fnuz: it becomes 0.
    Returns ``(w_q_fnuz, w_scale * 2)`` or, with ``input_scale``, also ``input_scale * 2``.
    """
    if not isinstance(w_q, torch.Tensor) or w_q.dtype != torch.float8_e4m3fn:
        got = w_q.dtype if isinstance(w_q, torch.Tensor) else type(w_q).__name__
        raise TypeError(f"w_q: expected a torch.float8_e4m3fn tensor, got {got}")
    bits = w_q.view(torch.int8).clone()
    bits[bits == -128] = 0
    converted = bits.view(torch.float8_e4m3fnuz)
    out_scale = w_scale * 2.0
    if input_scale is None:
        return converted, out_scale
    return converted, out_scale, input_scale * 2.0
