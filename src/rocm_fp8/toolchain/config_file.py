"""The toolchain's file format: the configuration file baked into an image, and JSON file I/O.

``rocm-fp8 configure`` writes the detected toolchain into ``config.json`` at image build time; a
serving process then reads it instead of running the ROCm tools. :func:`atomic_write_json` is the
one writer of our JSON files (a reader sees the old file or the new one, never half of one).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from rocm_fp8.toolchain.detection import _detect_from_torch
from rocm_fp8.toolchain.model import Toolchain

#: env var naming the configuration file to read instead of detecting ("none" turns files off)
ENV_CONFIG = "ROCM_FP8_CONFIG"

CONFIG_FORMAT = "rocm-fp8-config"
CONFIG_VERSION = 1


def config_search_paths() -> list[Path]:
    """Where configuration files are looked for, in order: $ROCM_FP8_CONFIG, then
    {sys.prefix}/etc/rocm-fp8/config.json, then /etc/rocm-fp8/config.json.
    ``ROCM_FP8_CONFIG=none`` turns configuration files off (detect live)."""
    env = os.environ.get(ENV_CONFIG)
    if env is not None and env.strip().lower() in ("none", "off", "0", ""):
        return []
    paths = [Path(env)] if env else []
    paths += [Path(sys.prefix) / "etc" / "rocm-fp8" / "config.json", Path("/etc/rocm-fp8/config.json")]
    return paths


def find_config() -> Optional[Path]:
    for path in config_search_paths():
        if path.is_file():
            return path
    return None


def read_json(path: "str | os.PathLike[str]", what: str) -> Any:
    """Parse a JSON file; ValueError says which ``what`` (config, report) and file, and why."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{what} {path}: not valid JSON ({exc})") from None


def load_config(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Read and check a configuration file; ValueError names the file and what is wrong."""
    path = Path(path)
    data = read_json(path, "config")
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        raise ValueError(f"config {path}: expected a JSON object with \"format\": \"{CONFIG_FORMAT}\", "
                         f"got {str(data)[:80]!r}")
    if data.get("version") != CONFIG_VERSION:
        raise ValueError(f"config {path}: expected version {CONFIG_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("toolchain"), dict):
        raise ValueError(f"config {path}: expected a \"toolchain\" object")
    return data


def atomic_write_json(path: "str | os.PathLike[str]", obj: Any) -> Path:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _from_config(path: Path) -> Toolchain:
    data = load_config(path)
    tc = Toolchain.from_dict(data["toolchain"]).with_(source=f"config:{path}")
    warnings = list(tc.warnings)
    # The file was written for one image: a different torch means a different image.
    try:
        import torch

        if data["toolchain"].get("torch_version") not in (None, torch.__version__):
            raise ValueError(f"config {path}: written for torch {data['toolchain'].get('torch_version')}, "
                             f"this process has torch {torch.__version__}")
    except ImportError:
        pass
    # An arch given at build time (--arch, no GPU visible) is checked against the device now.
    if (tc.extra or {}).get("arch_source") == "argument":
        live = _detect_from_torch()
        if live.get("arch", "cpu") not in ("cpu", tc.arch):
            warnings.append(f"config {path} was written for {tc.arch} but the device is {live['arch']}: "
                            f"using the device")
            tc = tc.with_(arch=live["arch"], arch_full=live.get("arch_full"), cu_count=live.get("cu_count"),
                          device_name=live.get("device_name"))
        elif live.get("arch") == tc.arch:
            tc = tc.with_(arch_full=live.get("arch_full") or tc.arch_full,
                          cu_count=live.get("cu_count") or tc.cu_count, device_name=live.get("device_name"))
    return tc.with_(warnings=tuple(warnings))
