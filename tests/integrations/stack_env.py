"""Which stack a test run is about (``ROCM_FP8_STACK``), shared by the stack tests.

Not in conftest.py: a bare ``from conftest import ...`` would find whichever conftest module another
test folder (tests/deploy) put into ``sys.modules`` first when the whole suite runs.
"""

from __future__ import annotations

import os

import pytest


def require(stack: str):
    """Import ``stack`` or skip, unless this run is that stack's (``ROCM_FP8_STACK``): then fail."""
    if os.environ.get("ROCM_FP8_STACK") == stack:
        import importlib
        return importlib.import_module(stack)
    return pytest.importorskip(stack, reason=f"{stack} is not installed here (ci/setup-stacks.sh makes its venv)")
