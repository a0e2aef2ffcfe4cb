"""How the tuner, the probe's ``--timing`` and the benchmarks time a GPU call: CUDA-graph replays
over rotating input sets that together span 3x the L2, timed with CUDA events; the median per call.

One harness for every number we publish, so that the tables, the speed evidence ``auto`` ranks by and
the benchmark reports mean the same thing (:func:`time_calls`)."""

from __future__ import annotations

import math
import statistics
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
        except Exception:  # noqa: BLE001 - not capturable: time plain launches instead
            torch.cuda.synchronize()
            times = []
    if not graph_ok:
        for _ in range(replays):
            start.record()
            for _ in range(inner):
                for c in calls:
                    c()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1000.0 / n_calls)
    return {"us": statistics.median(times), "min_us": min(times), "graph": graph_ok, "sets": len(calls),
            "calls_per_replay": n_calls}


def tflops(m: int, n: int, k: int, us: Optional[float]) -> Optional[float]:
    return None if not us else 2.0 * m * n * k / (us * 1e-6) / 1e12
