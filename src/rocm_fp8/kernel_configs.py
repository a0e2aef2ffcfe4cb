"""Per-device configuration tables for the Triton block-scale kernel.

A table is a JSON file ``configs/<device>.json`` shipped in the package (or in the directory named
by ``ROCM_FP8_CONFIG_DIR``, searched first, for tables made by ``rocm-fp8 tune``). ``<device>`` is
the slug of the GPU's name (``NVIDIA H100 80GB HBM3`` -> ``nvidia_h100_80gb_hbm3``), else the
arch (``gfx942``, ``gfx950``, ``sm90``). Layout::

    {"device": "...", "arch": "sm90", "versions": {...},
     "default": {kernel config, optional},
     "shapes": {"N,K": [{"m": 1, "config": {...}, "triton_tflops": 12.3,
                         "scaled_mm_tflops": 10.1}, ...]}}

Each shape lists the M values it was measured at; a problem uses the row with the smallest
measured ``m`` that is >= its M (the largest row beyond the last). ``triton_tflops`` and
``scaled_mm_tflops`` are what ``tune`` measured there; the dispatcher ranks backends by them.
AMD entries may carry ``waves_per_eu``, ``matrix_instr_nonkdim`` and ``kpack``.

Tables are read once per process and per device; lookups are dictionary reads.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
ENV_DIR = "ROCM_FP8_CONFIG_DIR"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Row:
    m: int
    config: dict[str, Any]
    triton_tflops: Optional[float] = None
    scaled_mm_tflops: Optional[float] = None


class ConfigTable:
    def __init__(self, data: dict[str, Any], path: Optional[Path] = None):
        self.path = path
        self.device = data.get("device")
        self.arch = data.get("arch")
        self.versions = data.get("versions", {})
        self.default: Optional[dict[str, Any]] = data.get("default")
        self.shapes: dict[tuple[int, int], list[Row]] = {}
        for key, rows in data.get("shapes", {}).items():
            try:
                n, k = (int(p) for p in key.split(","))
            except ValueError:
                raise ValueError(f"{path}: shape key: expected 'N,K', got {key!r}") from None
            parsed = sorted((Row(int(r["m"]), dict(r["config"]), r.get("triton_tflops"),
                                 r.get("scaled_mm_tflops")) for r in rows), key=lambda r: r.m)
            if parsed:
                self.shapes[(n, k)] = parsed
        self._ms = {nk: [r.m for r in rows] for nk, rows in self.shapes.items()}

    @classmethod
    def load(cls, path: Path) -> "ConfigTable":
        with open(path) as fh:
            return cls(json.load(fh), path)

    def row(self, m: int, n: int, k: int) -> Optional[Row]:
        rows = self.shapes.get((n, k))
        if not rows:
            return None
        i = bisect.bisect_left(self._ms[(n, k)], m)
        return rows[min(i, len(rows) - 1)]

    def has_shape(self, n: int, k: int) -> bool:
        return (n, k) in self.shapes


def _search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get(ENV_DIR)
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(CONFIG_DIR)
    return dirs


_TABLES: dict[tuple[Optional[str], Optional[str]], Optional[ConfigTable]] = {}


def table_for(device_name: Optional[str], arch: Optional[str]) -> Optional[ConfigTable]:
    """The table for a device (by name, then by arch), or None. Read once and cached."""
    key = (device_name, arch)
    if key in _TABLES:
        return _TABLES[key]
    names = [slug(device_name)] if device_name else []
    if arch:
        names.append(slug(arch))
    found = None
    for d in _search_dirs():
        for name in names:
            p = d / f"{name}.json"
            if p.is_file():
                found = ConfigTable.load(p)
                break
        if found:
            break
    _TABLES[key] = found
    return found


def clear_cache() -> None:
    _TABLES.clear()


def lookup(m: int, n: int, k: int, device_name: Optional[str], arch: Optional[str]) -> Optional[Row]:
    table = table_for(device_name, arch)
    return table.row(m, n, k) if table else None
