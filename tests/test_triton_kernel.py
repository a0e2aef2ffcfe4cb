"""The Triton block-scale kernel on the CPU under TRITON_INTERPRET=1, plus its backend and tables.

Triton reads TRITON_INTERPRET when it is imported (its own library functions are decorated then),
so the kernel tests need a process that started with TRITON_INTERPRET=1. Run plainly, this file
re-runs itself in such a child pytest (``test_kernel_suite_under_interpreter``) and the rest of the
suite never sees the variable; run as ``TRITON_INTERPRET=1 pytest tests/test_triton_kernel.py`` it
reports each test directly. Shapes are small (the interpreter is slow) but keep every edge
the GPU shapes have: M=1, odd M, partial N blocks (as N=2112), K with a partial 128-group, split-K
with an uneven split, M-contiguous scales, both FP8 flavours, both output dtypes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from rocm_fp8 import kernel_configs  # noqa: E402
from rocm_fp8.backends.base import PreparedWeight, Problem  # noqa: E402
from rocm_fp8.quant import QUANT_MAX, quantize_activation, quantize_weight  # noqa: E402
from rocm_fp8.toolchain import Toolchain  # noqa: E402
from numerics import reference_linear  # noqa: E402

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_kernel_suite_under_interpreter():
    """Run this file's kernel tests in a child process that starts with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"interpreted kernel tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def kernel():
    if not INTERPRETED:
        pytest.skip("runs in test_kernel_suite_under_interpreter's child process (needs TRITON_INTERPRET=1 "
                    "before triton is imported)")
    import rocm_fp8.kernels.triton_blockscale as mod

    return mod


