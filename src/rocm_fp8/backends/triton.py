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

#: Float input in M buckets up to this, outside CUDA/HIP-graph capture: one launch of the GEMM that
#: quantizes its activation in its prologue (kernels/triton_blockscale.BoundQuantGemm) instead of the
#: fused quant kernel followed by the GEMM. Eager calls at small M are bound by host time (a launch
#: costs more than the kernel runs), so one launch fewer wins even though every N tile re-quantizes
#: its rows; inside a graph only GPU time counts, and the two-kernel path is the faster one there.
PROLOGUE_MAX_M = 16
#: ... and only with tiles of at most this many rows: each N tile re-quantizes all of its BLOCK_M rows
#: (rows past M are copies of real ones), so a tall tile multiplies the prologue's work; the AMD
#: tables' 128-row default (8 warps, waves_per_eu 2) even spills a VGPR with it on gfx950.
PROLOGUE_MAX_BLOCK_M = 32


class TritonBackend(Backend):
    name = "triton"
    description = "rocm_fp8's Triton block-scale FP8 GEMM (any Triton GPU; CPU under TRITON_INTERPRET=1)"

    def __init__(self) -> None:
        # (n, k, m bucket) -> KernelConfig; the hot path reads only this dict.
        self._configs: dict[tuple[int, int, int], object] = {}

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
            self._configs[key] = cfg
        return cfg

    # -- once per layer -------------------------------------------------------------------------------
    def prepare_weight(self, weight, weight_scale):
        w = weight if weight.stride(-1) == 1 else weight.contiguous()
        return PreparedWeight(self.name, w, weight_scale, w.shape[0], w.shape[1])

    # -- once per (layer, M bucket) -------------------------------------------------------------------
    def bind(self, prepared: PreparedWeight, out_dtype, m_bucket: int):
        """``run(x_q, x_scale) -> y`` for any M in the bucket: config, grid, constexprs and the weight's
        arguments settled now, launched directly after the first call (kernels/triton_blockscale.BoundGemm)."""
        from rocm_fp8.kernels.triton_blockscale import bind

        key = ("bound", out_dtype, m_bucket)
        bound = prepared.extra.get(key)
        if bound is None:
            cfg = self.config_for(m_bucket, prepared.n, prepared.k)
            # a table row may name the Gluon sm90 kernel (kernel="gluon_ws"): bind() routes to it where
            # it can run, else to the Triton kernel with the same tile
            bound = prepared.extra[key] = bind(prepared.weight, prepared.weight_scale, out_dtype, cfg)
        return bound

    def prologue_quant_applies(self, m_bucket: int, n: int, k: int, toolchain=None) -> bool:
        """Whether eager float-input calls in this M bucket take the GEMM quantizing in its prologue:
        small buckets (PROLOGUE_MAX_M) whose config is this backend's Triton kernel (not a Gluon one)
        with a tile of at most PROLOGUE_MAX_BLOCK_M rows."""
        if m_bucket > PROLOGUE_MAX_M:
            return False
        cfg = self.config_for(m_bucket, n, k, toolchain)
        return cfg.kernel is None and cfg.block_m <= PROLOGUE_MAX_BLOCK_M

    def bind_float_input(self, prepared: PreparedWeight, out_dtype, m_bucket: int, fp8_dtype, group_size: int):
        """Float input in a small M bucket: ``run(x)`` launches the GEMM that quantizes ``x`` in its
        prologue (one launch, plus the split-K reduction where the config splits K) when the current
        stream is not being captured into a CUDA/HIP graph, else the fused quant kernel and the bound
        GEMM (what ``quantize_input`` + ``bind`` do). Both give the same bits. None (the dispatcher
        quantizes, then calls ``bind``'s callable) for larger buckets and where the prologue cannot run.

        The first eager call per input dtype runs both paths and compares their bits: it compiles and
        warms the two-kernel path before any graph capture needs it, and where the prologue kernel
        disagrees (a compiler problem on some GPU) or cannot run (out of resources), the layer keeps
        the two-kernel path, with a warning.
        """
        weight = prepared.weight
        dev = weight.device
        if group_size != 128 or fp8_dtype != weight.dtype or (dev.type == "cpu" and not _interpreting()):
            return None
        if not self.prologue_quant_applies(m_bucket, prepared.n, prepared.k):
            return None
        from rocm_fp8.kernels.triton_blockscale import BoundQuantGemm

        cfg = self.config_for(m_bucket, prepared.n, prepared.k)
        bound = self.bind(prepared, out_dtype, m_bucket)
        quantize = self.quantize_input
        fused: dict = {}  # input dtype -> BoundQuantGemm, or None where its first result disagreed
        capturing = torch.cuda.is_current_stream_capturing if dev.type == "cuda" else _never

        def two_kernels(x):
            return bound(*quantize(x, fp8_dtype, 128))

        def first_call(x):
            gemm = BoundQuantGemm(weight, prepared.weight_scale, out_dtype, cfg, x.dtype)
            try:
                y = gemm(x)
            except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory: the two-kernel route still runs
                fused[x.dtype] = None
                log.warning("triton: N=%d K=%d M<=%d %s input: the GEMM quantizing in its prologue cannot run here "
                            "(%s: %s); this layer keeps quant kernel + GEMM", prepared.n, prepared.k, m_bucket,
                            x.dtype, type(exc).__name__, str(exc)[:200])
                return two_kernels(x)
            want = two_kernels(x)
            if same_bits(y, want):
                fused[x.dtype] = gemm
            else:
                fused[x.dtype] = None
                log.warning("triton: N=%d K=%d M<=%d %s input: the GEMM quantizing in its prologue disagrees with "
                            "quant kernel + GEMM here (%s); this layer keeps the two-kernel path",
                            prepared.n, prepared.k, m_bucket, x.dtype, _disagreement(y, want))
            return want

        def run(x):
            if capturing() or x.dtype not in _QUANT_INPUTS:
                return two_kernels(x)
            gemm = fused.get(x.dtype, _UNSEEN)
            if gemm is _UNSEEN:
                return first_call(x)
            return two_kernels(x) if gemm is None else gemm(x)

        run.prologue_kernels = fused  # for tests and diagnostics: which dtypes kept the prologue path
        return run

    def describe_float_input(self, problem: Problem, toolchain) -> str:
        """How a float activation reaches the GEMM for ``problem`` (a note for ``explain``)."""
        two = "the fused quant kernel, then the GEMM"
        if problem.block_k == 128 and self.prologue_quant_applies(bucket(problem.m), problem.n, problem.k, toolchain):
            return (f"float input (M<={PROLOGUE_MAX_M}): eager calls run the GEMM quantizing its activation in its "
                    f"prologue (one launch); under CUDA/HIP-graph capture {two} (same bits)")
        if problem.m <= PROLOGUE_MAX_M:
            return (f"float input: {two}, eager and captured (the prologue route needs a Triton tile of at most "
                    f"{PROLOGUE_MAX_BLOCK_M} rows)")
        return f"float input: {two}, eager and captured"

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
            bound = self.bind(prepared, out_dtype, key[2])
        return bound(x_q, x_scale)


_QUANT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)
_quant_module = None


def _quant():
    global _quant_module
    if _quant_module is None:
        from rocm_fp8.kernels import quant_fp8

        _quant_module = quant_fp8
    return _quant_module


_UNSEEN = object()


def _never() -> bool:
    return False


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes, dtypes and bits (NaN included: ``torch.equal`` would call two NaNs different)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}.get(a.dtype)
    return torch.equal(a.view(as_int), b.view(as_int)) if as_int is not None else torch.equal(a, b)


def _disagreement(y: torch.Tensor, want: torch.Tensor) -> str:
    nan = int(torch.isnan(y).sum()) - int(torch.isnan(want).sum())
    diff = (y.float() - want.float()).abs().nan_to_num(float("inf")).max().item()
    return f"{nan:+d} NaN, max |diff| {diff:.3g}"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
