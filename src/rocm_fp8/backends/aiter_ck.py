"""aiter's Composable Kernel FP8 block-scale GEMM (``aiter.gemm_a8w8_blockscale``).

XQ [M, K] fp8, WQ [N, K] fp8 (not shuffled), x_scale [M, K/128] fp32 row-major,
w_scale [ceil(N/128), K/128] fp32. JIT-compiled by the image's hipcc on first use (or prebuilt).
"""

from __future__ import annotations

from rocm_fp8.backends import _aiter
from rocm_fp8.backends.base import Backend, PreparedWeight


class AiterCKBackend(Backend):
    name = "aiter-ck"
    description = "aiter CK gemm_a8w8_blockscale"

    def available(self, toolchain):
        return _aiter.check_here(self.name, toolchain)

    def supports(self, problem, toolchain):
        return _aiter.check_problem(self.name, problem, toolchain)

    def prepare_weight(self, weight, weight_scale):
        _aiter.import_aiter()
        return PreparedWeight(self.name, weight.contiguous(), weight_scale.contiguous(), weight.shape[0],
                              weight.shape[1])

    def quantize_input(self, x, fp8_dtype, group_size=128):
        return _aiter.hip_quant(x, fp8_dtype)

    def run(self, x_q, x_scale, prepared, out_dtype):
        aiter = _aiter.import_aiter()
        return aiter.gemm_a8w8_blockscale(x_q.contiguous(), prepared.weight, x_scale.contiguous(),
                                          prepared.weight_scale, dtype=out_dtype)
