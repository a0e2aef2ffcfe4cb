"""The selection table over hypothetical toolchains: sglang PR #27111 plus the known defects.

No GPU is needed: decisions are a pure function of (toolchain, problem, evidence), so each row of
the PR's table and each defect of FACTS.md section 2 is checked for machines we do not have.
"""

from __future__ import annotations

import json

import pytest

from rocm_fp8 import Toolchain, explain
from rocm_fp8.cli import main as cli_main

HIP70 = "7.0.51831"   # hipcc --version of ROCm 7.0.0 / 7.0.2 (recorded)
HIP72 = "7.2.26015"   # ROCm 7.2.0
FIXED_AITER = "d9e5ef7ce"  # the aiter commit that fixes bpreshuffle under the ROCm 7.2 LLVM

TUNED = [(4096, 7168), (2112, 7168), (7168, 2048), (3072, 1536), (512, 7168)]      # in the PR's list
UNTUNED = [(2048, 3072), (768, 3072), (3072, 3072), (24576, 1536)]                   # MiniMax / DSV3, not listed


def gfx950(hip, aiter_commit=None, **kw):
    return Toolchain.hypothetical("gfx950", hip=hip, aiter_commit=aiter_commit, **kw)


def choose(tc, n, k, m):
    return explain(n, k, m, toolchain=tc).backend


# -- the PR's table -------------------------------------------------------------------------------
@pytest.mark.parametrize("hip", [HIP70, HIP72])
@pytest.mark.parametrize("n,k", TUNED)
@pytest.mark.parametrize("m", [1, 64, 4096])
def test_tuned_shapes_use_aiter_triton_on_every_rocm(hip, n, k, m):
    d = explain(n, k, m, toolchain=gfx950(hip, FIXED_AITER))
    assert d.backend == "aiter-triton"
    assert "tuned config for this shape" in d.reason


@pytest.mark.parametrize("n,k", UNTUNED)
@pytest.mark.parametrize("m", [1, 16, 256, 4096, 16384])
def test_gfx950_rocm72_untuned_uses_bpreshuffle(n, k, m):
    assert choose(gfx950(HIP72, FIXED_AITER), n, k, m) == "aiter-bpreshuffle"


@pytest.mark.parametrize("n,k", UNTUNED)
@pytest.mark.parametrize("m", [1, 16, 256, 512])
def test_gfx950_rocm70_untuned_uses_plain_ck(n, k, m):
    assert choose(gfx950(HIP70), n, k, m) == "aiter-ck"


@pytest.mark.parametrize("hip", [HIP70, HIP72, "6.4.43482"])
@pytest.mark.parametrize("n,k", TUNED + UNTUNED)
def test_gfx942_uses_aiter_triton(hip, n, k):
    tc = Toolchain.hypothetical("gfx942", hip=hip)
    d = explain(n, k, 2048, toolchain=tc)
    assert d.backend == "aiter-triton"
    assert d.problem.fp8_dtype == "e4m3fnuz"


def test_without_aiter_amd_falls_back_to_our_triton():
    d = explain(2048, 3072, 64, toolchain=Toolchain.hypothetical("gfx950", hip=HIP72, aiter=False))
    assert d.backend == "triton"
    reasons = {c.backend: c.reason for c in d.considered}
    assert "aiter is not installed" in reasons["aiter-ck"]


def test_cpu_uses_the_reference():
    assert explain(2048, 3072, 64, toolchain=Toolchain.hypothetical("cpu")).backend == "reference"


# -- the known defects ------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", TUNED + UNTUNED + [(2560, 4096), (5120, 4096)])
@pytest.mark.parametrize("m", [1, 17, 128, 2048, 16384])
def test_bpreshuffle_is_never_picked_when_built_by_rocm70_hipcc(n, k, m):
    d = explain(n, k, m, toolchain=gfx950(HIP70, FIXED_AITER))
    assert d.backend != "aiter-bpreshuffle"
    c = {c.backend: c for c in d.considered}["aiter-bpreshuffle"]
    assert not c.ok and c.evidence == "ledger:bpreshuffle-rocm70-miscompile"
    assert "hipcc 7.0.51831" in c.reason and "needs hipcc >= 7.2" in c.reason


def test_explicit_bpreshuffle_on_rocm70_is_refused_with_the_ledger_id():
    d = explain(2048, 3072, 64, toolchain=gfx950(HIP70), backend="aiter-bpreshuffle")
    assert d.backend is None and d.failure == "unsafe"
    assert "bpreshuffle-rocm70-miscompile" in d.reason


@pytest.mark.parametrize("n,k,limit", [(2560, 4096, 2048), (4096, 1024, 4096), (4096, 2048, 2048), (4608, 4096, 512)])
def test_plain_ck_on_rocm70_only_up_to_the_per_shape_safe_m(n, k, limit):
    tc = gfx950(HIP70)
    at = explain(n, k, limit, toolchain=tc)
    above = explain(n, k, limit + 1, toolchain=tc)
    assert at.backend == "aiter-ck" and at.evidence == "ledger:ck-blockscale-rocm70-nan"
    assert above.backend != "aiter-ck"
    assert f"safe up to M={limit}" in {c.backend: c.reason for c in above.considered}["aiter-ck"]


def test_plain_ck_shape_known_correct_at_every_m():
    assert choose(gfx950(HIP70), 5120, 4096, 16384) == "aiter-ck"


