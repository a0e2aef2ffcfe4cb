"""``Fp8BlockLinear``: an ``nn.Module`` holding an FP8 block-quantized weight and its plan.

The layer owns a :class:`~rocm_fp8.dispatch.WeightPlan` for its weight: its bound calls, one per
(M bucket, output dtype, input kind, request), are filled on first use or all at once by
:meth:`Fp8BlockLinear.plan` (what to call before CUDA/HIP graph capture). ``forward`` runs the
functional op's own path (:func:`rocm_fp8.ops.run_plan`): a cheap activation check, one dictionary
lookup and the kernel call. Replacing the weight (``.to()``, ``load_state_dict``, assignment) drops
the plan; an in-place update of an inference-mode weight must be announced with :meth:`reset_plan`.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from rocm_fp8 import dispatch
from rocm_fp8.explain import explain as explain_decision
from rocm_fp8.ops import check_args, run_plan, w8a8_block_fp8_linear
from rocm_fp8.quant import FP8_NAMES, e4m3fn_to_e4m3fnuz, quantize_weight, resolve_fp8_dtype
from rocm_fp8.toolchain import detect

# nn.Module's global hook registries (mutated in place by torch.nn.modules.module.register_module_*)
_HOOKS_F = _nn_module._global_forward_hooks
_HOOKS_FP = _nn_module._global_forward_pre_hooks
_HOOKS_B = _nn_module._global_backward_hooks
_HOOKS_BP = _nn_module._global_backward_pre_hooks
_compiling = torch.compiler.is_compiling


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
        if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block_size)):
            raise ValueError(f"block_size: expected a pair of positive ints such as (128, 128), got {block_size!r}")
        bn, bk = int(block_size[0]), int(block_size[1])
        fp8 = resolve_fp8_dtype(fp8_dtype, "fp8_dtype")
        self.in_features, self.out_features = in_features, out_features
        self.block_size = (bn, bk)
        self.out_dtype = out_dtype
        self.backend = dispatch.resolve_request(backend) if backend != "auto" else "auto"
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=fp8, device=device))
        self.register_buffer("weight_scale", torch.empty(-(-out_features // bn), -(-in_features // bk),
                                                         dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype or out_dtype or torch.bfloat16,
                                                 device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._wplan: Optional[dispatch.WeightPlan] = None

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
    def _weight_plan(self) -> "dispatch.WeightPlan":
        plan = self._wplan
        if plan is None:
            weight, scale = self._buffers["weight"], self._buffers["weight_scale"]
            # the weight is validated once per plan (a replaced buffer makes a new plan); inputs per call
            check_args(torch.empty(0, weight.shape[-1], device=weight.device), weight, scale, None,
                       self._parameters["bias"], self.block_size, None)
            plan = dispatch.WeightPlan(weight, scale, self.block_size)
            self._wplan = plan
        return plan

    @property
    def _plan(self) -> dict:
        """The bound calls made so far: (M bucket, out dtype, float input?, request) -> bound call."""
        return self._wplan.calls if self._wplan is not None else {}

    def plan(self, ms: Iterable[int] = DEFAULT_PLAN_MS, input_dtype: torch.dtype = torch.bfloat16) -> dict[int, str]:
        """Decide, prepare the weight and bind for every M bucket in ``ms`` now, for inputs of
        ``input_dtype`` (an FP8 dtype for pre-quantized input); returns {bucket: backend}. Call
        before graph capture so that capture never prepares a weight."""
        fp8_input = input_dtype in FP8_NAMES
        out_dtype = self.out_dtype or (torch.bfloat16 if fp8_input else input_dtype)
        requested = dispatch.resolve_request(self.backend)
        plan = self._weight_plan()
        plan.check_version()
        return {dispatch.bucket(m): plan.bind((dispatch.bucket(m), out_dtype, not fp8_input, requested)).backend.name
                for m in ms}

    def explain(self, m: int, input_dtype: torch.dtype = torch.bfloat16):
        """The decision for ``m`` rows of ``input_dtype``, with this layer's run-time fallbacks."""
        out_dtype = self.out_dtype or (torch.bfloat16 if input_dtype in FP8_NAMES else input_dtype)
        failed = self._wplan.failed.get(dispatch.bucket(m), {}) if self._wplan is not None else {}
        return explain_decision(self.out_features, self.in_features, m, fp8_dtype=FP8_NAMES[self.weight.dtype],
                       out_dtype=dispatch.DTYPE_NAMES[out_dtype], device_type=self.weight.device.type,
                       block_size=self.block_size, backend=self.backend, failed=failed)

    def reset_plan(self) -> None:
        """Forget bound calls and prepared weights: announce an in-place weight update that the
        version counter cannot show (inference tensors have none)."""
        self._wplan = None

    # The plan holds prepared copies of the weight: anything that replaces the weight drops it.
    def _apply(self, fn, *args, **kwargs):
        self._wplan = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._wplan = None
        return super()._load_from_state_dict(*args, **kwargs)

    def __setattr__(self, name, value):
        if name in ("weight", "weight_scale"):
            self.__dict__["_wplan"] = None
        super().__setattr__(name, value)

    # -- forward ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, x_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        # nn.Module.__call__ spends about a microsecond on hook bookkeeping, as much as the rest of
        # this layer's host path: with no hooks, no compiled call and no torch.compile, run the forward
        # pass directly. Otherwise nn.Module's own call (which then calls forward). (torch.jit.trace
        # records the same operations either way; only its module scope names need nn.Module's call.)
        # (The instance dictionary is read directly: nn.Module's attribute lookup costs about as much
        # again, which made the layer measurably slower than the functional op on the same path.)
        d = self.__dict__
        if (d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"]
                or _HOOKS_F or _HOOKS_FP or _HOOKS_B or _HOOKS_BP or _compiling()
                or ("_compiled_call_impl" in d and d["_compiled_call_impl"] is not None)):  # set by .compile()
            return super().__call__(x, x_scale)
        plan = d["_wplan"] or self._weight_plan()
        requested = d["backend"]
        if requested == "auto":
            s = dispatch._settings
            requested = s["requested"] if s is not None else dispatch.resolve_request("auto")
        return run_plan(plan, x, x_scale, d["_parameters"]["bias"], d["out_dtype"], requested)

    def forward(self, x: torch.Tensor, x_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return w8a8_block_fp8_linear(x, self.weight, self.weight_scale, input_scale=x_scale, bias=self.bias,
                                         block_size=self.block_size, out_dtype=self.out_dtype, backend=self.backend)
        return run_plan(self._wplan or self._weight_plan(), x, x_scale, self._parameters["bias"], self.out_dtype,
                        dispatch.resolve_request(self.backend))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"block_size={self.block_size}, fp8={FP8_NAMES[self.weight.dtype]}, backend={self.backend!r}")
