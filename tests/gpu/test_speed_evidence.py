"""Speed evidence on the GPU: `rocm-fp8 tune` times every safe backend, records it where the
dispatcher reads evidence, and `auto` follows it (issue 13). One small shape, one M: a minute or so.
"""

from __future__ import annotations

import json

import pytest
import torch

from rocm_fp8 import explain, kernel_configs
from rocm_fp8 import probe_report as pr

pytestmark = pytest.mark.gpu

N, K, M = 768, 3072, 16


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pr.ENV_CACHE, str(tmp_path / "cache"))
    from rocm_fp8 import dispatch

    dispatch.clear_caches(redetect=True)
    yield tmp_path / "cache"
    dispatch.clear_caches(redetect=True)
    kernel_configs.clear_cache()


def test_measure_speed_times_every_safe_backend(cache):
    from rocm_fp8.toolchain import detect
    from rocm_fp8.tune.speed import measure_speed, safe_backends, write_speed

    tc = detect()
    safe, _ = safe_backends(tc, N, K, M, tc.fp8_flavour)
    entries = measure_speed(tc, [(N, K)], [M], tc.fp8_flavour)
    assert {e["backend"] for e in entries} == {b.name for b in safe}
    for e in entries:
        assert e["tflops"] > 0 and e["us"] > 0 and e["rel_err"] < 1e-2, e
    path = write_speed(tc, entries)[0]
    assert path == cache / "probe" / f"{tc.fingerprint}.json"
    d = explain(N, K, M, toolchain=tc)
    fastest = max(entries, key=lambda e: e["tflops"])
    assert d.backend == fastest["backend"], d.reason
    assert f"[probe:{path}]" in d.reason and f"measured {fastest['tflops']:.1f} TFLOPS at M={M}" in d.reason


def test_tune_cli_writes_the_table_and_the_speed_evidence(cache, tmp_path):
    from rocm_fp8.cli import main as cli_main
    from rocm_fp8.toolchain import detect

    out = tmp_path / "table.json"
    speed = tmp_path / "speed.json"
    assert cli_main(["tune", "--n", str(N), "--k", str(K), "--m", str(M), "--output", str(out),
                     "--speed-output", str(speed), "--jobs", "1"]) == 0
    table = kernel_configs.read_table(out)
    props = torch.cuda.get_device_properties(0)
    assert (table.device, table.sm_count) == (torch.cuda.get_device_name(), props.multi_processor_count)
    row = table.row(M, N, K)
    assert row is not None and row.triton_tflops > 0
    report = pr.load_report(speed)
    assert report["fingerprint"] == detect().fingerprint
    names = {e["backend"] for e in report["speed"]}
    assert "triton" in names and (torch.version.hip is not None or "torch-scaled-mm" in names)
    cached = json.loads((cache / "probe" / f"{report['fingerprint']}.json").read_text())
    assert {e["backend"] for e in cached["speed"]} == names
