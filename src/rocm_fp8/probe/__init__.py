"""The probe: measure each backend's numerics on this machine, in a subprocess per backend.

    rocm-fp8 probe [--backend NAME ...] [--n N --k K ... | --preset NAME ... | --from-config CONFIG [--tp N]]
                   [--m M ...] [--max-m M] [--timing [--timing-m M ...]] [--timeout S] [--build-timeout S]
                   [--repeats R] [--plugin SPEC ...] [--json] [--output PATH] [--no-cache] [--static]

For every backend x shape x M it draws fresh random inputs, quantizes them the way the backend
does in production (``backend.quantize_input``), runs the backend ``--repeats`` times and compares
with the float32 dequantize-and-matmul reference computed from the same quantized operands:

* NaN/Inf anywhere                              -> ``nan``
* relative Frobenius error, worst row relative error, cosine beyond tolerance -> ``wrong``
  (the row check catches sparse bad rows that a global norm hides)
* repeated launches not bitwise equal           -> ``nondeterministic``
* an exception                                  -> ``error``
* the worker process dies (abort, segfault)     -> ``crash``
* no progress within ``--timeout``              -> ``hang`` (the worker is killed)

The default M sweep crosses 16-row tile boundaries (15/16/17, 255/256/257, ...) up to 16384, the
prefill chunk size; on a machine without a GPU it stops at 512 unless ``--max-m`` says otherwise
(the float32 reference at 16384 x 7168 is slow on a few cores), and the report says so. The
"largest verified-safe M" is the largest tested M with no failure at or below it.

The first launch of each backend gets ``--build-timeout``: aiter's CK modules are JIT-built by the
image's hipcc on first use, so for ``aiter-ck``/``aiter-bpreshuffle`` that launch is the hipcc
miscompilation probe (the build, then the numbers of what it built).

``--timing`` then times every backend that is available and safe (after this very probe) per
(N, K, M), with the tuner's method (CUDA-graph replays over inputs that span 3x the L2), and adds the
figures to the report's ``speed`` list, which ``auto`` ranks by (:mod:`rocm_fp8.probe_report`).

Results go to the cache keyed by the toolchain fingerprint (see :mod:`rocm_fp8.probe_report`),
where the dispatcher finds them, and optionally to ``--output``. ``--static`` runs no kernel: it
prints the known-issues ledger's verdicts for the same backends and shapes, labelled as such.

Third-party backends: see :mod:`rocm_fp8.plugins` (``--plugin``, ``ROCM_FP8_PLUGINS``, entry
points, or automatic re-creation of backends registered in the calling process).

Python API: :func:`run_probe` (returns the report dict), :func:`static_report`.

One job per module: ``presets`` (the default sweep, limits, tolerances), ``worker`` (one backend in its
own process), ``supervisor`` (starts workers, restarts them after a crash or hang), ``summary`` (cases
-> report rows), ``run`` (the whole probe and its report), ``cli`` (``rocm-fp8 probe``). Reports are
read and written by :mod:`rocm_fp8.probe_report`, which the dispatcher reads at serving time and
which therefore lives in the serving core, not here.
"""

from rocm_fp8.probe.cli import build_parser, main
from rocm_fp8.probe.presets import (CPU_DEFAULT_MAX_M, DEFAULT_BUILD_TIMEOUT_S, DEFAULT_REPEATS,
                                    DEFAULT_STARTUP_TIMEOUT_S, DEFAULT_TIMEOUT_S, FULL_SWEEP, PREFILL_CHUNK, PRESETS,
                                    TOLERANCES, default_ms, resolve_shapes)
from rocm_fp8.probe.run import run_probe, static_report

__all__ = ["run_probe", "static_report", "main", "build_parser", "PRESETS", "FULL_SWEEP", "PREFILL_CHUNK",
           "CPU_DEFAULT_MAX_M", "DEFAULT_TIMEOUT_S", "DEFAULT_BUILD_TIMEOUT_S", "DEFAULT_STARTUP_TIMEOUT_S",
           "DEFAULT_REPEATS", "TOLERANCES", "default_ms", "resolve_shapes"]
