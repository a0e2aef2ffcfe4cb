"""aiter's CK FP8 block-scale GEMM on a pre-shuffled weight (``aiter.gemm_a8w8_blockscale_bpreshuffle``).

The weight is shuffled once at load with ``shuffle_weight(W, (16, 16))`` (same shape; needs
N % 16 == 0 and K % 32 == 0). The activation scale is physically [K/128, M] (M-contiguous) and is
passed as its [M, K/128] view with strides (1, M).
"""

from __future__ import annotations

from rocm_fp8.backends import _aiter
from rocm_fp8.backends.base import OK, Backend, PreparedWeight


def m_contiguous(x_scale):
    """[M, G] scale -> the same values stored [G, M], seen as [M, G] with strides (1, M)."""
    if x_scale.dim() == 2 and x_scale.stride(0) == 1 and x_scale.stride(1) == x_scale.shape[0]:
        return x_scale
    return x_scale.t().contiguous().t()


class AiterBpreshuffleBackend(Backend):
    name = "aiter-bpreshuffle"
    description = "aiter CK gemm_a8w8_blockscale_bpreshuffle (weight shuffled (16,16) at load)"

    def available(self, toolchain):
        return _aiter.check_here(self.name, toolchain)

    def supports(self, problem, toolchain):
        ok, why = _aiter.check_problem(self.name, problem, toolchain)
        if not ok:
            return ok, why
        if problem.n % 16:
            return False, f"{self.name}: the (16,16) weight shuffle needs N % 16 == 0, got N={problem.n}"
        if problem.k % 32:
            return False, f"{self.name}: the (16,16) weight shuffle needs K % 32 == 0, got K={problem.k}"
        return OK

    def prepare_weight(self, weight, weight_scale):
        _aiter.import_aiter()
        from aiter.ops.shuffle import shuffle_weight

        shuffled = shuffle_weight(weight.contiguous(), layout=(16, 16))
        return PreparedWeight(self.name, shuffled, weight_scale.contiguous(), weight.shape[0], weight.shape[1],
                              extra={"layout": (16, 16)})

    def quantize_input(self, x, fp8_dtype, group_size=128):
        x_q, x_scale = _aiter.hip_quant(x, fp8_dtype)
        return x_q, m_contiguous(x_scale)

    def run(self, x_q, x_scale, prepared, out_dtype):
        aiter = _aiter.import_aiter()
        return aiter.gemm_a8w8_blockscale_bpreshuffle(x_q.contiguous(), prepared.weight, m_contiguous(x_scale),
                                                      prepared.weight_scale, dtype=out_dtype)
