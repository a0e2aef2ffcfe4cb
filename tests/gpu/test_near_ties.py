"""Near-ties on the GPU: the re-timing of the two fastest backends of a cell, interleaved with the
real harness (``time_calls``), and ``rocm-fp8 tune`` recording the medians in both the speed
evidence and the table row, with the first timings in the log. A margin of 0.99 makes every cell
with two timed backends a near-tie, so the path runs whatever the speeds. A minute or so.
"""

from __future__ import annotations

import json

import pytest
import torch

from rocm_fp8 import kernel_configs
from rocm_fp8 import probe_report as pr

pytestmark = pytest.mark.gpu

N, K, M = 2048, 3072, 1024


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pr.ENV_CACHE, str(tmp_path / "cache"))
    from rocm_fp8 import dispatch

    dispatch.clear_caches(redetect=True)
    yield tmp_path / "cache"
    dispatch.clear_caches(redetect=True)
    kernel_configs.clear_cache()


def test_speed_cell_re_times_the_fastest_two_interleaved(cache):
    from rocm_fp8.quant import FP8_DTYPES
    from rocm_fp8.toolchain import detect
    from rocm_fp8.tune.operands import make_sets, reference
    from rocm_fp8.tune.speed import safe_backends, speed_cell
    from rocm_fp8.tune.timing import rotation_sets

    tc = detect()
    safe, _ = safe_backends(tc, N, K, M, tc.fp8_flavour)
    if len(safe) < 2:
        pytest.skip(f"one safe backend here ({[b.name for b in safe]}): no pair to re-time")
    fp8 = FP8_DTYPES[tc.fp8_flavour]
    set_bytes = M * K + N * K + 4 * (M + N) * (K // 128) + 2 * M * N
    sets = make_sets(M, N, K, fp8, rotation_sets(set_bytes), seed=5)
    ref = reference(*sets[0])
    log, lines = [], []
    entries = speed_cell(tc, sets, ref, M, N, K, tc.fp8_flavour, fp8, None, lines.append, log=log, margin=0.99)
    print("\n".join(lines))
    retimed = [e for e in entries if e.get("retimed")]
    assert len(retimed) == 2 and len(log) == 1, lines
    for e in retimed:
        assert len(e["rounds_us"]) == 3 and all(t > 0 for t in e["rounds_us"])
        assert e["us"] == round(sorted(e["rounds_us"])[1], 3)
        # one kernel timed twice on the same inputs: the medians stay near the first timing
        assert 0.5 < e["us"] / e["first_us"] < 2.0, e
    assert lines[-1].startswith(f"near-tie N={N} K={K} M={M}:") and "re-timed interleaved x3" in lines[-1]


def test_tune_records_the_medians_in_the_evidence_the_table_and_the_log(cache, tmp_path):
    from rocm_fp8.cli import main as cli_main

    if torch.version.hip is not None:
        pytest.skip("tune measures cuBLASLt beside our kernel on NVIDIA only")
    out, speed, log = tmp_path / "table.json", tmp_path / "speed.json", tmp_path / "log.json"
    assert cli_main(["tune", "--n", str(N), "--k", str(K), "--m", str(M), "--output", str(out),
                     "--speed-output", str(speed), "--log", str(log), "--jobs", "1", "--quick",
                     "--near-tie", "0.99"]) == 0
    report = pr.load_report(speed)
    by = {e["backend"]: e for e in report["speed"]}
    retimed = {name for name, e in by.items() if e.get("retimed")}
    assert len(retimed) == 2, by
    logged = json.loads(log.read_text())["near_ties"]
    assert len(logged) == 1 and set(logged[0]["first_us"]) == retimed
    for name in retimed:
        assert logged[0]["first_us"][name] == by[name]["first_us"] and logged[0]["us"][name] == by[name]["us"]
    row = next(r for r in json.loads(out.read_text())["shapes"][f"{N},{K}"] if r["m"] == M)
    for name, col in (("triton", "triton_us"), ("torch-scaled-mm", "scaled_mm_us")):
        if name in retimed:
            assert row[col] == by[name]["us"], (row, by[name])
