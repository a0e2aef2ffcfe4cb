"""aiter's Triton FP8 block-scale GEMM (``aiter.ops.triton.gemm_a8w8_blockscale``).

Takes any scale strides and the plain [N, K] weight. aiter ships per-shape configs for some (N, K);
those shapes are where sglang prefers it on every ROCm version. It takes a partial last K group:
the kernel masks the K tail (its ``EVEN_K`` heuristic) and the wrapper infers the 128 group from
the scale's shape. It writes bfloat16 or float16; float32 is computed in bfloat16 and cast once.
"""

from __future__ import annotations

from rocm_fp8.backends import _aiter
from rocm_fp8.backends.base import OK, Backend, PreparedWeight


class AiterTritonBackend(Backend):
    name = "aiter-triton"
    description = "aiter's Triton kernel (aiter.ops.triton.gemm_a8w8_blockscale)"

    def __init__(self):
        self._fn = None

    def available(self, toolchain):
        ok, why = _aiter.check_here(self.name, toolchain)
        if not ok:
            return ok, why
        if not toolchain.triton_version:
            return False, f"{self.name}: triton is not installed"
        return OK

    def supports(self, problem, toolchain):
        return _aiter.check_problem(self.name, problem, toolchain, partial_k=True)

    def tuned_for(self, problem, toolchain):
        return (problem.n, problem.k) in _aiter.tuned_shapes(toolchain)

    def _kernel(self):
        if self._fn is None:
            _aiter.import_aiter()
            from aiter.ops.triton.gemm_a8w8_blockscale import gemm_a8w8_blockscale

            self._fn = gemm_a8w8_blockscale
        return self._fn

    def prepare_weight(self, weight, weight_scale):
        self._kernel()  # import (and fail) at load time, not on the first request
        return PreparedWeight(self.name, weight.contiguous(), weight_scale.contiguous(), weight.shape[0],
                              weight.shape[1])

    def quantize_input(self, x, fp8_dtype, group_size=128):
        if x.shape[-1] % 128:
            # a partial last group: rocm_fp8's own quantizer, whose scale layout for it is tested here
            # (aiter's HIP per-1x128 quant is not documented for it)
            return super().quantize_input(x, fp8_dtype, group_size)
        return _aiter.hip_quant(x, fp8_dtype)

    def run(self, x_q, x_scale, prepared, out_dtype):
        return self._kernel()(x_q, prepared.weight, x_scale, prepared.weight_scale, dtype=out_dtype)
