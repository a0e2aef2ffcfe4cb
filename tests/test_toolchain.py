"""Toolchain fingerprint: parsers on real tool output, detection, reading the baked configuration file
(writing it: test_configure.py)."""

from __future__ import annotations

import json
import os
import stat
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rocm_fp8 import fingerprint as fp
from rocm_fp8 import toolchain as tcmod
from rocm_fp8.toolchain import Toolchain

FIXTURES = Path(__file__).parent / "fixtures" / "toolchain"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(autouse=True)
def _fresh_toolchain():
    tcmod.set_current(None)
    yield
    tcmod.set_current(None)


# -- parsers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("release, hip, hip_str, clang, roc", [
    ("7.0.0", (7, 0, 51831), "7.0.51831-a2e4e0c4", "20.0.0git", (7, 0, 0)),
    ("7.0.2", (7, 0, 51831), "7.0.51831-7c9236b16", "20.0.0git", (7, 0, 2)),
    ("7.2.0", (7, 2, 26015), "7.2.26015-fc0010cf6a", "22.0.0git", (7, 2, 0)),
    ("7.2.1", (7, 2, 53211), "7.2.53211-e1a6bc5663", None, (7, 2, 1)),  # reference.md s.3 elides its clang prefix
    ("7.2.4", (7, 2, 53211), "7.2.53211-97f5574fe2", "22.0.0git", (7, 2, 4)),
])
def test_hipcc_version_real_strings(release, hip, hip_str, clang, roc):
    info = fp.parse_hipcc_version(fixture(f"hipcc-rocm-{release}.txt"))
    assert info.hip_version == hip
    assert info.hip_version_str == hip_str
    assert info.clang_version == clang
    assert info.rocm_version == roc  # the roc-X.Y.Z token tells 7.2.1 from 7.2.4; the HIP build number cannot
    assert info.installed_dir == f"/opt/rocm-{release}/lib/llvm/bin"


def test_hipcc_version_junk_gives_nothing_and_does_not_raise():
    info = fp.parse_hipcc_version("hipcc: command not found\n")
    assert info.hip_version is None and info.rocm_version is None and info.clang_version is None


def test_hipconfig_and_info_version():
    assert fp.parse_hipconfig_version(fixture("hipconfig-version-rocm-7.2.0.txt")) == ((7, 2, 26015), "7.2.26015-fc0010cf6a")
    assert fp.parse_hipconfig_version("7.0.51831-a2e4e0c4") == ((7, 0, 51831), "7.0.51831-a2e4e0c4")  # no newline
    assert fp.parse_hipconfig_version("") == (None, None)
    assert fp.parse_rocm_info_version(fixture("rocm-info-version-7.0.0.txt")) == ((7, 0, 0), "63")
    assert fp.parse_rocm_info_version(fixture("rocm-info-version-7.0.2.txt")) == ((7, 0, 2), None)
    assert fp.parse_rocm_info_version(fixture("rocm-info-version-7.2.4.txt")) == ((7, 2, 4), None)
    assert fp.parse_rocm_info_version("garbage") == (None, None)


def test_arch_parsers():
    assert fp.parse_gcn_arch_name("gfx950:sramecc+:xnack-") == "gfx950"
    assert fp.parse_gcn_arch_name("gfx942") == "gfx942"
    assert fp.parse_gcn_arch_name("gfx000") is None
    assert fp.parse_gcn_arch_name("") is None
    assert fp.parse_agent_list(fixture("rocm_agent_enumerator.txt")) == ["gfx950", "gfx950"]
    agents = fp.parse_rocminfo(fixture("rocminfo-excerpt.txt"))
    assert [(a.arch, a.marketing_name, a.compute_units) for a in agents] == [("gfx942", "AMD Instinct MI300X", 304)]


def test_fingerprint_is_stable_file_safe_and_sensitive():
    a = Toolchain.hypothetical("gfx950", hip="7.0.51831")
    b = Toolchain.hypothetical("gfx950", hip="7.0.51831")
    c = Toolchain.hypothetical("gfx950", hip="7.2.26015")
    d = Toolchain.hypothetical("gfx950", hip="7.0.51831", aiter_commit="d9e5ef7ce")
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert a.fingerprint.startswith("gfx950-hip7.0.51831-")
    assert all(ch.isalnum() or ch in "-_." for ch in a.fingerprint)


def test_toolchain_dict_round_trip():
    tc = Toolchain.hypothetical("gfx950", hip="7.2.26015", aiter_commit="abc1234", aiter_commit_date="2026-08-01")
    tc = tc.with_(aiter_includes=("d9e5ef7ce",), warnings=("w",))
    back = Toolchain.from_dict(json.loads(json.dumps(tc.to_dict())))
    assert back == tc


