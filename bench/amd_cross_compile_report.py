"""Resource use of every AMD configuration, compiled on the CPU, as a Markdown table.

    PYTHONPATH=src python bench/amd_cross_compile_report.py [--python PY] [--out FILE]

Compiles the same jobs as tests/test_amd_cross_compile.py (our kernel's launchable configurations and
aiter's shipped configs, for gfx942 and gfx950) with the Triton of ``--python`` (default: this one)
and writes one row per compile: LDS, VGPRs, spills, scratch, occupancy, MFMA, problems.
Needs ``bash ci/setup-amd-cross.sh`` for aiter's files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter whose Triton compiles")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file (default: stdout)")
    args = ap.parse_args()
    import test_amd_cross_compile as t

    root = ROOT / ".cache" / "amd-cross" / f"aiter-{t.AITER_PIN}" / "aiter"
    jobs = [j for arch in sorted(t.ARCHS) for j in t.launchable_jobs(arch)
            + (t.aiter_jobs(arch, root) if root.is_dir() else [])]
    proc = subprocess.run([args.python, "-m", "rocm_fp8.kernels.amd_compile"], input=json.dumps(jobs),
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                                               "TRITON_DEFAULT_FP_FUSION": "1"}, check=True)
    out = json.loads(proc.stdout)
    from rocm_fp8.kernels.amd_compile import ResourceReport

    lines = [f"# AMD cross-compile: Triton {out['triton']}", "",
             "| arch | kernel | where the config comes from | tile / warps / stages | LDS KiB | VGPRs | spilled "
             "| scratch B | occupancy | MFMA | problems |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in out["results"]:
        job = res["job"]
        if "error" in res:
            lines.append(f"| {job['arch']} | {job['kernel']} | {job['origin']} | | | | | | | | {res['error'][:120]} |")
            continue
        r = ResourceReport.from_dict(res["report"])
        c = r.config
        tile = (f"{c.get('block_m', c.get('BLOCK_SIZE_M'))}x{c.get('block_n', c.get('BLOCK_SIZE_N'))} / "
                f"{c.get('num_warps')} / {c.get('num_stages')}")
        lines.append(f"| {r.arch} | {r.kernel} | {job['origin']} | {tile} | {r.lds_bytes / 1024:.0f} | {r.vgprs} | "
                     f"{r.vgpr_spills} | {r.scratch_bytes} | {r.occupancy} | {', '.join(r.mfma)} | "
                     f"{'; '.join(r.problems()) or 'none'} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
