"""GPU check and benchmark of the Gluon sm90 kernels (kernels/gluon_sm90.py), one self-contained run.

Configs: DEFAULT (v2's two best ``ws2`` configs, the rows the tuner offers, beside v3's), or
``--all`` / ``--quick`` / ``--configs a,b``.

0. smoke: each config compiled, run and checked in a child process (all children at once) with a
   time limit (a config that deadlocks is dropped, the run goes on); ``--smoke-only`` writes
   OUT/gluon-smoke.json;
1. correctness: every config against float64 of the dequantized operands (fresh random data,
   output poisoned with NaN before the launch): relative error, cosine, NaN check, and the tuner's
   accuracy gate (within 1.25x of the exact result rounded to bf16), over the benchmark shapes at
   M = 1000 (ragged), (7168,16384) at M = 333/4096/16384, M-contiguous activation scales, fp16/fp32 out, and
   (ws2) an output view TMA cannot store to;
2. timing (rocm_fp8.tune.timing.time_calls: CUDA-graph replays over input sets spanning 3x L2)
   of every config that passed, beside cuBLASLt (torch._scaled_mm blockwise, as the tuner times it)
   and our Triton kernel with this device's table, at M = 1024, 4096, 16384; TFLOPS and ratios, and
   what a table re-tuned with these configs would give (per cell the faster of our Triton table and
   the Gluon configs, against cuBLASLt).

Writes gluon-sm90-<device>.json and .md under --out. Stops timing new cells after --budget seconds.

    PYTHONPATH=src python3 bench/gluon_sm90.py --out OUT [--quick] [--budget S]
    (bench/h200_gluon_session.sh runs it on the H200 with the GPU tests)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPES = [(2048, 3072), (3072, 1536), (768, 3072), (3072, 3072), (2112, 7168), (24576, 1536), (7168, 16384),
          (4096, 7168), (7168, 2048)]
MS = [4096, 16384, 1024]  # most telling first, in case the time budget cuts the run
#: name -> GluonConfig fields
CONFIGS = {
    # v2 (ws2): each hypothesis of the v1 result alone, then together (docs/kernel.md)
    "ws2 128 s4": dict(variant="ws2", block_n=128, stages=4),  # scales staged in smem + TMA-store epilogue
    "ws2 128 s5": dict(variant="ws2", block_n=128, stages=5),
    "ws2 128 s4 smem": dict(variant="ws2", block_n=128, stages=4, tma_store=False),  # staged scales alone
    "ws2 128 s4 ahead": dict(variant="ws2", block_n=128, stages=4, scales="ahead", tma_store=False),
    "ws2 128 s4 tma": dict(variant="ws2", block_n=128, stages=4, scales="load"),  # the TMA store alone
    "ws2 256 s3": dict(variant="ws2", block_n=256, stages=3),  # BN 256: two 128-wide wgmmas per K block
    "ws2 256 s4 smem": dict(variant="ws2", block_n=256, stages=4, tma_store=False),
    # v3: BN 256 with a 4th stage (one output buffer per consumer, the scales loaded from global
    # memory: what gluon_support.ws2_staging gives a gluon_ws2 table row of BN 256 x 4 stages)
    "ws2 256 s4 v3": dict(variant="ws2", block_n=256, stages=4, scales="load", epilogue_bufs=1),
    # v3 beside it: the single output buffer alone at BN 256 x 3 (what the 4th stage costs in stores)
    "ws2 256 s3 1buf": dict(variant="ws2", block_n=256, stages=3, epilogue_bufs=1),
    # v3: BN 192 (a 128-wide and a 64-wide part per tile): N = 2112 in 11 tiles, more tiles than BN 256
    "ws2 192 s4": dict(variant="ws2", block_n=192, stages=4),
    # v3 with a wider L2 grouping (a table row's group_m): 16 row tiles walk the column tiles
    "ws2 256 s4 v3 g16": dict(variant="ws2", block_n=256, stages=4, scales="load", epilogue_bufs=1, group_m=16),
    # v1
    "ws 128 s4": dict(variant="ws", block_n=128, stages=4),
    "ws 128 s5": dict(variant="ws", block_n=128, stages=5),
    "ws 128 s6": dict(variant="ws", block_n=128, stages=6),
    "ws 128 s5 g16": dict(variant="ws", block_n=128, stages=5, group_m=16),
    "ws_lag 128 s4": dict(variant="ws_lag", block_n=128, stages=4),
    "pipe 128 s4": dict(variant="pipelined", block_n=128, stages=4),
    "pipe 128 s5": dict(variant="pipelined", block_n=128, stages=5),
}
QUICK = ["ws2 128 s4", "ws2 256 s3", "ws2 256 s4 v3", "ws2 192 s4"]
#: what one device call compares: v2's two configs the tuner offers (BN 256 x 3, BN 128 x 4) and
#: v3's; v1 (ws, pipelined) and v2's one-change-alone configs were timed in their runs
#: (bench/results/gluon-sm90-v1/-v2-*) and are left out to save time: --all brings them back
DEFAULT = ["ws2 128 s4", "ws2 256 s3", "ws2 256 s4 v3", "ws2 192 s4", "ws2 128 s5", "ws2 256 s4 v3 g16"]
#: the geomean baseline: v2's best single config on the H200
BASE = "ws2 256 s3"


def table_selectable(name) -> bool:
    """Whether a gluon_ws2 table row (kernel, block_n, num_stages) runs exactly this config: its
    staging is the one gluon_support.ws2_staging picks for that tile and ring depth."""
    from rocm_fp8.kernels.gluon_support import ws2_staging

    c = CONFIGS[name]
    if c["variant"] != "ws2" or set(c) - {"variant", "block_n", "stages", "scales", "epilogue_bufs", "group_m"}:
        return False
    staging = ws2_staging(c["block_n"], c["stages"]) or {}
    return (c.get("scales", "smem"), c.get("epilogue_bufs", 2) if c["block_n"] > 128 else 1) == (
        staging.get("scales"), staging.get("epilogue_bufs") if c["block_n"] > 128 else 1) and staging.get("tma_store")


def operands(m, n, k, seed, fp8=torch.float8_e4m3fn, mcontig=False):
    from rocm_fp8.tune import make_sets

    x_q, x_s, w_q, w_s = make_sets(m, n, k, fp8, 1, seed=seed)[0]
    if mcontig:
        x_s = x_s.t().contiguous().t()
    return x_q, x_s, w_q, w_s


def reference64(x_q, x_s, w_q, w_s):
    k = x_q.shape[1]
    xs = x_s.double().repeat_interleave(128, 1)[:, :k]
    ws = w_s.double().repeat_interleave(128, 0)[: w_q.shape[0]].repeat_interleave(128, 1)[:, :k]
    return (x_q.double() * xs) @ (w_q.double() * ws).t()


def check(y, ref) -> dict:
    finite = bool(torch.isfinite(y).all())
    yd = y.double()
    rel = ((yd - ref).norm() / ref.norm()).item() if finite else float("inf")
    cos = torch.nn.functional.cosine_similarity(yd.flatten(), ref.flatten(), dim=0).item() if finite else 0.0
    # the gate's floor is the exact result rounded to bf16, whatever the output dtype (issue 16)
    floor = ((ref.to(torch.bfloat16).double() - ref).norm() / ref.norm()).item()
    gate = finite and rel <= 1.25 * floor + 1e-7 and cos > 0.9999
    return {"rel": rel, "cos": cos, "floor": floor, "finite": finite, "ok": gate}


def run_correctness(g, names, say) -> list[dict]:
    rows = []
    cells = [(n, k, 1000, False) for n, k in SHAPES]
    cells += [(7168, 16384, 4096, False), (7168, 16384, 16384, False), (2112, 7168, 4096, True),
              (7168, 16384, 333, False), (24576, 1536, 4096, False)]
    for n, k, m, mcontig in cells:
        ops = operands(m, n, k, seed=m * 7 + n + k, mcontig=mcontig)
        ref = reference64(*ops)
        for name in names:
            cfg = g.GluonConfig(**CONFIGS[name])
            out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
            try:
                g.gluon_blockscale_gemm(*ops, torch.bfloat16, config=cfg, out=out)
                torch.cuda.synchronize()
                r = check(out, ref)
            except Exception as exc:  # noqa: BLE001 - a failure is a result
                torch.cuda.synchronize()
                r = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            r.update(config=name, n=n, k=k, m=m, scale_layout="M-contiguous" if mcontig else "row-major")
            rows.append(r)
            say(f"check {name:14s} N={n} K={k} M={m} {r['scale_layout']}: "
                + (f"rel {r['rel']:.3e} (floor {r['floor']:.3e}) cos {r['cos']:.6f} "
                   f"{'PASS' if r['ok'] else 'FAIL'}" if "rel" in r else r["error"]))
        del ops, ref
    # other output dtypes, one cell each
    for dt in (torch.float16, torch.float32):
        ops = operands(1000, 2112, 7168, seed=5)
        ref = reference64(*ops)
        for name in [x for x in ("ws2 128 s4", "ws2 256 s3", "ws2 256 s4 v3", "ws2 192 s4") if x in names] or names[:2]:
            out = torch.full((1000, 2112), float("nan"), dtype=dt, device="cuda")
            try:
                g.gluon_blockscale_gemm(*ops, dt, config=g.GluonConfig(**CONFIGS[name]), out=out)
                torch.cuda.synchronize()
                r = check(out, ref)
            except Exception as exc:  # noqa: BLE001 - a failure is a result
                torch.cuda.synchronize()
                r = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            r.update(config=name, n=2112, k=7168, m=1000, out_dtype=str(dt))
            rows.append(r)
            say(f"check {name:14s} out {dt}: "
                + (f"rel {r['rel']:.3e} (floor {r['floor']:.3e}) {'PASS' if r['ok'] else 'FAIL'}"
                   if "rel" in r else r["error"]))
    # an output TMA cannot store to (rows of 2116 bf16 = 4232 bytes, not a multiple of 16): ws2 takes
    # the plain stores
    ops = operands(1000, 2112, 7168, seed=6)
    ref = reference64(*ops)
    for name in [x for x in names if CONFIGS[x]["variant"] == "ws2"]:
        big = torch.full((1000, 2116), float("nan"), dtype=torch.bfloat16, device="cuda")
        out = big[:, :2112]
        try:
            g.gluon_blockscale_gemm(*ops, torch.bfloat16, config=g.GluonConfig(**CONFIGS[name]), out=out)
            torch.cuda.synchronize()
            r = check(out, ref)
            r["ok"] = r["ok"] and bool(big[:, 2112:].isnan().all())  # nothing written past the view
        except Exception as exc:  # noqa: BLE001 - a failure is a result
            torch.cuda.synchronize()
            r = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        r.update(config=name, n=2112, k=7168, m=1000, out_layout="row stride 2116 (plain stores)")
        rows.append(r)
        say(f"check {name:14s} strided out: "
            + (f"rel {r['rel']:.3e} (floor {r['floor']:.3e}) {'PASS' if r['ok'] else 'FAIL'}"
               if "rel" in r else r["error"]))
    return rows


def run_timing(g, names, budget_s, say, on_row=None) -> list[dict]:
    from rocm_fp8.backends.triton import TritonBackend
    from rocm_fp8.kernels.triton_blockscale import blockscale_gemm
    from rocm_fp8.toolchain import detect
    from rocm_fp8.tune import make_sets, rotation_sets, tflops, time_calls
    from rocm_fp8.tune.search import measure_scaled_mm

    tc = detect()
    tb = TritonBackend()
    rows = []
    t0 = time.time()
    for m in MS:
        for n, k in SHAPES:
            if time.time() - t0 > budget_s:
                say(f"time budget ({budget_s}s) spent: N={n} K={k} M={m} and later cells not timed")
                rows.append({"n": n, "k": k, "m": m, "skipped": "budget"})
                continue
            set_bytes = m * k + n * k + 4 * (m + n) * (k // 128) + 2 * m * n
            sets = make_sets(m, n, k, torch.float8_e4m3fn, rotation_sets(set_bytes), seed=m + n + k)
            row = {"n": n, "k": k, "m": m}
            sm = measure_scaled_mm(sets, torch.bfloat16) or {"error": "not measured"}
            row["cublaslt"] = round(tflops(m, n, k, sm["us"]), 1) if "us" in sm else sm.get("error")
            cfg = tb.config_for(m, n, k, tc)
            row["triton_config"] = cfg.to_dict()
            r = time_calls([lambda s=s: blockscale_gemm(*s, torch.bfloat16, config=cfg, check=False) for s in sets])
            row["triton"] = round(tflops(m, n, k, r["us"]), 1)
            for name in names:
                gcfg = g.GluonConfig(**CONFIGS[name])
                try:
                    outs = [torch.empty((m, n), dtype=torch.bfloat16, device="cuda") for _ in sets]
                    calls = [lambda s=s, o=o: g.launch(*s, o, gcfg) for s, o in zip(sets, outs)]
                    r = time_calls(calls)
                    row[name] = round(tflops(m, n, k, r["us"]), 1)
                except Exception as exc:  # noqa: BLE001
                    torch.cuda.synchronize()
                    row[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
            # (only configs a gluon_ws2 table row can name: the others are experiments)
            best = max((row[x] for x in names if table_selectable(x) and isinstance(row.get(x), float)),
                       default=None)
            row["best_gluon"] = best
            if best and isinstance(row["cublaslt"], float):
                row["best/cublaslt"] = round(best / row["cublaslt"], 3)
            if best and isinstance(row["triton"], float):
                row["best/triton"] = round(best / row["triton"], 3)
            # a table re-tuned with these configs: per cell the faster of the Triton row and Gluon
            ours = max([x for x in (best, row["triton"]) if isinstance(x, float)], default=None)
            if ours and isinstance(row["cublaslt"], float):
                row["ours/cublaslt"] = round(ours / row["cublaslt"], 3)
            rows.append(row)
            if on_row:
                on_row(rows)  # results so far on disk, in case a time limit ends the run
            say(f"time N={n} K={k} M={m}: cuBLASLt {row['cublaslt']} triton {row['triton']} "
                + " ".join(f"[{x}] {row[x]}" for x in names) + f" -> best/cuBLASLt {row.get('best/cublaslt')}")
            del sets
    return rows


def geomean(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and x > 0]
    return round(math.exp(sum(math.log(x) for x in xs) / len(xs)), 3) if xs else None


def write_md(path, info, checks, timing, names):
    lines = [f"# Gluon sm90 kernels on {info['device']}", "",
             f"torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}, {info['date']}. "
             "TFLOPS = 2MNK / median time (CUDA-graph replays over inputs spanning 3x L2).", "",
             "## Correctness (float64 reference; gate: rel <= 1.25 x bf16 rounding floor, cosine > 0.9999)", "",
             f"{sum(r['ok'] for r in checks)} of {len(checks)} checks pass.", ""]
    bad = [r for r in checks if not r["ok"]]
    for r in bad[:40]:
        lines.append(f"- FAIL {r['config']} N={r['n']} K={r['k']} M={r['m']}: "
                     + (f"rel {r['rel']:.3e} floor {r['floor']:.3e} cos {r['cos']:.6f}" if "rel" in r else r["error"]))
    timed = [r for r in timing if "skipped" not in r]
    lines += ["", "## Timing (TFLOPS)", "", "| N,K | M | cuBLASLt | Triton (table) | " + " | ".join(names)
              + " | best/cuBLASLt | best/Triton | ours/cuBLASLt |", "|" + "---|" * (len(names) + 7)]
    for r in timed:
        lines.append(f"| {r['n']},{r['k']} | {r['m']} | {r['cublaslt']} | {r['triton']} | "
                     + " | ".join(str(r.get(x)) for x in names)
                     + f" | {r.get('best/cublaslt')} | {r.get('best/triton')} | {r.get('ours/cublaslt')} |")
    lines += ["", "## Geomeans over the timed cells", ""]
    for x in names:
        ratios = [r[x] / r["cublaslt"] for r in timed
                  if isinstance(r.get(x), float) and isinstance(r.get("cublaslt"), float)]
        base = [r[x] / r[BASE] for r in timed
                if isinstance(r.get(x), float) and isinstance(r.get(BASE), float)]
        lines.append(f"- {x}: /cuBLASLt geomean {geomean(ratios)}, min {round(min(ratios), 3) if ratios else None}"
                     + (f"; /{BASE} (v2) geomean {geomean(base)}" if x != BASE and base else ""))
    rowable = [x for x in names if table_selectable(x)]
    lines.append(f"- best gluon per cell (of the configs a table row can name: {rowable}): /cuBLASLt geomean "
                 f"{geomean([r.get('best/cublaslt') for r in timed])}, "
                 f"/Triton geomean {geomean([r.get('best/triton') for r in timed])}")
    below = [r for r in timed if isinstance(r.get("best/cublaslt"), float) and r["best/cublaslt"] < 0.9]
    lines.append(f"- cells where the best gluon config is below 0.9x cuBLASLt: {len(below)} of {len(timed)} "
                 "(issue 16 target: >= 1.0x geomean at M >= 1024, none below 0.9x)")
    ours = [r.get("ours/cublaslt") for r in timed]
    lines.append(f"- ours (per cell the faster of the Triton table and the Gluon configs, as a re-tuned table "
                 f"would choose) /cuBLASLt: geomean {geomean(ours)}, "
                 f"min {min([x for x in ours if isinstance(x, float)], default=None)}, below 0.9x: "
                 f"{sum(1 for x in ours if isinstance(x, float) and x < 0.9)} of {len(timed)}")
    lines.append(f"- Triton (table) /cuBLASLt geomean "
                 f"{geomean([r['triton'] / r['cublaslt'] for r in timed if isinstance(r.get('cublaslt'), float)])}")
    Path(path).write_text("\n".join(lines) + "\n")


SMOKE_TIMEOUT_S = 55  # for all configs together (they run in parallel)


def smoke(g, name, say) -> int:
    """Compile and run one config on a small ragged problem, check it against float64."""
    cfg = g.GluonConfig(**CONFIGS[name])
    ops = operands(300, 640, 1024, seed=1)
    out = torch.full((300, 640), float("nan"), dtype=torch.bfloat16, device="cuda")
    g.gluon_blockscale_gemm(*ops, torch.bfloat16, config=cfg, out=out)
    torch.cuda.synchronize()
    r = check(out, reference64(*ops))
    say(f"{name}: rel {r['rel']:.3e} floor {r['floor']:.3e} cos {r['cos']:.6f} finite {r['finite']}")
    return 0 if r["ok"] else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    p.add_argument("--all", action="store_true", help="every config of CONFIGS (default: DEFAULT)")
    p.add_argument("--configs", help="comma-separated names of CONFIGS to run")
    p.add_argument("--budget", type=float, default=120.0, help="seconds of timing before cells are skipped")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--smoke", help="compile, run and check one config (a child of the main run)")
    p.add_argument("--smoke-only", action="store_true",
                   help="only the per-config smoke runs; writes OUT/gluon-smoke.json")
    p.add_argument("--from-smoke", type=Path, help="take the usable configs from this gluon-smoke.json")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def say(msg):
        print(msg, flush=True)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from rocm_fp8.kernel_configs import slug
    from rocm_fp8.kernels.gluon_support import unavailable_reason

    import triton

    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    say(json.dumps(info))
    why = unavailable_reason()
    if why:
        say(f"unavailable: {why}")
        return 2
    from rocm_fp8.kernels import gluon_sm90 as g

    names = QUICK if args.quick else list(CONFIGS) if args.all else DEFAULT
    if args.configs:
        names = [x.strip() for x in args.configs.split(",")]
        unknown = [x for x in names if x not in CONFIGS]
        if unknown:
            p.error(f"--configs: expected names of {list(CONFIGS)}, got {unknown}")
    if args.smoke:
        return smoke(g, args.smoke, say)
    # each config first in a child process with a time limit: a kernel that deadlocks (a barrier
    # protocol bug) costs SMOKE_TIMEOUT_S and is dropped instead of hanging the whole run
    usable = []
    if args.from_smoke:  # the configs an earlier --smoke-only run passed
        usable = [x for x in json.loads(args.from_smoke.read_text())["usable"] if x in names]
        say(f"configs that passed the smoke run ({args.from_smoke}): {usable}")
    # (all children at once: the compiles run on the host's cores in parallel, the small GPU runs
    # share the device; a child past the limit is killed)
    t = time.time()
    procs = {} if args.from_smoke else {
        name: subprocess.Popen([sys.executable, __file__, "--smoke", name], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for name in names}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(1.0, SMOKE_TIMEOUT_S - (time.time() - t)))
            ok, detail = proc.returncode == 0, out[-1500:]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            ok, detail = False, f"no result within {SMOKE_TIMEOUT_S}s (hang?)"
        say(f"smoke {name}: {'ok' if ok else 'FAILED'} after {time.time() - t:.1f}s" + ("" if ok else f"\n{detail}"))
        if ok:
            usable.append(name)
    if args.smoke_only:
        (args.out / "gluon-smoke.json").write_text(json.dumps({"configs": names, "usable": usable}))
        return 0 if usable else 1
    checks = run_correctness(g, usable, say)
    passing = [x for x in usable if all(r["ok"] for r in checks if r["config"] == x)]
    say(f"configs passing every check: {passing}")
    stem = f"gluon-sm90-{slug(info['device'])}"

    def dump(timing):
        (args.out / f"{stem}.json").write_text(json.dumps(
            {"info": info, "configs": {x: CONFIGS[x] for x in names}, "usable": usable, "passing": passing,
             "checks": checks, "timing": timing}, indent=1))
        write_md(args.out / f"{stem}.md", info, checks, timing, passing)

    dump([])
    timing = [] if args.skip_timing else run_timing(g, passing, args.budget, say, on_row=dump)
    dump(timing)
    say(f"wrote {args.out / stem}.json/.md")
    print((args.out / f"{stem}.md").read_text())
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())
