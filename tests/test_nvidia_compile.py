"""Our kernel compiled for NVIDIA sm90 on the CPU: the one-launch split-K's memory ordering in the PTX.

No GPU is needed: Triton's CUDA backend compiles to PTX (and assembles with its bundled ptxas) from
the arguments as a launch specializes them. Checked for split-K configs (plain grid, persistent,
TMA loads) with this venv's Triton and, where it is set up (``ci/setup-amd-cross.sh``; or the
interpreter named by ``ROCM_FP8_TRITON36_PYTHON``), Triton 3.6 (what torch 2.11 ships with):

- the partial store and the counter increment are separated by a CTA barrier, and the increment
  is ``atom.global.gpu.acq_rel.add`` (release of the CTA's partial, acquire of the others');
- the last split reads the partials with ``ld.global.cg`` (L2, since L1 is not coherent across
  SMs) and resets its counter with an atomic exchange;
- split_k = 1 has none of it.

Run as a script (``python tests/test_nvidia_compile.py``) it prints the same facts as JSON, which is
how the Triton 3.6 interpreter is driven.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (name, constexprs, TMA) - the shape is (N, K) = (2048, 3072), M = 1 (not specialized)
CASES = [
    ("16x64-split8", dict(BLOCK_M=16, BLOCK_N=64, SPLIT_K=8, PERSISTENT=False, FRAME=False), False),
    ("64x128-split2-persistent-frame", dict(BLOCK_M=64, BLOCK_N=128, SPLIT_K=2, PERSISTENT=True, FRAME=True), False),
    ("64x64-split4-tma", dict(BLOCK_M=64, BLOCK_N=64, SPLIT_K=4, PERSISTENT=False, FRAME=False), True),
    ("64x128-split1-tma", dict(BLOCK_M=64, BLOCK_N=128, SPLIT_K=1, PERSISTENT=False, FRAME=False), True),
]


def ptx_facts(name: str, constexprs: dict, tma: bool) -> dict:
    """Compile ``blockscale_gemm_kernel`` for sm90 as a launch would; what the split-K epilogue became."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend
    from triton.runtime.jit import create_function_from_signature
    from triton.tools.tensor_descriptor import TensorDescriptor

    from rocm_fp8.kernels.blockscale_jit import blockscale_gemm_kernel as fn

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    n, k, rows = 2048, 3072, 256
    fp8 = torch.float8_e4m3fn
    x = torch.empty(rows * k, dtype=torch.uint8).view(fp8).view(rows, k)
    w = torch.empty(n * k, dtype=torch.uint8).view(fp8).view(n, k)
    out = torch.empty(64, dtype=torch.bfloat16)
    xs, wsc, part = torch.empty(64), torch.empty(64), torch.empty(64)
    cnt = torch.zeros(64, dtype=torch.int32)
    a, b = x, w
    if tma:
        a = TensorDescriptor(x, [rows, k], [k, 1], [constexprs["BLOCK_M"], 128])
        b = TensorDescriptor(w, [n, k], [k, 1], [constexprs["BLOCK_N"], 128])
    split = constexprs["SPLIT_K"] > 1
    kb = k // 128
    args = (a, b, out, xs, wsc, part if split else out, cnt if split else out, 1, n, k,
            k, 1, k, 1, n, 1, kb, 1, kb, 1, 1)
    kwargs = dict(constexprs, BLOCK_K=128, GROUP_M=1, EVEN_K=True, USE_TMA=tma, SCALE_BLOCK_N=128,
                  num_warps=4, num_stages=4, debug=False)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, consts, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    compiled = compile(ASTSource(fn, signature, consts, attrs), target=target, options=options.__dict__)
    lines = [ln.strip() for ln in compiled.asm["ptx"].splitlines()]
    add = [i for i, ln in enumerate(lines) if re.search(r"\batom\.global\.gpu\.acq_rel\.add\b", ln)]
    fenced = False
    if add:
        stores = [i for i in range(add[0]) if "st.global" in lines[i]]
        if stores:  # a CTA barrier after the last global store (the partial) and before the increment
            fenced = any(re.search(r"\b(bar|barrier)\.sync\b", ln) for ln in lines[stores[-1]:add[0]])
    return {
        "name": name, "triton": triton.__version__, "sass": bool(compiled.asm.get("cubin")),
        "acq_rel_adds": len(add),
        "barrier_between_store_and_add": fenced,
        "cg_loads": sum("ld.global.cg" in ln for ln in lines),
        "reset_exchanges": sum(bool(re.search(r"\batom\.global\.gpu\.relaxed\.exch\b", ln)) for ln in lines),
        "any_atomic": any(re.search(r"\b(atom|red)\.global\b", ln) for ln in lines),
    }


def _check(facts: dict, split: bool) -> None:
    what = f"{facts['name']} (triton {facts['triton']})"
    assert facts["sass"], f"{what}: no cubin (ptxas did not run)"
    if split:
        assert facts["acq_rel_adds"] == 1, f"{what}: expected one gpu-scope acq_rel counter increment"
        assert facts["barrier_between_store_and_add"], \
            f"{what}: no CTA barrier between the partial store and the increment"
        assert facts["cg_loads"] > 0, f"{what}: the partials are not read with ld.global.cg"
        assert facts["reset_exchanges"] == 1, f"{what}: the counter is not reset"
    else:
        assert not facts["any_atomic"] and facts["cg_loads"] == 0, f"{what}: split_k=1 should have no reduction"


@pytest.mark.slow
@pytest.mark.parametrize("name,constexprs,tma", CASES, ids=[c[0] for c in CASES])
def test_split_k_epilogue_orders_memory_on_sm90(name, constexprs, tma):
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("compiles; the interpreter replaces the language")
    _check(ptx_facts(name, constexprs, tma), constexprs["SPLIT_K"] > 1)


@pytest.mark.slow
def test_split_k_epilogue_orders_memory_on_sm90_with_triton_36():
    py = os.environ.get("ROCM_FP8_TRITON36_PYTHON") or str(ROOT / ".venv-triton36" / "bin" / "python")
    if not Path(py).is_file():
        pytest.skip(f"a Python with Triton 3.6 ({py}) is missing: run `bash ci/setup-amd-cross.sh`")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([py, __file__], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{py} {__file__} failed:\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {r["triton"][:3] for r in results} == {"3.6"}, results
    for (_, constexprs, _), facts in zip(CASES, results):
        _check(facts, constexprs["SPLIT_K"] > 1)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps([ptx_facts(*case) for case in CASES]))
