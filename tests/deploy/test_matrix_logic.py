"""The test matrix's pure logic: the matrix file, planning, GPU pinning, verdicts, the report.

No Docker here; tests/deploy/test_matrix.py runs the same code against the real engine.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rocm_fp8_deploy import matrix as mx
from rocm_fp8_deploy import report
from rocm_fp8_deploy.errors import DeployError

ROOT = Path(__file__).resolve().parents[2]
CI_MATRIX = ROOT / "ci" / "matrix.toml"


def write(tmp_path, text: str) -> Path:
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_a.py").write_text("def test_a():\n    pass\n")
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


MINIMAL = """
[defaults]
tests = "tests"
[[flavours]]
rocm = "7.2"
arch = "gfx950"
[suites.cpu]
gpu = false
paths = ["test_a.py"]
[suites.gpu]
gpu = true
paths = ["."]
"""


def test_the_shipped_matrix_loads_with_its_four_flavours_and_suites():
    m = mx.load_matrix(CI_MATRIX)
    assert [f.name for f in m.flavours] == ["7.0-gfx942", "7.0-gfx950", "7.2-gfx942", "7.2-gfx950"]
    assert m.flavours[0].image == "rocm-fp8:7.0-gfx942"
    assert {s: m.suites[s].gpu for s in m.suites} == {"cpu": False, "gpu": True, "models": True, "bench": True}
    assert m.tests == ROOT / "tests"
    assert m.suites["models"].paths == ("gpu/test_model_shapes.py",)
    # the CPU suite never runs docker tests inside a container
    assert "not docker" in m.suites["cpu"].markers and "deploy" in m.suites["cpu"].ignore


def test_report_presets_exist_in_the_probe_and_the_model_test_covers_both_models():
    from rocm_fp8.probe import PRESETS

    m = mx.load_matrix(CI_MATRIX)
    assert m.presets and all(p in PRESETS for p in m.presets)
    source = (ROOT / "tests" / "gpu" / "test_model_shapes.py").read_text()
    for preset in PRESETS:
        if preset.startswith(("minimax-m2.5", "deepseek-v3")):
            assert f'"{preset}"' in source, f"test_model_shapes.py does not sweep preset {preset}"


@pytest.mark.parametrize("edit,message", [
    (("[suites.cpu]", "[suites.cpu]\ntimeout = -3"), "suites.cpu.timeout: expected a positive number"),
    (("[suites.cpu]", "[suites.cpu]\ncolour = 'red'"), "unknown key(s) 'colour'"),
    (('paths = ["test_a.py"]', 'paths = ["test_b.py"]'), "'test_b.py' does not exist under"),
    (('paths = ["test_a.py"]', 'paths = ["../x"]'), "must be relative to the tests directory"),
    (('arch = "gfx950"', 'arch = "gfx1100"'), "unknown arch 'gfx1100'; known: gfx942, gfx950"),
    (('rocm = "7.2"', "rocm = 7.2"), "flavours[0].rocm: expected a string, got 7.2"),
    (("gpu = false", "gpu = false\ngpus = 2"), "gpu = false but gpus = 2"),
    (("gpu = true", "gpu = 'yes'"), "suites.gpu.gpu: expected true or false"),
    (('tests = "tests"', 'tests = "nowhere"'), "defaults.tests: tests directory"),
    (("[[flavours]]", "[[flavours]]\nrocm = '7.2'\narch = 'gfx950'\n[[flavours]]"), "listed twice"),
])
def test_a_bad_matrix_is_refused_naming_the_key(tmp_path, edit, message):
    path = write(tmp_path, MINIMAL.replace(*edit, 1))
    with pytest.raises(DeployError) as err:
        mx.load_matrix(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_and_malformed_files_are_refused(tmp_path):
    with pytest.raises(DeployError, match="does not exist.*--matrix PATH"):
        mx.load_matrix(tmp_path / "nope.toml")
    with pytest.raises(DeployError, match="not valid TOML"):
        mx.load_matrix(write(tmp_path, "[defaults\n"))


def test_plan_filters_and_cpu_only_skips_gpu_suites_visibly(tmp_path):
    m = mx.load_matrix(CI_MATRIX)
    cells = mx.plan(m, rocm=["7.2"], arch=["gfx950"])
    assert [c.name for c in cells] == ["7.2-gfx950/cpu", "7.2-gfx950/gpu", "7.2-gfx950/models", "7.2-gfx950/bench"]
    assert all(c.skip_reason is None for c in cells)
    cells = mx.plan(m, suites=["cpu", "models"], cpu_only=True)
    assert len(cells) == 8
    assert {c.name: c.skip_reason for c in cells}["7.0-gfx942/models"] == "--cpu-only: this suite needs a GPU"
    assert all(c.skip_reason is None for c in cells if c.suite.name == "cpu")
    with pytest.raises(DeployError, match=r"unknown --suite 'gpus'.*known: cpu, gpu, models, bench"):
        mx.plan(m, suites=["gpus"])
    with pytest.raises(DeployError, match=r"unknown --rocm '6.4'.*known: 7.0, 7.2"):
        mx.plan(m, rocm=["6.4"])


def test_parse_gpus():
    assert mx.parse_gpus(None) is None and mx.parse_gpus("") is None
    assert mx.parse_gpus("0, 2,3") == [0, 2, 3]
    with pytest.raises(DeployError, match="comma-separated GPU indices"):
        mx.parse_gpus("0;1")
    with pytest.raises(DeployError, match="listed twice"):
        mx.parse_gpus("1,1")


def _node(root: Path, n: int, simd: int, minor: int | None):
    d = root / str(n)
    d.mkdir(parents=True)
    lines = [f"cpu_cores_count {0 if simd else 64}", f"simd_count {simd}"]
    if minor is not None:
        lines.append(f"drm_render_minor {minor}")
    (d / "properties").write_text("\n".join(lines) + "\n")


def test_amd_gpus_follow_the_kfd_topology_order_and_skip_cpu_nodes(tmp_path):
    _node(tmp_path, 0, 0, 0)          # the CPU
    _node(tmp_path, 10, 304, 137)     # numeric order, not string order: 2 < 10
    _node(tmp_path, 2, 304, 129)
    _node(tmp_path, 1, 304, 128)
    gpus = mx.amd_gpus(str(tmp_path))
    assert [(g.index, g.render_node) for g in gpus] == [
        (0, "/dev/dri/renderD128"), (1, "/dev/dri/renderD129"), (2, "/dev/dri/renderD137")]


def test_select_gpus_refuses_indices_the_host_does_not_have():
    gpus = [mx.HostGpu(0, "amd", "/dev/dri/renderD128"), mx.HostGpu(1, "amd", "/dev/dri/renderD136")]
    assert mx.select_gpus(gpus, [1]) == [gpus[1]]
    with pytest.raises(DeployError, match=r"--gpus names GPU 4, but this host has 2 GPU\(s\) \(0, 1\)"):
        mx.select_gpus(gpus, [0, 4])
    with pytest.raises(DeployError, match="this host has 0 GPU"):
        mx.select_gpus([], [0])


def test_nvidia_gpus_go_through_a_device_request():
    opts = mx.gpu_run_options([mx.HostGpu(1, "nvidia"), mx.HostGpu(3, "nvidia")], "8g")
    (req,) = opts["device_requests"]
    assert req["DeviceIDs"] == ["1", "3"] and req["Capabilities"] == [["gpu"]]
    assert opts["shm_size"] == "8g"
    assert mx.gpu_run_options([], "16g") == {"shm_size": "16g"}   # no GPU: no devices at all


def test_amd_options_pin_render_nodes_with_numeric_groups(monkeypatch, tmp_path):
    from rocm_fp8_deploy import engine

    calls = {}

    def fake_amd(nodes):
        calls["nodes"] = list(nodes)
        return {"devices": ["/dev/kfd:/dev/kfd:rwm"] + [f"{n}:{n}:rwm" for n in nodes], "group_add": ["44", "993"],
                "security_opt": ["seccomp=unconfined"], "shm_size": "16g"}

    monkeypatch.setattr(engine, "amd_device_options", fake_amd)
    opts = mx.gpu_run_options([mx.HostGpu(2, "amd", "/dev/dri/renderD144")], "32g")
    assert calls["nodes"] == ["/dev/dri/renderD144"]
    assert opts["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri/renderD144:/dev/dri/renderD144:rwm"]
    assert opts["shm_size"] == "32g" and opts["security_opt"] == ["seccomp=unconfined"]


def test_gpu_pool_hands_out_disjoint_gpus_to_concurrent_cells():
    pool = mx.GpuPool([mx.HostGpu(i, "amd", f"/dev/dri/renderD{128 + 8 * i}") for i in range(4)])
    held: list[set] = []
    lock = threading.Lock()
    overlaps = []

    def cell():
        got = pool.acquire(2)
        ids = {g.index for g in got}
        with lock:
            if any(ids & h for h in held):
                overlaps.append(ids)
            held.append(ids)
        time.sleep(0.05)
        with lock:
            held.remove(ids)
        pool.release(got)

    threads = [threading.Thread(target=cell) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlaps and len(pool.free) == 4


# ---------------------------------------------------------------------------------------------
# Verdicts

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="cpu" errors="0" failures="0" skipped="0" tests="4">
<testcase classname="test_x" name="test_ok"><properties><property name="backend" value="triton"/></properties></testcase>
<testcase classname="test_x" name="test_bad"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="test_x" name="test_skip"><skipped message="no gpu"/></testcase>
<testcase classname="test_y" name="test_err"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""


def test_junit_counts_come_from_the_testcases_not_the_summary_attributes(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)   # the summary says 0 failures; the testcases say otherwise
    c = mx.parse_junit(path)
    assert (c.tests, c.passed, c.failed, c.errors, c.skipped) == (4, 1, 1, 1, 1)
    assert c.failures[0] == {"test": "test_x::test_bad", "kind": "failure", "message": "assert 1 == 2"}
    assert c.properties == {"test_x::test_ok": {"backend": "triton"}}


def _cell(gpu: bool) -> mx.Cell:
    suite = mx.Suite("models" if gpu else "cpu", "", gpu, 1 if gpu else 0, (".",), (), "", 60.0)
    return mx.Cell(mx.FlavourSpec("7.2", "gfx950", "img"), suite)


GPU_SEEN = {"device_count": 1}
NO_GPU = {"device_count": 0}


@pytest.mark.parametrize("gpu,kw,status,words", [
    (False, dict(exit_code=0, junit=mx.Counts(tests=3, passed=3)), "passed", "3 passed"),
    (True, dict(exit_code=0, junit=mx.Counts(tests=3, passed=3), preflight=GPU_SEEN), "passed", "3 passed"),
    # exit code 0 cannot save a GPU suite that saw no GPU, nor one whose XML shows nothing passed
    (True, dict(exit_code=0, junit=mx.Counts(tests=3, passed=3), preflight=NO_GPU), "failed", "no GPU visible"),
    (True, dict(exit_code=0, junit=mx.Counts(tests=5, skipped=5), preflight=GPU_SEEN), "failed",
     "GPU suite passed nothing"),
    (False, dict(exit_code=5, junit=mx.Counts()), "failed", "suite passed nothing"),
    (False, dict(exit_code=0, junit=mx.Counts(tests=3, passed=2, failed=1,
                                              failures=[{"test": "t::x", "kind": "failure", "message": ""}])),
     "failed", "1 failed, 0 errors (first: t::x)"),
    (False, dict(exit_code=0, junit=None), "failed", "no JUnit XML was written (exit code 0)"),
    (False, dict(exit_code=1, junit=mx.Counts(tests=2, passed=2)), "failed", "pytest exited 1"),
    (False, dict(exit_code=137, junit=None, current_test="t.py::test_boom"), "failed",
     "crashed: killed by SIGKILL (exit code 137) during t.py::test_boom"),
    (False, dict(exit_code=139, junit=None), "failed", "killed by SIGSEGV"),
    (False, dict(exit_code=137, junit=None, timed_out=True, current_test="t.py::test_hang"), "failed",
     "timeout: still running after 60 s during t.py::test_hang; killed"),
    (False, dict(exit_code=1, junit=None, preflight=None), "failed", "crashed before its preflight"),
])
def test_judge(gpu, kw, status, words):
    args = dict(exit_code=0, timed_out=False, timeout=60.0, junit=None, preflight={"device_count": 0},
                current_test=None)
    args.update(kw)
    got_status, reason = mx.judge(_cell(gpu), **args)
    assert got_status == status and words in reason, reason


def test_pytest_args_select_the_suite_and_write_xml_to_the_mount():
    suite = mx.Suite("cpu", "", False, 0, ("test_ops.py", "."), ("deploy",), "not gpu", 60.0)
    args = mx.pytest_args(suite, extra=True)
    assert args[:3] == [f"{mx.TESTS_IN}/test_ops.py", mx.TESTS_IN, mx.EXTRA_IN]
    assert f"--ignore={mx.TESTS_IN}/deploy" in args and args[args.index("-m") + 1] == "not gpu"
    assert f"--junitxml={mx.OUT_IN}/junit.xml" in args


def test_pytest_tools_ship_pytest_and_the_runner(tmp_path):
    tools = mx.pytest_tools(tmp_path / "tools")
    for rel in ("pytest/__init__.py", "_pytest/main.py", "pluggy/__init__.py", "iniconfig/__init__.py",
                "pygments/__init__.py", "cell_runner.py", "pytest.ini"):
        assert (tools / rel).is_file(), rel
    assert "bench: " in (tools / "pytest.ini").read_text()


# ---------------------------------------------------------------------------------------------
# Report

def _result() -> dict:
    cells = [
        dict(cell="7.0-gfx950/cpu", flavour="7.0-gfx950", suite="cpu", image="i:7.0", status="passed", reason="3 passed",
             gpus=[], exit_code=0, seconds=12.0, passed=3, failed=0, errors=0, skipped=1, failures=[], properties={},
             log_tail="", log="cells/7.0-gfx950__cpu/log.txt", junit="cells/7.0-gfx950__cpu/junit.xml", preflight={}),
        dict(cell="7.0-gfx950/models", flavour="7.0-gfx950", suite="models", image="i:7.0", status="failed",
             reason="no GPU visible inside the container (torch.cuda.device_count() == 0)", gpus=[], exit_code=3,
             seconds=3.0, passed=0, failed=0, errors=0, skipped=0, failures=[], properties={},
             log_tail="[preflight] no GPU <visible>", log="cells/7.0-gfx950__models/log.txt", junit=None, preflight={}),
        dict(cell="7.2-gfx950/cpu", flavour="7.2-gfx950", suite="cpu", image="i:7.2", status="failed",
             reason="1 failed, 0 errors (first: t::x)", gpus=[], exit_code=1, seconds=9.0, passed=2, failed=1,
             errors=0, skipped=0, failures=[{"test": "t::x", "kind": "failure", "message": "assert 1 == 2"}],
             properties={}, log_tail="E assert 1 == 2", log="cells/7.2-gfx950__cpu/log.txt",
             junit="cells/7.2-gfx950__cpu/junit.xml", preflight={}),
        dict(cell="7.2-gfx950/models", flavour="7.2-gfx950", suite="models", image="i:7.2", status="skipped",
             reason="--cpu-only: this suite needs a GPU", gpus=[], exit_code=None, seconds=0.0, passed=0, failed=0,
             errors=0, skipped=0, failures=[], properties={}, log_tail="", log=None, junit=None, preflight={}),
    ]
    facts = {"image": "i:7.0", "labels": {"rocm-fp8.rocm-version": "7.0.2"}, "errors": [], "config_path": "/etc/c.json",
             "config": {"static": True, "static_verdicts": [
                 {"backend": "aiter-ck", "n": 2048, "k": 3072, "status": "limited", "max_safe_m": 512,
                  "source": "ledger:x", "reason": "NaN above M=512"},
                 {"backend": "aiter-ck", "n": 768, "k": 3072, "status": "limited", "max_safe_m": 512,
                  "source": "ledger:x", "reason": "NaN above M=512"}]},
             "explain": [{"preset": "p", "n": 2048, "k": 3072, "m": 16, "backend": "aiter-ck", "reason": "r"},
                         {"preset": "p", "n": 2048, "k": 3072, "m": 8192, "backend": "aiter-triton", "reason": "r"}]}
    return {"run_id": "abc", "matrix": "m.toml", "started": 0.0, "seconds": 30.0, "ok": False,
            "host": {"gpus": [], "cpu_only": False, "parallel": 2, "hostname": "h"},
            "flavours": {"7.0-gfx950": facts, "7.2-gfx950": {"image": "i:7.2", "labels": {}, "errors": ["boom"]}},
            "cells": cells}


def test_markdown_report_has_the_flavour_by_suite_table_and_the_failures():
    md = report.markdown(_result())
    assert md.startswith("# rocm-fp8 test matrix: FAILED: 1 passed, 2 failed, 1 skipped of 4 cells")
    assert "| flavour | cpu | models |" in md
    assert ("| 7.0-gfx950 | PASS 3 passed, 0 failed, 1 skipped, 12 s ([log](cells/7.0-gfx950__cpu/log.txt), "
            "[xml](cells/7.0-gfx950__cpu/junit.xml)) | FAIL 0 passed, 0 failed, 0 skipped, 3 s") in md
    assert "SKIP (--cpu-only: this suite needs a GPU)" in md
    assert "### 7.2-gfx950/cpu: 1 failed" in md and "- `t::x` (failure): assert 1 == 2" in md
    assert "| aiter-ck | limited (M <= 512) | 2 | ledger:x: NaN above M=512 |" in md
    assert "| p | 2048 | 3072 | aiter-ck | aiter-triton |" in md
    assert "> error: boom" in md


def test_html_report_is_self_contained_and_escapes_logs():
    page = report.html_page(_result())
    assert page.startswith("<!DOCTYPE html>") and "<table id=\"matrix\">" in page
    assert 'data-cell="7.2-gfx950/cpu" data-status="failed"' in page
    assert "no GPU &lt;visible&gt;" in page and "<visible>" not in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing external


def test_repo_overrides_the_matrix_repository_like_build_does():
    m = mx.load_matrix(CI_MATRIX, repository="registry.example.com/ml/rocm-fp8")
    assert m.flavours[-1].image == "registry.example.com/ml/rocm-fp8:7.2-gfx950"
