"""`invoke test-matrix` against the real Docker engine, over the two stand-in gfx950 images.

The images come from the session fixture ``built`` (tests/deploy/conftest.py).  The matrix files
used here are written per test: the same flavours, a short CPU selection (CI has 2 cores), and,
where a test needs them, suites over a scratch tests directory that crash, hang or fail on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rocm_fp8_deploy import matrix as mx

pytestmark = [pytest.mark.docker, pytest.mark.slow]  # builds images
ROOT = Path(__file__).resolve().parents[2]
FAST_CPU = ["test_bad_input.py", "test_registry.py"]


def matrix_file(path: Path, repository: str, tests: Path, suites: str) -> Path:
    path.write_text(f"""
[defaults]
repository = "{repository}"
tests = "{tests}"
timeout = 300
[report]
presets = ["minimax-m2.5-tp4"]
explain_m = [16, 8192]
[[flavours]]
rocm = "7.0"
arch = "gfx950"
[[flavours]]
rocm = "7.2"
arch = "gfx950"
{suites}
""")
    return path


CPU_AND_GPU = f"""
[suites.cpu]
gpu = false
paths = {json.dumps(FAST_CPU)}
markers = "not gpu and not docker"
[suites.models]
gpu = true
paths = ["gpu/test_model_shapes.py"]
markers = "gpu"
"""


def invoke_matrix(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "invoke", "test-matrix", *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-3000:], proc.stderr[-2000:], flush=True)
    return proc


def load_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


def cells_of(data: dict) -> dict:
    return {c["cell"]: c for c in data["cells"]}


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    pytest.fail("Chromium is not installed; run `sudo ci/setup-chromium.sh` (Debian package chromium)")


def headless(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        # Chromium refuses to start as root with its sandbox on ("Running as root without --no-sandbox
        # is not supported"); CI runs as root.  The page is our own report file, rendered offline, so
        # the sandbox is dropped then, and only then.
        sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
        cmd = [chromium(), "--headless", *sandbox, "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_cpu_suite_passes_in_both_cells_and_the_report_renders_in_chromium(built, tmp_path, timings):
    path = matrix_file(tmp_path / "m.toml", built["repository"], ROOT / "tests", CPU_AND_GPU)
    out = tmp_path / "report"
    started = time.time()
    proc = invoke_matrix("--matrix", str(path), "--suite", "cpu", "--parallel", "2", "--report", str(out))
    timings["test-matrix cpu x2"] = time.time() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # live progress per cell, and the table on the console
    assert "[7.0-gfx950/cpu] start:" in proc.stdout and "[7.2-gfx950/cpu] PASS" in proc.stdout
    assert "| flavour | cpu |" in proc.stdout
    data = load_report(out)
    cells = cells_of(data)
    assert data["ok"] and set(cells) == {"7.0-gfx950/cpu", "7.2-gfx950/cpu"}
    for c in cells.values():
        assert c["status"] == "passed" and c["passed"] >= 10 and c["failed"] == 0, c
        assert (out / c["junit"]).is_file() and (out / c["log"]).is_file()
        assert c["preflight"]["device_count"] == 0 and c["preflight"]["torch"].endswith("+cpu")
    # per flavour: the dispatch table and the verdicts from inside each image differ as the ledger says
    md = (out / "report.md").read_text()
    f70, f72 = data["flavours"]["7.0-gfx950"], data["flavours"]["7.2-gfx950"]
    pick = {f: {(e["n"], e["k"], e["m"]): e["backend"] for e in data["flavours"][f]["explain"]}
            for f in ("7.0-gfx950", "7.2-gfx950")}
    assert pick["7.0-gfx950"][(2048, 3072, 8192)] != "aiter-ck"      # NaN above M=512 on 7.0
    assert pick["7.2-gfx950"][(2048, 3072, 8192)] == "aiter-ck"
    assert any(v["backend"] == "aiter-bpreshuffle" and v["status"] == "unsafe"
               for v in f70["config"]["static_verdicts"])
    assert f72["labels"]["rocm-fp8.rocm-version"] == "7.2.4"
    assert "Dispatch (`rocm-fp8 explain`" in md and "| minimax-m2.5-tp4 | 2048 | 3072 |" in md

    # the HTML page renders in a real browser, with the table in the DOM
    page = out / "report.html"
    dom = headless("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="matrix">' in dom.stdout
    assert 'data-cell="7.0-gfx950/cpu" data-status="passed"' in dom.stdout
    assert "PASSED: 2 passed, 0 failed, 0 skipped of 2 cells" in dom.stdout
    shot = tmp_path / "report.png"
    res = headless(f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri())
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    keep = os.environ.get("ROCM_FP8_KEEP_REPORT")
    if keep:  # for looking at it: ROCM_FP8_KEEP_REPORT=/tmp/matrix-report pytest ...
        shutil.copytree(out, keep, dirs_exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "report.png")


def test_a_failing_test_fails_the_matrix_and_the_report_names_it(built, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "test_planted.py").write_text(
        "def test_planted_failure():\n    assert 6 * 7 == 43, 'planted by test_matrix.py'\n")
    path = matrix_file(tmp_path / "m.toml", built["repository"], ROOT / "tests", CPU_AND_GPU)
    out = tmp_path / "report"
    proc = invoke_matrix("--matrix", str(path), "--suite", "cpu", "--rocm", "7.2", "--extra-tests", str(extra),
                         "--report", str(out))
    assert proc.returncode == 1
    assert "test matrix FAILED: 0 passed, 1 failed, 0 skipped of 1 cells" in proc.stderr
    (cell,) = load_report(out)["cells"]
    assert cell["status"] == "failed" and cell["failed"] == 1 and cell["passed"] >= 10
    assert cell["failures"][0]["test"].endswith("test_planted::test_planted_failure")
    assert "planted by test_matrix.py" in cell["failures"][0]["message"]
    md = (out / "report.md").read_text()
    assert "### 7.2-gfx950/cpu: 1 failed, 0 errors (first: test_planted::test_planted_failure)" in md


SCRATCH_SUITES = """
[suites.crash]
gpu = false
paths = ["test_crash.py"]
timeout = 120
[suites.hang]
gpu = false
paths = ["test_hang.py"]
timeout = 25
[suites.victim]
gpu = false
paths = ["test_victim.py"]
timeout = 300
"""


def test_crashed_killed_and_hung_containers_are_failed_cells_with_their_log_tail(built, tmp_path):
    tests = tmp_path / "scratch-tests"
    tests.mkdir()
    (tests / "test_crash.py").write_text(
        "import os, signal\n\ndef test_ok():\n    pass\n\n"
        "def test_segfaults_like_a_bad_kernel():\n    print('about to crash', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n")
    (tests / "test_hang.py").write_text(
        "import time\n\ndef test_waits_forever():\n    print('hanging now', flush=True)\n    time.sleep(3600)\n")
    (tests / "test_victim.py").write_text(
        "import time\n\ndef test_long_running():\n    time.sleep(600)\n")
    m = mx.load_matrix(matrix_file(tmp_path / "m.toml", built["repository"], tests, SCRATCH_SUITES))
    cells = mx.plan(m, rocm=["7.2"])
    out = tmp_path / "report"
    lines: list[str] = []

    def kill_victim() -> None:
        # an outside kill (an OOM killer, an operator) once the victim's test is running
        import docker

        client = docker.from_env()
        deadline = time.time() + 240
        current = out / "cells" / "7.2-gfx950__victim" / "current-test"
        while time.time() < deadline:
            if current.is_file() and "test_long_running" in current.read_text():
                for c in client.containers.list(filters={"label": f"{mx.CELL_LABEL}=7.2-gfx950/victim"}):
                    c.kill()
                    return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_victim, daemon=True)
    killer.start()
    result = mx.run_matrix(m, cells, mx.RunOptions(parallel=3, report_dir=str(out), with_facts=False),
                           log=lines.append)
    killer.join(5)
    assert not result.ok
    by = {c.suite: c for c in result.cells}
    crash, hang, victim = by["crash"], by["hang"], by["victim"]
    assert crash.status == "failed" and crash.exit_code == 128 + 11
    assert "crashed: killed by SIGSEGV" in crash.reason and "test_segfaults_like_a_bad_kernel" in crash.reason
    assert "Fatal Python error: Segmentation fault" in crash.log_tail
    assert hang.status == "failed" and hang.reason.startswith("timeout: still running after 25 s during")
    assert "test_waits_forever" in hang.reason
    # every thread's stack is dumped before the kill, so the tail shows where it hung
    assert "Timeout (0:00:" in hang.log_tail and "test_hang.py\", line 5 in test_waits_forever" in hang.log_tail
    assert victim.status == "failed" and victim.exit_code == 137
    assert "crashed: killed by SIGKILL" in victim.reason and "test_long_running" in victim.reason
    md = (out / "report.md").read_text()
    for c in (crash, hang, victim):
        assert f"### {c.cell}: {c.reason}" in md
    assert any(line.startswith("[7.2-gfx950/hang] FAIL") for line in lines)
    # nothing left running
    import docker

    assert not docker.from_env().containers.list(all=True, filters={"label": f"{mx.RUN_LABEL}={result.run_id}"})


def test_gpu_suite_without_a_gpu_fails_unless_cpu_only(built, tmp_path):
    path = matrix_file(tmp_path / "m.toml", built["repository"], ROOT / "tests", CPU_AND_GPU)
    out = tmp_path / "report"
    proc = invoke_matrix("--matrix", str(path), "--suite", "models", "--parallel", "2", "--report", str(out))
    assert proc.returncode == 1
    for cell in load_report(out)["cells"]:
        assert cell["status"] == "failed" and cell["reason"].startswith("no GPU visible inside the container")
        assert cell["preflight"]["device_count"] == 0 and cell["junit"] is None
    proc = invoke_matrix("--matrix", str(path), "--suite", "models", "--cpu-only", "--report", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:]
    data = load_report(out)
    assert [c["status"] for c in data["cells"]] == ["skipped", "skipped"]
    assert "SKIP (--cpu-only: this suite needs a GPU)" in (out / "report.md").read_text()
