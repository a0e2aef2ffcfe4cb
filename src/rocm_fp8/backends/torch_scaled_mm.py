"""cuBLASLt blockwise FP8 through ``torch._scaled_mm`` (or ``torch.nn.functional.scaled_mm``), SM90.

cuBLASLt wants: A [M, K] row-major, B as a column-major [K, N] view (``w_q.t()``), the activation
scales [M, K/128] M-contiguous (strides (1, M)) and the weight scales as ``w_scale.t()``
([K/128, N/128]). It refuses M that is not a multiple of 4 (CUBLAS_STATUS_NOT_SUPPORTED at
M = 1, 2, 3, 5, 15, 17, 33, 65; fine at 4, 8, 12, 16, 24, 32, 48, 64 on an H100 with torch
2.11+cu130, bench/env_probe.py): such M are padded up with zero rows (scale 1), which are dropped.
K is zero-padded to a multiple of 512 (see ``padded_k``), which also serves a partial last K group,
and N to a multiple of 16 (the output's extra columns are dropped). cuBLASLt's blockwise FP8 writes
bfloat16 only: ``supports`` refuses other output dtypes, so the dispatcher computes bfloat16 and
casts once.

Host cost per call: the bound calls fix the weight operands and the entry point once per (weight, M
bucket). FP8 input that needs padding is padded by one launch (``quant_fp8.pad_fp8``: both operands;
one torch op per operand where Triton cannot run). Float input takes ``bind_float_input``: the fused
quant kernel writes the padded operands and M-contiguous scales directly, then the GEMM.
"""

from __future__ import annotations

from typing import Optional

import torch

from rocm_fp8 import kernel_configs
from rocm_fp8.backends.base import OK, Backend, PreparedWeight, Problem, check_block_and_out_dtype, refuse
from rocm_fp8.toolchain import parse_version

#: M below this is padded
MIN_M = 4
#: and M is rounded up to a multiple of this (measured: cuBLASLt refuses other M)
ALIGN_M = 4
#: N is padded to a multiple of this (cuBLASLt's FP8 operands need 16-byte aligned leading dimensions)
ALIGN_N = 16

_QUANT_INPUTS = (torch.bfloat16, torch.float16, torch.float32)
_quant_module = False  # not looked up yet; None: triton is not importable


def _triton_quant():
    global _quant_module
    if _quant_module is False:
        try:
            from rocm_fp8.kernels import quant_fp8
        except ImportError:
            quant_fp8 = None
        _quant_module = quant_fp8
    return _quant_module


def _api():
    """The scaled-mm entry point of this torch: ("private", fn), ("functional", fn) or None."""
    fn = getattr(torch, "_scaled_mm", None)
    if fn is not None:
        return ("private", fn)
    fn = getattr(torch.nn.functional, "scaled_mm", None)
    if fn is not None:
        return ("functional", fn)
    return None


