"""The Gluon sm90 kernel variant of the triton backend, on a machine without its GPU.

- availability: the reason it cannot run here (Triton version, no GPU), and that ``import rocm_fp8``
  and a Triton other than 3.6 never import Gluon;
- the config: ``KernelConfig(kernel="gluon_ws2")`` (and ``gluon_ws``) round-trips through a table row and
  is validated; the ws2 staging that fits each (block_n, stages) in shared memory;
- routing: a Gluon config runs the same tile on the Triton kernel where Gluon cannot run (here,
  under TRITON_INTERPRET=1, checked against float64), through ``blockscale_gemm`` and the backend's
  ``bind``;
- compile (slow): Triton 3.6 (``.venv-triton36`` or ``ROCM_FP8_TRITON36_PYTHON``) cross-compiles
  the variants for sm_90a; the cubin has QGMMA, the ws/ws2 ones setmaxnreg, and nothing spills (ws2
  at BN 256 with plain stores: a few scalars).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rocm_fp8.kernels import gluon_support
from rocm_fp8.kernels.triton_blockscale import GLUON_KERNELS, KernelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_unavailable_here_names_the_reason():
    why = gluon_support.unavailable_reason()
    assert why is not None and why.startswith("gluon_ws: ")
    v = gluon_support.triton_version()
    if v is not None and not v.startswith(gluon_support.SUPPORTED_TRITON):
        assert f"this is Triton {v}" in why and "3.6" in why
    else:
        assert "GPU" in why or "TRITON_INTERPRET" in why
    from rocm_fp8.kernels.triton_blockscale import gluon_module

    with pytest.raises(RuntimeError, match="gluon_ws: "):
        gluon_module()


def test_import_rocm_fp8_does_not_import_gluon():
    code = ("import sys, rocm_fp8, rocm_fp8.backends.triton, rocm_fp8.kernels.gluon_support; "
            "bad = [m for m in sys.modules if 'gluon' in m and not m.endswith('gluon_support')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_round_trip_and_validation():
    cfg = KernelConfig(block_m=128, block_n=128, num_stages=5, group_m=8, kernel="gluon_ws").validate()
    row = json.loads(json.dumps({"m": 4096, "config": cfg.to_dict()}))
    assert row["config"]["kernel"] == "gluon_ws"
    assert KernelConfig.from_dict(row["config"]) == cfg
    assert "kernel" not in KernelConfig().to_dict()  # existing tables are unchanged
    assert set(GLUON_KERNELS) == {"gluon_ws2", "gluon_ws", "gluon_pipelined"}
    with pytest.raises(ValueError, match=r"config\.kernel: expected None, 'fma' or one of .*got 'cutlass'"):
        KernelConfig(block_m=128, kernel="cutlass").validate()
    with pytest.raises(ValueError, match="block_m 128.*got block_m 64"):
        KernelConfig(block_m=64, kernel="gluon_ws").validate()
    with pytest.raises(ValueError, match="split_k 1"):
        KernelConfig(block_m=128, split_k=2, kernel="gluon_ws").validate()
    fb = cfg.triton_fallback()
    assert fb.kernel is None and (fb.block_m, fb.block_n, fb.num_stages, fb.group_m) == (128, 128, 5, 8)


@pytest.mark.parametrize("bn,stages", [(256, 3), (128, 4), (256, 4), (192, 4)])
def test_ws2_table_row_round_trip(bn, stages):
    cfg = KernelConfig(block_m=128, block_n=bn, num_stages=stages, group_m=8, persistent=True,
                       kernel="gluon_ws2").validate()
    row = json.loads(json.dumps({"m": 4096, "config": cfg.to_dict()}))
    assert row["config"]["kernel"] == "gluon_ws2"
    assert KernelConfig.from_dict(row["config"]).validate() == cfg
    fb = cfg.triton_fallback()
    # (BN 192 is not a power of two, which Triton's blocks must be: its fallback tile is 128 wide)
    assert fb.kernel is None and (fb.block_m, fb.block_n, fb.num_stages) == (128, 128 if bn == 192 else bn, stages)
    fb.validate()


def test_ws2_validation_names_the_field():
    with pytest.raises(ValueError, match="config.block_n: the gluon_ws2 kernel takes 128, 192 or 256, got 64"):
        KernelConfig(block_m=128, block_n=64, kernel="gluon_ws2").validate()
    with pytest.raises(ValueError, match=r"config.num_stages: 5 stages of a 128x256 tile do not fit the 227 KiB"):
        KernelConfig(block_m=128, block_n=256, num_stages=5, kernel="gluon_ws2").validate()
    with pytest.raises(ValueError, match="config.num_stages: the gluon_ws2 kernel takes 2..8, got 9"):
        KernelConfig(block_m=128, block_n=128, num_stages=9, kernel="gluon_ws2").validate()
    with pytest.raises(ValueError, match=r"5 stages of a 128x256 tile do not fit"):
        KernelConfig(block_m=128, block_n=256, num_stages=5, kernel="gluon_ws").validate()
    # 192 is ws2's alone (v1's kernels and Triton's blocks are powers of two)
    for kernel in ("gluon_ws", None):
        with pytest.raises(ValueError, match="block_n.*got 192"):
            KernelConfig(block_m=128, block_n=192, kernel=kernel).validate()


def test_ws2_staging_is_the_richest_that_fits():
    limit = gluon_support.SM90_SHARED_BYTES
    # v2 as measured on the H200: staged scales and one output buffer per 128-wide column block
    assert gluon_support.ws2_staging(128, 4) == {"scales": "smem", "tma_store": True, "epilogue_bufs": 2}
    assert gluon_support.ws2_staging(256, 3) == {"scales": "smem", "tma_store": True, "epilogue_bufs": 2}
    # v3: BN 256 with a 4th stage needs the single output buffer and the scales from global memory
    assert gluon_support.ws2_staging(256, 4) == {"scales": "load", "tma_store": True, "epilogue_bufs": 1}
    assert gluon_support.gluon_shared_bytes("ws2", 256, 4, "smem", True, 2) > limit
    assert gluon_support.gluon_shared_bytes("ws2", 256, 4, "smem", True, 1) > limit
    assert gluon_support.gluon_shared_bytes("ws2", 256, 4, "load", True, 1) <= limit
    assert gluon_support.ws2_staging(256, 5) is None
    # v3's BN 192: 4 stages of 40 KiB, a 64x128 and a 64x64 output buffer per consumer, staged scales
    assert gluon_support.ws2_staging(192, 4) == {"scales": "smem", "tma_store": True, "epilogue_bufs": 2}
    assert gluon_support.gluon_shared_bytes("ws2", 192, 4) == 4 * 320 * 128 + 1024 + 2 * 64 * 192 * 2 + 4 * 256 * 4
    # the sizes the compiled kernels report (test_cross_compiles_for_sm90 / test_ws2_v3_cross_compiles)
    assert gluon_support.gluon_shared_bytes("ws2", 128, 4) == 4 * 256 * 128 + 1024 + 32768 + 4 * 192 * 4
    assert gluon_support.gluon_shared_bytes("ws2", 256, 4, "load", True, 1) == 4 * 384 * 128 + 1024 + 32768


def _operands(m, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    x_q = ((torch.rand(m, k, generator=g) * 2 - 1) * 448).to(torch.float8_e4m3fn)
    w_q = ((torch.rand(n, k, generator=g) * 2 - 1) * 448).to(torch.float8_e4m3fn)
    x_s = torch.rand(m, k // 128, generator=g) * 1e-3 + 1e-4
    w_s = torch.rand(-(-n // 128), k // 128, generator=g) * 1e-3 + 1e-4
    return x_q, x_s, w_q, w_s


def _ref64(x_q, x_s, w_q, w_s):
    xs = x_s.double().repeat_interleave(128, 1)
    ws = w_s.double().repeat_interleave(128, 0)[: w_q.shape[0]].repeat_interleave(128, 1)
    return (x_q.double() * xs) @ (w_q.double() * ws).t()


def _close(y, ref):
    # the interpreter's FP8 dot is not the GPU's: the tolerance of tests/test_triton_kernel.py (bf16
    # out), not the GPU accuracy gate (tests/gpu/test_gpu_gluon.py applies that)
    assert torch.isfinite(y).all()
    yd = y.double()
    rel = ((yd - ref).norm() / ref.norm()).item()
    cos = torch.nn.functional.cosine_similarity(yd.flatten(), ref.flatten(), dim=0).item()
    assert rel < 1e-2 and cos > 0.9999, (rel, cos)


INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_routing_under_interpreter():
    """Run the routing tests in a child process that starts with TRITON_INTERPRET=1 (Triton reads
    it at import)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "falls_back or bind_routes"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture
