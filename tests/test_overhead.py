"""The dispatcher's own host cost stays near a tiny torch.add (bench/overhead_cpu.py measures it).

The targets are the op <= 2x torch.add and the layer <= the op (bench/results/overhead-cpu.json
holds a measurement). A shared CI machine is noisy, so this checks loosely: the op <= 4x and the
layer <= 1.5x the op, which a regression to the old 5-10x still fails. Each path is the minimum
over 40 interleaved rounds of 200 calls, measured up to three times, so that a busy moment on a shared
machine (time slices of a few milliseconds) does not decide.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "overhead_cpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("overhead_cpu", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _verdict(us: dict) -> list[str]:
    add, op = us["torch_add"], us["op_fp8_auto"]
    bad = [f"{path}: {us[path]:.2f} us per call, {us[path] / add:.1f}x torch.add"
           for path in ("op_fp8_auto", "op_fp8_explicit") if us[path] > 4 * add]
    if us["module_fp8"] > 1.5 * op:
        bad.append(f"the layer ({us['module_fp8']:.2f} us) is slower than 1.5x the op ({op:.2f} us)")
    return bad


def test_host_cost_of_the_op_and_the_layer_is_near_a_torch_add():
    bench = _load()
    runs: list[dict] = []
    for _ in range(3):  # a busy neighbour can spoil one measurement; the minimum over them decides
        runs.append(bench.measure(calls=200, runs=40, n=256, k=384)["us"])
        us = {name: min(r[name] for r in runs) for name in runs[0]}
        bad = _verdict(us)
        if not bad:
            break
    assert not bad, f"{'; '.join(bad)} ({us})"
    if us["op_fp8_auto"] > 2 * us["torch_add"]:
        pytest.xfail(f"the op took {us['op_fp8_auto'] / us['torch_add']:.1f}x torch.add here (target 2x; noisy machine?)")
