"""The ``rocm-fp8`` command (also ``python -m rocm_fp8``).

    rocm-fp8 info [--json]                       the toolchain and every backend's availability
    rocm-fp8 explain --n N --k K --m M [...]     the decision for a problem, here or hypothetically
    rocm-fp8 probe ...                           measure each kernel's numerics on this machine
    rocm-fp8 configure ...                       write the configuration file (image build time)
    rocm-fp8 doctor                              self-check of a container / host
    rocm-fp8 tune ...                            tune the Triton kernel's config table on this GPU
    rocm-fp8 integrations [--json]               the sglang / vLLM plugins: versions, hook active, kill switch

``probe``, ``configure``, ``doctor`` and ``tune`` live in their own modules; their arguments are
theirs (``rocm-fp8 probe --help``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

from rocm_fp8 import __version__
from rocm_fp8.backends import all_backends, safe_call
from rocm_fp8.dispatch import default_sources
from rocm_fp8.explain import explain, format_decision, speed_sources, table_info, table_words
from rocm_fp8.toolchain import Toolchain, detect, format_toolchain

#: subcommand -> module with ``main(argv) -> int``
DELEGATED = {
    "probe": "rocm_fp8.probe",
    "configure": "rocm_fp8.cli.configure",
    "doctor": "rocm_fp8.cli.doctor",
    "tune": "rocm_fp8.tune",
    "integrations": "rocm_fp8.integrations",
}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rocm-fp8", description="FP8 block-scale GEMM dispatch for ROCm (and beyond).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="the detected toolchain and each backend's availability")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    ex = sub.add_parser("explain", help="which backend runs a problem, and why",
                        description="Explain the dispatch decision for an [M, K] x [N, K]^T FP8 block-scale GEMM, "
                                    "on this machine or on a hypothetical one (--arch/--hip/--rocm).")
    ex.add_argument("--n", type=_positive_int, required=True, help="output features (weight rows)")
    ex.add_argument("--k", type=_positive_int, required=True, help="input features (need not be a multiple of 128: the last group may be partial)")
    ex.add_argument("--m", type=_positive_int, required=True, help="rows of the activation (tokens)")
    ex.add_argument("--arch", choices=["gfx942", "gfx950", "sm90", "cpu"],
                    help="describe a hypothetical machine with this GPU instead of detecting this one")
    ex.add_argument("--hip", metavar="VERSION", help="hypothetical hipcc HIP version, e.g. 7.0.51831")
    ex.add_argument("--rocm", metavar="VERSION", help="hypothetical ROCm release, e.g. 7.2.1")
    ex.add_argument("--no-aiter", action="store_true", help="hypothetical machine without aiter")
    ex.add_argument("--aiter-version", metavar="VERSION", help="hypothetical aiter version")
    ex.add_argument("--aiter-commit", metavar="SHA", help="hypothetical aiter commit")
    ex.add_argument("--aiter-commit-date", metavar="YYYY-MM-DD", help="date of that aiter commit")
    ex.add_argument("--device", metavar="NAME", dest="device_name",
                    help="hypothetical device name, which selects measured speed tables "
                         "(e.g. 'NVIDIA H100 80GB HBM3')")
    ex.add_argument("--cu-count", type=_positive_int, metavar="N",
                    help="hypothetical SM (NVIDIA) or CU (AMD) count, which selects a family's table "
                         "(default: the arch's usual count: sm90 132, gfx942 304, gfx950 256)")
    ex.add_argument("--backend", default="auto", help="explain an explicit request instead of 'auto'")
    ex.add_argument("--fp8", choices=["e4m3fn", "e4m3fnuz"], help="weight FP8 flavour (default: the arch's)")
    ex.add_argument("--out-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ex.add_argument("--json", action="store_true", help="machine-readable output")

    for name, module in DELEGATED.items():
        d = sub.add_parser(name, help=f"see 'rocm-fp8 {name} --help'", add_help=False)
        d.add_argument("args", nargs=argparse.REMAINDER)
        d.set_defaults(delegate=module)
    return p


def _toolchain_for(args) -> Toolchain:
    hypothetical = any(v is not None for v in (args.arch, args.hip, args.rocm, args.aiter_version, args.aiter_commit,
                                               args.aiter_commit_date, args.device_name, args.cu_count))
    if not hypothetical and not args.no_aiter:
        return detect()
    if args.arch is None:
        raise ValueError("--arch: required when describing a hypothetical machine (--hip/--rocm/--no-aiter/--aiter-*); "
                         "expected one of gfx942, gfx950, sm90, cpu")
    return Toolchain.hypothetical(args.arch, hip=args.hip, rocm=args.rocm, aiter=not args.no_aiter,
                                  aiter_version=args.aiter_version, aiter_commit=args.aiter_commit,
                                  aiter_commit_date=args.aiter_commit_date, device_name=args.device_name,
                                  cu_count=args.cu_count)


def cmd_explain(args) -> int:
    tc = _toolchain_for(args)
    d = explain(args.n, args.k, args.m, toolchain=tc, backend=args.backend, fp8_dtype=args.fp8,
                out_dtype=args.out_dtype)
    if args.json:
        out = d.to_dict()
        # the documented minimal shape first, details after
        print(json.dumps({"backend": out["backend"], "reason": out["reason"],
                          "considered": [{"backend": c["backend"], "ok": c["ok"], "reason": c["reason"],
                                          "evidence": c["evidence"], "rank": c["rank"]} for c in out["considered"]],
                          "toolchain": out["toolchain"], "evidence": out["evidence"], "problem": out["problem"],
                          "requested": out["requested"], "notes": out["notes"],
                          "table": table_info(tc)}, indent=2))
    else:
        print(format_decision(d))
    return 0 if d.ok else 3


def info_dict() -> dict:
    tc = detect()
    rows = []
    for b in all_backends():
        ok, why = safe_call(b.available, tc)
        rows.append({"backend": b.name, "available": ok, "reason": why, "description": getattr(b, "description", "")})
    return {"rocm_fp8": __version__, "toolchain": tc.to_dict(), "backends": rows, "warnings": list(tc.warnings),
            "table": table_info(tc), "table_words": table_words(tc), "speed_evidence": speed_sources(default_sources(tc))}


def cmd_info(args) -> int:
    data = info_dict()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"rocm_fp8 {data['rocm_fp8']}")
    print(format_toolchain(detect()))
    print("backends:")
    for r in data["backends"]:
        print(f"  {r['backend']:<18} {'yes' if r['available'] else 'no':<4} {r['reason']}")
    print(f"kernel table: {data['table_words']}")
    print("speed evidence: " + ("; ".join(data["speed_evidence"]) if data["speed_evidence"] else
                                "none measured on this toolchain (rocm-fp8 tune, or rocm-fp8 probe --timing)"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # delegated commands take their own arguments, --help included
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]])
        return int(module.main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "info":
            return cmd_info(args)
        if args.command == "explain":
            return cmd_explain(args)
    except ValueError as exc:
        print(f"rocm-fp8 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def entry_point() -> int:
    """The console script: ``main`` plus a quiet exit when the reader of our output goes away."""
    try:
        return main()
    except BrokenPipeError:
        sys.stderr.close()  # `rocm-fp8 info | head`: nothing left to tell
        return 0
