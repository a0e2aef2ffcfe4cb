"""The stack-free parts of the sglang / vLLM plugins: they run in the main venv, where no stack is installed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/numerics.py

from rocm_fp8 import integrations as common

ROOT = Path(__file__).resolve().parents[2]


def test_importing_rocm_fp8_imports_no_stack():
    code = ("import sys, rocm_fp8, rocm_fp8.integrations, rocm_fp8.integrations.vllm, rocm_fp8.integrations.sglang\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('vllm', 'sglang')]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("value,on", [(None, True), ("1", True), ("0", False), ("false", False), ("OFF", False),
                                      ("no", False), ("yes", True)])
def test_kill_switch_values(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(common.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(common.ENV_SWITCH, value)
    assert common.enabled() is on


@pytest.mark.parametrize("stack,version,ok", [
    ("vllm", "0.32.0", True), ("vllm", "0.32.0+cpu", True), ("vllm", "0.32.4", True), ("vllm", "0.31.9", False),
    ("vllm", "0.33.0", False), ("vllm", "1.0", False), ("sglang", "0.5.23", True), ("sglang", "0.5.30rc1", True),
    ("sglang", "0.5.22", False), ("sglang", "0.6.0", False), ("sglang", "", False), ("sglang", "dev", False)])
def test_version_guard(stack, version, ok):
    got, why = common.version_supported(stack, version)
    assert got is ok, why
    assert stack in why


def test_pyproject_declares_both_entry_points():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."sglang.srt.plugins"]\nrocm_fp8 = "rocm_fp8.integrations.sglang:register"' in text
    assert '[project.entry-points."vllm.general_plugins"]\nrocm_fp8 = "rocm_fp8.integrations.vllm:register"' in text


@pytest.mark.parametrize("stack", ["sglang", "vllm"])
def test_register_without_the_stack_warns_and_never_raises(stack, monkeypatch, caplog):
    pytest.importorskip("torch")
    if stack in sys.modules or _installed(stack):
        pytest.skip(f"{stack} is installed here: its own venv's tests cover it")
    import importlib
    mod = importlib.import_module(f"rocm_fp8.integrations.{stack}")
    monkeypatch.delenv(common.ENV_SWITCH, raising=False)
    common._warned.clear()
    caplog.set_level(logging.WARNING, logger="rocm_fp8")
    mod.register()
    mod.register()
    assert common.STATE[stack]["state"] == "skipped"
    lines = [r.getMessage() for r in caplog.records if f"{stack} integration NOT active" in r.getMessage()]
    assert len(lines) == 1, lines  # once, clearly
    monkeypatch.setenv(common.ENV_SWITCH, "0")
    mod.register()
    assert common.STATE[stack]["state"] == "disabled"


def _installed(stack: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(stack) is not None


def test_integrations_command_lists_each_stack(monkeypatch):
    env = {"ROCM_FP8_INTEGRATION": "0", "PYTHONPATH": str(ROOT / "src")}
    import os
    r = subprocess.run([sys.executable, "-m", "rocm_fp8", "integrations", "--json"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, **env))
    assert r.returncode == 0, r.stderr
    rows = {row["stack"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"sglang", "vllm"}
    for row in rows.values():
        assert row["active"] is False and row["kill_switch"] == "ROCM_FP8_INTEGRATION=0"
        assert row["reason"] in ("not installed", "disabled by ROCM_FP8_INTEGRATION=0")
    r = subprocess.run([sys.executable, "-m", "rocm_fp8", "integrations"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert r.returncode == 0 and "sglang" in r.stdout and "vllm" in r.stdout and "ROCM_FP8_INTEGRATION" in r.stdout


def _inference_weights_case(device: str, m: int, n: int, k: int):
    import torch

    import rocm_fp8
    from numerics import assert_close, reference_linear
    torch.manual_seed(m + n + k)
    with torch.inference_mode():  # serving stacks load weights like this
        w_q, w_s = rocm_fp8.quantize_weight(torch.randn(n, k, device=device) * k ** -0.5)
        assert w_q.is_inference()
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        y1 = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s)   # prepares the weight (no _version on it)
        y2 = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s)   # reuses the prepared weight
    assert torch.equal(y1, y2)
    x_q, x_s = rocm_fp8.quantize_activation(x)
    assert_close(y1, reference_linear(x_q, x_s, w_q, w_s), rel_tol=2e-2, cos_min=0.9995)


def test_inference_mode_weights_as_the_stacks_make_them():
    _inference_weights_case("cpu", 5, 256, 384)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16, 300])
def test_inference_mode_weights_on_the_gpu(m):
    _inference_weights_case("cuda", m, 2048, 3072)
