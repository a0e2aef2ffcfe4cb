"""`rocm-fp8 info` and the console entry points."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rocm_fp8.cli import main


def test_info_json_lists_every_backend_with_a_reason_when_unavailable(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["backend"]: r for r in data["backends"]}
    assert {"reference", "triton", "torch-scaled-mm", "aiter-triton", "aiter-ck", "aiter-bpreshuffle"} <= set(rows)
    assert rows["reference"]["available"] is True
    for r in rows.values():
        assert r["available"] or r["reason"].startswith(r["backend"] + ":")
    assert data["toolchain"]["arch"] in ("cpu", "sm90", "gfx942", "gfx950") or data["toolchain"]["arch"].startswith("sm")


def test_info_text_shows_the_toolchain_and_the_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fingerprint" in out and "backends:" in out and "aiter-bpreshuffle" in out


@pytest.mark.slow
def test_python_dash_m_and_closed_pipe():
    proc = subprocess.run(f"{sys.executable} -m rocm_fp8 info | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.startswith("rocm_fp8 ")
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "explain" in capsys.readouterr().out
