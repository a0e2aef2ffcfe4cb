"""The public FP8 block-scale linear op.

``w8a8_block_fp8_linear`` validates a weight once (its :class:`~rocm_fp8.dispatch.WeightPlan` is
found by ``id(weight)`` and an identity check), the activation on every call (a cheap check that
falls through to the full one for its precise message), flattens the input to 2-D and runs the
plan's bound call. ``Fp8BlockLinear`` runs the same path (:func:`run_plan`). Under
``torch.compile`` the op goes through the custom op ``torch.ops.rocm_fp8.w8a8_block_fp8_linear``,
which has a fake implementation so ``fullgraph=True`` traces through it.

The contract (README, "The op's contract"): input [..., K] bf16/fp16/fp32 or FP8 with
``input_scale`` [..., ceil(K/bk)]; weight [N, K] FP8 with ``weight_scale`` [ceil(N/bn), ceil(K/bk)]
(K need not be a multiple of bk: the last group is partial); out bf16/fp16/fp32; M may be 0;
tensors may be inference tensors; scales and activations may be strided views.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from rocm_fp8 import dispatch
from rocm_fp8.dispatch import _plans
from rocm_fp8.quant import OUT_DTYPES, QUANT_MAX

FLOAT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)
_FLOAT_INPUTS = FLOAT_INPUTS  # the old private names
_OUT_DTYPES = OUT_DTYPES
_FLOAT_SET = frozenset(FLOAT_INPUTS)
_OUT_SET = frozenset(OUT_DTYPES)
_Tensor = torch.Tensor
_F32 = torch.float32
_BF16 = torch.bfloat16


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
    if n == 0 or k == 0:
        raise ValueError(f"weight: expected a non-empty [N, K] tensor, got shape {tuple(weight.shape)}")
    kb = _cdiv(k, bk)
    if input.dim() < 1 or input.shape[-1] != k:
        raise ValueError(f"input: expected last dimension K={k} to match weight [N={n}, K={k}], "
                         f"got shape {tuple(input.shape)}")
    if weight_scale.dtype != torch.float32:
        raise TypeError(f"weight_scale: expected torch.float32, got {weight_scale.dtype}")
    if tuple(weight_scale.shape) != (_cdiv(n, bn), kb):
        raise ValueError(f"weight_scale: expected shape ({_cdiv(n, bn)}, {kb}) = [ceil(N/{bn}), ceil(K/{bk})] "
                         f"for weight [{n}, {k}], got {tuple(weight_scale.shape)}")
    if input.dtype in QUANT_MAX:
        if input.dtype != weight.dtype:
            raise TypeError(f"input: FP8 input must match weight's FP8 flavour {weight.dtype}, got {input.dtype}")
        if input_scale is None:
            raise ValueError("input_scale: required when input is already FP8, got None")
        _check_tensor(input_scale, "input_scale")
        if input_scale.dtype != torch.float32:
            raise TypeError(f"input_scale: expected torch.float32, got {input_scale.dtype}")
        want = tuple(input.shape[:-1]) + (kb,)
        if tuple(input_scale.shape) != want:
            raise ValueError(f"input_scale: expected shape {want} = [..., ceil(K/{bk})], "
                             f"got {tuple(input_scale.shape)}")
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


def _fast_out_dtype(plan: "dispatch.WeightPlan", input, input_scale, bias, out_dtype):
    """The common call, checked cheaply against a validated weight: its output dtype, or None to
    run the full check (for its precise message, or for an unusual but valid call)."""
    if input.__class__ is not _Tensor:
        return None
    shape = input.shape
    nd = len(shape)
    if not nd or shape[nd - 1] != plan.k or input.device != plan.device:
        return None
    dtype = input.dtype
    if input_scale is None:
        if dtype not in _FLOAT_SET:
            return None
        default = dtype
    else:
        if dtype != plan.fp8 or input_scale.__class__ is not _Tensor or input_scale.dtype != _F32:
            return None
        ss = input_scale.shape
        if len(ss) != nd or ss[nd - 1] != plan.kb or input_scale.device != plan.device:
            return None
        if (ss[0] != shape[0]) if nd == 2 else (ss[:-1] != shape[:-1]):
            return None
        default = _BF16
    if bias is not None and bias is not plan.bias:
        return None
    if out_dtype is None:
        return default
    return out_dtype if out_dtype in _OUT_SET else None


def run_plan(plan: "dispatch.WeightPlan", input, input_scale, bias, out_dtype, requested: str) -> torch.Tensor:
    """The one execution path of the op and the layer: check the activation, flatten, run, add bias."""
    out = _fast_out_dtype(plan, input, input_scale, bias, out_dtype)
    if out is None:
        _, out = check_args(input, plan.weight, plan.weight_scale, input_scale, bias, plan.block, out_dtype)
        plan.bias = bias
    v = plan.versions
    if v is not None and (plan.weight._version != v[0] or plan.weight_scale._version != v[1]):
        plan.reset()  # an in-place update the version counters show: re-prepare
    if input.ndim == 2:
        m = input.shape[0]
        if m == 0:  # idle data-parallel ranks: nothing to compute, no kernel launched
            return torch.empty((0, plan.n), dtype=out, device=input.device)
        y = plan.run(input, input_scale, out, requested)
        return y if bias is None else y + bias.to(out)
    lead = input.shape[:-1]
    m = input.numel() // plan.k
    if m == 0:
        return torch.empty((*lead, plan.n), dtype=out, device=input.device)
    xs2d = input_scale.reshape(m, plan.kb) if input_scale is not None else None
    y = plan.run(input.reshape(m, plan.k), xs2d, out, requested)
    if bias is not None:
        y = y + bias.to(out)
    return y.reshape(*lead, plan.n)


def _impl(input, weight, weight_scale, input_scale, bias, block, out_dtype, requested) -> torch.Tensor:
    return run_plan(dispatch.plan_for(weight, weight_scale, tuple(block)), input, input_scale, bias, out_dtype,
                    requested)


def w8a8_block_fp8_linear(input: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, *,
                          input_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                          block_size: Sequence[int] = (128, 128), out_dtype: Optional[torch.dtype] = None,
                          backend: str = "auto") -> torch.Tensor:
    """``y = dequant(input) @ dequant(weight).T + bias`` with FP8 block scales.

    ``input`` [..., K] is bf16/fp16/fp32 (quantized per 1x128 group on the fly) or FP8 with
    ``input_scale`` [..., ceil(K/128)]. ``weight`` [N, K] FP8 (e4m3fn or e4m3fnuz) with
    ``weight_scale`` [ceil(N/128), ceil(K/128)] fp32; scales are dequantization multipliers. Returns
    [..., N] in ``out_dtype``, else the input's dtype, else bf16 for FP8 input. ``backend`` is
    "auto" or a backend name; an explicit backend that cannot run (or is known to be wrong here) raises.
    """
    if torch.compiler.is_compiling():
        block, out_dtype = check_args(input, weight, weight_scale, input_scale, bias, block_size, out_dtype)
        requested = dispatch.resolve_request(backend)
        return torch.ops.rocm_fp8.w8a8_block_fp8_linear(input, weight, weight_scale, input_scale, bias,
                                                        block[0], block[1], out_dtype, requested)
    plan = _plans.get(id(weight))
    if plan is None or plan.weight is not weight or plan.weight_scale is not weight_scale or plan.block != block_size:
        block, out_dtype = check_args(input, weight, weight_scale, input_scale, bias, block_size, out_dtype)
        plan = dispatch.plan_for(weight, weight_scale, block)
        plan.bias = bias
    s = dispatch._settings
    requested = s["requested"] if backend == "auto" and s is not None else dispatch.resolve_request(backend)
    return run_plan(plan, input, input_scale, bias, out_dtype, requested)


@torch.library.custom_op("rocm_fp8::w8a8_block_fp8_linear", mutates_args=())
def _linear_op(input: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
               input_scale: Optional[torch.Tensor], bias: Optional[torch.Tensor], block_n: int, block_k: int,
               out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    return _impl(input, weight, weight_scale, input_scale, bias, (block_n, block_k), out_dtype, backend)


@_linear_op.register_fake
def _linear_fake(input, weight, weight_scale, input_scale, bias, block_n, block_k, out_dtype, backend):
    return input.new_empty((*input.shape[:-1], weight.shape[0]), dtype=out_dtype)
