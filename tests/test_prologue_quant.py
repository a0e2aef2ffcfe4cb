"""The GEMM that quantizes its float activation in its prologue (``QUANT_A``, ``BoundQuantGemm``), on
the CPU under TRITON_INTERPRET=1, and the triton backend's choice between it and the fused quant
kernel + GEMM.

Run plainly, this file re-runs itself in a child pytest that starts with TRITON_INTERPRET=1 (as
test_triton_kernel.py does). The prologue path must give the bits of ``quantize_fp8`` followed by the
``BoundGemm`` of the same config, at every M from 1 to 16 (the bucket it serves), with K ending in a
partial 128-group, split-K, the FRAME accumulator, both FP8 flavours, every input and output dtype.
The inputs are the ones that would produce NaN if the prologue went wrong: an all-zero group (scale
1e-12: 0/0 if unguarded), values at the FP8 limit (the ratio rounds past 448/224 without a clamp, and
e4m3fn has no inf: NaN), negative zeros, and M below BLOCK_M (rows wrapped onto real ones). The GPU
twin (tests/gpu/test_gpu_fast_path.py) checks the same on the compiled kernel, eager and captured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from rocm_fp8.quant import QUANT_MAX, quantize_weight  # noqa: E402
from numerics import assert_close, reference_linear  # noqa: E402

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_prologue_suite_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"interpreted prologue tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def kernels():
    if not INTERPRETED:
        pytest.skip("runs in test_prologue_suite_under_interpreter's child process")
    from rocm_fp8.kernels import quant_fp8, triton_blockscale

    return triton_blockscale, quant_fp8


def hard_activation(m, k, dtype, seed):
    """Fresh random activations with the cases that break a careless prologue: an all-zero group,
    one element per group at the group's max (its ratio is exactly the FP8 limit, or a hair past it
    with a reciprocal), magnitudes spread over decades, negative zeros."""
    g = torch.Generator().manual_seed(seed)
    span = 2.0 if dtype == torch.float16 else 4.0
    x = torch.randn(m, k, generator=g) * torch.logspace(-span, span, k)[torch.randperm(k, generator=g)]
    x[0, :min(k, 128)] = 0.0
    if m > 1:
        x[m - 1, 1:k:5] = -0.0
    x[:, 3] = x.abs().amax(dim=1) * torch.where(torch.rand(m, generator=g) < 0.5, -1.0, 1.0)
    return x.to(dtype)


def weight(n, k, fp8, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    return quantize_weight(w, (128, 128), fp8)


def both_paths(kernels, x, w_q, w_s, out_dtype, cfg):
    tb, quant = kernels
    fused = tb.BoundQuantGemm(w_q, w_s, out_dtype, cfg, x.dtype)(x)
    two = tb.BoundGemm(w_q, w_s, out_dtype, cfg)(*quant.quantize_fp8(x, w_q.dtype, 128, "row"))
    return fused, two


def same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert not torch.isnan(a).any(), f"{torch.isnan(a).sum().item()} NaN in the prologue path's output"
    assert torch.equal(a, b), (
        f"prologue path differs from quant + GEMM: max |diff| {(a.double() - b.double()).abs().max().item():.3e}")


# The small-M configs the backend uses (tables and default): BLOCK_M 16 > M, split-K with an uneven
# split of K's groups, FRAME, a 128-wide N tile, persistent.
CONFIGS = {
    "table_m16_split8": dict(block_m=16, block_n=64, group_m=1, split_k=8, num_warps=4, num_stages=4),
    "split1_frame": dict(block_m=16, block_n=64, group_m=1, split_k=1, frame=True),
    "n128_split3_frame": dict(block_m=16, block_n=128, group_m=1, split_k=3, frame=True),
    "persistent_split2": dict(block_m=16, block_n=64, group_m=1, split_k=2, persistent=True),
}


@pytest.mark.parametrize("m", range(1, 17))
def test_every_m_of_the_bucket_is_bit_identical_and_finite(kernels, m):
    """The reproducer for the NaN the first prologue experiment showed at M <= 16 on the H200."""
    tb, _ = kernels
    w_q, w_s = weight(96, 424, FN, seed=m)  # K = 3 x 128 + 40: a partial last group; N: a partial tile
    x = hard_activation(m, 424, torch.bfloat16, seed=100 + m)
    cfg = tb.KernelConfig(**CONFIGS["table_m16_split8"])
    fused, two = both_paths(kernels, x, w_q, w_s, torch.bfloat16, cfg)
    same_bits(fused, two)
    x_q, x_s = kernels[1].quantize_fp8(x, FN, 128, "row")
    assert_close(fused, reference_linear(x_q, x_s, w_q, w_s), 1e-2)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("in_dtype,out_dtype,fp8", [
    (torch.bfloat16, torch.float32, FN), (torch.float16, torch.float16, FN), (torch.float32, torch.bfloat16, FN),
    (torch.bfloat16, torch.bfloat16, FNUZ)])
def test_configs_dtypes_and_flavours(kernels, config, in_dtype, out_dtype, fp8):
    tb, quant = kernels
    n, k = 160, 640
    w_q, w_s = weight(n, k, fp8, seed=7)
    cfg = tb.KernelConfig(**CONFIGS[config])
    for m, seed in ((1, 1), (11, 2)):
        x = hard_activation(m, k, in_dtype, seed)
        fused, two = both_paths(kernels, x, w_q, w_s, out_dtype, cfg)
        same_bits(fused, two)
        x_q, x_s = quant.quantize_fp8(x, fp8, 128, "row")
        assert x_q.float().abs().max().item() <= QUANT_MAX[fp8]
        assert_close(fused, reference_linear(x_q, x_s, w_q, w_s), 1e-2 if out_dtype != torch.float32 else 1e-3)


def test_strided_activation_takes_the_jit_launch(kernels):
    """Rows longer than K (a slice of a wider tensor): same bits through the JIT launch."""
    tb, quant = kernels
    w_q, w_s = weight(64, 256, FN, seed=3)
    wide = hard_activation(5, 384, torch.bfloat16, seed=4)
    x = wide[:, 64:320]
    cfg = tb.KernelConfig(**CONFIGS["split1_frame"])
    fused = tb.BoundQuantGemm(w_q, w_s, torch.bfloat16, cfg, torch.bfloat16)(x)
    same_bits(fused, tb.BoundGemm(w_q, w_s, torch.bfloat16, cfg)(*quant.quantize_fp8(x.contiguous(), FN, 128)))


def test_bad_input_dtype_is_named(kernels):
    tb, _ = kernels
    w_q, w_s = weight(64, 128, FN, seed=5)
    cfg = tb.KernelConfig(**CONFIGS["split1_frame"])
    with pytest.raises(TypeError, match="input_dtype: expected torch.bfloat16"):
        tb.BoundQuantGemm(w_q, w_s, torch.bfloat16, cfg, torch.float8_e4m3fn)
    bound = tb.BoundQuantGemm(w_q, w_s, torch.bfloat16, cfg, torch.bfloat16)
    with pytest.raises(TypeError, match=r"x: expected torch.bfloat16 .*got torch.float16"):
        bound(torch.randn(2, 128).half())


# -- the backend's choice and the dispatcher ------------------------------------------------------------
def test_backend_takes_the_prologue_only_in_small_buckets(kernels):
    from rocm_fp8.backends.triton import PROLOGUE_MAX_M, TritonBackend

    be = TritonBackend()
    w_q, w_s = weight(96, 424, FN, seed=9)
    prepared = be.prepare_weight(w_q, w_s)
    assert be.bind_float_input(prepared, torch.bfloat16, PROLOGUE_MAX_M * 2, FN, 128) is None
    run = be.bind_float_input(prepared, torch.bfloat16, PROLOGUE_MAX_M, FN, 128)
    assert run is not None
    bound = be.bind(prepared, torch.bfloat16, PROLOGUE_MAX_M)
    for m, dtype in ((PROLOGUE_MAX_M, torch.bfloat16), (3, torch.float16), (1, torch.float32)):
        x = hard_activation(m, 424, dtype, seed=m)
        same_bits(run(x), bound(*be.quantize_input(x, FN)))


@pytest.mark.parametrize("m", [1, 13, 40])
def test_op_float_input_equals_fp8_input(kernels, m):
    """Through the functional op: bf16 input (prologue path at M <= 16, quant + GEMM above) gives the
    bits of the FP8 input quantized by the backend's quant kernel."""
    import rocm_fp8
    from rocm_fp8 import dispatch
    from rocm_fp8.backends.triton import PROLOGUE_MAX_M

    w_q, w_s = weight(96, 424, FN, seed=11)
    x = hard_activation(m, 424, torch.bfloat16, seed=12)
    y = rocm_fp8.w8a8_block_fp8_linear(x, w_q, w_s, backend="triton")
    x_q, x_s = kernels[1].quantize_fp8(x, FN, 128, "row")
    same_bits(y, rocm_fp8.w8a8_block_fp8_linear(x_q, w_q, w_s, input_scale=x_s, backend="triton"))
    calls = [c for key, c in dispatch.plan_for(w_q, w_s, (128, 128)).calls.items() if key[2]]
    assert len(calls) == 1 and (calls[0].fn_float is not None) == (m <= PROLOGUE_MAX_M)


