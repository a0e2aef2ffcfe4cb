"""``rocm-fp8 tune`` (also ``python -m rocm_fp8.tune``): its arguments, and the loop over shapes
that writes the table and the speed evidence as it goes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rocm_fp8.cli import shapes as shape_mod
from rocm_fp8.cli.progress import Progress
from rocm_fp8.kernel_configs import slug
from rocm_fp8.quant import FP8_DTYPES
from rocm_fp8.toolchain import detect
from rocm_fp8.tune.candidates import candidates, precompile
from rocm_fp8.tune.search import tune_shape
from rocm_fp8.tune.speed import speed_cell, speed_entry, write_speed
from rocm_fp8.tune.table import versions, write_table

DEFAULT_MS = (1, 16, 64, 256, 1024, 4096, 16384)
#: a model's shapes should tune within this (seconds); past it the remaining shapes use --quick
DEFAULT_TIME_BUDGET_S = 300.0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rocm-fp8 tune",
                                description="Measure kernel configurations on the local GPU and write the "
                                            "config table.",
                                epilog="Shapes: --n/--k pairs, --preset, --from-config (with --tp), --table-shapes; "
                                       "they add up. Progress and ETA go to stderr.")
    shape_mod.add_shape_arguments(p, "tune")
    p.add_argument("--table-shapes", metavar="TABLE",
                   help="the (N, K) of a kernel table, a path or a name such as nvidia_h100_80gb_hbm3")
    p.add_argument("--m", type=int, action="append", default=[],
                   help=f"M to tune at (repeatable; default {' '.join(map(str, DEFAULT_MS))})")
    p.add_argument("--output", type=Path, default=None,
                   help="table to write/merge (default ./<device>.json; the package reads rocm_fp8/configs/ and "
                        "the folders in ROCM_FP8_TABLES)")
    p.add_argument("--fp8", choices=("e4m3fn", "e4m3fnuz"), default=None,
                   help="FP8 flavour (default: the device's)")
    p.add_argument("--quick", action="store_true", help="fewer candidates")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="S",
                   help="when the projected time passes S seconds, the remaining shapes use --quick "
                        "(default %(default)s; 0: never)")
    p.add_argument("--no-scaled-mm", action="store_true", help="do not measure cuBLASLt beside")
    p.add_argument("--no-speed", action="store_true",
                   help="do not time the other backends, nor record speed evidence for the dispatcher")
    p.add_argument("--speed-output", type=Path, default=None,
                   help="also write the speed evidence (a probe report) here")
    p.add_argument("--no-cache", action="store_true",
                   help="do not merge the speed evidence into this toolchain's probe report in the cache")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes that compile candidates in parallel (1: compile while timing)")
    p.add_argument("--log", type=Path, default=None, help="also write every candidate's timing here (JSON)")
    args = p.parse_args(argv)
    for v in args.n + args.k + args.m + args.tp:
        if v <= 0:
            p.error(f"--n/--k/--m/--tp: expected positive integers, got {v}")
    try:
        args.shapes = shape_mod.resolve(args.n, args.k, args.preset, args.from_config, args.tp, args.ep,
                                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
        if args.table_shapes:
            args.shapes += [s for s in shape_mod.table_shapes(args.table_shapes) if s not in args.shapes]
    except ValueError as exc:
        p.error(str(exc))
    if not args.shapes:
        p.error("shapes: expected --n N --k K, --preset NAME, --from-config config.json or --table-shapes TABLE")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("rocm-fp8 tune: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("rocm-fp8 tune: no GPU is visible (tuning measures on the local GPU)", file=sys.stderr)
        return 2

    tc = detect()
    fp8_name = args.fp8 or tc.fp8_flavour
    fp8 = FP8_DTYPES[fp8_name]
    device = torch.cuda.get_device_name()
    sm_count = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    output = args.output or Path(f"{slug(device)}.json")
    ms = args.m or list(DEFAULT_MS)
    with_sm = not args.no_scaled_mm and torch.version.hip is None and fp8_name == "e4m3fn"
    hopper = torch.version.hip is None and torch.cuda.get_device_capability()[0] >= 9
    shapes = args.shapes
    print(f"tuning {len(shapes)} shape(s) x {len(ms)} M on {device} ({tc.arch}, {sm_count} SMs/CUs): "
          f"{' '.join(f'{n},{k}' for n, k in shapes)}", file=sys.stderr, flush=True)
    items = [(m, n, k, c) for n, k in shapes for m in ms for c in candidates(m, quick=args.quick, hopper=hopper, arch=tc.arch)]
    precompile(items, fp8_name, args.jobs)
    bar = Progress(len(shapes) * len(ms), "tune")
    say = bar.note
    log: list = []
    speed: list[dict[str, Any]] = []
    quick = args.quick
    t0 = time.monotonic()
    for i, (n, k) in enumerate(shapes):
        if args.time_budget and not quick and i:
            projected = (time.monotonic() - t0) / i * len(shapes)
            if projected > args.time_budget:
                quick = True
                say(f"projected {projected:.0f}s > --time-budget {args.time_budget:.0f}s: the remaining "
                    f"{len(shapes) - i} shape(s) use the quick candidate set")

        def after_m(m, sets, ref, row, n=n, k=k):
            if not args.no_speed:
                known = []
                if row is not None and row.get("triton_us"):
                    known.append(speed_entry("triton", n, k, m, fp8_name, {"us": row["triton_us"], "sets": len(sets)},
                                             config=row.get("config")))
                if row is not None and row.get("scaled_mm_us"):
                    known.append(speed_entry("torch-scaled-mm", n, k, m, fp8_name,
                                             {"us": row["scaled_mm_us"], "sets": len(sets)}))
                speed.extend(speed_cell(tc, sets, ref, m, n, k, fp8_name, fp8, None, say,
                                         skip={e["backend"] for e in known} | ({"torch-scaled-mm"} if with_sm else set()),
                                         known=known))
            bar.advance(1, f"N={n} K={k} M={m}")

        rows = tune_shape(n, k, ms, fp8, quick=quick, with_scaled_mm=with_sm, log=log, say=say, on_m=after_m)
        write_table(output, device, tc.arch, {f"{n},{k}": rows}, sm_count=sm_count)
        if args.log:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            args.log.write_text(json.dumps({"device": device, "versions": versions(), "results": log}) + "\n")
        if speed and not args.no_speed:
            paths = write_speed(tc, speed, output=args.speed_output, cache=not args.no_cache, device=device)
            speed_paths = paths
    bar.close()
    print(f"wrote {output} ({len(shapes)} shapes, {time.monotonic() - t0:.0f}s)")
    if speed and not args.no_speed:
        print("speed evidence: " + ", ".join(str(p) for p in speed_paths))
    return 0
