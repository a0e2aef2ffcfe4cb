"""The tuner's side of the kernel tables: the versions a table records, and the merge of new rows
(through the tables' one reader and writer, :mod:`rocm_fp8.kernel_configs`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from rocm_fp8 import kernel_configs


def versions() -> dict[str, Any]:
    import torch

    try:
        import triton

        tv = triton.__version__
    except Exception:  # noqa: BLE001
        tv = None
    return {"torch": torch.__version__, "triton": tv, "cuda": torch.version.cuda, "hip": torch.version.hip,
            "date": time.strftime("%Y-%m-%d")}


def write_table(path: Path, device: str, arch: str, shapes: dict[str, list], merge: bool = True,
                sm_count: Optional[int] = None) -> None:
    """Merge rows into a table file (atomically; see :func:`rocm_fp8.kernel_configs.write_table`)."""
    kernel_configs.write_table(path, device, arch, shapes, merge=merge, sm_count=sm_count, versions=versions())
