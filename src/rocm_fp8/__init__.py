"""rocm_fp8: FP8 block-scale linear layers that pick a fast *and correct* kernel for the toolchain."""

__version__ = "0.1.0"

from rocm_fp8.quant import (  # noqa: E402
    dequantize_activation,
    dequantize_weight,
    e4m3fn_to_e4m3fnuz,
    quantize_activation,
    quantize_weight,
)
