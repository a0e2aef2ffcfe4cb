"""``Fp8BlockLinear``: an ``nn.Module`` holding an FP8 block-quantized weight and its plan.

The plan maps an M bucket to (backend, prepared weight). It is filled once per bucket (or all at
once by :meth:`Fp8BlockLinear.plan`, which is what to call before CUDA/HIP graph capture), so the
forward pass does one dictionary lookup and the kernel call: no detection, no policy.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from rocm_fp8 import backends as _registry
from rocm_fp8 import dispatch
from rocm_fp8.explain import explain as explain_decision
from rocm_fp8.ops import _FLOAT_INPUTS, _impl, check_args, finish, w8a8_block_fp8_linear
from rocm_fp8.quant import FP8_NAMES, e4m3fn_to_e4m3fnuz, quantize_weight, resolve_fp8_dtype
from rocm_fp8.toolchain import detect

#: the M buckets ``plan()`` fills by default: 1 .. 32768
DEFAULT_PLAN_MS = tuple(1 << i for i in range(16))


class Fp8BlockLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 block_size: Sequence[int] = (128, 128), fp8_dtype: Union[None, str, torch.dtype] = None,
                 out_dtype: Optional[torch.dtype] = None, backend: str = "auto",
                 device: Union[None, str, torch.device] = None, bias_dtype: Optional[torch.dtype] = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        bn, bk = int(block_size[0]), int(block_size[1])
        if in_features % bk:
            raise ValueError(f"in_features: expected a multiple of block_size[1]={bk}, got {in_features}")
        fp8 = resolve_fp8_dtype(fp8_dtype, "fp8_dtype")
        self.in_features, self.out_features = in_features, out_features
        self.block_size = (bn, bk)
        self.out_dtype = out_dtype
        self.backend = dispatch.resolve_request(backend) if backend != "auto" else "auto"
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=fp8, device=device))
        self.register_buffer("weight_scale", torch.empty(-(-out_features // bn), in_features // bk,
                                                         dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype or out_dtype or torch.bfloat16,
                                                 device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._plan: dict[tuple, tuple] = {}
        self._plan_generation = dispatch.generation

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, *, block_size: Sequence[int] = (128, 128),
                    fp8_dtype: Union[None, str, torch.dtype] = None, out_dtype: Optional[torch.dtype] = None,
                    backend: str = "auto") -> "Fp8BlockLinear":
        """Quantize a float ``nn.Linear`` per block."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        wq, ws = quantize_weight(w, tuple(block_size), dtype=fp8_dtype)
        bias = linear.bias.detach() if linear.bias is not None else None
        # out_dtype None: the output follows the input's dtype, as nn.Linear's does
        return cls.from_checkpoint(wq, ws, bias, block_size=block_size, out_dtype=out_dtype, backend=backend)

    @classmethod
    def from_checkpoint(cls, weight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        *, block_size: Sequence[int] = (128, 128), out_dtype: Optional[torch.dtype] = None,
                        backend: str = "auto", convert_to: Union[None, str, torch.dtype] = None) -> "Fp8BlockLinear":
        """Wrap checkpoint tensors. ``convert_to="e4m3fnuz"`` (or None on a gfx942 machine, which
        computes in fnuz) converts an e4m3fn checkpoint, doubling the scales."""
        if not isinstance(weight, torch.Tensor) or weight.dtype not in FP8_NAMES:
            got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"weight: expected an FP8 tensor (float8_e4m3fn or float8_e4m3fnuz), got {got}")
        target = resolve_fp8_dtype(convert_to, "convert_to") if convert_to is not None else None
        if target is None:
            if detect().fp8_flavour == "e4m3fnuz" and weight.dtype == torch.float8_e4m3fn:
                target = torch.float8_e4m3fnuz
        if target is not None and target != weight.dtype:
            if target == torch.float8_e4m3fnuz and weight.dtype == torch.float8_e4m3fn:
                weight, weight_scale = e4m3fn_to_e4m3fnuz(weight, weight_scale)
            else:
                raise ValueError(f"convert_to: only e4m3fn -> e4m3fnuz conversion exists, asked {weight.dtype} -> {target}")
        n, k = weight.shape
        if bias is not None and not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias: expected a torch.Tensor or None, got {type(bias).__name__}")
        dummy = torch.empty(0, k, dtype=out_dtype or torch.bfloat16, device=weight.device)
        check_args(dummy, weight, weight_scale, None, bias, tuple(block_size), out_dtype)
        layer = cls(k, n, bias is not None, block_size=block_size, fp8_dtype=weight.dtype, out_dtype=out_dtype,
                    backend=backend, device=weight.device,
                    bias_dtype=bias.dtype if bias is not None else None)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.weight_scale.copy_(weight_scale)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    # -- the plan --------------------------------------------------------------------------------
    def _key(self, m: int, device_type: str, out_dtype: torch.dtype) -> tuple:
        return (dispatch.bucket(m), device_type, out_dtype)

    def _entry(self, m: int, device_type: str, out_dtype: torch.dtype):
        if self._plan_generation != dispatch.generation:
            self._plan.clear()
            self._plan_generation = dispatch.generation
        key = self._key(m, device_type, out_dtype)
        entry = self._plan.get(key)
        if entry is None:
            requested = dispatch.resolve_request(self.backend)
            d = dispatch.decide(self.out_features, self.in_features, m, FP8_NAMES[self.weight.dtype],
                                dispatch._DTYPE_NAMES[out_dtype], device_type, requested, self.block_size)
            dispatch.raise_for(d)
            be = _registry.get_backend(d.backend)
            prepared = dispatch.prepared_weight(be, self.weight, self.weight_scale, self.block_size)
            entry = (be, prepared, d)
            self._plan[key] = entry
        return entry

    def plan(self, ms: Iterable[int] = DEFAULT_PLAN_MS, input_dtype: torch.dtype = torch.bfloat16) -> dict[int, str]:
        """Decide and prepare weights for every M bucket in ``ms`` now, for inputs of ``input_dtype``
        (an FP8 dtype for pre-quantized input); returns {bucket: backend}. Call before graph capture
        so that capture never prepares a weight."""
        out_dtype = self.out_dtype or (torch.bfloat16 if input_dtype in FP8_NAMES else input_dtype)
        device_type = self.weight.device.type
        return {dispatch.bucket(m): self._entry(m, device_type, out_dtype)[0].name for m in ms}

    def explain(self, m: int):
        return explain_decision(self.out_features, self.in_features, m, fp8_dtype=FP8_NAMES[self.weight.dtype],
                       out_dtype=dispatch._DTYPE_NAMES[self.out_dtype or torch.bfloat16],
                       device_type=self.weight.device.type, block_size=self.block_size, backend=self.backend)

    def reset_plan(self) -> None:
        self._plan.clear()

    # The plan holds prepared copies of the weight: anything that replaces the weight drops it.
    def _apply(self, fn, *args, **kwargs):
        self._plan.clear()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._plan.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, x_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return w8a8_block_fp8_linear(x, self.weight, self.weight_scale, input_scale=x_scale, bias=self.bias,
                                         block_size=self.block_size, out_dtype=self.out_dtype, backend=self.backend)
        if self._input_ok(x, x_scale):
            block = self.block_size
            out_dtype = self.out_dtype or (x.dtype if x_scale is None else torch.bfloat16)
        else:  # the full check, for its precise message (or for an unusual but valid call)
            block, out_dtype = check_args(x, self.weight, self.weight_scale, x_scale, self.bias, self.block_size,
                                          self.out_dtype)
        lead = x.shape[:-1]
        m = x.numel() // self.in_features if self.in_features else 0
        if m == 0:
            return _impl(x, self.weight, self.weight_scale, x_scale, self.bias, block, out_dtype, self.backend)
        be, prepared, _ = self._entry(m, x.device.type, out_dtype)
        x2d = x.reshape(m, self.in_features)
        if x_scale is None:
            xq, xs = be.quantize_input(x2d, self.weight.dtype, block[1])
        else:
            xq, xs = x2d, x_scale.reshape(m, self.in_features // block[1])
        try:
            y = be.run(xq, xs, prepared, out_dtype)
        except (ValueError, TypeError):
            raise
        except Exception:  # noqa: BLE001 - let the dispatcher report or fall back
            self._plan.pop(self._key(m, x.device.type, out_dtype), None)
            return _impl(x, self.weight, self.weight_scale, x_scale, self.bias, block, out_dtype, self.backend)
        return finish(y, self.bias, out_dtype, lead)

    def _input_ok(self, x, x_scale) -> bool:
        """The common case, cheaply: the weight was checked when the layer was built."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            return False
        if x.device != self.weight.device:
            return False
        if x_scale is None:
            return x.dtype in _FLOAT_INPUTS
        return (isinstance(x_scale, torch.Tensor) and x.dtype == self.weight.dtype and x_scale.dtype == torch.float32
                and x_scale.device == x.device
                and x_scale.shape == (*x.shape[:-1], self.in_features // self.block_size[1]))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"block_size={self.block_size}, fp8={FP8_NAMES[self.weight.dtype]}, backend={self.backend!r}")
