"""``rocm-fp8 tune``: measure kernel configurations on the local GPU and write the config table.

    rocm-fp8 tune --n 2112 --k 7168 [--n N --k K ...] | --preset NAME | --from-config config.json [--tp N ...]
                  | --table-shapes nvidia_h100_80gb_hbm3   [--m 1 --m 16 ...] [--output PATH]

For each (N, K) and M it times every candidate configuration of the Triton kernel (CUDA-graph
replays over rotating input sets that span 3x the L2, median; see :func:`time_calls`), keeps the
fastest one that is also accurate (within 1.25x of the bf16 rounding floor), measures cuBLASLt
blockwise FP8 (``torch-scaled-mm``) beside it where that runs, and merges the rows into ``--output``
(default: ``./<device>.json``; the package reads ``rocm_fp8/configs/`` and the folders in
``ROCM_FP8_TABLES``). The table records the device, its arch and SM/CU count, and the versions.

Speed evidence: at each (N, K, M) every other backend that is available and not marked unsafe by
the evidence (ledger, probe reports) is timed the same way, as the dispatcher runs it, after a check
against the float32 reference. All the figures go into this toolchain's probe report in the cache
(``$ROCM_FP8_CACHE/probe/<fingerprint>.json``), where ``auto`` reads them, and to ``--speed-output``.

Time: 7 M values by default (1 to 16384) and at most 37 candidates per M (11 at M <= 16; 43 at
M >= 1024 where Triton 3.6 adds the Gluon sm90 kernel's, kernels/gluon_sm90.py), compiled in parallel
worker processes first (``--jobs``), which fill Triton's on-disk cache; the timing process then only
loads them. About 10 s per shape on an H200 (the four MiniMax-M2.5 TP4 shapes took
37 s). When the projected time passes ``--time-budget`` (300 s) the remaining shapes use the quick
candidate set, so a model's shapes stay within about 5 minutes. Progress and ETA go to stderr.

One job per module: ``timing`` (the one GPU timing harness, shared with the benchmarks), ``operands``
(input sets, reference, accuracy bar), ``candidates`` (configs per M, parallel precompile), ``search``
(tuning one shape), ``speed`` (every backend timed: the speed evidence), ``table`` (versions, merge into
a table through :mod:`rocm_fp8.kernel_configs`), ``cli`` (``rocm-fp8 tune``). The tables themselves
(``rocm_fp8/configs/``) and their reader are read by the ``triton`` backend at serving time, so they
stay in the serving core.
"""

from rocm_fp8.tune.candidates import candidates, launchable, precompile
from rocm_fp8.tune.cli import DEFAULT_MS, DEFAULT_TIME_BUDGET_S, main, parse_args
from rocm_fp8.tune.operands import ACCURACY_SLACK, accuracy_floor, accurate_enough, make_sets, reference, rel_error
from rocm_fp8.tune.search import measure_scaled_mm, tune_shape
from rocm_fp8.tune.speed import (SPEED_MAX_REL_ERR, measure_speed, safe_backends, speed_cell, speed_entry,
                                 time_backend, write_speed)
from rocm_fp8.tune.table import versions, write_table
from rocm_fp8.tune.timing import l2_bytes, rotation_sets, tflops, time_calls

__all__ = ["time_calls", "rotation_sets", "l2_bytes", "tflops", "make_sets", "reference", "rel_error",
           "ACCURACY_SLACK", "accuracy_floor", "accurate_enough", "candidates", "launchable", "precompile",
           "measure_scaled_mm", "tune_shape", "SPEED_MAX_REL_ERR", "time_backend", "safe_backends", "speed_entry",
           "speed_cell", "measure_speed", "write_speed", "versions", "write_table", "DEFAULT_MS",
           "DEFAULT_TIME_BUDGET_S", "parse_args", "main"]
