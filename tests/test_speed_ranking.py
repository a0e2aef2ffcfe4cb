"""auto ranks the backends that correctness lets through by speed measured on this toolchain. CPU only.

Fixtures:
* ``fixtures/speed/gfx950-illustrative.json``: a probe report with a "speed" list in the format
  ``rocm-fp8 tune`` / ``rocm-fp8 probe --timing`` write. Its figures are ILLUSTRATIVE (labelled so in
  the file): no MI355X is reachable from this project; they exercise the ranking, nothing else.
* the shipped H100 kernel table (``rocm_fp8/configs/nvidia_h100_80gb_hbm3.json``): figures measured
  on an H100 by ``rocm-fp8 tune`` (bench/results/tune-*-nvidia_h100_80gb_hbm3.txt).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rocm_fp8 import Toolchain, explain, kernel_configs
from rocm_fp8 import probe_report as pr
from rocm_fp8.dispatch import default_sources
from rocm_fp8.explain import format_decision
from rocm_fp8.ledger import default_ledger

FIXTURE = Path(__file__).parent / "fixtures" / "speed" / "gfx950-illustrative.json"
HIP70, HIP72, FIXED_AITER = "7.0.51831", "7.2.26015", "d9e5ef7ce"


@pytest.fixture(autouse=True)
def _tables(monkeypatch):
    for env in (kernel_configs.ENV_TABLES, kernel_configs.ENV_DIR):
        monkeypatch.delenv(env, raising=False)
    kernel_configs.clear_cache()


def fixture_evidence():
    report = json.loads(FIXTURE.read_text())
    assert "ILLUSTRATIVE" in report["label"]
    return [pr.ProbeEvidence(report, str(FIXTURE)), default_ledger()]


def gfx950(hip, commit=None):
    return Toolchain.hypothetical("gfx950", hip=hip, aiter_commit=commit, device_name="AMD Instinct MI355X")


def test_measured_speed_beats_the_static_order():
    tc = gfx950(HIP72, FIXED_AITER)
    # without measurements: sglang PR #27111's order, bpreshuffle first on an untuned shape
    assert explain(2048, 3072, 16, toolchain=tc).backend == "aiter-bpreshuffle"
    d = explain(2048, 3072, 16, toolchain=tc, evidence=fixture_evidence())
    assert d.backend == "aiter-ck"
    ranked = [c.backend for c in d.considered if c.ok]
    assert ranked == ["aiter-ck", "triton", "aiter-bpreshuffle", "aiter-triton", "reference"]
    # at M = 4096 the fixture has CK ahead too, at 256 bpreshuffle
    assert explain(2048, 3072, 4096, toolchain=tc, evidence=fixture_evidence()).backend == "aiter-ck"
    assert explain(2048, 3072, 256, toolchain=tc, evidence=fixture_evidence()).backend == "aiter-bpreshuffle"


def test_explain_cites_the_measurement_file_and_figure():
    d = explain(2048, 3072, 16, toolchain=gfx950(HIP72, FIXED_AITER), evidence=fixture_evidence())
    assert f"measured 55.3 TFLOPS at M=16 [probe:{FIXTURE}]" in d.reason
    text = format_decision(d)
    assert f"aiter-triton       #4   measured 31.0 TFLOPS at M=16 [probe:{FIXTURE}]" in text


def test_the_row_is_the_smallest_measured_m_at_or_above_the_problem():
    tc = gfx950(HIP72, FIXED_AITER)
    d = explain(2048, 3072, 100, toolchain=tc, evidence=fixture_evidence())  # -> the M=256 row
    assert d.backend == "aiter-bpreshuffle" and "at M=256" in d.reason
    d = explain(2048, 3072, 16384, toolchain=tc, evidence=fixture_evidence())  # beyond the last: M=4096
    assert d.backend == "aiter-ck" and "at M=4096" in d.reason


def test_correctness_filters_before_speed():
    # ROCm 7.0 hipcc miscompiles bpreshuffle; the fixture has it fastest at M=256: it is still not chosen
    d = explain(2048, 3072, 256, toolchain=gfx950(HIP70), evidence=fixture_evidence())
    c = {c.backend: c for c in d.considered}
    assert d.backend == "triton"  # 395 > CK's 380.5 in the fixture
    assert not c["aiter-bpreshuffle"].ok and c["aiter-bpreshuffle"].evidence.startswith("ledger:")
    assert "passed over: aiter-bpreshuffle (unsafe: ledger:" in d.reason


def test_unmeasured_backends_follow_in_platform_order():
    report = json.loads(FIXTURE.read_text())
    report["speed"] = [e for e in report["speed"] if e["backend"] == "triton"]
    ev = [pr.ProbeEvidence(report, "only-triton.json"), default_ledger()]
    d = explain(2048, 3072, 16, toolchain=gfx950(HIP72, FIXED_AITER), evidence=ev)
    assert [c.backend for c in d.considered if c.ok] == ["triton", "aiter-bpreshuffle", "aiter-ck", "aiter-triton",
                                                         "reference"]


def test_speed_measured_here_goes_before_the_table(tmp_path, monkeypatch):
    # The H100 table has our kernel ahead at M=16 (27.2 vs 14.9 TFLOPS, measured). A speed report for
    # this very toolchain saying otherwise wins. Its figures are ILLUSTRATIVE.
    monkeypatch.setenv(pr.ENV_CACHE, str(tmp_path))
    tc = Toolchain.hypothetical("sm90", device_name="NVIDIA H100 80GB HBM3").with_(source="detected")
    assert explain(2048, 3072, 16, toolchain=tc).backend == "triton"
    report = pr.new_report(tc)
    report["speed"] = [{"backend": "torch-scaled-mm", "n": 2048, "k": 3072, "m": 16, "fp8_dtype": "e4m3fn",
                        "device_type": "cuda", "us": 5.0, "tflops": 40.3},
                       {"backend": "triton", "n": 2048, "k": 3072, "m": 16, "fp8_dtype": "e4m3fn",
                        "device_type": "cuda", "us": 7.0, "tflops": 28.8}]
    path = pr.write_report(report)
    assert path == tmp_path / "probe" / f"{tc.fingerprint}.json"
    d = explain(2048, 3072, 16, toolchain=tc)
    assert d.backend == "torch-scaled-mm" and f"measured 40.3 TFLOPS at M=16 [probe:{path}]" in d.reason
    # shapes the report does not cover still rank by the table
    assert "[table:" in explain(2048, 3072, 4096, toolchain=tc).reason
    # another toolchain (another device) does not read this report
    other = Toolchain.hypothetical("sm90", device_name="NVIDIA H800").with_(source="detected")
    assert explain(2048, 3072, 16, toolchain=other).backend == "triton"


def test_tune_writes_speed_where_the_dispatcher_reads_it(tmp_path, monkeypatch):
    from rocm_fp8.tune.speed import speed_entry, write_speed

    monkeypatch.setenv(pr.ENV_CACHE, str(tmp_path))
    tc = Toolchain.hypothetical("sm90", device_name="NVIDIA H200").with_(source="detected")
    # a correctness probe already cached for this toolchain: its results survive the speed merge
    probe = pr.new_report(tc, settings={"ms": [1, 16]})
    probe["results"] = [{"backend": "triton", "n": 768, "k": 3072, "fp8_dtype": "e4m3fn", "device_type": "cuda",
                         "status": "safe", "max_safe_m": 16}]
    pr.write_report(probe)
    entries = [speed_entry("torch-scaled-mm", 768, 3072, 64, "e4m3fn", {"us": 3.0, "sets": 8}),
               speed_entry("triton", 768, 3072, 64, "e4m3fn", {"us": 4.0, "sets": 8})]
    paths = write_speed(tc, entries, output=tmp_path / "copy.json", device="NVIDIA H200")
    assert paths[0] == tmp_path / "probe" / f"{tc.fingerprint}.json" and paths[1].is_file()
    data = pr.load_report(paths[0])
    assert data["results"][0]["max_safe_m"] == 16 and data["settings"] == {"ms": [1, 16]}
    assert {e["backend"] for e in data["speed"]} == {"torch-scaled-mm", "triton"}
    assert data["speed"][0]["tflops"] == round(2 * 64 * 768 * 3072 / 3e-6 / 1e12, 2)
    speed_sources = [s for s in default_sources(tc) if getattr(s, "speed", None)]
    assert len(speed_sources) == 1
    d = explain(768, 3072, 64, toolchain=tc)
    assert d.backend == "torch-scaled-mm" and "[probe:" in d.reason
    # a later measurement of one cell replaces that cell only
    write_speed(tc, [speed_entry("triton", 768, 3072, 64, "e4m3fn", {"us": 2.0})])
    data = pr.load_report(paths[0])
    assert len(data["speed"]) == 2 and explain(768, 3072, 64, toolchain=tc).backend == "triton"
    assert "speed (TFLOPS" in pr.format_table(data) and "N=768 K=3072 M=64: triton" in pr.format_table(data)


def test_bad_speed_entries_are_skipped_not_fatal():
    report = json.loads(FIXTURE.read_text())
    report["speed"].append({"backend": "triton", "n": 2048, "k": 3072, "m": 1, "tflops": "fast"})
    report["speed"].append({"backend": "triton", "n": 2048})
    report["speed"].append({"backend": "aiter-triton", "n": 2048, "k": 3072, "m": 1, "tflops": float("nan"),
                            "fp8_dtype": "e4m3fn", "device_type": "cuda"})
    ev = [pr.ProbeEvidence(report, "bad.json"), default_ledger()]
    d = explain(2048, 3072, 1, toolchain=gfx950(HIP72, FIXED_AITER), evidence=ev)
    assert d.backend == "aiter-ck" and "at M=16" in d.reason  # the M=1 entries were dropped
    with pytest.raises(ValueError, match="tflops: expected a positive number, got 'fast'"):
        pr.check_speed_entry({"backend": "x", "n": 1, "k": 1, "m": 1, "tflops": "fast"})


# -- what the tuner times ---------------------------------------------------------------------------------

def test_only_available_and_safe_backends_are_timed():
    from rocm_fp8.tune.speed import safe_backends

    ok, skipped = safe_backends(gfx950(HIP70), 2560, 4096, 4096, "e4m3fn")
    assert [b.name for b in ok] == ["triton", "aiter-triton"]
    # both CK kernels are ruled out by the ledger on a ROCm 7.0 hipcc at this M, and say why
    assert set(skipped) == {"aiter-ck", "aiter-bpreshuffle"}
    assert "known issue bpreshuffle-rocm70-miscompile" in skipped["aiter-bpreshuffle"]
    assert "returns NaN above M=2048 for N=2560 K=4096" in skipped["aiter-ck"]
    ok, skipped = safe_backends(gfx950(HIP70), 2560, 4096, 2048, "e4m3fn")
    assert "aiter-ck" in [b.name for b in ok]  # verified safe up to M=2048 for this shape
    h200 = Toolchain.hypothetical("sm90", device_name="NVIDIA H200")
    ok, skipped = safe_backends(h200, 2048, 3072, 16, "e4m3fn")
    assert [b.name for b in ok] == ["triton", "torch-scaled-mm"] and skipped == {}


def _cpu_timer(calls):
    import time as _time

    t = _time.perf_counter()
    for c in calls:
        c()
    return {"us": (_time.perf_counter() - t) / len(calls) * 1e6, "sets": len(calls)}


def test_time_backend_checks_numerics_before_timing():
    import torch

    from faulty_backends import NanAboveM, WrongAboveM
    from rocm_fp8.backends.reference import ReferenceBackend
    from rocm_fp8.tune.operands import make_sets, reference
    from rocm_fp8.tune.speed import speed_entry, time_backend

    fp8 = torch.float8_e4m3fn
    sets = make_sets(48, 256, 512, fp8, 2, device="cpu", seed=11)
    ref = reference(*sets[0])
    good = time_backend(ReferenceBackend(), sets, ref, fp8, timer=_cpu_timer)
    assert good["us"] > 0 and good["rel_err"] < 5e-3 and good["sets"] == 2
    e = speed_entry("reference", 256, 512, 48, "e4m3fn", good)
    assert e["tflops"] == round(2 * 48 * 256 * 512 / (good["us"] * 1e-6) / 1e12, 2)
    nan = time_backend(NanAboveM(), sets, ref, fp8, timer=_cpu_timer)  # NaN in a row above M=32
    assert "us" not in nan and "relative error inf" in nan["error"]
    small = make_sets(16, 256, 512, fp8, 1, device="cpu", seed=12)
    assert "us" in time_backend(WrongAboveM(), small, reference(*small[0]), fp8, timer=_cpu_timer)


def test_probe_in_an_image_mounts_the_hosts_cache(tmp_path):
    from rocm_fp8_deploy.host import CONTAINER_CACHE, cache_mount

    opts = cache_mount(tmp_path / "cache")
    assert opts["volumes"] == {str((tmp_path / "cache").resolve()): {"bind": CONTAINER_CACHE, "mode": "rw"}}
    assert opts["environment"] == {pr.ENV_CACHE: CONTAINER_CACHE}
