"""Refusals that need no daemon: a missing Docker daemon, through the API and through `invoke`."""

import subprocess
import sys
from pathlib import Path

import pytest

from rocm_fp8_deploy.engine import connect
from rocm_fp8_deploy.errors import DeployError

ROOT = Path(__file__).resolve().parents[2]
BOGUS = "unix:///nonexistent/rocm-fp8-test/docker.sock"


def test_missing_daemon_is_a_clear_refusal(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", BOGUS)
    with pytest.raises(DeployError) as err:
        connect()
    message = str(err.value)
    assert f"cannot reach a Docker daemon at {BOGUS}" in message
    assert "ci/setup-docker.sh start" in message and "DOCKER_HOST" in message


def test_invoke_build_without_a_daemon_exits_with_the_message_not_a_traceback():
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": BOGUS, "HOME": str(Path.home())}
    proc = subprocess.run([sys.executable, "-m", "invoke", "build", "--rocm", "7.0", "--arch", "gfx950"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot reach a Docker daemon" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_invoke_build_refuses_unknown_flavours_listing_known_ones():
    proc = subprocess.run([sys.executable, "-m", "invoke", "build", "--rocm", "6.4"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "known: 7.0, 7.2" in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, "-m", "invoke", "build", "--rocm", "7.0", "--arch", "gfx90a"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "known: gfx942, gfx950" in proc.stderr + proc.stdout


def test_push_without_a_registry_in_the_repository_is_refused():
    from rocm_fp8_deploy.build import push_image

    with pytest.raises(DeployError, match="--repo REGISTRY/NAMESPACE/rocm-fp8"):
        push_image(None, "rocm-fp8:7.0-gfx950")


def test_a_wheelhouse_without_the_pinned_aiter_is_refused(tmp_path):
    from rocm_fp8_deploy.build import check_wheelhouse

    with pytest.raises(DeployError, match="no such directory"):
        check_wheelhouse(str(tmp_path / "missing"))
    (tmp_path / "numpy-2.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    with pytest.raises(DeployError, match="no amd_aiter-0.1.7.post2.dev18 wheel"):
        check_wheelhouse(str(tmp_path))
