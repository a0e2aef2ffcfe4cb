"""Model shapes: the block-FP8 linear layers of a model, as (N, K) per tensor-parallel degree.

Two ways in, shared by ``rocm-fp8 tune`` and ``rocm-fp8 probe``:

* ``--preset NAME``: the named shape lists below (models this project benchmarks);
* ``--from-config config.json --tp N``: a Hugging Face model config, read by :func:`linear_shapes`.

What :func:`linear_shapes` derives, per layer kind, the way sglang and vLLM shard them (column-
parallel layers split N by the TP degree, row-parallel ones split K):

* attention, grouped-query: fused ``qkv_proj`` (N = (heads + 2 x kv heads) x head_dim / TP, with
  the kv heads replicated when TP exceeds them) and ``o_proj`` (K = heads x head_dim / TP);
* attention, multi-head latent (DeepSeek-V2/V3 style, ``kv_lora_rank`` in the config): the fused
  ``q_a``+``kv_a`` projection (replicated, not sharded), ``q_b_proj``, ``kv_b_proj`` and ``o_proj``;
* dense MLP (``intermediate_size``; in MoE models only where dense layers exist, e.g.
  ``first_k_dense_replace``): fused ``gate_up_proj`` and ``down_proj``;
* MoE experts (``moe_intermediate_size``, or ``intermediate_size`` where that is the expert width
  as in MiniMax): ``w13`` and ``w2``, sharded by TP, or whole with ``ep=True`` (expert parallel);
  shared experts likewise.

The router (``gate``) and ``lm_head`` are not FP8 in these checkpoints and are left out; shapes whose
K is not a multiple of 128 cannot be block-scaled and are dropped (and reported).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rocm_fp8 import kernel_configs

#: (N, K) per preset: the models this project measures (MiniMax-M2.5 and DeepSeek-V3; they are what
#: :func:`linear_shapes` gives for their configs, checked by tests/test_shapes.py)
PRESETS: dict[str, list[tuple[int, int]]] = {
    "minimax-m2.5-tp4": [(2048, 3072), (3072, 1536), (768, 3072), (3072, 384)],
    "minimax-m2.5-ep": [(3072, 3072), (3072, 1536)],
    "minimax-m2.5-tp1": [(8192, 3072), (3072, 6144)],
    "deepseek-v3-tp1": [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)],
    "deepseek-v3-tp8": [(3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304), (512, 7168),
                        (7168, 256)],
    # the cells of bench/gemm.py: MiniMax-M2.5 TP4/EP and DeepSeek-V3 TP1 shapes
    "bench": [(2048, 3072), (3072, 1536), (768, 3072), (3072, 3072), (2112, 7168), (24576, 1536), (7168, 16384),
              (4096, 7168), (7168, 2048)],
}


@dataclass(frozen=True)
class Linear:
    name: str
    n: int
    k: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.k)


def _get(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        v = cfg.get(name)
        if v is not None:
            return v
    return default


def _div(value: int, tp: int, what: str) -> int:
    if value % tp:
        raise ValueError(f"tp: {what} ({value}) is not divisible by the TP degree {tp}")
    return value // tp


def linear_shapes(config: dict[str, Any], tp: int = 1, ep: bool = False) -> list[Linear]:
    """The block-FP8 linear layers of one TP rank of the model ``config`` describes (an HF
    ``config.json`` as a dict; a multimodal config's ``text_config`` is used when present)."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ValueError(f"tp: expected a positive integer, got {tp!r}")
    if not isinstance(config, dict):
        raise ValueError(f"config: expected a JSON object (an HF config.json), got {type(config).__name__}")
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = _get(cfg, "hidden_size")
    heads = _get(cfg, "num_attention_heads")
    if not hidden or not heads:
        raise ValueError("config: expected 'hidden_size' and 'num_attention_heads' (an HF decoder config), got "
                         f"keys {sorted(cfg)[:20]}")
    out: list[Linear] = []

    # -- attention --------------------------------------------------------------------------------
    if _get(cfg, "kv_lora_rank"):
        kv_lora = int(cfg["kv_lora_rank"])
        q_lora = _get(cfg, "q_lora_rank")
        nope, rope = int(_get(cfg, "qk_nope_head_dim")), int(_get(cfg, "qk_rope_head_dim"))
        v_dim = int(_get(cfg, "v_head_dim"))
        local_heads = _div(heads, tp, "num_attention_heads")
        if q_lora:
            out.append(Linear("fused_qkv_a_proj", int(q_lora) + kv_lora + rope, hidden))  # replicated
            out.append(Linear("q_b_proj", local_heads * (nope + rope), int(q_lora)))
        else:
            out.append(Linear("q_proj", local_heads * (nope + rope), hidden))
            out.append(Linear("kv_a_proj_with_mqa", kv_lora + rope, hidden))  # replicated
        out.append(Linear("kv_b_proj", local_heads * (nope + v_dim), kv_lora))
        out.append(Linear("o_proj", hidden, local_heads * v_dim))
    else:
        head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
        kv_heads = int(_get(cfg, "num_key_value_heads", default=heads))
        local_heads = _div(heads, tp, "num_attention_heads")
        local_kv = max(1, kv_heads // tp) if tp >= kv_heads else _div(kv_heads, tp, "num_key_value_heads")
        out.append(Linear("qkv_proj", (local_heads + 2 * local_kv) * head_dim, hidden))
        out.append(Linear("o_proj", hidden, local_heads * head_dim))

    # -- MLP / MoE --------------------------------------------------------------------------------
    n_experts = _get(cfg, "n_routed_experts", "num_local_experts", "num_experts")
    moe_width = _get(cfg, "moe_intermediate_size")
    dense_width = _get(cfg, "intermediate_size")
    if n_experts:
        expert_width = int(moe_width or dense_width)
        has_dense = bool(_get(cfg, "first_k_dense_replace", default=0)) or bool(_get(cfg, "mlp_only_layers",
                                                                                      default=[]))
        if has_dense and dense_width and moe_width:
            out += _mlp("mlp", int(dense_width), hidden, tp)
        if ep:
            out += [Linear("experts.w13", 2 * expert_width, hidden), Linear("experts.w2", hidden, expert_width)]
        else:
            out += [Linear("experts.w13", 2 * _div(expert_width, tp, "the expert width"), hidden),
                    Linear("experts.w2", hidden, _div(expert_width, tp, "the expert width"))]
        shared = int(_get(cfg, "n_shared_experts", default=0) or 0) * expert_width
        shared = shared or int(_get(cfg, "shared_intermediate_size", "shared_expert_intermediate_size",
                                    default=0) or 0)
        if shared:
            out += _mlp("shared_experts", shared, hidden, tp)
    elif dense_width:
        out += _mlp("mlp", int(dense_width), hidden, tp)
    return out


def _mlp(prefix: str, width: int, hidden: int, tp: int) -> list[Linear]:
    local = _div(width, tp, f"{prefix} intermediate size")
    return [Linear(f"{prefix}.gate_up_proj", 2 * local, hidden), Linear(f"{prefix}.down_proj", hidden, local)]


def block_fp8_shapes(config: dict[str, Any], tp: int = 1, ep: bool = False,
                     block: int = 128) -> tuple[list[tuple[int, int]], list[Linear]]:
    """Distinct (N, K) in layer order, and the layers left out (K not a multiple of ``block``)."""
    shapes, dropped = [], []
    for lin in linear_shapes(config, tp, ep):
        if lin.k % block:
            dropped.append(lin)
        elif lin.shape not in shapes:
            shapes.append(lin.shape)
    return shapes, dropped


def load_config(path: "str | os.PathLike[str]") -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"--from-config: expected an HF config.json, got a path that does not exist: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--from-config: expected an HF config.json, got invalid JSON in {path} ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--from-config: expected a JSON object in {path}, got {type(data).__name__}")
    return data


def resolve(ns: Sequence[int] = (), ks: Sequence[int] = (), presets: Sequence[str] = (),
            configs: Sequence[str] = (), tps: Sequence[int] = (), ep: bool = False,
            log=None) -> list[tuple[int, int]]:
    """The (N, K) list a command line asks for: ``--n/--k`` pairs, then presets, then each HF
    config at each TP degree (default 1); distinct, in order. Raises ValueError naming the flag."""
    if len(ns) != len(ks):
        raise ValueError(f"--n/--k: expected as many --n as --k (paired in order), got {len(ns)} --n and {len(ks)} --k")
    shapes = list(zip(ns, ks))
    for p in presets:
        if p not in PRESETS:
            raise ValueError(f"--preset: expected one of {', '.join(PRESETS)}, got {p!r}")
        shapes += PRESETS[p]
    if tps and not configs:
        raise ValueError("--tp: only applies to --from-config (presets name their TP degree)")
    for path in configs:
        cfg = load_config(path)
        for tp in (tps or [1]):
            got, dropped = block_fp8_shapes(cfg, tp, ep)
            if log:
                log(f"{path} TP{tp}{' EP' if ep else ''}: {len(got)} block-FP8 shapes "
                    + " ".join(f"{n},{k}" for n, k in got)
                    + ("; left out (K not a multiple of 128): "
                       + ", ".join(f"{d.name} {d.n},{d.k}" for d in dropped) if dropped else ""))
            shapes += got
    for n, k in shapes:
        if n < 1 or k < 1:
            raise ValueError(f"shape: expected N >= 1 and K >= 1, got N={n} K={k}")
    out: list[tuple[int, int]] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def table_shapes(spec: str) -> list[tuple[int, int]]:
    """The (N, K) of a kernel table: a path, or a table name the package finds (``nvidia_h100_80gb_hbm3``)."""
    path = Path(spec)
    if not path.is_file():
        name = kernel_configs.slug(spec)
        path = next((d / f"{name}.json" for d in kernel_configs.search_dirs() if (d / f"{name}.json").is_file()),
                    path)
    if not path.is_file():
        raise ValueError(f"--table-shapes: expected a kernel table file or a table name such as "
                         f"nvidia_h100_80gb_hbm3, got {spec!r} (not found in "
                         f"{', '.join(str(d) for d in kernel_configs.search_dirs())})")
    return list(kernel_configs.read_table(path).shapes)


def add_shape_arguments(p: "argparse.ArgumentParser", verb: str) -> None:
    """The shape options ``probe`` and ``tune`` share: --n/--k pairs, --preset, --from-config, --tp, --ep
    (``verb`` words the --from-config help, e.g. "probe")."""
    p.add_argument("--n", type=int, action="append", default=[], help="output features (N); pairs with --k in order")
    p.add_argument("--k", type=int, action="append", default=[],
                   help="input features (K; need not be a multiple of 128: the last group may be partial)")
    p.add_argument("--preset", action="append", default=[], choices=preset_names(), help="a model's shapes (repeatable)")
    p.add_argument("--from-config", action="append", default=[], metavar="CONFIG_JSON",
                   help=f"an HF model config.json: {verb} its block-FP8 linear shapes (repeatable)")
    p.add_argument("--tp", type=int, action="append", default=[], metavar="N",
                   help="tensor-parallel degree for --from-config (repeatable; default 1)")
    p.add_argument("--ep", action="store_true", help="--from-config: experts are expert-parallel (whole, not TP-split)")


def preset_names() -> list[str]:
    return sorted(PRESETS)


def describe(shapes: Sequence[tuple[int, int]], limit: Optional[int] = 12) -> str:
    words = [f"{n},{k}" for n, k in shapes]
    if limit and len(words) > limit:
        words = words[:limit] + [f"... ({len(shapes)} in all)"]
    return " ".join(words)
