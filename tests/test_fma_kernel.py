"""The fma kernel (one launch at small M, quantizing float input itself) on the CPU, and its plumbing.

The kernel tests need ``TRITON_INTERPRET=1`` from process start (Triton reads it at import): run
plainly, this file re-runs them in a child pytest (``test_fma_suite_under_interpreter``). The
interpreter is slow with the kernel's 3-D products, so the shapes are small, but they keep the edges
real shapes have: M = 1 and odd M, a partial N tile, K ending in a partial 128-group, M-contiguous
scales, both FP8 flavours, every output dtype, inference-mode tensors. The cross-compile tests build
every fma candidate the tuner offers for sm90 (Triton's bundled ptxas) and for gfx942/gfx950.
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
from rocm_fp8.kernels.triton_blockscale import KernelConfig  # noqa: E402
from rocm_fp8.quant import QUANT_MAX  # noqa: E402
from rocm_fp8.toolchain import Toolchain  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
ROOT = Path(__file__).resolve().parents[1]


def fma(bn, groups, warps=4, wide=False):
    return KernelConfig(kernel="fma", block_m=1, block_n=bn, k_groups=groups, group_m=1, num_warps=warps,
                        num_stages=1, frame=wide).validate()


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_fma_suite_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interp"],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def interp():
    if not INTERPRETED:
        pytest.skip("runs in test_fma_suite_under_interpreter's child (TRITON_INTERPRET=1 before triton is imported)")
    import rocm_fp8.kernels.triton_blockscale as mod

    return mod


def operands(m, n, k, fp8, seed, mcontig=False):
    g = torch.Generator().manual_seed(seed)
    kb, nb = -(-k // 128), -(-n // 128)
    fmax = QUANT_MAX[fp8]
    x_q = ((torch.rand(m, k, generator=g) * 2 - 1) * fmax).to(fp8)
    w_q = ((torch.rand(n, k, generator=g) * 2 - 1) * fmax).to(fp8)
    x_s = torch.rand(m, kb, generator=g) * 1e-2 + 1e-4
    w_s = torch.rand(nb, kb, generator=g) * 1e-2 + 1e-4
    if mcontig:
        x_s = x_s.t().contiguous().t()
    return x_q, x_s, w_q, w_s


CASES = [  # (M, N, K, config)
    (1, 136, 208, fma(16, 2)),      # decode; N = 128 + 8 (partial tile, a second weight block); K = 128 + 80
    (3, 200, 256, fma(8, 1)),       # odd M (one program row each), one group per step
    (9, 72, 384, fma(4, 8)),        # 8 groups per step (past K: zeros)
    (5, 64, 336, fma(32, 4)),       # K = 2*128 + 80
    (1, 136, 208, fma(16, 2, wide=True)),   # the wide accumulator, a partial N tile and K group
    (7, 200, 3884 - 3456, fma(8, 4, wide=True)),  # K = 428: 3 groups and a partial one, in one step
]


@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("m,n,k,cfg", CASES, ids=[f"M{c[0]}-N{c[1]}-K{c[2]}" for c in CASES])
def test_interp_fp8_input_matches_reference(interp, fp8, m, n, k, cfg):
    ops = operands(m, n, k, fp8, seed=m * 100 + n + k, mcontig=m % 2 == 1)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    y = interp.blockscale_gemm(*ops, torch.bfloat16, config=cfg, out=out)
    assert y.data_ptr() == out.data_ptr()
    assert_close(y, reference_linear(*ops), 1e-2)


@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
def test_interp_float_input_is_quant_kernel_then_fp8_bit_for_bit(interp, fp8, in_dtype, wide):
    """Quantizing in the kernel gives the fused quant kernel's FP8 values and scales: the float-input
    launch equals quantize_fp8 followed by the FP8-input launch, bit for bit (fp32 output)."""
    from rocm_fp8.kernels.quant_fp8 import quantize_fp8

    m, n, k = 3, 136, 336  # K ends in a partial group: quantized over its real elements
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(m, k, generator=g) * 3).to(in_dtype)
    x[1, 5] = -0.0
    _, _, w_q, w_s = operands(m, n, k, fp8, seed=8)
    bound = interp.BoundFma(w_q, w_s, torch.float32, fma(16, 2, wide=wide))
    with torch.inference_mode():
        y = bound.float_input(x)
        x_q, x_s = quantize_fp8(x, fp8)
        y2 = bound(x_q, x_s)
    assert torch.equal(y, y2)
    assert_close(y, reference_linear(x_q, x_s, w_q, w_s), 1e-4)
    assert not bound.warmed  # the interpreter has no compiled kernel to keep
    assert bound.float_input(x[:0]).shape == (0, n)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_interp_out_dtypes_and_strided_output(interp, out_dtype):
    ops = operands(2, 96, 256, FN, seed=11)
    y = interp.blockscale_gemm(*ops, out_dtype, config=fma(16, 2))
    assert y.dtype == out_dtype
    assert_close(y, reference_linear(*ops), 1e-3)
    # an output view with a column stride: computed into a scratch tile and copied in
    big = torch.full((96, 2), float("nan"), dtype=out_dtype)
    y2 = interp.blockscale_gemm(*ops, out_dtype, config=fma(16, 2), out=big.t())
    assert torch.equal(y2, y)


def test_interp_backend_routes_float_input_through_one_launch(interp):
    """A bucket whose config is the fma kernel: bind_float_input gives the one-launch call, and the
    FP8-input bind the same kernel; both agree with quantize + the tensor-core kernel."""
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.quant_fp8 import quantize_fp8

    m, n, k = 2, 136, 256
    _, _, w_q, w_s = operands(m, n, k, FN, seed=12)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(13)).to(torch.bfloat16)
    backend = TritonBackend()
    backend._configs[(n, k, 2)] = fma(16, 2)  # as a table row for this (N, K, M bucket) would give it
    backend._eager[(n, k, 2)] = None
    pw = backend.prepare_weight(w_q, w_s)
    one = backend.bind_float_input(pw, torch.bfloat16, 2, FN, 128)
    fp8_call = backend.bind(pw, torch.bfloat16, 2)
    assert isinstance(fp8_call, interp.BoundFma)
    with torch.inference_mode():
        y = one(x)
        x_q, x_s = quantize_fp8(x, FN)
        assert torch.equal(fp8_call(x_q, x_s), y)
        dot = interp.blockscale_gemm(x_q, x_s, w_q, w_s, torch.bfloat16, config=KernelConfig(block_m=16, block_n=64))
    assert_close(y, dot.double(), 1e-2)
    # a bucket whose config is the tensor-core kernel: the fused quant kernel, then the GEMM
    backend._configs[(n, k, 4)] = KernelConfig(block_m=16, block_n=64)
    backend._eager[(n, k, 4)] = None
    two = backend.bind_float_input(pw, torch.bfloat16, 4, FN, 128)
    with torch.inference_mode():
        assert torch.equal(two(x), dot)
    assert backend.bind_float_input(pw, torch.bfloat16, 2, FN, 64) is None  # another group size: not ours


# -- no interpreter needed ---------------------------------------------------------------------------


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="k_groups"):
        KernelConfig(kernel="fma", block_m=1, block_n=16).validate()
    with pytest.raises(ValueError, match="block_m"):
        KernelConfig(kernel="fma", block_m=4, block_n=16, k_groups=2).validate()
    with pytest.raises(ValueError, match="block_n"):
        KernelConfig(kernel="fma", block_m=1, block_n=256, k_groups=2).validate()
    with pytest.raises(ValueError, match="split_k"):
        KernelConfig(kernel="fma", block_m=1, block_n=16, k_groups=2, split_k=2).validate()
    with pytest.raises(ValueError, match="persistent"):
        KernelConfig(kernel="fma", block_m=1, block_n=16, k_groups=2, persistent=True).validate()
    with pytest.raises(ValueError, match="k_groups"):
        KernelConfig(block_m=16, block_n=64, k_groups=2).validate()
    cfg = fma(8, 4)
    assert KernelConfig.from_dict(cfg.to_dict()) == cfg
    assert "k_groups" not in KernelConfig().to_dict()  # tensor-core rows keep their old form


def test_table_eager_rows(tmp_path, monkeypatch):
    """A row's ``eager`` config is what eager calls of that bucket take; rows without one, or with one
    equal to the config, have none."""
    from rocm_fp8.backends.triton import TritonBackend

    eager = fma(8, 4).to_dict()
    table = {"device": "Test GPU 9001", "arch": "sm90", "shapes": {"2048,3072": [
        {"m": 1, "config": {"block_m": 16, "block_n": 64, "split_k": 8}, "eager": eager, "eager_us": 9.0,
         "eager_main_us": 20.0, "triton_tflops": 1.8},
        {"m": 16, "config": {"block_m": 16, "block_n": 32, "split_k": 4}},
        {"m": 64, "config": {"block_m": 64, "block_n": 64}, "eager": {"block_m": 64, "block_n": 64}},
    ]}}
    (tmp_path / "test_gpu_9001.json").write_text(json.dumps(table))
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(tmp_path))
    kernel_configs.clear_cache()
    try:
        tc = Toolchain(arch="sm90", device_name="Test GPU 9001", torch_cuda="13.0")
        assert kernel_configs.lookup(1, 2048, 3072, tc.device_name, tc.arch).eager == eager
        t = TritonBackend()
        assert t.config_for(1, 2048, 3072, tc).split_k == 8
        assert t.eager_config_for(1, 2048, 3072, tc) == KernelConfig.from_dict(eager)
        assert t.eager_config_for(8, 2048, 3072, tc) is None
        assert t.eager_config_for(64, 2048, 3072, tc) is None  # the same as the config: nothing to switch
    finally:
        kernel_configs.clear_cache()


def test_tune_candidates_offer_fma_only_at_small_m():
    from rocm_fp8.tune.candidates import candidates

    fmas = [c for c in candidates(1, arch="sm90") if c.get("kernel") == "fma"]
    assert fmas
    for c in fmas:
        assert KernelConfig.from_dict(c).validate().block_m == 1
    for m in (2, 16, 64):  # only an eager M = 1 call can gain (see fma_candidates)
        assert not [c for c in candidates(m, arch="sm90") if c.get("kernel") == "fma"], m


def test_eager_launch_count():
    from rocm_fp8.tune.search import _launches

    assert _launches({"block_m": 16, "split_k": 8}, 3072) == 2
    assert _launches({"block_m": 16, "split_k": 8}, 128) == 1  # one K block: no split
    assert _launches(fma(8, 4).to_dict(), 3072) == 1


# -- cross-compiled (no GPU) -------------------------------------------------------------------------


def _fma_configs():
    from rocm_fp8.tune.candidates import fma_candidates

    return fma_candidates()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gfx942", "gfx950"])
def test_fma_candidates_compile_for_amd(arch):
    """Every fma candidate, FP8 and float input, in the flavour the arch computes in: no spills, no
    scratch, within LDS (the checks ``rocm-fp8 tune`` applies on AMD before timing)."""
    from rocm_fp8.kernels import amd_compile

    for c in _fma_configs():
        for k in (7168, 2128):  # K % 128 == 0, and a partial last group
            rep = amd_compile.compile_blockscale(c, arch, 2112, k)
            assert rep.kernel == amd_compile.FMA_REPORT
            assert rep.problems() == [], (c, rep.summary())
            assert rep.target.endswith(arch)


@pytest.mark.slow
def test_fma_candidates_compile_for_sm90():
    """Every fma candidate for sm_90a with Triton's bundled ptxas: no local memory (spills), registers
    within the 255 a thread can have."""
    import re
    import tempfile

    import triton

    from rocm_fp8.kernels import amd_compile

    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (bindir / "cuobjdump").exists():
        pytest.skip(f"this Triton ships no cuobjdump ({bindir})")
    for c in _fma_configs():
        for quant in (False, True):
            compiled = amd_compile.compile_fma(c, "sm90", 2112, 7168, quant=quant, fp8="e4m3fn")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "k.cubin"
                path.write_bytes(compiled.asm["cubin"])
                usage = subprocess.run([str(bindir / "cuobjdump"), "-res-usage", str(path)], capture_output=True,
                                       text=True, check=True).stdout
            fields = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}
            assert fields.get("LOCAL", 0) == 0 and fields.get("STACK", 0) == 0, (c, quant, usage)
            assert 0 < fields["REG"] <= 255, (c, quant, usage)
