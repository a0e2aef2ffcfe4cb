"""What the three aiter adapters share: the lazy import, the common checks and the tuned list.

``import aiter`` runs ``hipconfig`` and needs a ROCm install, so it happens only when an aiter
backend actually prepares a weight or runs. Whether aiter is installed is known from the toolchain
(detected from package metadata, without importing it).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional

from rocm_fp8.backends.base import OK, Problem, check_block_and_out_dtype, refuse
from rocm_fp8.errors import BackendUnavailableError

#: Where no aiter can be inspected (hypothetical toolchains for ``explain``): the (N, K) with a per-shape
#: Triton A8W8 block-scale config for gfx950 in the amd-aiter 0.1.7.post2.dev18 wheel (PyPI, 2025-11),
#: each from its file ``aiter/ops/triton/configs/gemm/MI350X-GEMM-A8W8_BLOCKSCALE-N=<N>-K=<K>.json``.
#: sglang's dispatch (PR #27111) names three more, (7168, 2304), (7168, 16384) and (16384, 1536), that
#: no released aiter ships a config for: they are left out. That wheel has no gfx942 (MI300X) per-shape
#: config. When aiter is installed, its own config files are read instead (:func:`installed_tuned_shapes`).
FALLBACK_TUNED_SOURCE = "amd-aiter 0.1.7.post2.dev18: aiter/ops/triton/configs/gemm/MI350X-GEMM-A8W8_BLOCKSCALE-N={n}-K={k}.json"
FALLBACK_TUNED_GFX950: dict[tuple[int, int], str] = {
    nk: FALLBACK_TUNED_SOURCE.format(n=nk[0], k=nk[1])
    for nk in ((1024, 8192), (2112, 7168), (3072, 1536), (32768, 8192), (4096, 7168), (4608, 7168),
               (512, 7168), (7168, 2048), (7168, 256), (8192, 1024), (8192, 32768))
}

#: aiter names its per-device Triton config files either by product or by arch
_CONFIG_PREFIXES = {"gfx942": ("MI300X", "gfx942"), "gfx950": ("MI350X", "gfx950")}
_CONFIG_RE = re.compile(r"^(?P<dev>[A-Za-z0-9]+)-GEMM-A8W8_BLOCKSCALE-N=(?P<n>\d+)-K=(?P<k>\d+)\.json$")

_import_lock = threading.Lock()
_aiter_module = None


def aiter_package_dir() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec("aiter")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=None)
def installed_tuned_shapes(arch: str) -> Optional[frozenset[tuple[int, int]]]:
    """(N, K) with a per-shape Triton config in the installed aiter, or None if it can't be read.

    Read from the config files (``ops/triton/configs/**``; older trees name them ``MI300X-``/``MI350X-``,
    newer ones ``gfx942-``/``gfx950-``), without importing aiter.
    """
    pkg = aiter_package_dir()
    if pkg is None:
        return None
    cfg_dir = pkg / "ops" / "triton" / "configs"
    if not cfg_dir.is_dir():
        return None
    prefixes = _CONFIG_PREFIXES.get(arch, ())
    shapes = set()
    for f in cfg_dir.rglob("*-GEMM-A8W8_BLOCKSCALE-N=*-K=*.json"):
        m = _CONFIG_RE.match(f.name)
        if m and m.group("dev") in prefixes:
            shapes.add((int(m.group("n")), int(m.group("k"))))
    return frozenset(shapes)


def tuned_shapes(toolchain) -> frozenset[tuple[int, int]]:
    """The installed aiter's tuned shapes for this arch, else (no aiter to read) the fallback list."""
    if toolchain.source != "hypothetical":
        found = installed_tuned_shapes(toolchain.arch)
        if found is not None:
            return found
    return frozenset(FALLBACK_TUNED_GFX950) if toolchain.arch == "gfx950" else frozenset()


def tuned_shape_source(toolchain, n: int, k: int) -> Optional[str]:
    """Where the claim "aiter has a tuned config for (N, K)" comes from, for ``explain``."""
    if (n, k) not in tuned_shapes(toolchain):
        return None
    if toolchain.source != "hypothetical" and installed_tuned_shapes(toolchain.arch) is not None:
        return f"the installed aiter's config files ({aiter_package_dir()})"
    return FALLBACK_TUNED_GFX950.get((n, k))


def check_here(name: str, toolchain) -> tuple[bool, str]:
    if toolchain.vendor != "amd":
        where = "no GPU" if toolchain.vendor == "cpu" else f"a {toolchain.arch} GPU"
        return refuse(f"{name}: needs an AMD Instinct GPU (gfx942/gfx950); this machine has {where}")
    if toolchain.arch not in ("gfx942", "gfx950"):
        return refuse(f"{name}: aiter's FP8 block-scale kernels target gfx942 and gfx950, not {toolchain.arch}")
    if not toolchain.aiter_installed:
        why = toolchain.aiter_reason or "aiter is not installed"
        return refuse(f"{name}: {why} (pip install amd-aiter, with ROCm present)")
    if toolchain.aiter_reason:  # installed, but known to be unusable here (e.g. no ROCm to import it with)
        return refuse(f"{name}: {toolchain.aiter_reason}")
    return OK


def check_problem(name: str, problem: Problem, toolchain, out_dtypes=("bfloat16", "float16"),
                  partial_k: bool = False) -> tuple[bool, str]:
    """The checks every aiter adapter shares. ``partial_k``: the kernel takes a K that is not a
    multiple of 128 (a partial last scale group); only aiter's Triton kernel does (see below)."""
    if problem.device_type != "cuda":
        return refuse(f"{name}: tensors are on {problem.device_type}, the kernel needs them on the GPU")
    ok, why = check_block_and_out_dtype(name, problem, tuple(out_dtypes))
    if not ok:
        return ok, why
    if problem.k % 128:
        if not partial_k:
            # aiter's CK block-scale GEMMs are instantiated with GemmSpecialization::Default (no K
            # padding) and KPerBlock >= 128: another K fails IsSupportedArgument ("This GEMM is not
            # supported!"), csrc/ck_gemm_a8w8_blockscale/include/gemm_a8w8_blockscale_common.cuh
            return refuse(f"{name}: K must be a multiple of 128 (aiter's CK kernels do not pad K), got K={problem.k}")
        if problem.k <= 64:
            # aiter's Triton wrapper derives the scale group as next_pow2(ceil(K / ceil(K/128))) and
            # asserts it is 128 (aiter/ops/triton/gemm/basic/gemm_a8w8_blockscale.py): K <= 64 breaks it
            return refuse(f"{name}: a K below 128 must exceed 64 for aiter's scale-group inference, got K={problem.k}")
    want = toolchain.fp8_flavour
    if problem.fp8_dtype != want:
        return refuse(f"{name}: {toolchain.arch} computes in float8_{want}, the weight is float8_{problem.fp8_dtype}"
                      + (" (convert with rocm_fp8.e4m3fn_to_e4m3fnuz)" if want == "e4m3fnuz" else ""))
    return OK


def import_aiter():
    """Import aiter once; its failure becomes an error that says what is missing."""
    global _aiter_module
    if _aiter_module is not None:
        return _aiter_module
    with _import_lock:
        if _aiter_module is None:
            try:
                import aiter  # noqa: PLC0415 - lazy on purpose
            except Exception as exc:  # noqa: BLE001 - aiter raises RuntimeError without ROCm
                raise BackendUnavailableError(
                    f"aiter could not be imported ({type(exc).__name__}: {exc}); it needs a ROCm install "
                    "(hipconfig on PATH or ROCM_PATH set)") from exc
            _aiter_module = aiter
    return _aiter_module


def hip_quant(x, fp8_dtype):
    """aiter's per-1x128 HIP quantization: (x_q [M, K], x_scale [M, K/128] row-major)."""
    aiter = import_aiter()
    quant = aiter.get_hip_quant(aiter.QuantType.per_1x128)
    return quant(x.contiguous(), quant_dtype=fp8_dtype)
