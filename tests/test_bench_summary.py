"""bench/gemm.py's summary and issue-13 target checks, on made-up cells (CPU; no timing happens).

The TFLOPS figures below are invented to exercise the arithmetic; measured results are in
bench/results/gemm-<device>.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "gemm.py"
    spec = importlib.util.spec_from_file_location("bench_gemm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(m, n, cublaslt, triton, auto, auto_backend):
    singles = {"torch-scaled-mm": cublaslt, "triton": triton}
    best = max(singles, key=singles.get)
    return {"n": n, "k": 3072, "m": m, "bf16": {"tflops": cublaslt / 2, "us": 9.0},
            "cublaslt": {"tflops": cublaslt, "us": 9.0}, "triton_tuned": {"tflops": triton, "us": 5.0},
            "triton_default": {"tflops": triton * 0.9, "us": 6.0}, "others": {},
            "auto": {"tflops": auto, "us": 5.0, "backend": auto_backend},
            "best": {"backend": best, "tflops": singles[best]}, "tuned_config": {"block_m": 16, "block_n": 64}}


def test_targets_met_and_missed(bench):
    cells = [_cell(1, 2048, 1.0, 2.0, 2.0, "triton"), _cell(16, 2048, 10.0, 14.0, 14.0, "triton"),
             _cell(256, 2048, 100.0, 140.0, 139.0, "triton"), _cell(4096, 2048, 1000.0, 900.0, 990.0, "torch-scaled-mm")]
    s = bench.summarize(cells)
    t = bench.targets(cells, s)
    assert t["auto>=0.97x best in every cell"]["met"] and t["auto>=0.97x best in every cell"]["min"] == 0.99
    assert t["auto/cuBLASLt geomean 16<=M<=256 >= 1.3"]["met"]  # sqrt(1.4 * 1.39) = 1.395
    assert t["auto/cuBLASLt geomean M=1 >= 1.5"]["value"] == 2.0
    # auto picking the slower backend in one cell misses the per-cell target and names the cell
    cells[3] = _cell(4096, 2048, 1000.0, 900.0, 900.0, "triton")
    t = bench.targets(cells, bench.summarize(cells))
    miss = t["auto>=0.97x best in every cell"]
    assert not miss["met"] and miss["cells_below"] == [{"n": 2048, "k": 3072, "m": 4096, "auto": "triton",
                                                         "best": "torch-scaled-mm", "ratio": 0.9}]
    md = bench.markdown({"device": "GPU X", "versions": {"torch": "t", "triton": "t", "cuda": "c", "date": "d"},
                         "cells": cells, "summary": bench.summarize(cells), "targets": t, "table_words": "tw"})
    assert "- NOT MET: auto>=0.97x best in every cell: 0.900" in md
    assert "  - N=2048 K=3072 M=4096: auto (triton) 0.900x best (torch-scaled-mm)" in md
    assert "| 2048,3072 | 4096 |" in md and "900.0 (triton) | 1000.0 (torch-scaled-mm) | 0.900 |" in md


def test_a_cell_without_auto_is_not_a_pass(bench):
    cells = [_cell(16, 2048, 10.0, 14.0, 14.0, "triton")]
    cells[0]["auto"] = {"error": "auto chose nothing"}
    t = bench.targets(cells, bench.summarize(cells))
    assert not t["auto>=0.97x best in every cell"]["met"]
    assert t["auto>=0.97x best in every cell"]["cells_unmeasured"] == [(2048, 3072, 16)]
