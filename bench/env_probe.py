"""Facts about this GPU's software that the backends rely on, as JSON on stdout.

Which M cuBLASLt's blockwise FP8 accepts unpadded (the torch-scaled-mm backend pads the rest), whether
it writes fp16, and which Triton features (TMA descriptors, warp specialization) this Triton has.
"""

from __future__ import annotations

import json
import sys

import torch


def main() -> int:
    from rocm_fp8.kernels import triton_blockscale as tb
    import triton

    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "capability": torch.cuda.get_device_capability(),
            "sms": torch.cuda.get_device_properties(0).multi_processor_count,
            "l2_bytes": getattr(torch.cuda.get_device_properties(0), "L2_cache_size", None),
            "tensor_descriptor": tb._TensorDescriptor is not None,
            "scaled_mm": {}}
    n, k = 2112, 1024
    w = (torch.randn(n, k, device="cuda") * 10).to(torch.float8_e4m3fn)
    ws = torch.rand(-(-n // 128), k // 128, device="cuda") + 0.5
    for m in (1, 2, 3, 4, 5, 8, 12, 15, 16, 17, 24, 32, 33, 48, 64, 65):
        x = (torch.randn(m, k, device="cuda") * 10).to(torch.float8_e4m3fn)
        xs = (torch.rand(k // 128, m, device="cuda") + 0.5).t()
        for od in (torch.bfloat16, torch.float16):
            key = f"M={m} {str(od).split('.')[-1]}"
            try:
                y = torch._scaled_mm(x, w.t(), xs, ws.t(), out_dtype=od)
                torch.cuda.synchronize()
                ref = (x.float() * xs.repeat_interleave(128, 1)) @ (
                    w.float() * ws.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)).t()
                err = ((y.float() - ref).norm() / ref.norm()).item()
                info["scaled_mm"][key] = f"ok rel_err={err:.2e}"
            except Exception as exc:  # noqa: BLE001
                info["scaled_mm"][key] = f"{type(exc).__name__}: {str(exc)[:160]}"
    json.dump(info, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
