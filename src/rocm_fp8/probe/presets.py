"""What the probe sweeps by default: the preset shapes, the M sweep, the time limits and the tolerances."""

from __future__ import annotations

from typing import Optional, Sequence

from rocm_fp8.cli import shapes as shape_mod

#: (N, K) per preset (see :mod:`rocm_fp8.cli.shapes`, which also reads HF model configs)
PRESETS = shape_mod.PRESETS

#: M values: small decode sizes, then both sides of every 16-row tile boundary that is a power of
#: two, and a few values that are not near one, up to the prefill chunk size.
FULL_SWEEP: tuple[int, ...] = (
    1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513,
    1000, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 4095, 4096, 4097, 6000, 8191, 8192, 8193, 12000,
    16383, 16384,
)
PREFILL_CHUNK = 16384
CPU_DEFAULT_MAX_M = 512

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_BUILD_TIMEOUT_S = 900.0   # cold JIT of aiter's blockscale modules took 85-363 s
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_REPEATS = 3
TOLERANCES = {"rtol": 0.02, "row_rtol": 0.05, "min_cosine": 0.999}


def default_ms(max_m: Optional[int] = None) -> list[int]:
    limit = PREFILL_CHUNK if max_m is None else max_m
    ms = [m for m in FULL_SWEEP if m <= limit]
    if max_m is not None and max_m not in ms and max_m > 0:
        ms.append(max_m)
    return sorted(ms)


def resolve_shapes(ns: Sequence[int] = (), ks: Sequence[int] = (), presets: Sequence[str] = (),
                   configs: Sequence[str] = (), tps: Sequence[int] = (), ep: bool = False,
                   log=None) -> list[tuple[int, int]]:
    return shape_mod.resolve(ns, ks, presets, configs, tps, ep, log=log)