def test_mismatch_between_torch_hip_and_hipcc_is_a_warning_and_hipcc_decides():
    tc = Toolchain.hypothetical("gfx950", hip="7.0.51831").with_(torch_hip="7.2.26015-fc0010cf6a")
    warnings = tcmod._mismatch_warnings(tc)
    assert len(warnings) == 1 and "7.2.26015" in warnings[0] and "7.0.51831" in warnings[0]
    assert tc.compiler_hip_version == (7, 0, 51831)
    # the ledger judges the kernel by the compiler that built it, not by torch
    from rocm_fp8.backends.base import Problem
    from rocm_fp8.ledger import default_ledger

    v = default_ledger().verdict("aiter-bpreshuffle", Problem(16, 2048, 3072), tc)
    assert v is not None and not v.safe and "hipcc 7.0.51831" in v.reason
    assert "HIP mismatch" in tcmod.format_toolchain(tc.with_(warnings=tuple(warnings)))


# -- detection against a stand-in ROCm install (real executables printing the real strings) -------------

def _script(path: Path, text: str, marker: Path | None = None) -> None:
    body = "#!/bin/sh\n"
    if marker is not None:
        body += f"echo ran >> '{marker}'\n"
    body += f"cat <<'EOF'\n{text.rstrip()}\nEOF\n"
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_rocm(tmp_path, monkeypatch):
    """A ROCm 7.0.0 root with hipcc, hipconfig, rocm_agent_enumerator and .info/version; every
    tool run appends to ``ran.log``."""
    root = tmp_path / "rocm-7.0.0"
    (root / "bin").mkdir(parents=True)
    (root / ".info").mkdir()
    (root / ".info" / "version").write_text(fixture("rocm-info-version-7.0.0.txt"))
    marker = tmp_path / "ran.log"
    _script(root / "bin" / "hipcc", fixture("hipcc-rocm-7.0.0.txt"), marker)
    _script(root / "bin" / "hipconfig", "7.0.51831-a2e4e0c4", marker)
    _script(root / "bin" / "rocm_agent_enumerator", fixture("rocm_agent_enumerator.txt"), marker)
    monkeypatch.setenv("ROCM_PATH", str(root))
    monkeypatch.delenv("ROCM_HOME", raising=False)
    monkeypatch.setenv(tcmod.ENV_CONFIG, "none")
    return root, marker


def test_detect_reads_the_rocm_install_named_by_rocm_path(fake_rocm):
    root, marker = fake_rocm
    tc = tcmod.detect_live()
    assert tc.rocm_path == str(root)
    assert tc.hip_version == (7, 0, 51831) and tc.hip_version_str == "7.0.51831-a2e4e0c4"
    assert tc.rocm_version == (7, 0, 0)
    assert "roc-7.0.0" in tc.clang_version
    assert tc.arch == "cpu"  # torch sees no GPU: the tools' gfx950 is reported, not trusted
    assert any("torch sees no GPU" in w for w in tc.warnings)
    assert tc.extra["agents"] == ["gfx950", "gfx950"]


def test_rocm_home_is_respected_when_rocm_path_is_unset(fake_rocm, monkeypatch):
    root, _ = fake_rocm
    monkeypatch.delenv("ROCM_PATH")
    monkeypatch.setenv("ROCM_HOME", str(root))
    assert tcmod.rocm_root() == str(root)


@pytest.mark.slow
def test_import_runs_no_tool_and_detection_is_cached(fake_rocm):
    root, marker = fake_rocm
    code = ("import rocm_fp8, rocm_fp8.toolchain, rocm_fp8.ledger, rocm_fp8.probe, rocm_fp8.probe_report; "
            "import sys; assert 'aiter' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert not marker.exists(), "importing rocm_fp8 ran a ROCm tool"
    first = tcmod.detect()
    runs = marker.read_text().count("ran")
    assert tcmod.detect() is first
    assert marker.read_text().count("ran") == runs


def test_arch_argument_stands_in_for_an_invisible_gpu(fake_rocm):
    tc = tcmod.detect_live(arch="gfx950")
    assert tc.arch == "gfx950" and tc.cu_count == 256 and tc.extra["arch_source"] == "argument"
    assert not any("torch sees no GPU" in w for w in tc.warnings)


def _fake_aiter(tmp_path: Path, version: str) -> Path:
    """An installed-looking aiter whose import would fail loudly: detection must not import it."""
    site = tmp_path / "site"
    pkg = site / "aiter"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('aiter must not be imported by detection')\n")
    dist = site / f"amd_aiter-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: amd-aiter\nVersion: {version}\n")
    return site