def test_explain_names_the_float_input_path(kernels):
    import rocm_fp8

    small = rocm_fp8.explain(2048, 3072, 4, backend="triton").notes
    large = rocm_fp8.explain(2048, 3072, 64, backend="triton").notes
    assert any("eager calls run the GEMM quantizing its activation in its prologue" in n and "capture" in n
               for n in small), small
    assert any(n.startswith("float input: the fused quant kernel, then the GEMM, eager and captured") for n in large)


def test_first_call_cross_checks_and_a_disagreeing_prologue_is_dropped(kernels, monkeypatch, caplog):
    """The first eager call per input dtype runs both paths; a prologue kernel whose bits differ (here
    one that plants a NaN, as the first experiment's did on the H200) is dropped for the layer, with a
    warning, and every call returns the two-kernel bits."""
    from rocm_fp8.backends.triton import TritonBackend

    tb, _ = kernels
    calls = {"good": 0, "bad": 0}

    class Counting(tb.BoundQuantGemm):
        def __call__(self, x):
            calls["good"] += 1
            return super().__call__(x)

    class PlantsNaN(tb.BoundQuantGemm):
        def __call__(self, x):
            calls["bad"] += 1
            y = super().__call__(x)
            y[0, 0] = float("nan")
            return y

    be = TritonBackend()
    w_q, w_s = weight(96, 424, FN, seed=21)
    xs = [hard_activation(m, 424, torch.bfloat16, seed=30 + m) for m in (2, 7, 16)]

    monkeypatch.setattr(tb, "BoundQuantGemm", Counting)
    prepared = be.prepare_weight(w_q, w_s)
    run = be.bind_float_input(prepared, torch.bfloat16, 16, FN, 128)
    bound = be.bind(prepared, torch.bfloat16, 16)
    for x in xs:
        same_bits(run(x), bound(*be.quantize_input(x, FN)))
    assert calls["good"] == 3  # the first call's cross-check, then every call
    assert isinstance(run.prologue_kernels[torch.bfloat16], Counting)

    monkeypatch.setattr(tb, "BoundQuantGemm", PlantsNaN)
    prepared = be.prepare_weight(w_q, w_s)
    run = be.bind_float_input(prepared, torch.bfloat16, 16, FN, 128)
    with caplog.at_level("WARNING", logger="rocm_fp8"):
        ys = [run(x) for x in xs]
    assert calls["bad"] == 1 and run.prologue_kernels[torch.bfloat16] is None
    assert "disagrees with quant kernel + GEMM" in caplog.text and "+1 NaN" in caplog.text
    for x, y in zip(xs, ys):
        same_bits(y, bound(*be.quantize_input(x, FN)))


