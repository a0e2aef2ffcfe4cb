"""The numerical ground truth: dequantize both operands to float32 and multiply.

Runs on any device torch runs on, so it is also the CPU path. Slow on purpose: no tricks that
could share a bug with the kernels it checks.
"""

from __future__ import annotations

import torch

from rocm_fp8.backends.base import OK, Backend, PreparedWeight, Problem
from rocm_fp8.quant import dequantize_activation, dequantize_weight


class ReferenceBackend(Backend):
    name = "reference"
    description = "float32 dequantize + matmul in torch (ground truth; any device)"

    def available(self, toolchain):
        return OK

    def supports(self, problem: Problem, toolchain):
        return OK

    def prepare_weight(self, weight, weight_scale):
        return PreparedWeight(self.name, weight, weight_scale, weight.shape[0], weight.shape[1])

    def run(self, x_q, x_scale, prepared: PreparedWeight, out_dtype):
        block = prepared.block
        x = dequantize_activation(x_q, x_scale, block[1])
        w = dequantize_weight(prepared.weight, prepared.weight_scale, block)
        return torch.matmul(x, w.t()).to(out_dtype)