def test_aiter_installed_without_rocm_is_a_reason_and_is_not_imported(tmp_path, monkeypatch):
    site = _fake_aiter(tmp_path, "0.1.5.dev38+g1a2b3c4d")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ROCM_PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("ROCM_HOME", raising=False)
    tc = tcmod.detect_live()
    assert "aiter" not in sys.modules
    assert tc.aiter_installed
    assert tc.aiter_version == "0.1.5.dev38+g1a2b3c4d" and tc.aiter_commit == "1a2b3c4d"
    if tcmod.rocm_root() is None:
        assert "unusable" in tc.aiter_reason and "ROCm" in tc.aiter_reason


def test_aiter_commit_date_and_fix_ancestry_from_its_git_checkout(tmp_path, monkeypatch, fake_rocm):
    from rocm_fp8 import ledger

    if shutil.which("git") is None:
        pytest.skip("needs the git command to make an aiter checkout (images do not carry git)")

    clone = tmp_path / "aiter-src"
    (clone / "aiter").mkdir(parents=True)
    (clone / "aiter" / "__init__.py").write_text("raise RuntimeError('not to be imported')\n")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    env = dict(os.environ, GIT_COMMITTER_DATE="2026-08-01T12:00:00Z", GIT_AUTHOR_DATE="2026-08-01T12:00:00Z")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "the fix"], check=True, env=env)
    fix = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (clone / "aiter" / "later.py").write_text("")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "later"], check=True, env=env)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    user = tmp_path / "mine.toml"
    user.write_text(f'''schema = 1
[[issue]]
id = "my-fixed-defect"
backends = ["aiter-ck"]
arch = ["gfx950"]
symptom = "wrong"
sources = ["internal"]
[issue.aiter_fix]
commit = "{fix[:10]}"
''')
    monkeypatch.setenv(ledger.ENV_LEDGER, str(user))
    ledger.reset()
    monkeypatch.syspath_prepend(str(clone))
    try:
        tc = tcmod.detect_live()
    finally:
        ledger.reset()
    assert tc.aiter_installed and tc.aiter_commit == head
    assert tc.aiter_commit_date == "2026-08-01"
    assert fix[:10] in tc.aiter_includes
    assert "aiter" not in sys.modules


# -- the configuration file ------------------------------------------------------------------------------

def test_config_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv(tcmod.ENV_CONFIG, str(tmp_path / "c.json"))
    paths = tcmod.config_search_paths()
    assert paths == [tmp_path / "c.json", Path(sys.prefix) / "etc" / "rocm-fp8" / "config.json",
                     Path("/etc/rocm-fp8/config.json")]
    monkeypatch.setenv(tcmod.ENV_CONFIG, "none")
    assert tcmod.config_search_paths() == []


def test_bad_or_missing_config_falls_back_to_detection_with_a_warning(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv(tcmod.ENV_CONFIG, str(bad))
    tc = tcmod.detect(refresh=True)
    assert tc.source == "detected" and any("not valid JSON" in w for w in tc.warnings)
    monkeypatch.setenv(tcmod.ENV_CONFIG, str(tmp_path / "missing.json"))
    tc = tcmod.detect(refresh=True)
    assert any("does not exist" in w for w in tc.warnings)
    with pytest.raises(ValueError, match="format"):
        bad.write_text('{"format": "something-else"}')
        tcmod.load_config(bad)


def test_config_written_for_another_torch_is_not_trusted(tmp_path, monkeypatch):
    tc = Toolchain.hypothetical("gfx950", hip="7.0.51831").with_(torch_version="0.0.1", source="detected")
    path = tmp_path / "c.json"
    tcmod.atomic_write_json(path, {"format": "rocm-fp8-config", "version": 1, "toolchain": tc.to_dict()})
    monkeypatch.setenv(tcmod.ENV_CONFIG, str(path))
    got = tcmod.detect(refresh=True)
    assert got.source == "detected" and any("written for torch 0.0.1" in w for w in got.warnings)


def test_info_report_lists_facts_and_warnings():
    tc = Toolchain.hypothetical("gfx950", hip="7.0.51831", aiter_commit="d9e5ef7ce0").with_(warnings=("something odd",))
    text = tcmod.format_toolchain(tc)
    assert "7.0.51831" in text and "d9e5ef7ce0" in text and "WARNING: something odd" in text
    assert tc.fingerprint in text
