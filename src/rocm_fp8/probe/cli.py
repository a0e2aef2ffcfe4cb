"""``rocm-fp8 probe``: its arguments, and the report printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from rocm_fp8 import probe_report as pr
from rocm_fp8.cli import shapes as shape_mod
from rocm_fp8.probe.presets import (CPU_DEFAULT_MAX_M, DEFAULT_BUILD_TIMEOUT_S, DEFAULT_REPEATS, DEFAULT_TIMEOUT_S,
                                    PREFILL_CHUNK, resolve_shapes)
from rocm_fp8.probe.run import run_probe, static_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rocm-fp8 probe",
        description="Measure each backend's numerics against the float32 reference on this machine "
                    "(each backend in its own process), and cache the report for the dispatcher.",
        epilog="Third-party backends: --plugin module[:attr], env ROCM_FP8_PLUGINS=mod[:attr],..., or entry "
               "points in group 'rocm_fp8.backends'. Cache: $ROCM_FP8_CACHE/probe/<fingerprint>.json "
               "(default ~/.cache/rocm-fp8/probe).")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="a backend to probe (repeatable; default: every available backend)")
    shape_mod.add_shape_arguments(p, "probe")
    p.add_argument("--timing", action="store_true",
                   help="afterwards, time every available and safe backend per (N, K, M) (GPU only) and record "
                        "the speeds in the report, where auto ranks by them")
    p.add_argument("--timing-m", action="extend", nargs="+", type=int, default=[], metavar="M",
                   help="M values to time at (default 1 16 64 256 1024 4096 16384)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--m", action="extend", nargs="+", type=int, default=[], metavar="M",
                   help="M values to test instead of the default sweep (repeatable)")
    p.add_argument("--max-m", type=int, help=f"largest M of the default sweep (default {PREFILL_CHUNK}; "
                                             f"{CPU_DEFAULT_MAX_M} without a GPU)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds one M may take before the backend counts as hung (default %(default)s)")
    p.add_argument("--build-timeout", type=float, default=DEFAULT_BUILD_TIMEOUT_S,
                   help="seconds for a backend's first launch, which includes JIT builds (default %(default)s)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="launches per M for the determinism check")
    p.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the report)")
    p.add_argument("--plugin", action="append", default=[], metavar="SPEC", help="module[:attr] registering backends")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--output", metavar="PATH", help="also write the report here")
    p.add_argument("--no-cache", action="store_true", help="do not write the report to the cache")
    p.add_argument("--static", action="store_true",
                   help="run nothing: print the known-issues ledger's verdicts for these backends and shapes")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for v in args.tp:
            if v < 1:
                raise ValueError(f"--tp: expected a positive integer, got {v}")
        log = (lambda msg: print(msg, file=sys.stderr, flush=True))
        shapes = resolve_shapes(args.n, args.k, args.preset, args.from_config, args.tp, args.ep, log=log)
        if not shapes:
            raise ValueError("shapes: expected --n N --k K, --preset NAME (e.g. --preset minimax-m2.5-tp4) "
                             "or --from-config config.json")
        if args.static and args.timing:
            raise ValueError("--timing: a --static report runs nothing, so it cannot time anything")
        timing_ms = (args.timing_m or [1, 16, 64, 256, 1024, 4096, 16384]) if args.timing else None
        if args.static:
            report = static_report(args.backend or None, shapes, args.m or None)
            if args.output:
                pr.write_report(report, args.output, merge_existing=False)
        else:
            report = run_probe(args.backend or None, shapes, args.m or None, max_m=args.max_m, timeout=args.timeout,
                               build_timeout=args.build_timeout, repeats=args.repeats, plugins=args.plugin,
                               seed=args.seed, write_cache=not args.no_cache, output=args.output, log=log,
                               progress=not args.no_progress, timing_ms=timing_ms)
    except ValueError as exc:
        print(f"rocm-fp8 probe: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(pr.sanitize(report), indent=2, default=str))
    else:
        print(pr.format_table(report))
        if report.get("cache_path"):
            print(f"report cached at {report['cache_path']}")
        if args.output:
            print(f"report written to {args.output}")
    bad = [r for r in pr.Report.from_dict(report).results if r.status in ("unsafe", "error")]
    return 1 if bad and not args.static else 0