class TorchScaledMMBackend(Backend):
    name = "torch-scaled-mm"
    description = "cuBLASLt blockwise FP8 (1x128 x 128x128) via torch._scaled_mm, NVIDIA Hopper"

    def __init__(self) -> None:
        self._api = _api()

    def available(self, toolchain):
        if toolchain.arch != "sm90":
            return refuse(f"torch-scaled-mm: cuBLASLt blockwise FP8 is used on NVIDIA Hopper (sm90) only, "
                          f"this is {toolchain.arch}")
        if self._api is None:
            return refuse(f"torch-scaled-mm: torch {torch.__version__} has neither torch._scaled_mm nor "
                          "torch.nn.functional.scaled_mm")
        cuda = parse_version(toolchain.torch_cuda)
        if cuda is None or cuda < (12, 9):
            return refuse(f"torch-scaled-mm: blockwise scaling needs a torch built with CUDA >= 12.9, "
                          f"got {toolchain.torch_cuda}")
        tv = parse_version(toolchain.torch_version)
        if tv is not None and tv < (2, 9):
            return refuse(f"torch-scaled-mm: blockwise scales need torch >= 2.9, got {toolchain.torch_version}")
        return OK

    def supports(self, problem: Problem, toolchain):
        if problem.device_type != "cuda":
            return refuse("torch-scaled-mm: needs CUDA tensors")
        ok, why = check_block_and_out_dtype("torch-scaled-mm", problem, ("bfloat16",))  # cuBLASLt writes bf16
        if not ok:
            return ok, why
        if problem.fp8_dtype != "e4m3fn":
            return refuse(f"torch-scaled-mm: cuBLASLt takes e4m3fn, got {problem.fp8_dtype}")
        return OK

    def tuned_for(self, problem: Problem, toolchain) -> bool:
        return False  # cuBLASLt chooses its own kernels

    def measured_tflops(self, problem: Problem, toolchain) -> Optional[float]:
        row = kernel_configs.lookup(problem.m, problem.n, problem.k, toolchain.device_name, toolchain.arch,
                                    toolchain.cu_count)
        return None if row is None else row.scaled_mm_tflops

    def prepare_weight(self, weight, weight_scale):
        w = weight if weight.stride(-1) == 1 else weight.contiguous()
        n, k = w.shape
        kp, np_ = padded_k(k), -(-n // ALIGN_N) * ALIGN_N
        if (kp, np_) != (k, n):
            # zero K columns (scale 1: irrelevant) so that K/128 is a multiple of 4 (see padded_k), which also
            # completes a partial last K group; zero N rows so that N is a multiple of 16 (cuBLASLt's alignment)
            wp = torch.zeros((np_, kp), dtype=w.dtype, device=w.device)
            wp[:n, :k] = w
            sp = torch.ones((weight_scale.shape[0], kp // 128), dtype=torch.float32, device=w.device)
            sp[:, : weight_scale.shape[1]] = weight_scale
            w, weight_scale = wp, sp
        # cuBLASLt reads B column-major [K, N] and its scales as [K/128, N/128].
        return PreparedWeight(self.name, w, weight_scale, n, k, extra={"b": w.t(), "scale_b": weight_scale.t()})

    def quantize_input(self, x, fp8_dtype, group_size: int = 128):
        """On CUDA tensors, the fused Triton quant kernel writing the scale M-contiguous (strides (1, M)),
        the layout cuBLASLt reads, so no transposing copy follows; torch's ops otherwise."""
        if (x.device.type == "cuda" and x.dtype in _QUANT_INPUTS and x.dim() == 2 and group_size == 128
                and _triton_quant() is not None):
            return _triton_quant().quantize_fp8(x, fp8_dtype, group_size, "col", check=False)
        return super().quantize_input(x, fp8_dtype, group_size)

    def bind(self, prepared: PreparedWeight, out_dtype, m_bucket: int):
        """Pre-quantized input: pad M (and K, for a padded weight) where needed, both operands in one
        launch (the Triton pad kernel; without Triton, one torch op per operand)."""
        mm, b, scale_b, n, k, kb, n_padded, fixed_mp = _bound_operands(self._api, prepared, m_bucket)
        to_bytes, fp8 = torch.uint8, prepared.weight.dtype
        quant = _triton_quant()
        pad = None
        if quant is not None and (prepared.weight.device.type == "cuda" or quant.fast_launch.interpreting()):
            pad = quant.pad_fp8

        def run(x_q, x_scale):
            m = x_q.shape[0]
            mp = fixed_mp or max(MIN_M, -(-m // ALIGN_M) * ALIGN_M)
            if mp != m or kb != k:
                if pad is None:
                    x_q, scale_a = _pad_operands(x_q, x_scale, mp, kb, to_bytes, fp8)
                else:
                    x_q, scale_a = pad(x_q if x_q.stride(1) == 1 else x_q.contiguous(), x_scale, mp, kb, 128, True)
            else:
                scale_a = x_scale if x_scale.stride(0) == 1 and x_scale.stride(1) == m else x_scale.t().contiguous().t()
                if x_q.stride(-1) != 1:
                    x_q = x_q.contiguous()
            y = mm(x_q, b, scale_a, scale_b, out_dtype)
            if mp != m:
                y = y[:m]
            return y[:, :n].contiguous() if n_padded else y

        return run

    def bind_float_input(self, prepared: PreparedWeight, out_dtype, m_bucket: int, fp8_dtype, group_size: int):
        """Float input: one fused quant launch writes the operands cuBLASLt reads, already padded
        (M to cuBLASLt's multiple of 4, K to the weight's padded K, zeros) with the scales M-contiguous;
        then the GEMM. None (quantize_input + bind) where the Triton quant kernel cannot run."""
        quant = _triton_quant()
        if quant is None or group_size != 128:
            return None
        if prepared.weight.device.type != "cuda" and not quant.fast_launch.interpreting():
            return None
        mm, b, scale_b, n, _k, kb, n_padded, fixed_mp = _bound_operands(self._api, prepared, m_bucket)
        quantize = quant.quantize_fp8

        def run(x):
            m = x.shape[0]
            mp = fixed_mp or max(MIN_M, -(-m // ALIGN_M) * ALIGN_M)
            x_q, scale_a = quantize(x, fp8_dtype, 128, "col", False, mp, kb, scratch=True)
            y = mm(x_q, b, scale_a, scale_b, out_dtype)
            if mp != m:
                y = y[:m]
            return y[:, :n].contiguous() if n_padded else y

        return run

    def run(self, x_q, x_scale, prepared: PreparedWeight, out_dtype):
        y = scaled_mm_blockwise(x_q, x_scale, prepared.extra["b"], prepared.extra["scale_b"], out_dtype, self._api)
        return y if y.shape[1] == prepared.n else y[:, : prepared.n].contiguous()


def _mm(api):
    """``(a, b, scale_a, scale_b, out_dtype) -> y`` through this torch's scaled-mm entry point."""
    kind, fn = api
    if kind == "private":
        def mm(a, b, scale_a, scale_b, out_dtype):
            return fn(a, b, scale_a, scale_b, out_dtype=out_dtype)
    else:
        st = torch.nn.functional.ScalingType
        bw_a, bw_b = st.BlockWise1x128, st.BlockWise128x128

        def mm(a, b, scale_a, scale_b, out_dtype):
            return fn(a, b, scale_a, bw_a, scale_b, bw_b, output_dtype=out_dtype)
    return mm


def _bound_operands(api, prepared: PreparedWeight, m_bucket: int) -> tuple:
    """What a bound call fixes once per (weight, M bucket): the GEMM entry point, the weight operands,
    the real N and K, the weight's padded K, whether N was padded, and the padded M where the whole
    bucket pads to the same M (buckets up to MIN_M; 0 otherwise: computed per call)."""
    b, scale_b = prepared.extra["b"], prepared.extra["scale_b"]
    return (_mm(api), b, scale_b, prepared.n, prepared.k, b.shape[0], b.shape[1] != prepared.n,
            MIN_M if m_bucket <= MIN_M else 0)


def _pad_operands(x_q, x_scale, mp: int, kp: int, to_bytes=torch.uint8, fp8=None):
    """``x_q [M, K]`` -> ``[mp, kp]`` zero-padded, ``x_scale [M, ceil(K/128)]`` -> ``[mp, kp/128]`` with
    strides (1, mp), padded with 1: one op per operand. The FP8 tensor is padded through a byte view
    (the zero byte is FP8 zero in both flavours), which needs no FP8 fill kernel."""
    m, k = x_q.shape
    xp = torch.nn.functional.pad(x_q.view(to_bytes), (0, kp - k, 0, mp - m)).view(fp8 or x_q.dtype)
    sp = torch.nn.functional.pad(x_scale.t(), (0, mp - m, 0, kp // 128 - x_scale.shape[1]), value=1.0)
    # a pad of nothing (K padded within its last group, M aligned) hands back the input's strides
    return (xp if xp.is_contiguous() else xp.contiguous()), (sp if sp.is_contiguous() else sp.contiguous()).t()


def padded_k(k: int) -> int:
    """K rounded up so that K/128 is a multiple of 4.

    Measured, not documented: on an H100 (torch 2.11+cu130) cuBLASLt blockwise scaling returned
    wrong values or NaN at every M for K/128 = 2, 3 and 18 (rocm-fp8 probe,
    bench/results/probe-h100-before-scaled-mm-fix.txt). Zero-padding K to a multiple of 512 keeps
    the product exact and every scale row 16-byte aligned.
    """
    return -(-k // 512) * 512


def scaled_mm_blockwise(x_q, x_scale, b, scale_b, out_dtype=torch.bfloat16, api=None):
    """``x_q [M, K]`` e4m3fn, ``x_scale [M, K/128]`` (any strides), ``b = w_q.t()`` ([Kb, N], where
    Kb >= K is the weight's K, padded by ``prepare_weight``), ``scale_b = w_scale.t()`` -> ``[M, N]``.
    Pads small or unaligned M, and K up to the weight's padded K, with zeros (scale 1)."""
    m, k = x_q.shape
    kb = b.shape[0]
    mp = max(MIN_M, -(-m // ALIGN_M) * ALIGN_M)
    if mp != m or kb != k:
        x_q, scale_a = _pad_operands(x_q, x_scale, mp, kb)
    elif x_scale.stride(0) == 1 and x_scale.stride(1) == m:
        scale_a = x_scale
    else:
        scale_a = x_scale.t().contiguous().t()
    if x_q.stride(-1) != 1:
        x_q = x_q.contiguous()
    y = _mm(api or _api())(x_q, b, scale_a, scale_b, out_dtype)
    return y if mp == m else y[:m]
