"""The portable backend: this repository's Triton FP8 block-scale kernel.

Runs on any GPU Triton targets (the fallback everywhere on AMD; e4m3fnuz on gfx942) and, with
``TRITON_INTERPRET=1``, on CPU tensors. Launch configurations come from the per-device tables in
``rocm_fp8/configs`` (see :mod:`rocm_fp8.kernel_configs`); shapes without one use a size-based default.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Optional

import torch

from rocm_fp8 import kernel_configs
from rocm_fp8.backends.base import OK, Backend, PreparedWeight, Problem, check_block_and_out_dtype, refuse
from rocm_fp8.invalidation import bucket
from rocm_fp8.toolchain import detect

log = logging.getLogger("rocm_fp8")


class TritonBackend(Backend):
    name = "triton"
    description = "rocm_fp8's Triton block-scale FP8 GEMM (any Triton GPU; CPU under TRITON_INTERPRET=1)"

    def __init__(self) -> None:
        # (n, k, m bucket) -> KernelConfig; the hot path reads only this dict.
        self._configs: dict[tuple[int, int, int], object] = {}
        # (n, k, m bucket) -> the table's eager-call KernelConfig, or None (see eager_config_for)
        self._eager: dict[tuple[int, int, int], object] = {}

    # -- can it run here ------------------------------------------------------------------------
    def available(self, toolchain):
        if importlib.util.find_spec("triton") is None:
            return refuse("triton: the 'triton' package is not installed (pip install triton, or use an image "
                          "whose torch ships it)")
        if toolchain.arch == "cpu":
            if not toolchain.triton_interpret:
                return refuse("triton: no GPU is visible; set TRITON_INTERPRET=1 to run the kernel on the CPU "
                              "(slow, for tests)")
            return OK
        if toolchain.vendor not in ("amd", "nvidia"):
            return refuse(f"triton: unknown GPU arch {toolchain.arch!r}")
        return OK

    # -- can it run this problem ------------------------------------------------------------------
    def supports(self, problem: Problem, toolchain):
        ok, why = check_block_and_out_dtype("triton", problem)
        if not ok:
            return ok, why
        if problem.fp8_dtype not in ("e4m3fn", "e4m3fnuz"):
            return refuse(f"triton: FP8 dtype must be e4m3fn or e4m3fnuz, got {problem.fp8_dtype}")
        # any K: a partial last 128-group is masked in the kernel (EVEN_K=False), as K = 3884 needs
        if problem.device_type == "cpu":
            if not toolchain.triton_interpret:
                return refuse("triton: CPU tensors need TRITON_INTERPRET=1")
            return OK
        if toolchain.vendor == "nvidia" and problem.fp8_dtype == "e4m3fnuz":
            return refuse("triton: NVIDIA GPUs have no e4m3fnuz arithmetic; use e4m3fn weights")
        if toolchain.arch == "gfx942" and problem.fp8_dtype != "e4m3fnuz":
            return refuse("triton: gfx942 computes in e4m3fnuz; convert the checkpoint with "
                          "rocm_fp8.e4m3fn_to_e4m3fnuz")
        if toolchain.arch == "gfx950" and problem.fp8_dtype != "e4m3fn":
            return refuse("triton: gfx950 computes in e4m3fn; e4m3fnuz operands would be converted to f16 "
                          "(f16 MFMA, spilled registers)")
        from rocm_fp8.kernels.arch_limits import fits

        ok, why = fits(self.config_for(problem.m, problem.n, problem.k, toolchain), toolchain.arch)
        if not ok:  # config_for falls back to a default that fits, so this means the arch cannot run it
            return refuse(f"triton: no launch configuration fits {toolchain.arch}: {why}")
        return OK

    # -- tables -------------------------------------------------------------------------------------
    def tuned_for(self, problem: Problem, toolchain) -> bool:
        table = kernel_configs.table_for(toolchain.device_name, toolchain.arch, toolchain.cu_count)
        return bool(table and table.has_shape(problem.n, problem.k))

    def measured_tflops(self, problem: Problem, toolchain) -> Optional[float]:
        row = kernel_configs.lookup(problem.m, problem.n, problem.k, toolchain.device_name, toolchain.arch,
                                    toolchain.cu_count)
        return None if row is None else row.triton_tflops

    def config_for(self, m: int, n: int, k: int, toolchain=None):
        """The launch configuration for a problem: the table's row, else the size-based default
        (with the table's default laid over it); either only if it fits the arch's limits
        (:mod:`rocm_fp8.kernels.arch_limits`), else the size-based default, which always does."""
        key = (n, k, bucket(m))
        cfg = self._configs.get(key)
        if cfg is None:
            from rocm_fp8.kernels.arch_limits import fits
            from rocm_fp8.kernels.triton_blockscale import KernelConfig, default_config

            tc = toolchain if toolchain is not None else detect()
            arch = tc.arch if tc.vendor in ("amd", "nvidia") else None
            base = default_config(key[2], n, k, arch=arch)
            row = kernel_configs.lookup(key[2], n, k, tc.device_name, tc.arch, tc.cu_count)
            if row is not None:
                cfg = KernelConfig.from_dict(row.config).validate()
            else:
                table = kernel_configs.table_for(tc.device_name, tc.arch, tc.cu_count)
                cfg = base
                if table is not None and table.default:
                    cfg = KernelConfig.from_dict({**base.to_dict(), **table.default}).validate()
            ok, why = fits(cfg, arch)
            if not ok:
                log.warning("triton: N=%d K=%d M<=%d: the table's config does not fit (%s); using %s",
                            n, k, key[2], why, base.to_dict())
                cfg = base
            eager = None
            if row is not None and row.eager:
                eager = KernelConfig.from_dict(row.eager).validate()
                if not fits(eager, arch)[0] or eager == cfg:
                    eager = None
            self._eager[key] = eager
            self._configs[key] = cfg
        return cfg

    def eager_config_for(self, m: int, n: int, k: int, toolchain=None):
        """The table's config for calls made outside a CUDA/HIP-graph capture, where it differs from
        :meth:`config_for` (None otherwise). At small M a captured call costs its GPU time only, an
        eager one also its launches' host time: ``rocm-fp8 tune`` times both ways and keeps, as the
        row's ``eager``, a config with fewer launches (the one-launch fma kernel) where that makes
        eager calls faster than the graph winner does."""
        self.config_for(m, n, k, toolchain)
        return self._eager.get((n, k, bucket(m)))

    # -- once per layer -------------------------------------------------------------------------------
    def prepare_weight(self, weight, weight_scale):
        w = weight if weight.stride(-1) == 1 else weight.contiguous()
        return PreparedWeight(self.name, w, weight_scale, w.shape[0], w.shape[1])

    # -- once per (layer, M bucket) -------------------------------------------------------------------
    def _bound_pair(self, prepared: PreparedWeight, out_dtype, m_bucket: int):
        """(bound launch of the bucket's config, bound launch for eager calls or None), made once per
        (weight, out dtype, bucket) and shared by the FP8-input and float-input calls."""
        key = ("pair", out_dtype, m_bucket)
        pair = prepared.extra.get(key)
        if pair is None:
            from rocm_fp8.kernels.triton_blockscale import bind

            cfg = self.config_for(m_bucket, prepared.n, prepared.k)
            eager = self.eager_config_for(m_bucket, prepared.n, prepared.k) if eager_configs_enabled() else None
            # a table row may name the Gluon sm90 kernel (kernel="gluon_ws2") or the fma kernel:
            # bind() routes to it (Gluon where it can run, else the Triton kernel with the same tile)
            main = bind(prepared.weight, prepared.weight_scale, out_dtype, cfg)
            fast = None
            if eager is not None and prepared.weight.device.type == "cuda":
                fast = bind(prepared.weight, prepared.weight_scale, out_dtype, eager)
            pair = prepared.extra[key] = (main, fast)
        return pair

    def bind(self, prepared: PreparedWeight, out_dtype, m_bucket: int):
        """``run(x_q, x_scale) -> y`` for any M in the bucket: config, grid, constexprs and the weight's
        arguments settled now, launched directly after the first call (kernels/triton_blockscale.BoundGemm).
        Where the table keeps an eager config for the bucket, calls outside a graph capture take it."""
        main, fast = self._bound_pair(prepared, out_dtype, m_bucket)
        if fast is None:
            return main
        capturing = torch.cuda.is_current_stream_capturing

        def call(x_q, x_scale):
            return main(x_q, x_scale) if capturing() else fast(x_q, x_scale)

        call.config, call.eager_config = main.config, fast.config  # what runs in a capture / outside one
        return call

    def bind_float_input(self, prepared: PreparedWeight, out_dtype, m_bucket: int, fp8_dtype, group_size: int):
        """Float input: one launch where the bucket's config (or its eager one) is the fma kernel, which
        quantizes the activation itself (the fused quant kernel's bits); else the fused quant kernel
        writing into per-stream buffers (``quantize_fp8(scratch=True)``: nothing allocated) and the
        bound GEMM. None where the Triton kernels cannot run (CPU tensors without the interpreter)."""
        from rocm_fp8.kernels.triton_blockscale import BoundFma

        if group_size != 128 or (prepared.weight.device.type == "cpu" and not _interpreting()):
            return None
        main, fast = self._bound_pair(prepared, out_dtype, m_bucket)
        quantize = _quant().quantize_fp8
        fallback = self.quantize_input

        def of(bound):
            if isinstance(bound, BoundFma):
                return bound.float_input

            def two_launches(x):
                if x.dtype in _QUANT_INPUTS:
                    # quantized into per-stream buffers the GEMM reads next (no allocation)
                    return bound(*quantize(x, fp8_dtype, 128, "row", False, scratch=True))
                return bound(*fallback(x, fp8_dtype, 128))

            return two_launches

        main_fn = of(main)
        if fast is None:
            return main_fn
        fast_fn = of(fast)
        capturing = torch.cuda.is_current_stream_capturing

        def call(x):
            return main_fn(x) if capturing() else fast_fn(x)

        return call

    # -- hot path -----------------------------------------------------------------------------------
    def quantize_input(self, x, fp8_dtype, group_size: int = 128):
        """The fused Triton quant kernel on GPU tensors (and on CPU ones under TRITON_INTERPRET=1),
        bit for bit what rocm_fp8.quant.quantize_activation computes; torch's ops otherwise."""
        if x.dtype in _QUANT_INPUTS and x.dim() == 2 and group_size == 128 and (
                x.device.type != "cpu" or _interpreting()):
            return _quant().quantize_fp8(x, fp8_dtype, group_size, "row", check=False)
        return super().quantize_input(x, fp8_dtype, group_size)

    def run(self, x_q, x_scale, prepared: PreparedWeight, out_dtype):
        # rocm_fp8.ops.check_args has validated shapes, dtypes and devices; the bound call does not
        # check again (the launcher's checks cost ~20 us of host time per call on the H100 host).
        key = ("bound", out_dtype, bucket(x_q.shape[0]))
        bound = prepared.extra.get(key)
        if bound is None:
            bound = prepared.extra[key] = self.bind(prepared, out_dtype, key[2])
        return bound(x_q, x_scale)


_QUANT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)

#: "0" turns the tables' eager configs off: every call of a bucket runs its graph config, so eager
#: and captured calls give the same bits (with eager configs on they may differ in the last bits,
#: another summation order; both pass the accuracy gate). Read when a layer's bucket is bound.
ENV_EAGER_CONFIGS = "ROCM_FP8_EAGER_CONFIGS"


def eager_configs_enabled() -> bool:
    return os.environ.get(ENV_EAGER_CONFIGS, "1").strip() not in ("0", "false", "no", "off")
_quant_module = None


def _quant():
    global _quant_module
    if _quant_module is None:
        from rocm_fp8.kernels import quant_fp8

        _quant_module = quant_fp8
    return _quant_module


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
