"""The fused FP8 activation-quant kernel on the CPU under TRITON_INTERPRET=1, against rocm_fp8.quant.

Same pattern as test_triton_kernel.py: run plainly, this file re-runs itself in a child pytest that
starts with TRITON_INTERPRET=1. The kernel must equal ``quantize_activation`` bit for bit: values
(as raw bytes, so -0.0 and NaN encodings count) and scales, both FP8 flavours, both scale layouts,
every float input dtype, a partial last group (against the zero-padded input), magnitudes from
1e-6 to 1e6, an all-zero group and negative zeros; zero-padded outputs (rows > M, cols > K). The pad
kernel for already-quantized operands equals torch's padding. The GPU twin is tests/gpu/test_gpu_fast_path.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from rocm_fp8.quant import quantize_activation  # noqa: E402

FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_quant_kernel_suite_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"interpreted quant tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def quant():
    if not INTERPRETED:
        pytest.skip("runs in test_quant_kernel_suite_under_interpreter's child process")
    from rocm_fp8.kernels import quant_fp8

    return quant_fp8


def random_input(m, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    span = 3.0 if dtype == torch.float16 else 6.0  # fp16 overflows past 65504
    x = torch.randn(m, k, generator=g) * torch.logspace(-span, span, k)[torch.randperm(k, generator=g)]
    x[0, :min(k, 128)] = 0.0      # an all-zero group: scale 1e-12, values 0
    x[-1, 1:k:7] = -0.0           # negative zeros keep their sign in e4m3fn
    return x.to(dtype)


def reference(x, fp8):
    """quantize_activation on the input zero-padded to whole groups, cut back to K."""
    m, k = x.shape
    kp = -(-k // 128) * 128
    padded = torch.zeros(m, kp, dtype=x.dtype)
    padded[:, :k] = x
    q, s = quantize_activation(padded, 128, fp8)
    return q[:, :k], s


def assert_same(q, s, rq, rs):
    assert not torch.isnan(s).any() and not torch.isnan(q.float()).any(), "NaN in the output"
    assert q.shape == rq.shape and s.shape == rs.shape
    bad = (q.view(torch.uint8) != rq.view(torch.uint8)).sum().item()
    assert bad == 0, f"{bad} quantized values differ from quantize_activation"
    assert torch.equal(s, rs), f"{(s != rs).sum().item()} scales differ"


@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("m,k", [(1, 384), (5, 640), (3, 208), (2, 1000)], ids=["M1-K384", "M5-K640",
                                                                              "M3-K208", "M2-K1000"])
def test_matches_quantize_activation(quant, fp8, dtype, layout, m, k):
    x = random_input(m, k, dtype, seed=m * 31 + k)
    q, s = quant.quantize_fp8(x, fp8, 128, layout)
    rq, rs = reference(x, fp8)
    assert_same(q, s, rq, rs)
    groups = -(-k // 128)
    assert s.shape == (m, groups)
    assert s.stride() == ((1, m) if layout == "col" else (groups, 1))
    assert q.dtype == fp8 and q.is_contiguous()


def test_strided_input_and_empty_m(quant):
    x = random_input(4, 512, torch.bfloat16, seed=5)
    wide = torch.zeros(4, 640, dtype=torch.bfloat16)
    wide[:, :512] = x
    q, s = quant.quantize_fp8(wide[:, :512], FN, 128, "row")  # rows 640 apart
    assert_same(q, s, *reference(x, FN))
    q, s = quant.quantize_fp8(x.t().contiguous().t(), FN, 128, "col")  # column-major input
    assert_same(q, s, *reference(x, FN))
    q, s = quant.quantize_fp8(x[:0], FN, 128, "col")
    assert q.shape == (0, 512) and s.shape == (0, 4)


@pytest.mark.parametrize("fp8", [FN, FNUZ], ids=["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("layout", ["row", "col"])
@pytest.mark.parametrize("m,k,rows,cols", [(1, 384, 4, 512), (5, 392, 8, 512), (4, 512, 4, 512), (3, 640, 3, 1024)],
                         ids=["M1-K384-to4x512", "M5-K392-to8x512", "aligned", "K-only"])
def test_padded_output_equals_quantizing_the_zero_padded_input(quant, fp8, layout, m, k, rows, cols):
    """What torch-scaled-mm reads: M and K padded in the same launch, padding quantized as zeros."""
    x = random_input(m, k, torch.bfloat16, seed=m + k + rows)
    padded = torch.zeros(rows, cols, dtype=torch.bfloat16)
    padded[:m, :k] = x
    rq, rs = quantize_activation(padded, 128, fp8)
    q, s = quant.quantize_fp8(x, fp8, 128, layout, rows=rows, cols=cols)
    assert_same(q, s, rq, rs)
    assert q.shape == (rows, cols) and q.is_contiguous()
    assert s.stride() == ((1, rows) if layout == "col" else (cols // 128, 1))
    assert (q[m:].view(torch.uint8) == 0).all() and (q[:, k:].view(torch.uint8) == 0).all()
    # a strided input takes the JIT launch: same result
    wide = torch.zeros(m, k + 64, dtype=torch.bfloat16)
    wide[:, :k] = x
    assert_same(*quant.quantize_fp8(wide[:, :k], fp8, 128, layout, rows=rows, cols=cols), rq, rs)


@pytest.mark.parametrize("m,k,rows,cols", [(1, 384, 4, 512), (5, 392, 8, 512), (3, 3072, 4, 3072), (6, 256, 8, 1024)])
@pytest.mark.parametrize("scale_layout", ["row", "col", "offset"])
def test_pad_fp8_equals_torch_padding(quant, m, k, rows, cols, scale_layout):
    """Already-quantized operands padded in one launch: x with zeros, scales with ones, M-contiguous."""
    x = random_input(m, k, torch.bfloat16, seed=m * k)
    x_q, x_s = quantize_activation(x, 128, FN)
    if scale_layout == "col":
        x_s = x_s.t().contiguous().t()
    elif scale_layout == "offset":  # a view 4 bytes into its storage: not 16-byte aligned
        x_s = torch.cat([torch.zeros(1, x_s.shape[1]), x_s]).view(-1)[1:1 + x_s.numel()].view(x_s.shape)
    want_q = torch.zeros(rows, cols, dtype=torch.uint8)
    want_q[:m, :k] = x_q.view(torch.uint8)
    want_s = torch.ones(rows, cols // 128)
    want_s[:m, : x_s.shape[1]] = x_s
    for _ in range(2):
        q, s = quant.pad_fp8(x_q, x_s, rows, cols)
        assert q.dtype == FN and q.shape == (rows, cols) and q.is_contiguous()
        assert torch.equal(q.view(torch.uint8), want_q)
        assert s.shape == (rows, cols // 128) and s.stride() == (1, rows) and torch.equal(s, want_s)


def test_bad_input_names_the_argument(quant):
    x = torch.randn(2, 256)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        quant.quantize_fp8(x[0], FN)
    with pytest.raises(TypeError, match="x: expected a bfloat16/float16/float32"):
        quant.quantize_fp8(x.double(), FN)
    with pytest.raises(TypeError, match="fp8_dtype: expected"):
        quant.quantize_fp8(x, torch.bfloat16)
    with pytest.raises(ValueError, match="group_size: expected a power of two"):
        quant.quantize_fp8(x, FN, 96)
    with pytest.raises(ValueError, match="scale_layout: expected 'row' or 'col'"):
        quant.quantize_fp8(x, FN, 128, "column")
    with pytest.raises(ValueError, match="rows/cols: expected at least the input's"):
        quant.quantize_fp8(x, FN, 128, "col", rows=1)


def test_backends_use_it_on_cpu_only_under_the_interpreter(quant):
    from rocm_fp8.backends.triton import TritonBackend

    x = random_input(3, 256, torch.bfloat16, seed=8)
    q, s = TritonBackend().quantize_input(x, FN)
    rq, rs = quantize_activation(x, 128, FN)
    assert_same(q, s, rq, rs)
    assert quant._launches, "the Triton quant kernel was not used under the interpreter"
