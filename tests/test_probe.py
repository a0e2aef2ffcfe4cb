"""The probe, for real on the CPU: faulty backends registered through the public API get the right
verdict (wrong, NaN, crash, hang) within their timeouts, the caller survives, and dispatch routes
around them, and back for M within what the probe verified. Then the real backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import faulty_backends as fb
import rocm_fp8
from rocm_fp8 import probe
from rocm_fp8 import probe_report as pr
from rocm_fp8.backends import find
from rocm_fp8.backends.base import Problem
from rocm_fp8.toolchain import Toolchain, detect

TESTS = Path(__file__).parent
SHAPE = (256, 256)
MS = [1, 8, 16, 17, 32, 33, 64, 65, 128]
HANG_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def faulty_report():
    fb.register_all()
    t0 = time.perf_counter()
    report = probe.run_probe(list(fb.NAMES), [SHAPE], MS, timeout=HANG_TIMEOUT_S, build_timeout=30,
                             startup_timeout=90, repeats=2, write_cache=False)
    report["_elapsed"] = time.perf_counter() - t0
    yield report
    fb.unregister_all()


@pytest.fixture
def registered():
    fb.register_all()
    yield
    fb.unregister_all()


def result(report, backend):
    (r,) = [r for r in report["results"] if r["backend"] == backend]
    return r


@pytest.mark.parametrize("backend, symptom, limit", [
    ("wrong-above-m", "wrong", fb.WRONG_ABOVE_M),
    ("nan-above-m", "nan", fb.NAN_ABOVE_M),
    ("aborts", "crash", fb.ABORT_ABOVE_M),
    ("hangs", "hang", fb.HANG_ABOVE_M),
])
@pytest.mark.slow
def test_each_fault_gets_its_verdict(faulty_report, backend, symptom, limit):
    r = result(faulty_report, backend)
    assert r["status"] == "unsafe"
    assert r["max_safe_m"] == limit
    first_bad = min(m for m in MS if m > limit)
    assert r["failure"]["m"] == first_bad and r["failure"]["symptom"] == symptom
    passed = [c for c in r["cases"] if c["m"] <= limit]
    assert passed and all(not c.get("symptom") for c in passed)


@pytest.mark.slow
def test_crash_and_hang_cost_one_timeout_and_the_caller_survives(faulty_report):
    aborted = result(faulty_report, "aborts")
    assert "SIGABRT" in aborted["failure"]["detail"] and aborted["aborted"]
    assert aborted["not_tested"] == [m for m in MS if m > fb.ABORT_ABOVE_M + 1]
    hung = result(faulty_report, "hangs")
    (hang_case,) = [c for c in hung["cases"] if c.get("symptom") == "hang"]
    assert HANG_TIMEOUT_S <= hang_case["wall_s"] < HANG_TIMEOUT_S + 5
    # four workers (each imports torch) plus one hang timeout: well under a minute on 2 cores
    assert faulty_report["_elapsed"] < 60
    # sparse bad rows: the global error stays modest, the row check is what fails
    wrong = result(faulty_report, "wrong-above-m")
    assert "worst row" in wrong["failure"]["detail"]


@pytest.mark.slow
def test_dispatch_routes_around_probed_faults_and_back_below_the_limit(faulty_report, registered):
    tc = detect()
    # without evidence, the faulty backends' priority would win at any M
    before = rocm_fp8.explain(*SHAPE, 128, toolchain=tc)
    assert before.backend in fb.NAMES

    path = pr.write_report(faulty_report)  # into this test's cache, keyed by the fingerprint
    assert path.parent == pr.cache_root() / "probe" and path.name == f"{tc.fingerprint}.json"
    rocm_fp8.clear_caches()

    for m in (1, 16, 17, 32, 33, 64, 65, 128):
        d = rocm_fp8.explain(*SHAPE, m, toolchain=tc)
        by = {c.backend: c for c in d.considered}
        for cls in fb.ALL:
            c = by[cls.name]
            assert c.ok == (m <= cls.limit), (m, cls.name, c.reason)
            assert c.evidence and c.evidence.startswith("probe:")
        if m > max(cls.limit for cls in fb.ALL):
            assert d.backend not in fb.NAMES
        else:
            assert d.backend in fb.NAMES
    over = {c.backend: c for c in rocm_fp8.explain(*SHAPE, 65, toolchain=tc).considered}
    assert "NaN/Inf in the output at M=33" in over["nan-above-m"].reason
    assert "a hang at M=17" in over["hangs"].reason and "verified safe only up to M=16" in over["hangs"].reason

    # and the op itself: a bucket above every limit runs a correct backend; below, the one that is safe there
    wq, ws = rocm_fp8.quantize_weight(torch.randn(*SHAPE) * 0.05, dtype="e4m3fn")
    for m in (65, 40):
        x = torch.randn(m, SHAPE[1])
        y = rocm_fp8.w8a8_block_fp8_linear(x, wq, ws, out_dtype=torch.bfloat16)
        xq, xs = rocm_fp8.quantize_activation(x, dtype="e4m3fn")
        ref = rocm_fp8.dequantize_activation(xq, xs) @ rocm_fp8.dequantize_weight(wq, ws).t()
        assert torch.isfinite(y.float()).all()
        rel = ((y.float() - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
        assert rel < 0.02, (m, rel)
    assert rocm_fp8.explain(*SHAPE, 64, toolchain=tc).backend == "wrong-above-m"


def test_probe_evidence_has_no_opinion_beyond_what_was_tested():
    tc = detect()
    report = pr.new_report(tc)
    report["results"].append({"backend": "reference", "n": 256, "k": 256, "fp8_dtype": "e4m3fn",
                              "device_type": "cpu", "status": "safe", "max_safe_m": 512, "failure": None})
    ev = pr.ProbeEvidence(report, "test")
    v = ev.verdict("reference", Problem(512, 256, 256, device_type="cpu"), tc)
    assert v.safe and v.source == "probe:test" and "up to 512" in v.reason
    assert ev.verdict("reference", Problem(513, 256, 256, device_type="cpu"), tc) is None
    assert ev.verdict("reference", Problem(16, 256, 256, device_type="cuda"), tc) is None  # other device
    assert pr.sources_for(Toolchain.hypothetical("gfx950", hip="7.0.51831")) == []


def test_reports_merge_and_static_reports_are_not_evidence(tmp_path):
    tc = detect()
    a = pr.new_report(tc)
    a["results"] = [{"backend": "x", "n": 1, "k": 128, "status": "safe", "max_safe_m": 4}]
    b = pr.new_report(tc)
    b["results"] = [{"backend": "y", "n": 1, "k": 128, "status": "safe", "max_safe_m": 8}]
    path = tmp_path / "r.json"
    pr.write_report(a, path)
    pr.write_report(b, path)
    assert {r["backend"] for r in pr.load_report(path)["results"]} == {"x", "y"}
    static = probe.static_report(["aiter-ck"], [(2560, 4096)], toolchain=Toolchain.hypothetical("gfx950", hip="7.0.51831"))
    assert static["static"] and static["results"][0]["max_safe_m"] == 2048
    assert pr.ProbeEvidence(static, "s").verdict("aiter-ck", Problem(1, 2560, 4096), tc) is None
    with pytest.raises(ValueError, match="static report"):
        pr.write_report(static)
    assert "STATIC report" in pr.format_table(static)


# -- the real backends ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_probe_of_reference_and_triton_interpreter(monkeypatch):
    if find("triton") is None:
        pytest.skip("the triton backend is not registered")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from rocm_fp8.toolchain import detect_live

    tc = detect_live()
    ok, why = find("triton").available(tc)
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")
    report = probe.run_probe(["reference", "triton"], [(256, 384)], [1, 17, 64], toolchain=tc, timeout=120,
                             repeats=2, write_cache=False)
    for name in ("reference", "triton"):
        r = result(report, name)
        assert r["status"] == "safe", r
        assert r["max_safe_m"] == 64 and r["ms_tested"] == [1, 17, 64]
        assert r["worst"]["rel_err"] < 0.01 and r["worst"]["min_cosine"] > 0.9999 and r["deterministic"]
    assert report["settings"]["device"] == "cpu" and not report["settings"]["full_sweep"]


def _cli(*args, env_extra=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]), ROCM_FP8_CONFIG="none")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rocm_fp8", "probe", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_cli_probe_json_output_cache_and_plugin(tmp_path):
    out = tmp_path / "report.json"
    cache = tmp_path / "cache"
    p = _cli("--backend", "reference", "--n", "256", "--k", "256", "--m", "1", "17", "--json", "--output", str(out),
             env_extra={"ROCM_FP8_CACHE": str(cache)})
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["results"][0]["status"] == "safe" and data["settings"]["ms"] == [1, 17]
    assert json.loads(out.read_text())["fingerprint"] == data["fingerprint"]
    assert (cache / "probe" / f"{data['fingerprint']}.json").is_file()

    p = _cli("--plugin", "faulty_backends:NanAboveM", "--backend", "nan-above-m", "--n", "256", "--k", "256",
             "--m", "1", "33", "--no-cache", env_extra={"ROCM_FP8_CACHE": str(cache)})
    assert p.returncode == 1, p.stderr
    assert "nan@M=33" in p.stdout and "nan-above-m" in p.stdout


def _main(capsys, *args) -> tuple[int, str, str]:
    """``rocm-fp8 probe ARGS`` in this process: (exit code, stdout, stderr); argparse's SystemExit counts."""
    from rocm_fp8.cli import main

    try:
        rc = main(["probe", *args])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_static_and_bad_arguments(capsys):
    rc, out, err = _main(capsys, "--static", "--preset", "deepseek-v3-tp8", "--backend", "aiter-ck")
    assert rc == 0, err
    assert "STATIC report" in out
    rc, out, err = _main(capsys, "--n", "256")
    assert rc == 2 and "as many --n as --k" in err
    rc, out, err = _main(capsys, "--n", "256", "--k", "0")
    assert rc == 2 and "K >= 1" in err
    # a partial last K group is part of the op's contract, so the probe takes such shapes
    rc, out, err = _main(capsys, "--static", "--n", "256", "--k", "100", "--backend", "aiter-ck")
    assert rc == 0, err
    rc, out, err = _main(capsys, "--m", "not-a-number")
    assert rc == 2 and "--m" in err
