"""Importing rocm_fp8 in a serving process pulls in torch and nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_import_pulls_in_neither_triton_nor_aiter_nor_deploy_tooling_nor_the_tools():
    code = (
        "import sys, rocm_fp8\n"
        "rocm_fp8.explain(256, 256, 4)\n"
        "bad = [m for m in ('triton', 'aiter', 'docker', 'invoke', 'rocm_fp8_deploy', 'rocm_fp8.cli', 'rocm_fp8.probe',"
        "                    'rocm_fp8.tune') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at package import / explain time: {out.stdout.strip()}"


@pytest.mark.slow
def test_import_runs_no_subprocess():
    code = (
        "import subprocess\n"
        "calls = []\n"
        "orig = subprocess.Popen.__init__\n"
        "def spy(self, *a, **k):\n"
        "    calls.append(a[0] if a else k.get('args'))\n"
        "    return orig(self, *a, **k)\n"
        "subprocess.Popen.__init__ = spy\n"
        "import rocm_fp8\n"
        "print(len(calls))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


@pytest.mark.slow
def test_the_command_imports_a_subcommand_only_when_it_runs():
    """``rocm-fp8 --help`` loads the parser, not the probe, the tuner, configure or doctor: the
    subcommands are imported by name (``rocm_fp8.cli.DELEGATED``) when one runs."""
    code = (
        "import sys, contextlib, io\n"
        "from rocm_fp8.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main([]) == 2\n"
        "bad = [m for m in ('rocm_fp8.probe', 'rocm_fp8.tune', 'rocm_fp8.cli.configure', 'rocm_fp8.cli.doctor',\n"
        "                   'triton') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported by the bare command: {out.stdout.strip()}"
