"""Every GPU backend over vLLM's and sglang's block-FP8 GEMM grids, held to their criterion.

The grids, recipe, reference and criterion are in tests/peer_contract.py (read from the peers'
own tests). Per case: ``auto`` and every backend available on this GPU, called explicitly, all
under ``torch.inference_mode()``. A backend may refuse a case only where the README's contract
table says it does; anything else (an error, a refusal, a fallback, a result off by more than
mean|out - ref| / mean|ref| >= 1e-3) fails. A backend that computes bfloat16 and casts once (the
decision's note says so) is judged against the reference rounded to bfloat16 first.

    ROCM_FP8_RESULTS_DIR=bench/results python3 -m pytest tests/gpu/test_peer_contract.py -q -k vllm
    ROCM_FP8_RESULTS_DIR=bench/results python3 -m pytest tests/gpu/test_peer_contract.py -q -k sglang

writes ``peer-contract-<grids>-M<ms>-<device>.json`` (every case, backend, error or refusal, with the device
name and torch/triton versions) into that directory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - the conftest skips these too
    pytest.skip("needs a CUDA or ROCm GPU; none is visible", allow_module_level=True)

import rocm_fp8  # noqa: E402
from rocm_fp8 import dispatch  # noqa: E402
from rocm_fp8.errors import BackendUnavailableError  # noqa: E402
from rocm_fp8.toolchain import detect  # noqa: E402
from peer_contract import (  # noqa: E402
    CRITERION,
    OUT_DTYPES,
    SGLANG_K,
    SGLANG_M,
    SGLANG_N,
    VLLM_K,
    VLLM_M,
    VLLM_N,
    expected,
    make_case,
    reference_per_tile,
    rel_mean_error,
)

NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
TC = detect()
FP8 = torch.float8_e4m3fnuz if TC.fp8_flavour == "e4m3fnuz" else torch.float8_e4m3fn

CASES = ([("vllm", m, n, k, torch.bfloat16) for m in VLLM_M for n in VLLM_N for k in VLLM_K]
         + [("sglang", m, n, k, od) for m in SGLANG_M for n in SGLANG_N for k in SGLANG_K for od in OUT_DTYPES])


def gpu_backends() -> list[str]:
    names = []
    for name in rocm_fp8.backend_names():
        if name == "reference":
            continue
        ok, _ = rocm_fp8.get_backend(name).available(TC)
        if ok:
            names.append(name)
    return names


def documented_refusal(backend: str, n: int, k: int) -> bool:
    """Where the README's table says an explicit backend refuses (auto then moves on)."""
    if backend in ("aiter-ck", "aiter-bpreshuffle") and k % 128:
        return True   # aiter's CK kernels do not pad K
    if backend == "aiter-bpreshuffle" and (n % 16 or k % 32):
        return True   # the (16, 16) weight shuffle
    if backend == "aiter-triton" and k % 128 and k <= 64:
        return True
    return False


_ROWS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def results_file():
    yield
    out = os.environ.get("ROCM_FP8_RESULTS_DIR")
    if not out or not _ROWS:
        return
    import triton

    device = torch.cuda.get_device_name()
    # one file per selection (-k vllm, -k "sglang and M512-", ...): named by its grids and M values
    grids = "-".join(sorted({r["grid"] for r in _ROWS}))
    ms = ".".join(str(m) for m in sorted({r["m"] for r in _ROWS}))
    dev = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    path = Path(out) / f"peer-contract-{grids}-M{ms}-{dev}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    errs = [r["error"] for r in _ROWS if r.get("error") is not None]
    path.write_text(json.dumps({
        "what": "w8a8_block_fp8_linear over vLLM's and sglang's block-FP8 GEMM grids (tests/gpu/test_peer_contract.py)",
        "criterion": f"mean|out-ref|/mean|ref| < {CRITERION}",
        "device": device, "torch": torch.__version__, "triton": triton.__version__,
        "hip": torch.version.hip, "cuda": torch.version.cuda, "fp8": str(FP8),
        "summary": {"rows": len(_ROWS), "ok": sum(r["status"] == "ok" for r in _ROWS),
                    "refused_as_documented": sum(r["status"] == "refused" for r in _ROWS),
                    "failed": sum(r["status"] == "failed" for r in _ROWS),
                    "worst_error": max(errs) if errs else None},
        "rows": _ROWS,
    }, indent=1) + "\n")


@pytest.mark.parametrize("grid,m,n,k,out_dtype", CASES,
                         ids=[f"{g}-M{m}-N{n}-K{k}-{NAMES[o]}" for g, m, n, k, o in CASES])
def test_peer_grid_case(grid, m, n, k, out_dtype):
    # sgl-kernel's test hands column-major activation scales; take them for odd M on sglang's grid
    mcontig = grid == "sglang" and m % 2 == 1
    a, b, a_s, b_s = make_case(m, n, k, FP8, "cuda", seed=m * 7919 + n * 31 + k, mcontig_scale=mcontig)
    ref32 = reference_per_tile(a, b, a_s, b_s)
    failures = []
    for backend in ["auto"] + gpu_backends():
        row = {"grid": grid, "m": m, "n": n, "k": k, "out": NAMES[out_dtype], "backend": backend,
               "mcontig_scale": mcontig}
        try:
            with torch.inference_mode():
                y = rocm_fp8.w8a8_block_fp8_linear(a, b, b_s, input_scale=a_s, out_dtype=out_dtype, backend=backend)
            torch.cuda.synchronize()
        except BackendUnavailableError as exc:
            documented = backend != "auto" and documented_refusal(backend, n, k)
            row.update(status="refused" if documented else "failed", reason=str(exc)[:300])
            _ROWS.append(row)
            if not documented:
                failures.append(f"{backend}: refused ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - every error is a failure, recorded with its message
            row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
            _ROWS.append(row)
            failures.append(f"{backend}: {type(exc).__name__}: {exc}")
            continue
        # the decision that actually ran: the weight's bound call for this bucket, dtype and request
        call = dispatch._plans[id(b)].calls[(dispatch.bucket(m), out_dtype, False, dispatch.resolve_request(backend))]
        d = call.decision
        computes = dispatch._NAME_DTYPES[dispatch.compute_dtype(d)]
        fell_back = [note for note in d.notes if note.startswith("fell back")]
        try:
            err = rel_mean_error(y, expected(ref32, out_dtype, computes, truncating=False))
        except AssertionError as exc:  # NaN/Inf or a wrong shape
            err, bad = None, str(exc)
        else:
            bad = None if err < CRITERION else f"mean relative error {err:.3e}"
        if fell_back:
            bad = (bad + "; " if bad else "") + "; ".join(fell_back)
        row.update(status="failed" if bad else "ok", ran=d.backend, computes=NAMES[computes], error=err,
                   reason=bad)
        _ROWS.append(row)
        if bad:
            failures.append(f"{backend} (ran {d.backend}, computes {NAMES[computes]}): {bad}")
    assert not failures, "\n".join(failures)
