"""The CI scripts' own logic: who may stop the Docker daemon, and the heartbeat on quiet commands.

setup-docker.sh is exercised on a real process standing in for dockerd (a `sleep` whose pid is in the
state directory, as `start` writes it); the daemon itself is never touched here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup_docker(state: Path, action: str, owner: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROCM_FP8_DOCKER_STATE=str(state))
    env.pop("ROCM_FP8_DOCKER_OWNER", None)
    if owner is not None:
        env["ROCM_FP8_DOCKER_OWNER"] = owner
    return subprocess.run(["bash", str(ROOT / "ci" / "setup-docker.sh"), action], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def started_daemon(tmp_path):
    """A long-running process recorded as the daemon that `start` started for the owner `build-images-1`."""
    # detached as `start` detaches dockerd (not our child, so no zombie lingers once it is stopped)
    pid = int(subprocess.run(["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    state = tmp_path / "state"
    state.mkdir()
    (state / "dockerd.pid").write_text(f"{pid}\n")
    (state / "owner").write_text("build-images-1\n")
    yield state, pid
    if _alive(pid):
        os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_caller_never_stops_a_daemon_someone_else_started(started_daemon):
    state, pid = started_daemon
    out = _setup_docker(state, "stop", owner="run-tests-42")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started by 'build-images-1'" in out.stdout and "leaving it running" in out.stdout
    time.sleep(0.2)
    assert _alive(pid), "the daemon started by another caller was stopped"
    assert (state / "dockerd.pid").exists()


def test_the_owner_stops_its_own_daemon_and_a_plain_stop_stops_any_this_script_started(started_daemon):
    state, pid = started_daemon
    out = _setup_docker(state, "stop", owner="build-images-1")
    assert out.returncode == 0 and "stopping dockerd" in out.stdout, out.stdout + out.stderr
    assert _gone(pid)
    assert not (state / "dockerd.pid").exists() and not (state / "owner").exists()


def test_a_plain_stop_by_hand_stops_what_the_script_started(started_daemon):
    state, pid = started_daemon
    out = _setup_docker(state, "stop", owner=None)
    assert out.returncode == 0 and "stopping dockerd" in out.stdout, out.stdout + out.stderr
    assert _gone(pid)


def test_stop_without_a_started_daemon_does_nothing(tmp_path):
    out = _setup_docker(tmp_path / "empty", "stop", owner="run-tests-1")
    assert out.returncode == 0 and "did not start a daemon" in out.stdout


def _heartbeat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ci" / "heartbeat.py"), *args], capture_output=True,
                          text=True, timeout=60)


def test_heartbeat_speaks_during_silence_passes_output_through_and_keeps_the_exit_status():
    out = _heartbeat("--label", "slow", "--every", "0.5", "--", "bash", "-c",
                     "printf 'dots..'; sleep 1.3; echo done; exit 3")
    assert out.returncode == 3
    lines = out.stdout.splitlines()
    assert lines[0] == "dots.." and lines[-1] == "done", lines
    beats = [ln for ln in lines if ln.startswith("[slow] still running:")]
    assert 1 <= len(beats) <= 3, lines


def test_heartbeat_is_silent_while_the_command_talks_and_reports_signals():
    out = _heartbeat("--label", "x", "--every", "5", "--", "bash", "-c", "for i in 1 2 3; do echo $i; done")
    assert out.returncode == 0 and out.stdout.split() == ["1", "2", "3"]
    out = _heartbeat("--label", "x", "--", "bash", "-c", "kill -TERM $$")
    assert out.returncode == 128 + 15


def test_heartbeat_refuses_bad_arguments_by_name():
    out = _heartbeat("--label", "x")
    assert out.returncode == 2 and "no command" in out.stderr
    out = _heartbeat("--label", "x", "--every", "0", "--", "true")
    assert out.returncode == 2 and "--every" in out.stderr and "got 0" in out.stderr
