"""What the serving image gives: the sglang / vLLM plugin status, the dispatch decisions, one forward.

With STACK=sglang or STACK=vllm the stack's own plugin loader routes its block-FP8 linears through
rocm_fp8 (start the stack as usual, e.g. `python3 -m sglang.launch_server ...` or `vllm serve ...`).
Code of your own can call `rocm_fp8.Fp8BlockLinear` or `rocm_fp8.w8a8_block_fp8_linear` directly; the
backend per layer and M bucket comes from the configuration baked into the base image.
"""

import torch

import rocm_fp8
from rocm_fp8 import integrations
from rocm_fp8.explain import explain

print("serving-stack plugins (rocm-fp8 integrations):")
print(integrations.format_status(integrations.status()))

# MiniMax-M2.5 TP4 linears (N, K)
SHAPES = {"qkv": (2048, 3072), "o_proj": (3072, 1536), "w13": (768, 3072), "w2": (3072, 384)}

print("dispatch decisions for this image's toolchain:")
for name, (n, k) in SHAPES.items():
    for m in (1, 256, 8192):
        d = explain(n, k, m)
        print(f"  {name:<7} N={n:<5} K={k:<5} M={m:<5} -> {d.backend}")

device = "cuda" if torch.cuda.is_available() else "cpu"
layer = rocm_fp8.Fp8BlockLinear.from_linear(torch.nn.Linear(3072, 2048, bias=False, device=device))
x = torch.randn(4, 3072, device=device, dtype=torch.bfloat16)
y = layer(x)
print(f"forward on {device}: {tuple(x.shape)} -> {tuple(y.shape)} {y.dtype}")
