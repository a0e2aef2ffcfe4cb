"""Kernel tables: per-device launch configurations (and measured speeds) for the Triton kernel.

A table is a JSON file ``<slug>.json`` shipped in ``rocm_fp8/configs`` or made by ``rocm-fp8 tune``
in a folder named by ``ROCM_FP8_TABLES`` (``os.pathsep``-separated, searched first;
``ROCM_FP8_CONFIG_DIR`` is read as an alias). ``<slug>`` is the device name made file-safe
(``NVIDIA H100 80GB HBM3`` -> ``nvidia_h100_80gb_hbm3``), or an arch (``gfx942``, ``sm90``) for an
arch-level table. Layout::

    {"device": "NVIDIA H100 80GB HBM3", "arch": "sm90", "sm_count": 132,   # measured on this device
     "versions": {...}, "default": {kernel config, optional},
     "shapes": {"N,K": [{"m": 1, "config": {...}, "triton_tflops": 12.3, "scaled_mm_tflops": 10.1}, ...]}}

``sm_count`` (SMs on NVIDIA, CUs on AMD) is what makes a table serve a device family; tables written
before it existed lack it and are found by exact name only.

Which table a device gets (:func:`find_table`), first match wins:

1. ``device``: the table named after this device (its slug);
2. ``family``: a device table measured on the same arch with the same SM/CU count (H100 SXM and
   H200: sm90, 132 SMs; MI300X and MI325X: gfx942, 304 CUs). Several candidates: the folder
   searched first wins, then the file name, so the choice is stable;
3. ``arch``: the arch-level table (``gfx942.json``).

Each shape lists the M values it was measured at; a problem uses the row with the smallest measured
``m`` that is >= its M (the largest row beyond the last). ``triton_tflops`` and ``scaled_mm_tflops``
are what ``tune`` measured there (GPU time, as a CUDA graph replays it); ``eager``, where present, is
the config calls outside a graph take (fewer launches: faster when the host's launch time is what a
call waits on, ``eager_us`` against ``eager_main_us``); the dispatcher ranks backends by them when no speed evidence
measured on this very toolchain exists (see :mod:`rocm_fp8.probe_report`). AMD entries may carry
``waves_per_eu``, ``matrix_instr_nonkdim`` and ``kpack``.

This module is the only reader (:func:`read_table`) and the only writer (:func:`write_table`,
atomic) of table files. Tables are read once per process; lookups are dictionary reads.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from rocm_fp8.toolchain import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from rocm_fp8.toolchain import Toolchain

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: folders of tables made by ``rocm-fp8 tune``, searched before the shipped ones
ENV_TABLES = "ROCM_FP8_TABLES"
#: the former name of ENV_TABLES, still read
ENV_DIR = "ROCM_FP8_CONFIG_DIR"

MATCH_WORDS = {
    "device": "this device's own table",
    "family": "its family's table: same arch and SM/CU count",
    "arch": "the arch-level table",
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Row:
    m: int
    config: dict[str, Any]
    triton_tflops: Optional[float] = None
    scaled_mm_tflops: Optional[float] = None
    #: the config for calls outside a graph capture, where tune found one with fewer launches faster there
    eager: Optional[dict[str, Any]] = None


class ConfigTable:
    def __init__(self, data: dict[str, Any], path: Optional[Path] = None):
        where = str(path) if path else "table"
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        self.path = path
        self.device: Optional[str] = data.get("device")
        self.arch: Optional[str] = data.get("arch")
        sm = data.get("sm_count")
        if sm is not None and (not isinstance(sm, int) or isinstance(sm, bool) or sm < 1):
            raise ValueError(f"{where}: sm_count: expected a positive integer, got {sm!r}")
        self.sm_count: Optional[int] = sm
        self.versions = data.get("versions", {})
        self.default: Optional[dict[str, Any]] = data.get("default")
        self.data = data
        self.shapes: dict[tuple[int, int], list[Row]] = {}
        shapes = data.get("shapes", {})
        if not isinstance(shapes, dict):
            raise ValueError(f"{where}: shapes: expected an object {{\"N,K\": [rows]}}, got {type(shapes).__name__}")
        for key, rows in shapes.items():
            try:
                n, k = (int(p) for p in key.split(","))
            except ValueError:
                raise ValueError(f"{where}: shape key: expected 'N,K', got {key!r}") from None
            try:
                parsed = sorted((Row(int(r["m"]), dict(r["config"]), r.get("triton_tflops"),
                                     r.get("scaled_mm_tflops"), dict(r["eager"]) if r.get("eager") else None)
                             for r in rows), key=lambda r: r.m)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{where}: shape {key}: expected rows with 'm' and 'config', got {exc!r}") from None
            if parsed:
                self.shapes[(n, k)] = parsed
        self._ms = {nk: [r.m for r in rows] for nk, rows in self.shapes.items()}

    @classmethod
    def load(cls, path: Path) -> "ConfigTable":
        return read_table(path)

    def row(self, m: int, n: int, k: int) -> Optional[Row]:
        rows = self.shapes.get((n, k))
        if not rows:
            return None
        i = bisect.bisect_left(self._ms[(n, k)], m)
        return rows[min(i, len(rows) - 1)]

    def has_shape(self, n: int, k: int) -> bool:
        return (n, k) in self.shapes

    def measured_on(self) -> str:
        """``NVIDIA H100 80GB HBM3 (sm90, 132 SMs)``: where the table's numbers come from."""
        unit = "CUs" if (self.arch or "").startswith("gfx") else "SMs"
        bits = [b for b in (self.arch, f"{self.sm_count} {unit}" if self.sm_count else None) if b]
        return f"{self.device or 'an unnamed device'}" + (f" ({', '.join(bits)})" if bits else "")