def make_operands(m, n, k, fp8, seed, scale_layout="row"):
    """Fresh random FP8 operands with random (not constant) scales; K need not be a multiple of 128."""
    g = torch.Generator().manual_seed(seed)
    kb, nb = -(-k // 128), -(-n // 128)
    fmax = QUANT_MAX[fp8]
    x_q = (torch.rand(m, k, generator=g) * 2 - 1).mul(fmax).to(fp8)
    w_q = (torch.rand(n, k, generator=g) * 2 - 1).mul(fmax).to(fp8)
    x_scale = torch.rand(m, kb, generator=g) * 1e-2 + 1e-4
    w_scale = torch.rand(nb, kb, generator=g) * 1e-2 + 1e-4
    if scale_layout == "mcontig":  # physically [K/128, M], seen as [M, K/128] (strides (1, M))
        x_scale = x_scale.t().contiguous().t()
        w_scale = w_scale.t().contiguous().t()
    return x_q, x_scale, w_q, w_scale


def check_close(y, ref, out_dtype):
    assert torch.isfinite(y).all(), "output has NaN/Inf (poisoned elements left unwritten?)"
    yd = y.double()
    rel = ((yd - ref).norm() / ref.norm()).item()
    cos = torch.nn.functional.cosine_similarity(yd.flatten(), ref.flatten(), dim=0).item()
    tol = 1e-2 if out_dtype == torch.bfloat16 else 1e-3
    assert rel < tol, f"relative error {rel:.3g} >= {tol}"
    assert cos > 0.9999, f"cosine {cos:.6f}"


def run_poisoned(kernel, ops, out_dtype, config):
    x_q, x_scale, w_q, w_scale = ops
    out = torch.full((x_q.shape[0], w_q.shape[0]), float("nan"), dtype=out_dtype)
    y = kernel.blockscale_gemm(x_q, x_scale, w_q, w_scale, out_dtype, config=config, out=out)
    assert y.data_ptr() == out.data_ptr()
    return y


CASES = [
    # (M, N, K, config kwargs or None for the default)
    (1, 192, 256, None),                                                     # decode, N partial tile
    (37, 320, 384, dict(block_m=16, block_n=64, split_k=2)),                 # odd M, uneven split-K
    (33, 320, 256, dict(block_m=32, block_n=256, persistent=True)),          # BN > weight block, persistent
    (70, 264, 384, dict(block_m=64, block_n=128, group_m=2)),                # N = 2*128 + 8, grouped order
    (5, 136, 208, dict(block_m=16, block_n=32, split_k=3)),                  # K = 128 + 80 (partial group)
    (37, 320, 512, dict(block_m=32, block_n=64, frame=True)),                # rescaled accumulator
    (20, 320, 384, dict(block_m=16, block_n=256, frame=True, split_k=2)),    # ... with per-column scales
    (9, 264, 208, dict(block_m=16, block_n=128, frame=True, persistent=True)),  # ... partial K group
]


@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("m,n,k,cfg", CASES, ids=[f"M{c[0]}-N{c[1]}-K{c[2]}" for c in CASES])
def test_matches_reference(kernel, fp8, m, n, k, cfg):
    config = kernel.KernelConfig(**cfg).validate() if cfg else None
    ops = make_operands(m, n, k, fp8, seed=m * 1000 + n + k)
    y = run_poisoned(kernel, ops, torch.bfloat16, config)
    check_close(y, reference_linear(*ops), torch.bfloat16)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_m_contiguous_scales_and_out_dtype(kernel, out_dtype):
    ops = make_operands(19, 256, 384, FN, seed=7, scale_layout="mcontig")
    assert ops[1].stride() == (1, 19)
    cfg = kernel.KernelConfig(block_m=16, block_n=128, split_k=2)
    y = run_poisoned(kernel, ops, out_dtype, cfg)
    assert y.dtype == out_dtype
    check_close(y, reference_linear(*ops), out_dtype)


def test_quantized_end_to_end(kernel):
    """Through rocm_fp8.quant: the kernel reproduces float matmul to FP8 accuracy."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 512, generator=g)
    w = torch.randn(200, 512, generator=g)
    x_q, x_s = quantize_activation(x, 128, dtype=FN)
    w_q, w_s = quantize_weight(w, (128, 128), dtype=FN)
    y = kernel.blockscale_gemm(x_q, x_s, w_q, w_s, torch.float16)
    ref = x.double() @ w.double().t()
    rel = ((y.double() - ref).norm() / ref.norm()).item()
    assert rel < 0.1, rel  # FP8 quantization error, not kernel error


@pytest.mark.parametrize("bn", [64, 256])
def test_frame_survives_tiny_and_zero_scales(kernel, bn):
    """The rescaled accumulator divides by scales: zero or tiny scales must not give NaN/Inf."""
    x_q, x_s, w_q, w_s = make_operands(16, 256, 512, FN, seed=21)
    x_s = x_s.clone()
    x_s[3, 1] = 0.0        # a group dequantizing to zero
    x_s[5, :] = 1e-30      # a row far below the clamp
    x_s[7, 2] = 1.0        # and one 100x above the rest
    w_s = w_s.clone()
    w_s[0, 3] = 0.0
    cfg = kernel.KernelConfig(block_m=16, block_n=bn, frame=True)
    y = run_poisoned(kernel, (x_q, x_s, w_q, w_s), torch.float16, cfg)
    ref = reference_linear(x_q, x_s, w_q, w_s)
    assert torch.isfinite(y).all()
    rel = ((y.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-3, rel
    assert y[5].abs().max().item() < 1e-2  # the 1e-30 row stays (near) zero


def test_split_k_is_deterministic(kernel):
    ops = make_operands(3, 128, 512, FN, seed=11)
    cfg = kernel.KernelConfig(block_m=16, block_n=64, split_k=4)
    a = kernel.blockscale_gemm(*ops, torch.float16, config=cfg)
    b = kernel.blockscale_gemm(*ops, torch.float16, config=cfg)
    assert torch.equal(a, b)


def test_catches_a_wrong_scale(kernel):
    """The check is sharp enough to see one wrong weight-scale block."""
    ops = list(make_operands(16, 256, 256, FN, seed=5))
    ref = reference_linear(*ops)
    ops[3] = ops[3].clone()
    ops[3][1, 1] *= 1.5
    y = kernel.blockscale_gemm(*ops, torch.float16)
    with pytest.raises(AssertionError):
        check_close(y, ref, torch.float16)


# -- bound launcher (one layer, one M bucket) ---------------------------------------------------------

BOUND_CONFIGS = [dict(block_m=16, block_n=64, split_k=2), dict(block_m=16, block_n=128, persistent=True),
                 dict(block_m=16, block_n=64, frame=True)]


@pytest.mark.parametrize("cfg", BOUND_CONFIGS, ids=["split-k", "persistent", "frame"])
def test_bound_gemm_matches_blockscale_gemm(kernel, cfg):
    """Several M of one bucket through one BoundGemm; K = 256 + 80 ends in a partial group. Under the
    interpreter there is no compiled kernel to warm, so every call takes the JIT launch."""
    config = kernel.KernelConfig(**cfg)
    _, _, w_q, w_s = make_operands(1, 200, 336, FN, seed=21)
    bound = kernel.BoundGemm(w_q, w_s, torch.bfloat16, config)
    for m in (16, 9, 13):
        x_q, x_s, _, _ = make_operands(m, 200, 336, FN, seed=m)
        y = bound(x_q, x_s)
        assert y.shape == (m, 200) and y.dtype == torch.bfloat16
        assert torch.equal(y, kernel.blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=config))
        check_close(y, reference_linear(x_q, x_s, w_q, w_s), torch.bfloat16)
    assert not bound.warmed
    assert bound(x_q[:0], x_s[:0]).shape == (0, 200)


def test_backend_bind_and_run_share_the_bound_call(kernel):
    from rocm_fp8.backends.triton import TritonBackend

    b = TritonBackend()
    x_q, x_s, w_q, w_s = make_operands(7, 136, 256, FN, seed=4, scale_layout="mcontig")
    prepared = b.prepare_weight(w_q, w_s)
    run = b.bind(prepared, torch.float16, 8)
    y = run(x_q, x_s)
    check_close(y, reference_linear(x_q, x_s, w_q, w_s), torch.float16)
    assert torch.equal(b.run(x_q, x_s, prepared, torch.float16), y)
    assert ("bound", torch.float16, 8) in prepared.extra  # run() binds once per (out dtype, bucket)


def test_fast_launch_gates():
    """The direct launch is off under the interpreter and while any launch hook is installed."""
    from rocm_fp8.kernels import fast_launch

    class Chain:  # the shape of Triton >= 3.7's HookChain
        def __init__(self, calls):
            self.calls = calls

    assert fast_launch._hook_idle(None) and fast_launch._hook_idle(Chain([]))
    assert not fast_launch._hook_idle(Chain([print])) and not fast_launch._hook_idle(print)
    assert fast_launch.warm(None) is None
    assert fast_launch.fast_launch_supported() is (not INTERPRETED and fast_launch._runtime_knobs() is not None)


# -- input checks ------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument(kernel, monkeypatch):
    x_q, x_s, w_q, w_s = make_operands(4, 128, 256, FN, seed=1)
    gemm = kernel.blockscale_gemm
    with pytest.raises(TypeError, match="x_q: expected torch.float8"):
        gemm(x_q.float(), x_s, w_q, w_s)
    with pytest.raises(TypeError, match="w_q: expected the same FP8 dtype"):
        gemm(x_q, x_s, w_q.float().to(FNUZ), w_s)
    with pytest.raises(ValueError, match=r"w_q: expected \[N, K\] with K = 256"):
        gemm(x_q, x_s, w_q[:, :128], w_s)
    with pytest.raises(ValueError, match=r"x_scale: expected shape \(4, 2\)"):
        gemm(x_q, x_s[:, :1], w_q, w_s)
    with pytest.raises(ValueError, match=r"w_scale: expected shape \(1, 2\)"):
        gemm(x_q, x_s, w_q, w_s.t())
    with pytest.raises(TypeError, match="x_scale: expected torch.float32"):
        gemm(x_q, x_s.half(), w_q, w_s)
    with pytest.raises(TypeError, match="out_dtype: expected torch.bfloat16, torch.float16 or torch.float32"):
        gemm(x_q, x_s, w_q, w_s, torch.float64)
    with pytest.raises(ValueError, match="x_q: expected a 2-D tensor"):
        gemm(x_q[None], x_s, w_q, w_s)
    with pytest.raises(ValueError, match="x_q: expected a K-contiguous tensor"):
        gemm(x_q.t().contiguous().t(), x_s, w_q, w_s)
    with pytest.raises(ValueError, match="out: expected a \\(4, 128\\)"):
        gemm(x_q, x_s, w_q, w_s, out=torch.empty(4, 127, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="config.block_m"):
        kernel.KernelConfig(block_m=48).validate()
    with pytest.raises(ValueError, match="config: unknown keys"):
        kernel.KernelConfig.from_dict({"block_m": 64, "BLOCK_M": 64})
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="x_q: expected a GPU tensor"):
        gemm(x_q, x_s, w_q, w_s)


def test_default_config_is_valid_for_model_shapes(kernel):
    shapes = [(2048, 3072), (3072, 1536), (768, 3072), (3072, 3072), (2112, 7168), (24576, 1536),
              (7168, 16384), (4096, 7168), (7168, 2048)]
    for n, k in shapes:
        for m in (1, 16, 64, 256, 1024, 4096, 16384):
            cfg = kernel.default_config(m, n, k).validate()
            # split-K only while it leaves every split at least 4 K blocks, and never at large M
            assert cfg.split_k == 1 or (k // 128) // cfg.split_k >= 4, (m, n, k, cfg)
            assert cfg.split_k == 1 or m <= 1024, (m, n, k, cfg)


# -- backend ---------------------------------------------------------------------------------------


def test_backend_runs_on_cpu_under_interpreter(kernel):
    from rocm_fp8.backends.triton import TritonBackend

    b = TritonBackend()
    tc = Toolchain(arch="cpu", triton_interpret=True, triton_version="x")
    prob = Problem(m=3, n=264, k=256, device_type="cpu")
    assert b.available(tc) == (True, "")
    assert b.supports(prob, tc) == (True, "")
    x_q, x_s, w_q, w_s = make_operands(3, 264, 256, FN, seed=9)
    prepared = b.prepare_weight(w_q, w_s)
    assert isinstance(prepared, PreparedWeight)
    y = b.run(x_q, x_s, prepared, torch.bfloat16)
    check_close(y, reference_linear(x_q, x_s, w_q, w_s), torch.bfloat16)


def test_backend_refusals_have_reasons():
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend
    from rocm_fp8.backends.triton import TritonBackend

    t = TritonBackend()
    cpu = Toolchain(arch="cpu", triton_interpret=False)
    ok, why = t.available(cpu)
    assert not ok and "TRITON_INTERPRET=1" in why
    sm90 = Toolchain(arch="sm90", torch_cuda="13.0", torch_version="2.11.0")
    assert t.available(sm90) == (True, "")
    ok, why = t.supports(Problem(1, 256, 256, fp8_dtype="e4m3fnuz"), sm90)
    assert not ok and "e4m3fnuz" in why
    gfx942 = Toolchain(arch="gfx942")
    assert t.supports(Problem(1, 256, 256, fp8_dtype="e4m3fnuz"), gfx942) == (True, "")
    ok, why = t.supports(Problem(1, 256, 256, fp8_dtype="e4m3fn"), gfx942)
    assert not ok and "e4m3fn_to_e4m3fnuz" in why
    ok, why = t.supports(Problem(1, 256, 256, block_n=64), sm90)
    assert not ok and "128x128" in why

    s = TorchScaledMMBackend()
    ok, why = s.available(gfx942)
    assert not ok and "sm90" in why
    ok, why = s.available(sm90.with_(torch_cuda="12.4"))
    assert not ok and "12.9" in why
    if s._api is not None:
        assert s.available(sm90) == (True, "")
    assert s.supports(Problem(16, 2112, 7168), sm90) == (True, "")
    ok, why = s.supports(Problem(16, 2112, 7168, out_dtype="float16"), sm90)
    assert not ok and "bfloat16" in why
    ok, why = s.supports(Problem(16, 2112, 7168, device_type="cpu"), sm90)
    assert not ok and "CUDA" in why


# -- config tables -----------------------------------------------------------------------------------


def test_config_table_lookup_and_ranking_hooks(tmp_path, monkeypatch):
    from rocm_fp8.backends.torch_scaled_mm import TorchScaledMMBackend
    from rocm_fp8.backends.triton import TritonBackend

    table = {
        "device": "Test GPU 9000", "arch": "sm90",
        "shapes": {"2112,7168": [
            {"m": 16, "config": {"block_m": 16, "block_n": 64, "split_k": 4}, "triton_tflops": 50.0,
             "scaled_mm_tflops": 40.0},
            {"m": 1024, "config": {"block_m": 128, "block_n": 128, "num_warps": 8}, "triton_tflops": 900.0,
             "scaled_mm_tflops": 950.0},
        ]},
    }
    (tmp_path / "test_gpu_9000.json").write_text(json.dumps(table))
    monkeypatch.setenv(kernel_configs.ENV_DIR, str(tmp_path))
    kernel_configs.clear_cache()
    try:
        tc = Toolchain(arch="sm90", device_name="Test GPU 9000", torch_cuda="13.0")
        assert kernel_configs.lookup(1, 2112, 7168, tc.device_name, tc.arch).m == 16
        assert kernel_configs.lookup(17, 2112, 7168, tc.device_name, tc.arch).m == 1024
        assert kernel_configs.lookup(99999, 2112, 7168, tc.device_name, tc.arch).m == 1024
        assert kernel_configs.lookup(16, 4096, 7168, tc.device_name, tc.arch) is None
        t, s = TritonBackend(), TorchScaledMMBackend()
        small, big = Problem(8, 2112, 7168), Problem(4096, 2112, 7168)
        assert t.tuned_for(small, tc) and not t.tuned_for(Problem(8, 4096, 7168), tc)
        assert t.measured_tflops(small, tc) == 50.0 and s.measured_tflops(small, tc) == 40.0
        assert t.measured_tflops(big, tc) == 900.0 and s.measured_tflops(big, tc) == 950.0
        assert t.measured_tflops(Problem(8, 4096, 7168), tc) is None
        cfg = t.config_for(8, 2112, 7168, tc)
        assert (cfg.block_m, cfg.block_n, cfg.split_k) == (16, 64, 4)
    finally:
        kernel_configs.clear_cache()


def test_shipped_tables_parse_and_validate(kernel):
    files = sorted(kernel_configs.CONFIG_DIR.glob("*.json"))
    assert files, "no config tables shipped in rocm_fp8/configs"
    for path in files:
        table = kernel_configs.ConfigTable.load(path)
        assert table.arch, f"{path.name}: no arch"
        if table.default:
            kernel.KernelConfig.from_dict(table.default).validate()
        for (n, k), rows in table.shapes.items():
            for row in rows:
                kernel.KernelConfig.from_dict(row.config).validate()
                assert row.triton_tflops is None or row.triton_tflops > 0, (path.name, n, k, row)