def test_plain_ck_unlisted_shape_is_held_to_the_smallest_verified_limit():
    tc = gfx950(HIP70)
    assert choose(tc, 2048, 3072, 512) == "aiter-ck"
    d = explain(2048, 3072, 513, toolchain=tc)
    assert d.backend == "aiter-triton"
    assert "probe" in {c.backend: c.reason for c in d.considered}["aiter-ck"]


@pytest.mark.parametrize("n,k", [(2560, 4096), (4608, 4096), (2048, 3072)])
def test_plain_ck_on_rocm72_has_no_m_limit(n, k):
    assert choose(gfx950(HIP72), n, k, 16384) == "aiter-ck"   # bpreshuffle is held back: aiter commit unknown


def test_bpreshuffle_on_rocm72_needs_an_aiter_with_the_fix():
    d = explain(2048, 3072, 4096, toolchain=gfx950(HIP72))
    c = {c.backend: c for c in d.considered}["aiter-bpreshuffle"]
    assert d.backend == "aiter-ck"
    assert not c.ok and c.evidence == "ledger:bpreshuffle-rocm72-coerce-illegal-types"
    assert "aiter commit unknown" in c.reason and "d9e5ef7ce" in c.reason
    fixed = explain(2048, 3072, 4096, toolchain=gfx950(HIP72, FIXED_AITER))
    assert fixed.backend == "aiter-bpreshuffle" and "probe recommended" in fixed.reason


def test_the_compiler_decides_not_torch():
    # torch built against HIP 7.2 but aiter's kernels compiled by a ROCm 7.0 hipcc: the hipcc counts
    tc = gfx950(HIP70).with_(torch_hip=HIP72)
    assert choose(tc, 2048, 3072, 64) == "aiter-ck"


# -- overrides ----------------------------------------------------------------------------------------
def test_disable_list_removes_a_backend():
    d = explain(2048, 3072, 64, toolchain=gfx950(HIP70), disabled={"aiter-ck"})
    assert d.backend == "aiter-triton"


def test_explicit_unavailable_backend_reports_why():
    d = explain(2048, 3072, 64, toolchain=Toolchain.hypothetical("sm90"), backend="aiter-ck")
    assert d.failure == "unavailable" and "needs an AMD Instinct GPU" in d.reason


def test_hypothetical_toolchain_argument_errors():
    with pytest.raises(ValueError, match=r"arch: expected one of gfx942, gfx950, sm90, cpu"):
        Toolchain.hypothetical("mi300")
    with pytest.raises(ValueError, match=r"hip: expected a HIP version such as 7.0.51831, got 'seven'"):
        Toolchain.hypothetical("gfx950", hip="seven")
    with pytest.raises(ValueError, match=r"hip/rocm: a HIP or ROCm version only makes sense for an AMD arch"):
        Toolchain.hypothetical("sm90", hip=HIP72)


# -- the CLI reproduces it ----------------------------------------------------------------------------
def _explain_json(capsys, *args):
    rc = cli_main(["explain", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return rc, out


def test_cli_explain_json_for_hypothetical_machines(capsys):
    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP70, "--n", "2560", "--k", "4096", "--m", "4096")
    assert rc == 0
    assert out["backend"] == "aiter-triton"
    assert set(out) >= {"backend", "reason", "considered", "toolchain"}
    by = {c["backend"]: c for c in out["considered"]}
    assert by["aiter-bpreshuffle"]["ok"] is False and "bpreshuffle-rocm70-miscompile" in by["aiter-bpreshuffle"]["reason"]
    assert by["aiter-ck"]["ok"] is False and "safe up to M=2048" in by["aiter-ck"]["reason"]
    assert out["toolchain"]["arch"] == "gfx950" and out["toolchain"]["hip_version"] == HIP70

    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP72, "--aiter-commit", FIXED_AITER,
                            "--n", "2048", "--k", "3072", "--m", "4096")
    assert out["backend"] == "aiter-bpreshuffle"
    rc, out = _explain_json(capsys, "--arch", "gfx942", "--rocm", "7.0.2", "--n", "2048", "--k", "3072", "--m", "64")
    assert out["backend"] == "aiter-triton"
    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP72, "--no-aiter", "--n", "2048", "--k", "3072",
                            "--m", "64")
    assert out["backend"] == "triton"


def test_cli_explain_text_and_errors(capsys):
    assert cli_main(["explain", "--n", "256", "--k", "256", "--m", "3"]) == 0
    text = capsys.readouterr().out
    assert "backend:  reference" in text and "considered:" in text
    assert cli_main(["explain", "--hip", HIP70, "--n", "256", "--k", "256", "--m", "3"]) == 2
    assert "--arch: required" in capsys.readouterr().err
    # a partial last K group is part of the contract: explained, not refused
    assert cli_main(["explain", "--n", "256", "--k", "200", "--m", "3"]) == 0
    assert "backend:  reference" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["explain", "--n", "0", "--k", "256", "--m", "3"])


def test_nvidia_choice_follows_the_measured_h100_table(capsys):
    # the shipped table for this device was measured on an H100 (bench/results): ours wins decode-sized M,
    # cuBLASLt wins this shape at M=4096
    h100 = Toolchain.hypothetical("sm90", device_name="NVIDIA H100 80GB HBM3")
    small = explain(2048, 3072, 16, toolchain=h100)
    large = explain(2048, 3072, 4096, toolchain=h100)
    assert small.backend == "triton" and "measured" in small.reason
    assert large.backend == "torch-scaled-mm" and "measured" in large.reason
    rc, out = _explain_json(capsys, "--arch", "sm90", "--device", "NVIDIA H100 80GB HBM3", "--n", "2048", "--k", "3072",
                            "--m", "16")
    assert out["backend"] == "triton"
