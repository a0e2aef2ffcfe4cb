"""The typed reader of probe reports (rocm_fp8.probe_report.Report): defaults of older files, errors
that name the row and field, bad speed entries dropped one by one; the evidence reads through it."""

from __future__ import annotations

import pytest

from rocm_fp8 import Toolchain
from rocm_fp8 import probe_report as pr
from rocm_fp8.backends.base import Problem


def _report(results, **extra):
    tc = Toolchain.hypothetical("gfx950")
    data = pr.new_report(tc)
    data["results"] = results
    data.update(extra)
    return data


def test_a_first_version_row_reads_with_its_defaults():
    rep = pr.Report.from_dict(_report([{"backend": "aiter-ck", "n": 2560, "k": 4096, "status": "unsafe",
                                        "max_safe_m": 255, "failure": {"m": 256, "symptom": "wrong"}}]))
    (r,) = rep.results
    assert r.key == ("aiter-ck", 2560, 4096, "e4m3fn", "cuda")
    assert r.failure == pr.Failure("wrong", 256, "") and r.failure.words == "wrong results"
    assert r.worst == {} and r.deterministic is None and rep.speed == () and not rep.static


@pytest.mark.parametrize("row,message", [
    ({"backend": "triton", "k": 4096}, r"results\[0\]: expected a 'n' field"),
    ({"backend": "triton", "n": 1, "k": 128, "failure": {"m": 3}}, r"results\[0\]: failure: expected an object"),
    ("triton", r"results\[0\]: expected an object, got str"),
])
def test_a_bad_row_is_named(row, message):
    with pytest.raises(ValueError, match=message):
        pr.Report.from_dict(_report([row]), "r.json")


def test_a_bad_speed_entry_is_dropped_and_the_others_are_read():
    speed = [{"backend": "triton", "n": 256, "k": 512, "m": 16, "tflops": 3.5, "us": 1.0},
             {"backend": "triton", "n": 256, "k": 512, "m": 64, "tflops": float("nan")},
             {"backend": "triton", "n": 256, "k": 512, "tflops": 2.0}]
    rep = pr.Report.from_dict(_report([], speed=speed))
    assert [(e.m, e.tflops, e.us) for e in rep.speed] == [(16, 3.5, 1.0)]
    ev = pr.ProbeEvidence(_report([], speed=speed), "s.json")
    got = ev.speed("triton", Problem(8, 256, 512), Toolchain.hypothetical("gfx950"))
    assert got is not None and got.tflops == 3.5 and got.m == 16 and got.source == "probe:s.json"
    assert "N=256 K=512 M=16: triton 3.5" in pr.format_speed(_report([], speed=speed))


def test_the_verdict_cites_the_failure_read_through_the_typed_view():
    data = _report([{"backend": "aiter-ck", "n": 2560, "k": 4096, "status": "unsafe", "max_safe_m": None,
                     "failure": {"m": None, "symptom": "error", "detail": "prepare_weight raised"}}])
    v = pr.ProbeEvidence(data, "x.json").verdict("aiter-ck", Problem(1, 2560, 4096), Toolchain.hypothetical("gfx950"))
    assert v is not None and v.safe is False
    assert "an exception while preparing the weight" in v.reason and "(prepare_weight raised)" in v.reason
    assert "not safe at any tested M" in v.reason