def read_table(path: "str | os.PathLike[str]") -> ConfigTable:
    """The one reader of table files: parse and check, with errors that name the file."""
    path = Path(path)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: expected a JSON kernel table, got invalid JSON ({exc})") from None
    return ConfigTable(data, path)


def write_table(path: "str | os.PathLike[str]", device: str, arch: str, shapes: dict[str, list],
                merge: bool = True, sm_count: Optional[int] = None,
                versions: Optional[dict[str, Any]] = None) -> Path:
    """The one writer of table files: merge ``shapes`` into ``path`` and replace it atomically.

    Rows merge by M (tuning some M of a shape keeps its other rows) when the file holds a table of
    the same device; a table of another device is replaced, never mixed with this one's rows.
    """
    path = Path(path)
    data: dict[str, Any] = {"device": device, "arch": arch, "shapes": {}}
    if merge and path.is_file():
        try:
            old = read_table(path).data
        except (ValueError, OSError):
            old = None  # an unreadable file is replaced
        if old is not None and old.get("device") == device:
            data = dict(old)
            data["shapes"] = dict(old.get("shapes", {}))
    data["device"], data["arch"] = device, arch
    if sm_count is not None:
        data["sm_count"] = int(sm_count)
    if versions is not None:
        data["versions"] = versions
    for key, rows in shapes.items():
        kept = {r["m"]: r for r in data["shapes"].get(key, [])}
        kept.update({r["m"]: r for r in rows})
        data["shapes"][key] = [kept[m] for m in sorted(kept)]
    ConfigTable(data, path)  # never write what the reader would refuse
    atomic_write_json(path, data)
    clear_cache()
    return path


def search_dirs() -> list[Path]:
    dirs: list[Path] = []
    for env in (ENV_TABLES, ENV_DIR):
        for p in os.environ.get(env, "").split(os.pathsep):
            if p and Path(p) not in dirs:
                dirs.append(Path(p))
    dirs.append(CONFIG_DIR)
    return dirs


@dataclass(frozen=True)
class TableMatch:
    """The table a device uses and how it was found (``device``, ``family`` or ``arch``)."""

    table: ConfigTable
    match: str

    @property
    def path(self) -> Optional[Path]:
        return self.table.path

    def describe(self) -> str:
        return f"{self.table.path} ({MATCH_WORDS[self.match]}), measured on {self.table.measured_on()}"

    def to_dict(self) -> dict[str, Any]:
        t = self.table
        return {"path": str(t.path) if t.path else None, "match": self.match, "device": t.device, "arch": t.arch,
                "sm_count": t.sm_count, "versions": t.versions, "shapes": len(t.shapes)}


_INDEX: Optional[list[ConfigTable]] = None
_MATCHES: dict[tuple, Optional[TableMatch]] = {}


def _index() -> list[ConfigTable]:
    """Every readable table in the search folders, in search order (folder, then file name)."""
    global _INDEX
    if _INDEX is None:
        tables = []
        for d in search_dirs():
            if not d.is_dir():
                continue
            for p in sorted(d.glob("*.json")):
                try:
                    tables.append(read_table(p))
                except (ValueError, OSError):
                    continue  # a broken file must not take the dispatcher down; `rocm-fp8 info` shows tables
        _INDEX = tables
    return _INDEX


def find_table(device_name: Optional[str], arch: Optional[str], sm_count: Optional[int] = None) -> Optional[TableMatch]:
    """The table for a device: by exact name, then by family (arch and SM/CU count), then by arch."""
    key = (device_name, arch, sm_count)
    if key in _MATCHES:
        return _MATCHES[key]
    tables = _index()
    found: Optional[TableMatch] = None
    if device_name:
        want = slug(device_name)
        found = next((TableMatch(t, "device") for t in tables if t.path and t.path.stem == want), None)
    if found is None and arch and sm_count:
        arch_slug = slug(arch)
        found = next((TableMatch(t, "family") for t in tables
                      if t.arch == arch and t.sm_count == sm_count and t.path and t.path.stem != arch_slug), None)
    if found is None and arch:
        found = next((TableMatch(t, "arch") for t in tables if t.path and t.path.stem == slug(arch)), None)
    _MATCHES[key] = found
    return found


def find_for(toolchain: "Toolchain") -> Optional[TableMatch]:
    return find_table(toolchain.device_name, toolchain.arch, toolchain.cu_count)


def table_for(device_name: Optional[str], arch: Optional[str], sm_count: Optional[int] = None) -> Optional[ConfigTable]:
    """The table for a device (see :func:`find_table`), or None. Read once and cached."""
    m = find_table(device_name, arch, sm_count)
    return m.table if m else None


def clear_cache() -> None:
    global _INDEX
    _INDEX = None
    _MATCHES.clear()


def lookup(m: int, n: int, k: int, device_name: Optional[str], arch: Optional[str],
           sm_count: Optional[int] = None) -> Optional[Row]:
    table = table_for(device_name, arch, sm_count)
    return table.row(m, n, k) if table else None
