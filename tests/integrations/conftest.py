"""Tests of the sglang / vLLM plugins against the real, pinned packages.

The stacks live in their own venvs (``ci/setup-stacks.sh``): ``bash ci/run-tests.sh`` runs this folder
once more inside each of them with ``ROCM_FP8_STACK=<stack>``, and there a missing stack is an error,
not a skip. In the main venv (no stack installed) the stack tests skip and the stack-free ones run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
