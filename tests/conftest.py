"""Shared test setup.

Tests run on the CPU by default. Tests marked ``gpu`` skip unless a CUDA/ROCm GPU is visible;
tests marked ``docker`` need the real Docker engine (``ci/setup-docker.sh`` starts one).
Every test starts from clean dispatcher caches and an environment without rocm_fp8 overrides.
"""

from __future__ import annotations

import os

import pytest
import torch

_OVERRIDES = ("ROCM_FP8_BACKEND", "ROCM_FP8_DISABLE", "ROCM_FP8_ALLOW_UNSAFE", "ROCM_FP8_CONFIG",
              "ROCM_FP8_LEDGER")


def _gpu_visible() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_visible():
        return
    skip = pytest.mark.skip(reason="needs a CUDA or ROCm GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_dispatch(request, monkeypatch, tmp_path_factory):
    for name in _OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    if "gpu" not in request.keywords:
        # CPU tests describe this process, not a configuration baked into the machine: inside a
        # rocm-fp8 image /etc/rocm-fp8/config.json says gfx950 (the test matrix runs them there)
        monkeypatch.setenv("ROCM_FP8_CONFIG", "none")
    # probe reports from a developer's cache must not steer the tests
    monkeypatch.setenv("ROCM_FP8_CACHE", str(tmp_path_factory.mktemp("rocm-fp8-cache")))
    import rocm_fp8

    rocm_fp8.clear_caches()
    yield
    rocm_fp8.clear_caches()


@pytest.fixture
def rng(request):
    """A fresh, differently seeded generator per test: inputs are random, never zeros.
    The seed is printed with a failure's captured output so it can be replayed."""
    seed = int(os.environ.get("ROCM_FP8_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"rng seed for {request.node.name}: {seed} (replay with ROCM_FP8_TEST_SEED={seed})")
    return torch.Generator().manual_seed(seed)
