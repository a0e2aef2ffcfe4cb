"""``rocm-fp8 configure``: bake the toolchain and the ledger's verdicts into a configuration file.

    rocm-fp8 configure [--output PATH] [--arch gfx942|gfx950] [--static]
                       [--aiter-commit SHA] [--aiter-commit-date YYYY-MM-DD]
                       [--preset NAME ... | --n N --k K ...] [--print]

Run at image build time (``--static --arch gfx950``: no GPU is visible during ``docker build``), it
detects the compiler side (hipcc, ROCm, aiter, torch, triton) once and writes it, with the
known-issues ledger's verdicts for the preset shapes, to ``--output`` (default
``{sys.prefix}/etc/rocm-fp8/config.json``). Processes in the image then read that file at first
detection instead of running hipcc (search order: ``$ROCM_FP8_CONFIG``, then
``{sys.prefix}/etc/rocm-fp8/config.json``, then ``/etc/rocm-fp8/config.json``).

Without ``--static`` and with a GPU visible, the probe also runs on the given shapes and its report
is embedded, so the image carries measured evidence. The write is atomic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from rocm_fp8 import __version__
from rocm_fp8.backends import backend_names
from rocm_fp8.ledger import default_ledger, shipped_path, static_verdicts
from rocm_fp8.probe import PRESETS, default_ms, resolve_shapes, run_probe
from rocm_fp8.probe_report import now_iso, sanitize
from rocm_fp8.toolchain import KNOWN_ARCHES, Toolchain, atomic_write_json, detect_live, format_toolchain


def default_output() -> Path:
    return Path(sys.prefix) / "etc" / "rocm-fp8" / "config.json"


def build_config(*, arch: Optional[str] = None, static: bool = True, aiter_commit: Optional[str] = None,
                 aiter_commit_date: Optional[str] = None, shapes: Sequence[tuple[int, int]] = (),
                 probe_kwargs: Optional[dict[str, Any]] = None, argv: Sequence[str] = ()) -> dict[str, Any]:
    if arch is not None and arch not in KNOWN_ARCHES:
        raise ValueError(f"--arch: expected one of {', '.join(KNOWN_ARCHES)}, got {arch!r}")
    tc = detect_live(arch=arch, aiter_commit=aiter_commit, aiter_commit_date=aiter_commit_date)
    shapes = list(shapes) or [s for p in PRESETS.values() for s in p]
    shapes = list(dict.fromkeys(tuple(s) for s in shapes))
    ledger = default_ledger()
    config: dict[str, Any] = {
        "format": "rocm-fp8-config",
        "version": 1,
        "written": now_iso(),
        "written_by": " ".join(["rocm-fp8 configure", *argv]).strip(),
        "rocm_fp8_version": __version__,
        "static": static,
        "fingerprint": tc.fingerprint,
        "toolchain": tc.to_dict(),
        "ledger": {"path": str(shipped_path()), "entries": [e.id for e in getattr(ledger, "entries", [])]},
        "static_verdicts": static_verdicts(tc, backend_names(), shapes, default_ms()),
    }
    if not static:
        if not tc.has_gpu:
            raise ValueError("--static: no GPU is visible, so nothing can be probed; pass --static to write "
                             "the toolchain and the ledger's verdicts only")
        config["probe"] = run_probe(None, shapes, toolchain=tc, write_cache=False, **(probe_kwargs or {}))
    return config


def write_config(config: dict[str, Any], output: "Optional[str | Path]" = None) -> Path:
    return atomic_write_json(Path(output) if output else default_output(), sanitize(config))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rocm-fp8 configure",
                                description="Write the configuration file that processes read instead of detecting "
                                            "the toolchain (run at image build time).")
    p.add_argument("--output", metavar="PATH", help=f"where to write (default {default_output()})")
    p.add_argument("--arch", choices=["gfx942", "gfx950"],
                   help="the target GPU when none is visible (docker build); a visible device wins")
    p.add_argument("--static", action="store_true",
                   help="run no kernel: toolchain and known-issues ledger verdicts only")
    p.add_argument("--aiter-commit", metavar="SHA", help="the aiter commit installed, when the install does not say")
    p.add_argument("--aiter-commit-date", metavar="YYYY-MM-DD", help="the date of that commit")
    p.add_argument("--preset", action="append", default=[], choices=sorted(PRESETS),
                   help="shapes for the verdicts (and the probe); default: every preset")
    p.add_argument("--n", action="append", type=int, default=[], help="output features; pairs with --k")
    p.add_argument("--k", action="append", type=int, default=[], help="input features")
    p.add_argument("--print", action="store_true", help="also print the configuration as JSON")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        shapes = resolve_shapes(args.n, args.k, args.preset)
        config = build_config(arch=args.arch, static=args.static, aiter_commit=args.aiter_commit,
                              aiter_commit_date=args.aiter_commit_date, shapes=shapes, argv=argv)
        path = write_config(config, args.output)
    except ValueError as exc:
        print(f"rocm-fp8 configure: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rocm-fp8 configure: error: cannot write {args.output or default_output()}: {exc}", file=sys.stderr)
        return 2
    if args.print:
        print(json.dumps(config, indent=2, default=str))
    else:
        print(format_toolchain(Toolchain.from_dict(config["toolchain"])))
        limited = [v for v in config["static_verdicts"] if v["status"] in ("unsafe", "limited")]
        print(f"{len(config['static_verdicts'])} ledger verdicts ({len(limited)} unsafe or M-limited)"
              + ("" if config["static"] else f"; probe report with {len(config['probe']['results'])} results"))
    print(f"wrote {path}" + (" (static: ledger only, no kernel was run)" if config["static"] else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
