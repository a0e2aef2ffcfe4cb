"""sglang 0.5.23 with rocm_fp8's plugin: loader discovery, the real Fp8LinearMethod on the CPU, the kill
switch, the version guard and a missing target symbol.

sglang's ``Engine`` does not run on a CPU-only machine without Intel AMX (its CPU path,
``SGLANG_USE_CPU_ENGINE=1``, asserts AMX support), so the engine-level run is vLLM's; here the layer
method sglang's model code calls is exercised directly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from stack_env import require

sglang = require("sglang")

import rocm_fp8  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402
from rocm_fp8 import integrations as common  # noqa: E402
from rocm_fp8.integrations import sglang as plugin  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded():
    from sglang.srt.plugins import load_plugins
    load_plugins()
    load_plugins()  # every sglang process calls it: idempotent
    return common.STATE.get("sglang")


def test_sglang_loader_discovers_our_entry_point(loaded):
    from sglang.srt.plugins import load_plugins_by_group
    found = load_plugins_by_group("sglang.srt.plugins")
    assert "rocm_fp8" in found, f"sglang's loader did not find our entry point: {sorted(found)}"
    assert loaded and loaded["state"] == "active", common.STATE
    # HookRegistry rewrote the name fp8.py imported at its own import time, not just fp8_utils'
    from sglang.srt.layers.quantization import fp8, fp8_utils
    assert fp8.dispatch_w8a8_block_fp8_linear(weight_block_size=[128, 128]) is plugin.block_fp8_linear
    assert fp8_utils.dispatch_w8a8_block_fp8_linear([128, 128], False) is plugin.block_fp8_linear
    # what rocm_fp8 does not serve stays sglang's
    assert fp8.dispatch_w8a8_block_fp8_linear(weight_block_size=[128, 128], act_scale_ue8m0=True) \
        is not plugin.block_fp8_linear
    assert fp8.dispatch_w8a8_block_fp8_linear(weight_block_size=[128, 64]) is not plugin.block_fp8_linear


def _method_and_layer(n, k, w_q, w_s):
    from sglang.srt.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod
    qc = Fp8Config(is_checkpoint_fp8_serialized=True, activation_scheme="dynamic", weight_block_size=[128, 128])
    method = Fp8LinearMethod(qc)
    layer = torch.nn.Module()
    layer.tp_group = None  # what sglang's parallel linear layers carry
    layer.deepgemm_mxfp8_input = False
    method.create_weights(layer, input_size_per_partition=k, output_partition_sizes=[n], input_size=k,
                          output_size=n, params_dtype=torch.bfloat16, weight_loader=None)
    with torch.no_grad():
        layer.weight.copy_(w_q)
        layer.weight_scale_inv.copy_(w_s)
    method.process_weights_after_loading(layer)
    return method, layer


@pytest.mark.parametrize("m,n,k", [(1, 256, 256), (9, 384, 512), (40, 256, 1024)])
def test_fp8_linear_method_runs_through_rocm_fp8_and_matches_float64(loaded, m, n, k, caplog):
    caplog.set_level(logging.INFO, logger="rocm_fp8")
    torch.manual_seed(m * 7 + n + k)
    w_q, w_s = rocm_fp8.quantize_weight(torch.randn(n, k) * k ** -0.5)
    method, layer = _method_and_layer(n, k, w_q, w_s)
    assert method.w8a8_block_fp8_linear is plugin.block_fp8_linear
    # plain layout kept (no preshuffle: sglang only shuffles for its own aiter function)
    assert torch.equal(layer.weight.view(torch.uint8), w_q.view(torch.uint8))
    assert id(layer) in common.PREPARED_LAYERS["sglang"]
    assert any(f"rocm_fp8[sglang]: linear N={n} K={k}" in r.getMessage() for r in caplog.records)

    x = torch.randn(m, k, dtype=torch.bfloat16)
    before = common.CALLS[("sglang", n, k)]
    y = method.apply(layer, x)
    assert common.CALLS[("sglang", n, k)] == before + 1
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    x_q, x_s = rocm_fp8.quantize_activation(x)
    ref = reference_linear(x_q, x_s, w_q, w_s)
    assert_close(y, ref, rel_tol=2e-2, cos_min=0.9995)
    # a pre-quantized (fp8, scale) pair, as aiter's fused RMSNorm+quant hands it, with a column-major scale
    col = x_s.t().contiguous().t()
    y2 = plugin.block_fp8_linear((x_q, col), layer.weight, [128, 128], layer.weight_scale_inv, bias=None,
                                 weight_bf16=None)
    assert y2.dtype == torch.bfloat16
    assert_close(y2, ref, rel_tol=2e-2, cos_min=0.9995)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=400)


CHECK = """
    from sglang.srt.plugins import load_plugins
    load_plugins()
    from sglang.srt.layers.quantization import fp8
    from rocm_fp8 import integrations as common
    from rocm_fp8.integrations import sglang as plugin
    print("STATE", common.STATE.get("sglang", {}).get("state"))
    print("OURS", fp8.dispatch_w8a8_block_fp8_linear(weight_block_size=[128, 128]) is plugin.block_fp8_linear)
"""


def test_kill_switch_leaves_sglang_untouched():
    r = _run(CHECK, ROCM_FP8_INTEGRATION="0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE disabled" in r.stdout and "OURS False" in r.stdout, r.stdout


def test_version_guard_and_missing_symbol_warn_and_leave_sglang_untouched():
    r = _run("import sglang; sglang.__version__ = '0.7.0'\n" + textwrap.dedent(CHECK))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE skipped" in r.stdout and "OURS False" in r.stdout, r.stdout
    assert "sglang integration NOT active" in r.stderr and "outside the supported range" in r.stderr

    r = _run("import sglang.srt.layers.quantization.fp8 as m\ndel m.Fp8LinearMethod."
             "process_weights_after_loading_block_quant\n" + textwrap.dedent(CHECK))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE skipped" in r.stdout and "OURS False" in r.stdout, r.stdout
    assert "process_weights_after_loading_block_quant is missing" in r.stderr, r.stderr[-3000:]