def test_same_bits_counts_nan_as_equal_bits():
    from rocm_fp8.backends.triton import same_bits as bits_equal

    a = torch.tensor([1.0, float("nan"), -0.0], dtype=torch.bfloat16)
    assert bits_equal(a, a.clone())
    assert not bits_equal(a, torch.tensor([1.0, float("nan"), 0.0], dtype=torch.bfloat16))
    assert not bits_equal(a, a.float())


# -- the prologue kernel compiled for AMD (no GPU needed: Triton's HIP backend runs in-process) --------
AMD = {"gfx942": "e4m3fnuz", "gfx950": "e4m3fn"}


def _prologue_jobs(arch):
    """The size-based default configs of the prologue buckets (M <= 16) on ``arch`` (16-row tiles: what
    a table row for small M looks like), for a model shape and one whose K ends in a partial group,
    with every float input dtype. The AMD tables' own 128-row default does not take the prologue."""
    from rocm_fp8.backends.triton import PROLOGUE_MAX_M, TritonBackend
    from rocm_fp8.kernels.triton_blockscale import default_config
    from rocm_fp8.toolchain import Toolchain

    be, tc = TritonBackend(), Toolchain.hypothetical(arch=arch, aiter=False)
    jobs = {}
    for n, k in ((2112, 7168), (4096, 1552)):
        for b in (1, 2, 4, 8, PROLOGUE_MAX_M):
            assert not be.prologue_quant_applies(b, n, k, tc)  # the table default: block_m 128
            cfg = default_config(b, n, k, arch)
            for dtype in ("bfloat16", "float16", "float32"):
                job = {"config": cfg.to_dict(), "arch": arch, "n": n, "k": k, "fp8": AMD[arch], "input_dtype": dtype}
                jobs[repr(sorted(job["config"].items())) + f"{n % 16}{k % 128}{dtype}"] = job
    return list(jobs.values())


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="compiles for AMD; the interpreter replaces the kernel")
@pytest.mark.parametrize("arch", sorted(AMD))
def test_prologue_kernel_compiles_clean_for_amd(arch):
    """FP8 MFMA (the quantized tile is not widened to f16), no spills or scratch, LDS within the arch's
    limit: with this venv's Triton, and with Triton 3.6 where ci/setup-amd-cross.sh installed it."""
    from rocm_fp8.kernels import amd_compile

    jobs = _prologue_jobs(arch)
    assert jobs
    for job in jobs:
        rep = amd_compile.run_job(job)
        assert "report" in rep, rep
        report = amd_compile.ResourceReport.from_dict(rep["report"])
        assert report.problems() == [], f"{job}: {report.summary()}"
    py = os.environ.get("ROCM_FP8_TRITON36_PYTHON") or str(Path(__file__).resolve().parents[1] / ".venv-triton36"
                                                           / "bin" / "python")
    if not Path(py).is_file():
        pytest.skip(f"no Triton 3.6 interpreter at {py} (bash ci/setup-amd-cross.sh); checked with this Triton only")
    import json

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([py, "-m", "rocm_fp8.kernels.amd_compile"], input=json.dumps(jobs), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["triton"].startswith("3.6")
    for r in out["results"]:
        assert "report" in r, r
        report = amd_compile.ResourceReport.from_dict(r["report"])
        assert report.problems() == [], f"{r['job']}: {report.summary()}"


def test_a_prologue_that_cannot_run_leaves_the_two_kernel_route(kernels, monkeypatch, caplog):
    """A prologue kernel that fails to launch (as an out-of-resources compile would) costs the layer
    nothing but the warning: the call returns the two-kernel bits, and so do later ones."""
    from rocm_fp8.backends.triton import TritonBackend

    tb, _ = kernels

    class CannotRun(tb.BoundQuantGemm):
        def __call__(self, x):
            raise RuntimeError("out of resources: shared memory, Required: 300000, Hardware limit: 232448")

    monkeypatch.setattr(tb, "BoundQuantGemm", CannotRun)
    be = TritonBackend()
    w_q, w_s = weight(96, 424, FN, seed=41)
    prepared = be.prepare_weight(w_q, w_s)
    run = be.bind_float_input(prepared, torch.bfloat16, 8, FN, 128)
    bound = be.bind(prepared, torch.bfloat16, 8)
    with caplog.at_level("WARNING", logger="rocm_fp8"):
        for m in (3, 8):
            x = hard_activation(m, 424, torch.float16, seed=m)
            same_bits(run(x), bound(*be.quantize_input(x, FN)))
    assert run.prologue_kernels[torch.float16] is None
    assert caplog.text.count("cannot run here (RuntimeError: out of resources") == 1

