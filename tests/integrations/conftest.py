"""Tests of the sglang / vLLM plugins against the real, pinned packages.

The stacks live in their own venvs (``ci/setup-stacks.sh``): ``bash ci/run-tests.sh`` runs this folder
once more inside each of them with ``ROCM_FP8_STACK=<stack>``, and there a missing stack is an error,
not a skip. In the main venv (no stack installed) the stack tests skip and the stack-free ones run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def require(stack: str):
    """Import ``stack`` or skip, unless this run is that stack's (``ROCM_FP8_STACK``): then fail."""
    if os.environ.get("ROCM_FP8_STACK") == stack:
        import importlib
        return importlib.import_module(stack)
    return pytest.importorskip(stack, reason=f"{stack} is not installed here (ci/setup-stacks.sh makes its venv)")