def interpret():
    if not INTERPRETED:
        pytest.skip("runs in test_routing_under_interpreter's child (TRITON_INTERPRET=1 before triton is imported)")
    pytest.importorskip("triton")


@pytest.mark.parametrize("kernel,bn", [("gluon_ws", 128), ("gluon_ws2", 256)])
def test_gluon_config_falls_back_to_the_triton_tile(interpret, kernel, bn):
    from rocm_fp8.kernels.triton_blockscale import blockscale_gemm, gluon_usable

    ops = _operands(70, 144 if bn == 128 else 272, 256, seed=3)
    cfg = KernelConfig(block_m=128, block_n=bn, num_stages=3, kernel=kernel).validate()
    assert not gluon_usable(cfg, ops[0], ops[2])
    with torch.inference_mode():
        y = blockscale_gemm(*ops, torch.bfloat16, config=cfg)
    _close(y, _ref64(*ops))


@pytest.mark.parametrize("kernel", ["gluon_ws", "gluon_ws2"])
def test_backend_bind_routes_by_config(interpret, kernel):
    from rocm_fp8.backends.base import PreparedWeight
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.triton_blockscale import BoundGemm, bind

    ops = _operands(40, 128, 256, seed=4)
    cfg = KernelConfig(block_m=128, block_n=128, num_stages=4, kernel=kernel)
    bound = bind(ops[2], ops[3], torch.bfloat16, cfg)
    assert isinstance(bound, BoundGemm) and bound.config == cfg.triton_fallback()
    backend = TritonBackend()
    backend._configs[(128, 256, 64)] = cfg  # as a table row for this (N, K, M bucket) would give it
    pw = PreparedWeight("triton", ops[2], ops[3], 128, 256)
    bound = backend.bind(pw, torch.bfloat16, 64)
    assert isinstance(bound, BoundGemm) and bound.config.kernel is None
    with torch.inference_mode():
        y = bound(ops[0], ops[1])
    _close(y, _ref64(*ops))


