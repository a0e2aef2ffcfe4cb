"""rocm_fp8: FP8 block-scale linear layers that run a kernel which is fast *and* correct here.

    y = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_scale)      # picks a backend, explains why
    rocm_fp8.explain(n=2048, k=3072, m=4096)                   # the decision, with every reason

Architecture (docs/architecture.md): ``toolchain`` (facts) -> ``backends`` (what each kernel can
do) -> ``evidence`` (ledger + probe: what is correct) -> ``policy`` (pure decision) -> ``dispatch``
(cached, per M bucket) -> ``ops`` / ``module`` (the API). Importing this package pulls in torch
only; triton and aiter are imported when a backend that needs them runs.
"""

__version__ = "0.1.0"

from rocm_fp8.backends import all_backends, backend_names, get_backend, register_backend, unregister_backend
from rocm_fp8.backends.base import Backend, PreparedWeight, Problem
from rocm_fp8.dispatch import clear_caches, invalidate_weight
from rocm_fp8.errors import (
    BackendFailedError,
    BackendUnavailableError,
    Fp8Error,
    NoBackendError,
    UnsafeBackendError,
)
from rocm_fp8.evidence import Verdict
from rocm_fp8.explain import explain
from rocm_fp8.module import Fp8BlockLinear
from rocm_fp8.ops import w8a8_block_fp8_linear
from rocm_fp8.quant import (
    dequantize_activation,
    dequantize_weight,
    e4m3fn_to_e4m3fnuz,
    quantize_activation,
    quantize_weight,
)
from rocm_fp8.toolchain import Toolchain

__all__ = [
    "w8a8_block_fp8_linear", "Fp8BlockLinear", "explain", "quantize_activation", "quantize_weight",
    "dequantize_activation", "dequantize_weight", "e4m3fn_to_e4m3fnuz", "Toolchain", "Backend", "Problem",
    "PreparedWeight", "Verdict", "register_backend", "unregister_backend", "get_backend", "all_backends",
    "backend_names", "clear_caches", "invalidate_weight", "Fp8Error", "BackendUnavailableError", "UnsafeBackendError",
    "BackendFailedError", "NoBackendError", "__version__",
]
