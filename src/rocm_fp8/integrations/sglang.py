"""sglang plugin (entry-point group ``sglang.srt.plugins``): block-FP8 linears through rocm_fp8.

sglang's ``Fp8LinearMethod`` asks ``fp8_utils.dispatch_w8a8_block_fp8_linear(weight_block_size,
act_scale_ue8m0)`` for the function it calls in every forward. :func:`register` wraps that dispatcher
with sglang's ``HookRegistry`` (an AROUND hook; the registry also rewrites the copy that ``fp8.py``
imported by name, which a plain ``setattr`` would miss): for 128x128 blocks with fp32 scales it returns
:func:`block_fp8_linear`, which calls ``rocm_fp8.w8a8_block_fp8_linear``; anything else (UE8M0 scales,
other block sizes, the kill switch) gets sglang's own choice.

Weights: sglang's ``process_weights_after_loading_block_quant`` still does its gfx942 e4m3fnuz
conversion (scales doubled once, by sglang), and it preshuffles only for its own aiter function, which
is no longer chosen, so ``layer.weight`` stays the plain [N, K] tensor (layers marked
``keep_plain_weight_layout`` included). An AFTER hook on that step logs the layer shape's decision and
makes a first small call, so rocm_fp8 prepares its layout at load, before CUDA-graph capture.

sglang catches plugin exceptions itself, but :func:`register` never raises anyway.
"""

from __future__ import annotations

import importlib

import torch

import rocm_fp8
from rocm_fp8 import integrations as common

STACK = "sglang"
DISPATCH_TARGET = "sglang.srt.layers.quantization.fp8_utils.dispatch_w8a8_block_fp8_linear"
LOAD_TARGET = "sglang.srt.layers.quantization.fp8.Fp8LinearMethod.process_weights_after_loading_block_quant"
HOOK_MODULE = "sglang.srt.plugins.hook_registry"

_registered = False


def register() -> None:
    """The entry point sglang's ``load_plugins`` calls. Idempotent; never raises."""
    try:
        _register()
    except Exception as e:
        common.set_state(STACK, "skipped", f"registration failed: {type(e).__name__}: {e}")


def _resolve(target: str):
    module, _, attr = target.rpartition(".")
    try:
        obj = importlib.import_module(module)
        return getattr(obj, attr, None)
    except ImportError:
        # Class.method: import the class's module
        module, _, cls_name = module.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), cls_name, None)
        except ImportError:
            return None
        return getattr(cls, attr, None) if cls is not None else None


def _register() -> None:
    global _registered
    if not common.enabled():
        common.set_state(STACK, "disabled", f"{common.ENV_SWITCH}=0")
        return
    if _registered:
        return
    import sglang
    version = getattr(sglang, "__version__", "")
    ok, why = common.version_supported(STACK, version)
    if not ok:
        common.set_state(STACK, "skipped", why)
        return
    for target in (DISPATCH_TARGET, LOAD_TARGET):
        if _resolve(target) is None:
            common.set_state(STACK, "skipped", f"target {target} is missing")
            return
    hooks = importlib.import_module(HOOK_MODULE)
    registry, hook_type = getattr(hooks, "HookRegistry", None), getattr(hooks, "HookType", None)
    if registry is None or hook_type is None or not hasattr(hook_type, "AROUND"):
        common.set_state(STACK, "skipped", f"{HOOK_MODULE}.HookRegistry/HookType is missing")
        return
    registry.register(DISPATCH_TARGET, around_dispatch, hook_type.AROUND)
    registry.register(LOAD_TARGET, after_load, hook_type.AFTER)
    _registered = True
    common.set_state(STACK, "active", f"dispatch_w8a8_block_fp8_linear hooked ({why})")


def _wants_rocm_fp8(weight_block_size, act_scale_ue8m0) -> bool:
    if not common.enabled() or act_scale_ue8m0:
        return False
    return weight_block_size is not None and list(weight_block_size) == [128, 128]


def around_dispatch(original, *args, **kwargs):
    """AROUND hook on ``dispatch_w8a8_block_fp8_linear``: rocm_fp8 for 128x128 fp32-scale blocks."""
    names = ("weight_block_size", "act_scale_ue8m0")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    if _wants_rocm_fp8(bound.get("weight_block_size"), bound.get("act_scale_ue8m0", False)):
        return block_fp8_linear
    return original(*args, **kwargs)


def block_fp8_linear(input, weight, block_size, weight_scale, input_scale=None, bias=None, **kwargs):
    """sglang's block-FP8 linear signature, run by rocm_fp8. ``input`` may be a pre-quantized
    ``(fp8, scale)`` pair; extra keywords (e.g. ``weight_bf16``) are accepted and not needed."""
    if isinstance(input, (tuple, list)):
        input, input_scale = input
    k = input.shape[-1]
    lead = input.shape[:-1]
    x2d = input.reshape(-1, k)
    if input_scale is not None:
        input_scale = input_scale.reshape(-1, input_scale.shape[-1])
    y = rocm_fp8.w8a8_block_fp8_linear(x2d, weight, weight_scale, input_scale=input_scale, bias=bias,
                                       block_size=block_size)
    if not torch.compiler.is_compiling():
        common.CALLS[(STACK, weight.shape[0], weight.shape[1])] += 1
    return y.view(*lead, weight.shape[0])


def after_load(result, method, layer, *args, **kwargs):
    """AFTER hook on ``Fp8LinearMethod.process_weights_after_loading_block_quant``."""
    try:
        if getattr(method, "w8a8_block_fp8_linear", None) is not block_fp8_linear:
            return result
        w, s = layer.weight, layer.weight_scale_inv
        n, k = w.shape
        common.log_layer_shape(STACK, n, k, common.fp8_name(w.dtype) or str(w.dtype), w.device.type)
        with torch.no_grad():
            rocm_fp8.w8a8_block_fp8_linear(torch.randn(1, k, device=w.device, dtype=torch.bfloat16), w, s)
        common.PREPARED_LAYERS[STACK].add(id(layer))
    except Exception as e:
        common.warn_once(f"sglang:after_load:{type(e).__name__}",
                         f"preparing a layer for rocm_fp8 at load failed ({type(e).__name__}: {e}); "
                         "it will be prepared at its first call")
    return result