def _triton36_python() -> str:
    py = os.environ.get("ROCM_FP8_TRITON36_PYTHON") or str(ROOT / ".venv-triton36" / "bin" / "python")
    if not Path(py).is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"a Python with Triton 3.6 ({py}) is missing in CI: run `bash ci/setup-amd-cross.sh`")
        pytest.skip(f"a Python with Triton 3.6 is missing ({py}; set ROCM_FP8_TRITON36_PYTHON)")
    return py


def _resources(*args):
    py = _triton36_python()
    r = subprocess.run([py, "-m", "rocm_fp8.kernels.gluon_sm90", "--resources", *args], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.strip().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ws", "pipelined", "ws2"])
def test_cross_compiles_for_sm90(variant):
    res = _resources("--variant", variant, "--block-n", "128", "--stages", "4")[-1]
    assert res["qgmma_sass"] >= 4 and res["wgmma_ptx"] >= 4, res
    assert res["stack_bytes"] == 0 and res["local_bytes"] == 0, f"spills: {res}"
    assert 0 < res["shared_bytes"] <= 232448, res
    assert not res["wgmma_serialized"], res["ptxas_notes"]  # ptxas C7514: the MMAs would not overlap
    if variant in ("ws", "ws2"):
        assert "40" in res["setmaxnreg"] and "232" in res["setmaxnreg"], res  # producer down, consumers up
        assert res["wgmma_ptx"] == 8  # one 64xNx128 block per consumer warpgroup
    else:
        assert res["setmaxnreg"] == []
    if variant == "ws2":  # 4 stages of 32 KiB + 3 KiB of scales + the consumers' 64x128 bf16 output tiles
        assert 163 * 1024 <= res["shared_bytes"] <= 164 * 1024, res


@pytest.mark.slow
def test_ws2_variants_cross_compile():
    """ws2 without the TMA store (no output tile in shared memory) with each scale source, and at
    BN 256: two m64n128 wgmmas per K block per consumer, so the 64x256 accumulator and one 64x128
    block result fit the 232 registers (v1's ws spills 720 bytes at BN 256; the plain-store form a
    few scalars)."""
    for res in _resources("--variant", "ws2", "--block-n", "128", "--stages", "4", "--no-tma-store",
                          "--scales", "load", "--scales", "ahead", "--scales", "smem"):
        assert res["stack_bytes"] == 0 and not res["wgmma_serialized"], res
        # the ring, and with scales "smem" its 4 x (128 + 64) fp32 scale slots
        extra = 3 * 1024 if res["config"]["scales"] == "smem" else 0
        assert 128 * 1024 + extra <= res["shared_bytes"] <= 129 * 1024 + extra, res
    (wide,) = _resources("--variant", "ws2", "--block-n", "256", "--stages", "3")
    # 2 consumers x (two halves + the one-half loop of a tile whose second column block lies past N)
    # x 4 k32 steps
    assert wide["wgmma_ptx"] == 24 and wide["qgmma_sass"] == 24, wide
    assert wide["stack_bytes"] == 0 and not wide["wgmma_serialized"], wide
    assert wide["shared_bytes"] <= 232448, wide
    (plain,) = _resources("--variant", "ws2", "--block-n", "256", "--stages", "4", "--no-tma-store")
    assert plain["stack_bytes"] <= 128 and not plain["wgmma_serialized"], plain  # a few scalars at most


@pytest.mark.slow
def test_ws2_v3_cross_compiles():
    """v3: BN 256 with 4 ring stages, one output buffer per consumer and the scales loaded from
    global memory fits sm90's 227 KiB (192 KiB of ring, 32 KiB of output staging), without spills,
    with the wgmmas of two consumers x (two m64n128 halves, or one where the tile's second column
    block lies past N) x four k32 steps, none serialized."""
    (v3,) = _resources("--variant", "ws2", "--block-n", "256", "--stages", "4", "--scales", "load",
                       "--epilogue-bufs", "1")
    assert v3["wgmma_ptx"] == 24 and v3["qgmma_sass"] == 24, v3
    assert v3["stack_bytes"] == 0 and v3["local_bytes"] == 0, f"spills: {v3}"
    assert not v3["wgmma_serialized"], v3["ptxas_notes"]
    assert 224 * 1024 <= v3["shared_bytes"] <= 232448, v3
    assert "40" in v3["setmaxnreg"] and "232" in v3["setmaxnreg"], v3
    # BN 192: per K block and consumer one m64n128 and one m64n64 wgmma (4 k32 steps each)
    for res in _resources("--variant", "ws2", "--block-n", "192", "--stages", "4", "--scales", "smem",
                          "--scales", "load"):
        assert res["wgmma_ptx"] == 16 and res["qgmma_sass"] == 16, res
        assert res["stack_bytes"] == 0 and res["local_bytes"] == 0, f"spills: {res}"
        assert not res["wgmma_serialized"], res["ptxas_notes"]
        assert 0 < res["shared_bytes"] <= 232448, res


def test_tune_candidates_include_gluon_only_where_it_builds(monkeypatch):
    import importlib

    cands = importlib.import_module("rocm_fp8.tune.candidates")  # (the package re-exports the function)

    if gluon_support.compiler_reason() is not None:  # this Triton cannot build it: never a candidate
        assert not [c for c in cands.candidates(4096) if "kernel" in c]
    monkeypatch.setattr(cands, "_gluon_compiles", lambda: True)
    large = [c for c in cands.candidates(4096, arch="sm90") if "kernel" in c]
    # v2 (ws2) only: BN 256 x 3 stages and BN 128 x 4 measured best on the H200, BN 256 x 4 and 192 x 4 are v3
    assert {c["kernel"] for c in large} == {"gluon_ws2"}
    assert {(c["block_n"], c["num_stages"]) for c in large} == {(256, 3), (128, 4), (256, 4), (192, 4)}
    for c in large:
        KernelConfig.from_dict(c).validate()
    assert not [c for c in cands.candidates(512, arch="sm90") if "kernel" in c]
    assert not [c for c in cands.candidates(4096, arch="gfx942") if "kernel" in c]
    assert not [c for c in cands.candidates(4096, hopper=False) if "kernel" in c]
