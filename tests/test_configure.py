"""``rocm-fp8 configure``: the configuration file baked into an image, written atomically, then read
by detection without running any ROCm tool."""

from __future__ import annotations

import json

import pytest
from test_toolchain import fake_rocm  # noqa: F401 - fixture: a stand-in ROCm 7.0.0 install

from rocm_fp8.cli import configure
from rocm_fp8 import toolchain as tcmod


@pytest.fixture(autouse=True)
def _fresh_toolchain():
    tcmod.set_current(None)
    yield
    tcmod.set_current(None)


def test_configure_writes_atomically_and_detect_reads_it_without_running_tools(fake_rocm, tmp_path, monkeypatch):
    root, marker = fake_rocm
    out = tmp_path / "etc" / "config.json"
    assert configure.main(["--static", "--arch", "gfx950", "--output", str(out), "--preset", "minimax-m2.5-tp4"]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["config.json"]  # no temp file left behind
    data = json.loads(out.read_text())
    assert data["static"] and data["toolchain"]["arch"] == "gfx950"
    assert data["toolchain"]["hip_version"] == "7.0.51831"
    bp = [v for v in data["static_verdicts"] if v["backend"] == "aiter-bpreshuffle"]
    assert bp and all(v["status"] == "unsafe" and v["source"] == "ledger:bpreshuffle-rocm70-miscompile" for v in bp)
    ck = [v for v in data["static_verdicts"] if v["backend"] == "aiter-ck"]
    assert ck and all(v["max_safe_m"] == 512 for v in ck)

    marker.unlink()
    monkeypatch.setenv(tcmod.ENV_CONFIG, str(out))
    tc = tcmod.detect(refresh=True)
    assert tc.source == f"config:{out}" and tcmod.config_used() == out
    assert tc.arch == "gfx950" and tc.hip_version == (7, 0, 51831)
    assert not marker.exists(), "reading the configuration file ran a ROCm tool"
