"""vLLM plugin (entry-point group ``vllm.general_plugins``): a block-FP8 linear kernel backed by rocm_fp8.

vLLM picks the kernel of every block-FP8 linear layer from ``_POSSIBLE_FP8_BLOCK_KERNELS`` (keyed by
platform) in ``vllm.model_executor.kernels.linear``: the first class whose ``is_supported`` and
``can_implement`` accept the layer wins. :func:`register` puts :class:`RocmFp8BlockScaledMMKernel`
first for ROCm, CUDA and CPU. The kernel owns the layer's weights after loading
(``process_weights_after_loading``: vLLM's own processing, which does the gfx942 e4m3fnuz conversion
exactly once, then a first call that lets rocm_fp8 prepare its layout, so nothing is made later during
graph capture) and its forward (``apply_weights`` -> ``rocm_fp8.w8a8_block_fp8_linear``, a
``torch.library`` op with a fake implementation, so torch.compile traces it). ``layer.weight`` stays
the plain [N, K] FP8 tensor that other vLLM code (MLA) reads.

vLLM does not catch exceptions from general plugins, so :func:`register` never raises.
"""

from __future__ import annotations

import importlib

import torch

import rocm_fp8
from rocm_fp8 import integrations as common

STACK = "vllm"
KERNEL_NAME = "RocmFp8BlockScaledMMKernel"
LINEAR_MODULE = "vllm.model_executor.kernels.linear"
BASE_MODULE = "vllm.model_executor.kernels.linear.scaled_mm.BlockScaledMMLinearKernel"
PLATFORMS = ("ROCM", "CUDA", "CPU")

_kernel_cls = None


def register() -> None:
    """The entry point vLLM calls in every process. Idempotent; never raises."""
    try:
        _register()
    except Exception as e:  # vLLM would abort its start-up on an exception here
        common.set_state(STACK, "skipped", f"registration failed: {type(e).__name__}: {e}")


def _register() -> None:
    if not common.enabled():
        common.set_state(STACK, "disabled", f"{common.ENV_SWITCH}=0")
        return
    import vllm
    version = getattr(vllm, "__version__", "")
    ok, why = common.version_supported(STACK, version)
    if not ok:
        common.set_state(STACK, "skipped", why)
        return
    linear = importlib.import_module(LINEAR_MODULE)
    table = getattr(linear, "_POSSIBLE_FP8_BLOCK_KERNELS", None)
    if not isinstance(table, dict):
        common.set_state(STACK, "skipped", f"{LINEAR_MODULE}._POSSIBLE_FP8_BLOCK_KERNELS is missing")
        return
    base_mod = importlib.import_module(BASE_MODULE)
    base = getattr(base_mod, "Fp8BlockScaledMMLinearKernel", None)
    if base is None:
        common.set_state(STACK, "skipped", f"{BASE_MODULE}.Fp8BlockScaledMMLinearKernel is missing")
        return
    from vllm.platforms import PlatformEnum
    cls = kernel_class(base)
    for name in PLATFORMS:
        key = getattr(PlatformEnum, name, None)
        if key is None:
            continue
        kernels = table.setdefault(key, [])
        if not any(getattr(k, "__name__", "") == KERNEL_NAME for k in kernels):
            kernels.insert(0, cls)
    common.set_state(STACK, "active", f"{KERNEL_NAME} is first in _POSSIBLE_FP8_BLOCK_KERNELS ({why})")


def kernel_class(base):
    """Build (once) the kernel class on vLLM's base class."""
    global _kernel_cls
    if _kernel_cls is not None:
        return _kernel_cls

    class RocmFp8BlockScaledMMKernel(base):
        """Block-FP8 W8A8 linear through rocm_fp8's dispatcher (backend chosen per shape and M bucket)."""

        # rocm_fp8 quantizes the activation itself (per 1x128 group)
        apply_input_quant = False

        @classmethod
        def is_supported(cls, compute_capability=None):
            if not common.enabled():
                return False, f"is disabled by {common.ENV_SWITCH}=0"
            return True, None

        @classmethod
        def can_implement(cls, config):
            try:
                act = config.activation_quant_key.scale
                wgt = config.weight_quant_key.scale.group_shape
                if act.static:
                    return False, "needs dynamic per-token-group activation scales"
                if not act.group_shape.is_per_group() or act.group_shape.col != 128:
                    return False, f"needs 1x128 activation groups, got {act.group_shape}"
                if (wgt.row, wgt.col) != (128, 128):
                    return False, f"needs 128x128 weight blocks, got {wgt.row}x{wgt.col}"
                n, k = config.weight_shape
                if k % 128:
                    return False, f"needs K % 128 == 0, got K={k}"
            except Exception as e:
                return False, f"cannot read the layer config: {type(e).__name__}: {e}"
            return True, None

        def process_weights_after_loading(self, layer):
            # vLLM's own processing: e4m3fn -> e4m3fnuz on gfx942 (scales doubled once, here only)
            super().process_weights_after_loading(layer)
            params = self._get_layer_params(layer)
            w, s = params.weight, params.block_scale
            n, k = w.shape
            out_dtype = self.config.out_dtype
            common.log_layer_shape(STACK, n, k, common.fp8_name(w.dtype) or str(w.dtype), w.device.type,
                                   str(out_dtype).replace("torch.", ""))
            # a first small call makes rocm_fp8 prepare its layout of this weight now, before any graph capture
            with torch.no_grad():
                x = torch.randn(1, k, device=w.device, dtype=torch.bfloat16)
                rocm_fp8.w8a8_block_fp8_linear(x, w, s, out_dtype=out_dtype)
            common.PREPARED_LAYERS[STACK].add(id(layer))

        def apply_weights(self, layer, x, bias=None, **kwargs):
            params = self._get_layer_params(layer)
            w, s = params.weight, params.block_scale
            x2d = x.reshape(-1, x.shape[-1])
            y = rocm_fp8.w8a8_block_fp8_linear(x2d, w, s, bias=bias, out_dtype=self.config.out_dtype)
            if not torch.compiler.is_compiling():
                common.CALLS[(STACK, w.shape[0], w.shape[1])] += 1
                common.APPLIED_LAYERS[STACK].add(id(layer))
            return y.view(*x.shape[:-1], w.shape[0])

        def apply_block_scaled_mm(self, A, B, As, Bs):
            return rocm_fp8.w8a8_block_fp8_linear(A, B, Bs, input_scale=As, out_dtype=self.config.out_dtype)

    RocmFp8BlockScaledMMKernel.__name__ = KERNEL_NAME
    RocmFp8BlockScaledMMKernel.__qualname__ = KERNEL_NAME
    _kernel_cls = RocmFp8BlockScaledMMKernel
    return _kernel_cls
