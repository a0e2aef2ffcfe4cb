"""Session fixtures for the Docker tests: stand-in bases and the two gfx950 images, built once.

Everything a run creates is tagged with a per-run id (fixture registry prefix, image repository) so
leftovers from earlier runs cannot satisfy a test, and is removed at the end of the session.  Only
the slow, content-addressed caches are kept: the debootstrapped rootfs tarball, the wheelhouses
and the stand-in Python base (reused only when its recipe label matches).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAVOURS = ("7.0", "7.2")   # x gfx950: the arch where the ledger separates the two releases


def log(line: str) -> None:
    # live progress under `pytest -s`; kept short otherwise
    print(line, flush=True)


@pytest.fixture(scope="session")
def docker_client():
    from rocm_fp8_deploy.engine import connect
    from rocm_fp8_deploy.errors import DeployError

    try:
        return connect()
    except DeployError as exc:
        pytest.skip(f"no Docker daemon reachable ({exc}); start one with `sudo ci/setup-docker.sh start`")


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def timings() -> dict:
    """Measured durations, printed at the end of the session (for the README)."""
    found: dict[str, float] = {}
    yield found
    if found:
        print("\n[deploy timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in found.items()))


@pytest.fixture(scope="session")
def fixture_prefix(docker_client, run_id, timings):
    from rocm_fp8_deploy.testing.standin import build_standins, remove_fixtures

    prefix = f"fixture-{run_id}.rocm-fp8.invalid"
    started = time.time()
    build_standins(list(FLAVOURS), prefix, log=log, client=docker_client)
    timings["stand-in bases"] = time.time() - started
    yield prefix
    # also the <none> images that this session's failed builds (the refusal tests) left on the fixtures
    remove_fixtures(docker_client, prefix, log=log, created_after=started - 1)


@pytest.fixture(scope="session")
def product_wheelhouse():
    from rocm_fp8_deploy.wheelhouse import cache_dir, product_wheelhouse

    # the stand-in's Python is Debian bookworm's 3.11
    return product_wheelhouse(cache_dir() / "wheelhouse-product-py311", python="3.11", log=log)


@pytest.fixture(scope="session")
def built(docker_client, fixture_prefix, product_wheelhouse, run_id, timings):
    """`invoke build` for 7.0 and 7.2 on gfx950 against the stand-ins: the product path, unmodified."""
    repository = f"rocm-fp8-test-{run_id}"
    cmd = [sys.executable, "-m", "invoke", "build"]
    for rocm in FLAVOURS:
        cmd += ["--rocm", rocm]
    cmd += ["--arch", "gfx950", "--registry", fixture_prefix, "--wheelhouse", str(product_wheelhouse),
            "--repo", repository, "--allow-fixture", "--no-prebuild"]
    log("$ " + " ".join(cmd))
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        log(line.rstrip("\n"))
    rc = proc.wait()
    timings["invoke build 7.0+7.2 gfx950"] = time.time() - started
    output = "\n".join(lines)
    assert rc == 0, f"invoke build failed (rc {rc}):\n" + "\n".join(lines[-60:])
    yield {"repository": repository, "output": output,
           "tags": {rocm: f"{repository}:{rocm}-gfx950" for rocm in FLAVOURS}}
    from rocm_fp8_deploy.engine import remove_repository

    remove_repository(docker_client, repository)
