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


def _load_gpu_bench():
    spec = importlib.util.spec_from_file_location("overhead", BENCH.with_name("overhead.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_targets_judge_serving_backends_and_list_the_reference():
    """bench/overhead.py's verdicts from host times (made-up numbers: only the judging is tested)."""
    bench = _load_gpu_bench()
    host = {"triton no-op launch": 10.0, "torch.matmul bf16": 20.0, "op fp8-in auto": 19.0,
            "op bf16-in auto": 31.0, "op fp8-in reference": 100.0, "op bf16-in reference": 200.0,
            "op fp8-in torch-scaled-mm": 40.0, "op bf16-in torch-scaled-mm": 29.0,
            bench.BARE_SCALED_MM: 25.0, "module fp8-in auto": 19.0, "module bf16-in auto": 32.0}
    t = bench.targets({name: {"host_us": us} for name, us in host.items()}, on_gpu=True)
    assert t["op fp8-in auto <= 2x no-op launch"]["met"] is True
    assert t["op bf16-in auto <= 3x no-op launch"]["met"] is False           # 3.1x
    assert t["op bf16-in auto <= 1.5x torch.matmul bf16"]["met"] is False    # 1.55x
    assert t["op fp8-in torch-scaled-mm <= 2x no-op launch"]["met"] is False
    assert t["op bf16-in torch-scaled-mm <= 3x no-op launch"]["met"] is True
    bare = t["op fp8-in torch-scaled-mm / bare torch._scaled_mm"]
    assert bare["met"] is None and bare["ratio"] == 1.6 and "+15.0 us" in bare["note"]
    for label, row in t.items():
        if "reference" in label:
            assert row["met"] is None and row["note"] == "not judged: float reference"
    assert t["module fp8-in auto <= op fp8-in auto"]["met"] is True
    assert t["module bf16-in auto <= op bf16-in auto"]["met"] is False
    md = bench.markdown({"device": "test", "versions": {"torch": "x", "triton": "y"}, "calls": 1, "runs": 1,
                         "results": [{"m": 1, "n": 2, "k": 3, "paths": {}, "targets": t}]})
    assert "| op fp8-in reference <= 2x no-op launch | 10.00 | not judged: float reference |" in md
    assert "| op bf16-in auto <= 3x no-op launch | 3.10 | NOT met |" in md


def test_cpu_mode_measures_every_path_interleaved():
    bench = _load_gpu_bench()
    r = bench.measure(1, 256, 384, on_gpu=False, calls=20, runs=3)
    paths = r["paths"]
    assert {"torch add", "op fp8-in auto", "op bf16-in auto", "module fp8-in auto", "module bf16-in auto"} <= set(paths)
    assert all("error" not in p and 0 < p["host_us"] < float("inf") for p in paths.values()), paths
    assert set(r["targets"]) == {"op fp8-in auto <= 2x torch add", "op bf16-in auto <= 2x torch add",
                                 "module fp8-in auto <= op fp8-in auto", "module bf16-in auto <= op bf16-in auto"}
    import rocm_fp8

    assert "noop-overhead" not in rocm_fp8.backend_names()  # unregistered after measuring
