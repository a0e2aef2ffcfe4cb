#!/usr/bin/env bash
# One device call: the promotion experiment (bench/experiment_promotion.py), one process per
# candidate, then a table of TFLOPS and ratio to cuBLASLt per cell.
# Usage (device machine, repo root): OUT=/some/dir bash bench/promotion_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
: > "$OUT/promotion.jsonl"
python3 bench/experiment_promotion.py --list | while read -r name; do
    echo "== $name"
    timeout ${CANDIDATE_TIMEOUT:-240} python3 bench/experiment_promotion.py --candidate "$name" \
        --out "$OUT/promotion.jsonl" >> "$OUT/promotion-log.txt" 2>&1
    echo "   rc=$? $(grep -c "\"candidate\": \"$name\"" "$OUT/promotion.jsonl") rows"
    grep "\"compiled\"" "$OUT/promotion-log.txt" | grep -F "\"$name\"" | tail -n 1
done
python3 - "$OUT/promotion.jsonl" <<'PY'
import json, sys, math, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {(r["n"], r["k"], r["m"]): r.get("tflops") for r in rows if r["candidate"] == "cublaslt"}
by = collections.defaultdict(dict)
for r in rows:
    by[r["candidate"]][(r["n"], r["k"], r["m"])] = r
for name, cells in by.items():
    ratios = [c["tflops"] / base[key] for key, c in cells.items() if c.get("tflops") and base.get(key)]
    errs = [c["rel_err"] for c in cells.values() if c.get("rel_err") is not None]
    g = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan")
    print(f"{name:36s} cells {len(ratios):2d}  geomean/cuBLASLt {g:.3f}  min {min(ratios) if ratios else float('nan'):.3f}"
          f"  max rel_err {max(errs) if errs else float('nan'):.2e}")
print()
keys = sorted(base)
print("cell".ljust(22) + "".join(n[:14].rjust(15) for n in by))
for key in keys:
    line = f"{key}".ljust(22)
    for name in by:
        c = by[name].get(key, {})
        line += (f"{c['tflops']:.0f}" if c.get("tflops") else ("ERR" if c.get("error") else "-")).rjust(15)
    print(line)
errs = sorted({c["error"][:160] for cells in by.values() for c in cells.values() if c.get("error")})
print("\nerrors:", *errs, sep="\n  ")
PY
