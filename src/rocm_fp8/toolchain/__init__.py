"""The toolchain: the facts the dispatch decision depends on.

* :mod:`~rocm_fp8.toolchain.model`: the :class:`Toolchain` data, version helpers, formatting;
* :mod:`~rocm_fp8.toolchain.detection`: torch, the ROCm compiler and tools, aiter and its git;
* :mod:`~rocm_fp8.toolchain.config_file`: the configuration file baked into an image, JSON I/O.

This module holds the process's toolchain: :func:`detect` reads the configuration file when one is
installed, else detects, once per process. Every public name is re-exported here, so
``rocm_fp8.toolchain.<name>`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from rocm_fp8.toolchain.config_file import (
    CONFIG_FORMAT,
    CONFIG_VERSION,
    ENV_CONFIG,
    _from_config,
    atomic_write_json,
    config_search_paths,
    find_config,
    load_config,
    read_json,
)
from rocm_fp8.toolchain.detection import (
    ENV_AITER_COMMIT,
    ENV_AITER_COMMIT_DATE,
    _mismatch_warnings,  # noqa: F401 - tests check the HIP mismatch warning directly
    add_fix_commit_source,
    detect_live,
    rocm_root,
)
from rocm_fp8.toolchain.model import (
    KNOWN_ARCHES,
    Toolchain,
    Version,
    format_toolchain,
    format_version,
    fp8_flavour_of,
    normalise_arch,
    parse_version,
    vendor_of,
)

__all__ = [
    "Toolchain", "Version", "KNOWN_ARCHES", "parse_version", "format_version", "vendor_of", "fp8_flavour_of",
    "normalise_arch", "format_toolchain", "detect_live", "rocm_root", "add_fix_commit_source",
    "ENV_AITER_COMMIT", "ENV_AITER_COMMIT_DATE", "ENV_CONFIG", "CONFIG_FORMAT", "CONFIG_VERSION",
    "config_search_paths", "find_config", "read_json", "load_config", "atomic_write_json",
    "detect", "config_used", "set_current",
]

_DETECTED: Optional[Toolchain] = None
_CONFIG_USED: Optional[Path] = None


def detect(refresh: bool = False) -> Toolchain:
    """The toolchain of this process: read from the configuration file when one is installed
    (see :func:`config_search_paths`), else detected; once per process, then cached."""
    global _DETECTED
    if _DETECTED is None or refresh:
        _DETECTED = _detect()
    return _DETECTED


def _detect() -> Toolchain:
    global _CONFIG_USED
    _CONFIG_USED = None
    path = find_config()
    explicit = os.environ.get(ENV_CONFIG)
    missing = None
    if (explicit and explicit.strip().lower() not in ("none", "off", "0", "")
            and not Path(explicit).expanduser().is_file()):
        # said explicitly and absent: say so, whatever is used instead
        missing = f"{ENV_CONFIG}={explicit} does not exist"
    problem = None
    if path is not None:
        try:
            tc = _from_config(path)
            _CONFIG_USED = path
            if missing:
                tc = tc.with_(warnings=tc.warnings + (f"{missing}; used {path} instead",))
            return tc
        except ValueError as exc:
            problem = f"{exc}; detected the toolchain instead"
    elif missing:
        problem = f"{missing}; detected the toolchain instead"
    tc = detect_live()
    if problem:
        tc = tc.with_(warnings=tc.warnings + (problem,))
    return tc


def config_used() -> Optional[Path]:
    """The configuration file the cached toolchain came from, if any."""
    return _CONFIG_USED


def set_current(toolchain: Optional[Toolchain]) -> None:
    """Replace the cached toolchain (tests, or a process that knows better). None re-detects later."""
    global _DETECTED
    _DETECTED = toolchain
