"""The public FP8 block-scale linear op.

``w8a8_block_fp8_linear`` checks its arguments (every message names the argument, what was
expected and what came), flattens the input to 2-D, and hands over to :mod:`rocm_fp8.dispatch`.
In eager mode it calls the implementation directly (the least host overhead); under
``torch.compile`` it goes through the custom op ``torch.ops.rocm_fp8.w8a8_block_fp8_linear``, which
has a fake implementation so ``fullgraph=True`` traces through it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from rocm_fp8 import dispatch
from rocm_fp8.quant import QUANT_MAX

_FLOAT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)
_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check_tensor(t, arg: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(t).__name__}")
    return t


def check_args(input, weight, weight_scale, input_scale, bias, block_size, out_dtype) -> tuple:
    """Validate; return (block, out_dtype). Metadata only: no device sync, capturable."""
    _check_tensor(input, "input")
    _check_tensor(weight, "weight")
    _check_tensor(weight_scale, "weight_scale")
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block_size)):
        raise ValueError(f"block_size: expected a pair of positive ints such as (128, 128), got {block_size!r}")
    bn, bk = int(block_size[0]), int(block_size[1])
    if weight.dtype not in QUANT_MAX:
        raise TypeError(f"weight: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-D [N, K] tensor, got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if k % bk:
        raise ValueError(f"weight: expected K (dim 1) divisible by block_size[1]={bk}, got K={k}")
    if input.dim() < 1 or input.shape[-1] != k:
        raise ValueError(f"input: expected last dimension K={k} to match weight [N={n}, K={k}], "
                         f"got shape {tuple(input.shape)}")
    if weight_scale.dtype != torch.float32:
        raise TypeError(f"weight_scale: expected torch.float32, got {weight_scale.dtype}")
    if tuple(weight_scale.shape) != (_cdiv(n, bn), k // bk):
        raise ValueError(f"weight_scale: expected shape ({_cdiv(n, bn)}, {k // bk}) = [ceil(N/{bn}), K/{bk}] "
                         f"for weight [{n}, {k}], got {tuple(weight_scale.shape)}")
    if input.dtype in QUANT_MAX:
        if input.dtype != weight.dtype:
            raise TypeError(f"input: FP8 input must match weight's FP8 flavour {weight.dtype}, got {input.dtype}")
        if input_scale is None:
            raise ValueError("input_scale: required when input is already FP8, got None")
        _check_tensor(input_scale, "input_scale")
        if input_scale.dtype != torch.float32:
            raise TypeError(f"input_scale: expected torch.float32, got {input_scale.dtype}")
        want = tuple(input.shape[:-1]) + (k // bk,)
        if tuple(input_scale.shape) != want:
            raise ValueError(f"input_scale: expected shape {want} = [..., K/{bk}], got {tuple(input_scale.shape)}")
        default_out = torch.bfloat16
    elif input.dtype in _FLOAT_INPUTS:
        if input_scale is not None:
            raise ValueError(f"input_scale: only meaningful for FP8 input; input is {input.dtype}, so pass None")
        default_out = input.dtype
    else:
        raise TypeError(f"input: expected bfloat16/float16/float32, or FP8 with input_scale, got {input.dtype}")
    if out_dtype is None:
        out_dtype = default_out
    elif out_dtype not in _OUT_DTYPES:
        raise TypeError(f"out_dtype: expected torch.bfloat16, torch.float16 or torch.float32, got {out_dtype}")
    tensors = {"weight": weight, "weight_scale": weight_scale, "input_scale": input_scale, "bias": bias}
    for name, t in tensors.items():
        if t is None:
            continue
        _check_tensor(t, name)
        if t.device != input.device:
            raise ValueError(f"{name}: expected the input's device {input.device}, got {t.device}")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != n:
            raise ValueError(f"bias: expected shape ({n},) = [N], got {tuple(bias.shape)}")
        if not bias.is_floating_point() or bias.dtype in QUANT_MAX:
            raise TypeError(f"bias: expected a float tensor, got {bias.dtype}")
    return (bn, bk), out_dtype


def _impl(input, weight, weight_scale, input_scale, bias, block, out_dtype, requested) -> torch.Tensor:
    n, k = weight.shape
    lead = input.shape[:-1]
    m = 1
    for d in lead:
        m *= d
    if m == 0:
        return torch.empty(*lead, n, dtype=out_dtype, device=input.device)
    x2d = input.reshape(m, k)
    xs2d = input_scale.reshape(m, k // block[1]) if input_scale is not None else None
    y = dispatch.run_2d(x2d, xs2d, weight, weight_scale, out_dtype, block, requested)
    return finish(y, bias, out_dtype, lead)


def finish(y: torch.Tensor, bias: Optional[torch.Tensor], out_dtype: torch.dtype, lead) -> torch.Tensor:
    """A backend's [M, N] result -> [..., N] in ``out_dtype``, with the bias added."""
    if bias is not None:
        y = y + bias.to(y.dtype)
    if y.dtype != out_dtype:
        y = y.to(out_dtype)
    return y.reshape(*lead, y.shape[-1])


def w8a8_block_fp8_linear(input: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, *,
                          input_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                          block_size: Sequence[int] = (128, 128), out_dtype: Optional[torch.dtype] = None,
                          backend: str = "auto") -> torch.Tensor:
    """``y = dequant(input) @ dequant(weight).T + bias`` with FP8 block scales.

    ``input`` [..., K] is bf16/fp16/fp32 (quantized per 1x128 group on the fly) or FP8 with
    ``input_scale`` [..., K/128]. ``weight`` [N, K] FP8 (e4m3fn or e4m3fnuz) with ``weight_scale``
    [ceil(N/128), K/128] fp32; scales are dequantization multipliers. Returns [..., N] in
    ``out_dtype``, else the input's dtype, else bf16 for FP8 input. ``backend`` is "auto" or a
    backend name; an explicit backend that cannot run (or is known to be wrong here) raises.
    """
    block, out_dtype = check_args(input, weight, weight_scale, input_scale, bias, block_size, out_dtype)
    requested = dispatch.resolve_request(backend)
    if torch.compiler.is_compiling():
        return torch.ops.rocm_fp8.w8a8_block_fp8_linear(input, weight, weight_scale, input_scale, bias,
                                                        block[0], block[1], out_dtype, requested)
    return _impl(input, weight, weight_scale, input_scale, bias, block, out_dtype, requested)


@torch.library.custom_op("rocm_fp8::w8a8_block_fp8_linear", mutates_args=())
def _linear_op(input: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
               input_scale: Optional[torch.Tensor], bias: Optional[torch.Tensor], block_n: int, block_k: int,
               out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    return _impl(input, weight, weight_scale, input_scale, bias, (block_n, block_k), out_dtype, backend)


@_linear_op.register_fake
def _linear_fake(input, weight, weight_scale, input_scale, bias, block_n, block_k, out_dtype, backend):
    return input.new_empty((*input.shape[:-1], weight.shape[0]), dtype=out_dtype)
