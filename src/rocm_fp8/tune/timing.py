"""How we time a call, for every number we publish: the tuner's tables, the speed evidence ``auto``
ranks by (``rocm-fp8 tune``, ``rocm-fp8 probe --timing``), bench/gemm.py, bench/overhead.py and the
test matrix's bench suite (tests/gpu/test_bench_suite.py) all use these two functions, so their
numbers mean the same thing:

* :func:`time_calls` -- GPU time per call: CUDA-graph replays (plain launches where capture fails,
  said in the result) timed with CUDA events, the median over replays; the caller passes one call
  per input set, and :func:`rotation_sets` says how many sets span 3x the L2 so that each call reads
  its operands from memory.
* :func:`host_us` -- host (enqueue) time per call: the wall time of back-to-back calls before the
  final synchronize, the minimum over runs; what a serving process pays per call on the CPU side.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Optional, Sequence


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or getattr(props, "l2_cache_size", 0) or 50 * 2**20)


def rotation_sets(set_bytes: int, cap: int = 32) -> int:
    """Enough input sets that cycling through them spans 3x the L2, so each call reads from memory
    (a weight in L2 would flatter decode-sized problems); one set when it exceeds L2 already."""
    if set_bytes <= 0:
        return 1
    return max(1, min(cap, math.ceil(3 * l2_bytes() / set_bytes)))


def time_calls(calls: Sequence[Callable[[], Any]], target_us: float = 1500.0, replays: int = 15,
               use_graph: bool = True) -> dict[str, Any]:
    """Median time of one call, in microseconds, cycling through ``calls`` (one per input set).

    The calls are captured in a CUDA graph (``inner`` passes over all sets, enough for about
    ``target_us`` per replay) and the replays are timed with CUDA events, so launch gaps and
    Python overhead stay out of the numbers. Falls back to timing plain launches if capture fails.
    """
    import torch

    torch.cuda.synchronize()
    for c in calls:  # compile, autotune caches, cuBLAS handles
        c()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for c in calls:
        c()
    end.record()
    end.synchronize()
    est_us = max(start.elapsed_time(end) * 1000.0 / len(calls), 0.5)
    inner = max(1, min(64, int(target_us / (est_us * len(calls)))))
    n_calls = inner * len(calls)
    times = []
    graph_ok = False
    graph_error = None
    if use_graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for c in calls:
                    c()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    for c in calls:
                        c()
            graph.replay()
            torch.cuda.synchronize()
            for _ in range(replays):
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1000.0 / n_calls)
            graph_ok = True
            del graph
        except Exception as exc:  # noqa: BLE001 - not capturable: time plain launches instead
            torch.cuda.synchronize()
            times = []
            graph_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    if not graph_ok:
        for _ in range(replays):
            start.record()
            for _ in range(inner):
                for c in calls:
                    c()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1000.0 / n_calls)
    res = {"us": statistics.median(times), "min_us": min(times), "graph": graph_ok, "sets": len(calls),
           "calls_per_replay": n_calls}
    if graph_error is not None:
        res["graph_error"] = graph_error
    return res


def host_us(fn: Callable[[], Any], calls: int, runs: int, sync: Optional[Callable[[], None]] = None,
            warmup: int = 20) -> float:
    """Host (enqueue) time of one call of ``fn`` in microseconds: the minimum over ``runs`` of the wall
    time of ``calls`` back-to-back calls, taken before ``sync`` (``torch.cuda.synchronize`` on a GPU,
    nothing on the CPU) so that the device's work stays out of it."""
    if calls < 1 or runs < 1:
        raise ValueError(f"calls, runs: expected positive integers, got calls={calls}, runs={runs}")
    for _ in range(warmup):  # plans bound, caches filled, kernels compiled
        fn()
    if sync is not None:
        sync()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        if sync is not None:
            sync()
        best = min(best, (t1 - t0) * 1e6 / calls)
    return best


def tflops(m: int, n: int, k: int, us: Optional[float]) -> Optional[float]:
    return None if not us else 2.0 * m * n * k / (us * 1e-6) / 1e12
