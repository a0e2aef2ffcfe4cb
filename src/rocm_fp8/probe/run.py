"""Run the probe over backends and shapes and write its report (:func:`run_probe`), or the ledger's
verdicts for the same sweep without running anything (:func:`static_report`)."""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import torch

from rocm_fp8 import plugins as plugin_mod
from rocm_fp8 import probe_report as pr
from rocm_fp8.backends import all_backends, backend_names, find, safe_call
from rocm_fp8.cli.progress import Progress
from rocm_fp8.ledger import static_verdicts
from rocm_fp8.probe.presets import (CPU_DEFAULT_MAX_M, DEFAULT_BUILD_TIMEOUT_S, DEFAULT_REPEATS,
                                    DEFAULT_STARTUP_TIMEOUT_S, DEFAULT_TIMEOUT_S, PREFILL_CHUNK, TOLERANCES,
                                    default_ms)
from rocm_fp8.probe.summary import summarise
from rocm_fp8.probe.supervisor import run_backend
from rocm_fp8.toolchain import Toolchain, detect
from rocm_fp8.tune.speed import measure_speed
from rocm_fp8.tune.table import versions


def run_probe(backends: Optional[Sequence[str]] = None, shapes: Sequence[tuple[int, int]] = ((4096, 4096),),
              ms: Optional[Sequence[int]] = None, *, max_m: Optional[int] = None,
              timeout: float = DEFAULT_TIMEOUT_S, build_timeout: float = DEFAULT_BUILD_TIMEOUT_S,
              startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S, repeats: int = DEFAULT_REPEATS,
              plugins: Sequence[str] = (), toolchain: Optional[Toolchain] = None, device: Optional[str] = None,
              seed: Optional[int] = None, tolerances: Optional[dict[str, float]] = None,
              out_dtype: str = "bfloat16", write_cache: bool = True, output: Optional[str] = None,
              log=None, progress: bool = False, timing_ms: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Probe ``backends`` (default: every registered backend available here) on ``shapes`` and
    return the report. Each backend runs in its own worker process.

    ``timing_ms``: afterwards, time every backend that is available and safe (the report just
    measured included) at these M on a GPU, and record the speeds in the report (``"speed"``),
    which the dispatcher ranks by. ``progress``: a bar with an ETA on stderr."""
    tc = toolchain or detect()
    plugin_mod.load_all(plugins)  # so that named plugin backends exist here too
    if device is None:
        # where tensors can actually go: a toolchain baked into an image names its GPU even where the
        # container was started without one
        device = "cuda" if tc.has_gpu and torch.cuda.is_available() else "cpu"
    if ms is None:
        if max_m is None and device == "cpu":
            max_m = CPU_DEFAULT_MAX_M
        ms = default_ms(max_m)
    else:
        ms = sorted({int(m) for m in ms if (max_m is None or m <= max_m)})
    if not ms or min(ms) < 1:
        raise ValueError(f"ms: expected positive M values, got {list(ms)}")
    shapes = [tuple(s) for s in shapes]
    tol = dict(TOLERANCES, **(tolerances or {}))
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    settings = {"ms": list(ms), "device": device, "repeats": repeats, "timeout_s": timeout,
                "build_timeout_s": build_timeout, "seed": seed, "out_dtype": out_dtype, **tol,
                "full_sweep": max(ms) >= PREFILL_CHUNK}
    report = pr.new_report(tc, settings=settings)

    if backends is None or len(backends) == 0:
        names = [b.name for b in all_backends() if safe_call(b.available, tc)[0]]
    else:
        names = list(dict.fromkeys(backends))
    spec_base = {"toolchain": tc.to_dict(), "ms": list(ms), "repeats": repeats, "seed": seed,
                 "fp8_dtype": tc.fp8_flavour, "out_dtype": out_dtype, "device": device, "tolerances": tol,
                 "plugins": list(plugins), "third_party": plugin_mod.describe_third_party()}
    runnable = []
    for name in names:
        b = find(name)
        if b is None:
            raise ValueError(f"backend: expected a registered backend name, got {name!r} "
                             f"(load third-party ones with --plugin module:attr)")
        ok, why = safe_call(b.available, tc)
        if not ok:
            report["backends"][name] = {"available": False, "reason": why}
            continue
        runnable.append(name)
    if timing_ms and device != "cuda":
        raise ValueError("--timing: measuring speed needs a GPU (CUDA or ROCm), and none is visible")
    bar = None
    if progress and runnable:
        bar = Progress(len(runnable) * len(shapes) * len(ms) + (len(shapes) * len(timing_ms or ())), "probe")
        log = bar.note
    for name in runnable:
        if log:
            log(f"probing {name} on {len(shapes)} shape(s) x {len(ms)} M values ({device})")
        t0 = time.perf_counter()
        info, states = run_backend(name, shapes, spec_base, timeout=timeout, build_timeout=build_timeout,
                                    startup_timeout=startup_timeout, log=log, progress=bar)
        info["time_s"] = time.perf_counter() - t0
        report["backends"][name] = info
        for s in states:
            report["results"].append(summarise(name, s, tc.fp8_flavour, device, list(ms)))
    if write_cache and tc.source != "hypothetical":
        report["cache_path"] = str(pr.write_report(report))
    if timing_ms:
        # correctness first: what this probe (now in the cache) or the ledger marks unsafe is not timed
        extra = [] if write_cache else [pr.ProbeEvidence(report, "this probe run")]
        report["speed"] = measure_speed(tc, shapes, sorted(set(timing_ms)), tc.fp8_flavour,
                                             names=[n for n in runnable], say=log or print, progress=bar,
                                             evidence_extra=extra)
        report["speed_settings"] = {"device": tc.device_name, "created": pr.now_iso(), "versions": versions(),
                                    "method": "median of CUDA-graph replays over input sets spanning 3x L2 "
                                              "(rocm_fp8.tune.time_calls)"}
        if write_cache and tc.source != "hypothetical":
            report["cache_path"] = str(pr.write_report(report))
    if bar is not None:
        bar.close()
    if output:
        pr.write_report(report, output, merge_existing=False)
    return report


def static_report(backends: Optional[Sequence[str]] = None, shapes: Sequence[tuple[int, int]] = ((4096, 4096),),
                  ms: Optional[Sequence[int]] = None, toolchain: Optional[Toolchain] = None) -> dict[str, Any]:
    """The ledger's verdicts for backends x shapes, evaluated at the sweep's M values; runs nothing."""
    tc = toolchain or detect()
    ms = list(ms) if ms else default_ms()
    names = list(backends) if backends else backend_names()
    report = pr.new_report(tc, static=True, settings={"ms": ms, "device": "none (static)",
                                                      "note": "known-issues ledger only; no kernel was run"})
    report["results"] = static_verdicts(tc, names, [tuple(s) for s in shapes], ms)
    return report
