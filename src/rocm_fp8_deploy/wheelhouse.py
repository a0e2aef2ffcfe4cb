"""Wheelhouses: directories of wheels so that builds install Python packages without network.

Built on a host that can reach PyPI with ``pip download`` for the *target* interpreter (the
image's Python and platform, not the host's), then handed to ``invoke build --wheelhouse DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import AITER_REQUIREMENT

Log = Callable[[str], None]

#: What the product build installs with pip: aiter (its dependencies come along) and the build
#: backend for installing rocm_fp8 from source.  torch is deliberately absent: the base has it.
PRODUCT_REQUIREMENTS = (AITER_REQUIREMENT, "setuptools>=77", "wheel")  # 77: pyproject.toml's SPDX license
PLATFORM = "manylinux_2_28_x86_64"


def cache_dir() -> Path:
    """Where stand-in rootfs tarballs and wheelhouses are kept between runs."""
    root = os.environ.get("ROCM_FP8_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rocm-fp8")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def download(dest: str | Path, requirements: Iterable[str], *, python: str, log: Log = print,
             extra_args: Iterable[str] = ()) -> Path:
    """``pip download`` binary wheels of ``requirements`` (and their dependencies) for CPython ``python``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    py = python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--dest", str(dest),
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", f"cp{py}",
           "--platform", PLATFORM, *extra_args, *requirements]
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise DeployError(f"pip download into {dest} failed (is PyPI reachable? set PIP_INDEX_URL for a "
                          f"mirror):\n{tail}")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    log(f"wheelhouse {dest}: {len(wheels)} wheels")
    return dest


def product_wheelhouse(dest: str | Path, *, python: str = "3.12", log: Log = print) -> Path:
    """The wheelhouse `invoke build --wheelhouse` needs for bases with CPython ``python``."""
    return download(dest, PRODUCT_REQUIREMENTS, python=python, log=log)


def standin_torch_wheel() -> Optional[str]:
    """The CPU torch wheel the stand-in base uses: $ROCM_FP8_TORCH_WHEEL, else one in /opt/wheels."""
    explicit = os.environ.get("ROCM_FP8_TORCH_WHEEL")
    if explicit:
        if not Path(explicit).is_file():
            raise DeployError(f"ROCM_FP8_TORCH_WHEEL={explicit}: no such file")
        return explicit
    found = sorted(Path("/opt/wheels").glob("torch-*+cpu-cp311-cp311-*.whl"))
    return str(found[-1]) if found else None


def standin_wheelhouse(dest: str | Path, *, log: Log = print, triton: str = "triton==3.9.0") -> Path:
    """torch (CPU) + triton + numpy for the stand-in Python 3.11 base.

    numpy because the real rocm/pytorch bases have it: without it every `import torch` in an image
    build warns "Failed to initialize NumPy".

    A local torch wheel is used when present (no 190 MB download); otherwise the CPU build comes
    from PyTorch's CPU index.
    """
    dest = Path(dest)
    torch_wheel = standin_torch_wheel()
    if torch_wheel:
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(torch_wheel).name
        if not target.exists():
            shutil.copyfile(torch_wheel, target)
        reqs = [str(target), triton, "numpy", "setuptools>=68", "wheel"]
        extra: list[str] = []
    else:
        reqs = ["torch==2.13.0+cpu", triton, "numpy", "setuptools>=68", "wheel"]
        extra = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    return download(dest, reqs, python="3.11", log=log, extra_args=extra)
