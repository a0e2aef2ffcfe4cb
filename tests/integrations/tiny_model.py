"""A tiny Llama-style model written by the tests themselves: random weights, safetensors, no hub.

``write_model(path, fp8=True)`` writes the FP8 block-quantized checkpoint (``quantization_config =
{"quant_method": "fp8", "weight_block_size": [128, 128]}``, e4m3fn weights with fp32
``weight_scale_inv`` per 128x128 block, the layout DeepSeek/Qwen FP8 checkpoints use);
``fp8=False`` writes the same model with every linear dequantized to bf16 (the reference).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 256, 512, 2, 2, 2, 128, 512

LINEARS = {  # name -> (N, K)
    "self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN),
    "self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
    "self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
    "mlp.gate_proj": (INTER, HIDDEN),
    "mlp.up_proj": (INTER, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTER),
}


def quantize_blocks(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (e4m3fn [N, K], fp32 dequant scale [N/128, K/128]); scale = block absmax / 448."""
    n, k = w.shape
    blocks = w.float().reshape(n // block, block, k // block, block)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
    q = (blocks / scale[:, None, :, None]).reshape(n, k).to(torch.float8_e4m3fn)
    return q, scale.contiguous()


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor, block: int = 128) -> torch.Tensor:
    n, k = q.shape
    return (q.float().reshape(n // block, block, k // block, block) * scale[:, None, :, None]).reshape(n, k)


def make_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, std: torch.randn(*shape, generator=g) * std  # noqa: E731
    w = {"model.embed_tokens.weight": rnd(VOCAB, HIDDEN, std=1.0),
         "model.norm.weight": 1.0 + rnd(HIDDEN, std=0.1),
         # logits of a few units: clear winners for greedy decoding
         "lm_head.weight": rnd(VOCAB, HIDDEN, std=0.5)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + rnd(HIDDEN, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1.0 + rnd(HIDDEN, std=0.1)
        for name, (n, k) in LINEARS.items():
            # residual-dominated, as in trained models: each block adds a modest update
            w[p + name + ".weight"] = rnd(n, k, std=0.5 * k ** -0.5)
    return w


def write_model(path: Path, *, fp8: bool, seed: int = 0) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    out = {}
    for name, t in make_weights(seed).items():
        if name.endswith("_proj.weight"):
            q, s = quantize_blocks(t)
            if fp8:
                out[name] = q
                out[name[: -len("weight")] + "weight_scale_inv"] = s
            else:
                out[name] = dequantize_blocks(q, s).to(torch.bfloat16)
        else:
            out[name] = t.to(torch.bfloat16)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    }
    if fp8:
        config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                         "fmt": "e4m3", "weight_block_size": [128, 128]}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return path


#: linear layers vLLM builds from this model: qkv, o, gate_up, down per decoder layer
VLLM_LINEARS_PER_LAYER = 4
