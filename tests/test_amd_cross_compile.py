"""Every kernel configuration the AMD path can launch, compiled for gfx942 and gfx950 on the CPU.

No AMD GPU is needed: Triton's HIP backend compiles and links AMDGCN in-process
(:mod:`rocm_fp8.kernels.amd_compile`), with the arguments specialized exactly as a launch would.

Two Triton generations:

- the one in this venv (CI installs the ``triton`` extra: 3.9.0), compiled in-process;
- Triton 3.6.0 in ``.venv-triton36`` (``ci/setup-amd-cross.sh``; or the interpreter named by
  ``ROCM_FP8_TRITON36_PYTHON``), through ``python -m rocm_fp8.kernels.amd_compile``: the generation torch
  2.10.0 pins (``triton==3.6.0`` in its PyPI metadata), i.e. the ROCm 7.2 image base
  ``rocm/pytorch:rocm7.2.4_..._pytorch_release_2.10.0``, whose ROCm torch carries pytorch-triton-rocm
  of that generation. (The ROCm 7.0 base's torch 2.8.0 pins Triton 3.4, which is not compiled here.)

Kernels and configurations:

- ours, e4m3fnuz on gfx942 and e4m3fn on gfx950: the shipped tables' defaults and every tuned row,
  what :meth:`TritonBackend.config_for` picks for shapes without a row at every M bucket (split-K
  included), and ``default_config`` as the launcher uses it when given no config; for N and K that are
  and are not multiples of 16/128 (the specializations that change the code);
- aiter's Triton ``gemm_a8w8_blockscale`` from the pinned ``amd-aiter==0.1.7.post2.dev18`` wheel
  (files installed by ``ci/setup-amd-cross.sh``; ``aiter/__init__`` never runs), with every config it
  ships for the arch, at an M each config serves.

Each compiled kernel must: target the arch; use FP8 MFMA and no f16/bf16 MFMA; spill no VGPRs and use
no scratch; keep LDS within the arch's limit (64 KiB gfx942, 160 KiB gfx950); reach an occupancy of
at least the config's ``waves_per_eu``. The wrong FP8 flavour compiling to f16 MFMA with spills is
checked too: it is why the dispatcher refuses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from rocm_fp8 import kernel_configs  # noqa: E402
from rocm_fp8.backends.base import Problem  # noqa: E402
from rocm_fp8.backends.triton import TritonBackend  # noqa: E402
from rocm_fp8.kernels import amd_compile  # noqa: E402
from rocm_fp8.kernels.amd_compile import ResourceReport  # noqa: E402
from rocm_fp8.kernels.arch_limits import ARCH_LIMITS, fits  # noqa: E402
from rocm_fp8.kernels.triton_blockscale import KernelConfig, default_config  # noqa: E402
from rocm_fp8.toolchain import Toolchain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AITER_PIN = "0.1.7.post2.dev18"
ARCHS = {"gfx942": "e4m3fnuz", "gfx950": "e4m3fn"}
#: M buckets the dispatcher distinguishes, up to the largest the tables tune
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
#: (N, K): the code changes only with N % 16, K % 16 and K % 128; model shapes and the other cases
SHAPES = ((7168, 2304), (2112, 7168), (512, 7168), (32768, 8192), (7168, 256), (4096, 1552), (7000, 2048))

pytestmark = pytest.mark.slow


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(what: str, how: str):
    if _in_ci():
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is missing: {how}")


def aiter_dir() -> Path:
    env = os.environ.get("ROCM_FP8_CROSS_AITER_DIR")
    path = Path(env) if env else ROOT / ".cache" / "amd-cross" / f"aiter-{AITER_PIN}" / "aiter"
    if not (path / "ops" / "triton").is_dir():
        _need(f"the amd-aiter=={AITER_PIN} files ({path})", "run `bash ci/setup-amd-cross.sh`")
    return path


def triton36_python() -> str:
    py = os.environ.get("ROCM_FP8_TRITON36_PYTHON") or str(ROOT / ".venv-triton36" / "bin" / "python")
    if not Path(py).is_file():
        _need(f"a Python with Triton 3.6 ({py})", "run `bash ci/setup-amd-cross.sh`")
    return py


# ------------------------------------------------------------------------------------------------
# What can be launched
# ------------------------------------------------------------------------------------------------


def _toolchain(arch: str) -> Toolchain:
    return Toolchain.hypothetical(arch=arch, aiter=False)


def launchable_jobs(arch: str) -> list[dict]:
    """One job per distinct (config, specialization) our AMD path can launch on ``arch``."""
    jobs: dict[str, dict] = {}

    def add(cfg: KernelConfig, n: int, k: int, origin: str) -> None:
        spec = (n % 16 == 0, k % 128 == 0)
        # SPLIT_K enters only the tile and K-range arithmetic: 2 stands for every split > 1
        same_code = cfg.with_(tma=False, split_k=min(cfg.split_k, 2))
        key = json.dumps([same_code.to_dict(), spec], sort_keys=True)
        if key not in jobs:
            jobs[key] = {"kernel": "rocm_fp8", "arch": arch, "fp8": ARCHS[arch], "m": 1, "n": n, "k": k,
                         "config": cfg.with_(tma=False).to_dict(), "origin": origin}

    table = kernel_configs.ConfigTable.load(kernel_configs.CONFIG_DIR / f"{arch}.json")
    if table.default:
        add(KernelConfig.from_dict(table.default).validate(), 7168, 2304, f"{arch}.json default")
    for (n, k), rows in table.shapes.items():
        for row in rows:
            add(KernelConfig.from_dict(row.config).validate(), n, k, f"{arch}.json N={n} K={k} m={row.m}")
    tc = _toolchain(arch)
    backend = TritonBackend()
    for n, k in SHAPES:
        for m in MS:
            add(backend.config_for(m, n, k, tc), n, k, f"config_for M={m} N={n} K={k}")
            add(default_config(m, n, k, arch=arch), n, k, f"default_config M={m} N={n} K={k}")
    return list(jobs.values())


def _aiter_m(entry: str) -> int:
    """An M the config entry serves (aiter picks entries by M)."""
    key = entry.rsplit(":", 1)[1]
    return {"small": 16, "medium_M32": 32, "medium_M64": 64, "medium_M128": 128, "large": 256}.get(key, 4096)


def aiter_jobs(arch: str, root: Path) -> list[dict]:
    jobs: dict[str, dict] = {}
    for entry, n, k, cfg in amd_compile.aiter_configs(root, arch):
        key = json.dumps(cfg, sort_keys=True)
        if key not in jobs:
            jobs[key] = {"kernel": "aiter", "arch": arch, "m": _aiter_m(entry), "n": n or 7168, "k": k or 2304,
                         "config": cfg, "aiter_dir": str(root), "origin": entry}
    return list(jobs.values())


# ------------------------------------------------------------------------------------------------
# Assertions
# ------------------------------------------------------------------------------------------------

#: aiter's own kernel, not ours: configs known to spill under a Triton generation (arch, triton
#: major.minor, origin). Kept exact so a fixed one fails here and gets removed.
KNOWN_AITER_PROBLEMS = {
    ("gfx942", "3.9", "MI300X-GEMM-A8W8_BLOCKSCALE.json:any"),
    ("gfx950", "3.9", "MI350X-GEMM-A8W8_BLOCKSCALE-N=3072-K=1536.json:medium_M128"),
}


def _problems(results: list[dict], triton: str) -> tuple[list[str], set]:
    bad, known_seen = [], set()
    mm = ".".join(triton.split(".")[:2])
    for res in results:
        job = res["job"]
        if "error" in res:
            bad.append(f"{job['origin']} {job['config']}: does not compile: {res['error']}")
            continue
        rep = ResourceReport.from_dict(res["report"])
        probs = rep.problems()
        key = (job["arch"], mm, job["origin"])
        if job["kernel"] == "aiter" and key in KNOWN_AITER_PROBLEMS and probs:
            known_seen.add(key)
            continue
        if probs:
            bad.append(f"{job['origin']} {job['config']}: {'; '.join(probs)} [{rep.summary()}]")
    return bad, known_seen


def _check(results: list[dict], triton: str, kernels: set[str]) -> None:
    assert results, "nothing was compiled"
    bad, known_seen = _problems(results, triton)
    assert not bad, f"{len(bad)} of {len(results)} configurations cannot launch well (triton {triton}):\n" + \
        "\n".join(bad)
    mm = ".".join(triton.split(".")[:2])
    archs = {r["job"]["arch"] for r in results}
    expected = {k for k in KNOWN_AITER_PROBLEMS if k[1] == mm and k[0] in archs} if "aiter" in kernels else set()
    assert known_seen == expected, (f"known aiter problems that no longer occur (remove them from "
                                    f"KNOWN_AITER_PROBLEMS): {sorted(expected - known_seen)}")


def _run_in_process(jobs: list[dict]) -> list[dict]:
    return [amd_compile.run_job({k: v for k, v in j.items()}) for j in jobs]


def _run_with(python: str, jobs: list[dict]) -> tuple[str, list[dict]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([python, "-m", "rocm_fp8.kernels.amd_compile"], input=json.dumps(jobs),
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, f"{python} -m rocm_fp8.kernels.amd_compile failed:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout)
    return out["triton"], out["results"]


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


def test_launchable_configs_cover_table_defaults_and_split_k():
    """The job list is what the issue asks for: table defaults, default_config variants with split-K."""
    for arch in ARCHS:
        jobs = launchable_jobs(arch)
        origins = " ".join(j["origin"] for j in jobs)
        assert f"{arch}.json default" in origins
        assert any(j["config"].get("split_k", 1) > 1 for j in jobs), "no split-K configuration covered"
        assert any(j["k"] % 128 for j in jobs) and any(j["n"] % 16 for j in jobs)
        for j in jobs:  # the cheap estimate agrees that what we launch fits
            assert fits(j["config"], arch)[0], (j["origin"], fits(j["config"], arch)[1])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_our_kernel_compiles_clean_with_this_triton(arch):
    import triton

    jobs = launchable_jobs(arch)
    _check(_run_in_process(jobs), triton.__version__, {"rocm_fp8"})


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_aiter_kernel_compiles_clean_with_this_triton(arch):
    import triton

    root = aiter_dir()
    jobs = aiter_jobs(arch, root)
    assert jobs, f"the aiter {AITER_PIN} files have no A8W8 block-scale config for {arch}"
    _check(_run_in_process(jobs), triton.__version__, {"aiter"})


def test_everything_compiles_clean_with_triton_36():
    py = triton36_python()
    root = aiter_dir()
    jobs = [j for arch in sorted(ARCHS) for j in launchable_jobs(arch) + aiter_jobs(arch, root)]
    version, results = _run_with(py, jobs)
    assert version.startswith("3.6"), f"{py} has triton {version}, expected 3.6.x"
    _check(results, version, {"rocm_fp8", "aiter"})


def test_aiter_ships_per_shape_configs_for_gfx950_only():
    root = aiter_dir()
    per_shape = {arch: [p for p in amd_compile.aiter_config_files(root, arch) if "-N=" in p.name] for arch in ARCHS}
    assert len(per_shape["gfx950"]) == 11 and per_shape["gfx942"] == []


@pytest.mark.parametrize("arch,wrong", [("gfx942", "e4m3fn"), ("gfx950", "e4m3fnuz")])
def test_wrong_fp8_flavour_becomes_f16_mfma_with_spills_and_is_refused(arch, wrong):
    """The proof behind the dispatcher's refusal: the other flavour is not FP8 arithmetic on this arch."""
    table = kernel_configs.ConfigTable.load(kernel_configs.CONFIG_DIR / f"{arch}.json")
    rep = amd_compile.compile_blockscale(table.default, arch, 7168, 2304, fp8=wrong)
    assert not rep.fp8_mfma and rep.half_mfma, rep.summary()
    assert rep.vgpr_spills > 0 and rep.scratch_bytes > 0, rep.summary()
    right = amd_compile.compile_blockscale(table.default, arch, 7168, 2304, fp8=ARCHS[arch])
    assert right.problems() == [], right.summary()

    problem = Problem(m=64, n=7168, k=2304, fp8_dtype=wrong, out_dtype="bfloat16", device_type="cuda")
    ok, why = TritonBackend().supports(problem, _toolchain(arch))
    assert not ok and arch in why and wrong[:6] in why, why
    ok, why = TritonBackend().supports(problem.__class__(**{**problem.__dict__, "fp8_dtype": ARCHS[arch]}),
                                       _toolchain(arch))
    assert ok, why


def test_issue_configs_that_do_not_fit_gfx942_are_refused_by_estimate_and_compile():
    """Measured over-limit configs: 4-stage 64x128/128x128 need 72/96 KiB of LDS with Triton 3.6; the
    estimate refuses them for gfx942 (64 KiB), accepts them for gfx950 (160 KiB)."""
    for bm, bn, warps in ((64, 128, 4), (128, 128, 8)):
        cfg = KernelConfig(block_m=bm, block_n=bn, num_warps=warps, num_stages=4)
        ok, why = fits(cfg, "gfx942")
        assert not ok and "64 KiB" in why, why
        assert fits(cfg, "gfx950")[0]
    assert ARCH_LIMITS["gfx942"].lds_bytes == 64 * 1024 and ARCH_LIMITS["gfx950"].lds_bytes == 160 * 1024
    # an accumulator too large for the registers (spills on both archs with either Triton)
    big = KernelConfig(block_m=256, block_n=256, num_warps=8, num_stages=2)
    assert not fits(big, "gfx950")[0]
    rep = amd_compile.compile_blockscale(big, "gfx950", 7168, 2304)
    assert rep.vgpr_spills > 0, rep.summary()


def test_bad_arch_and_aiter_dir_are_named():
    with pytest.raises(ValueError, match="arch: expected one of gfx942, gfx950, got 'gfx90a'"):
        amd_compile.compile_blockscale(KernelConfig(), "gfx90a", 128, 128)
    with pytest.raises(FileNotFoundError, match="aiter_dir"):
        amd_compile.load_aiter_kernels(Path("/nonexistent"))


def test_tuner_budgets_lds_per_arch_and_prunes_by_compile(capsys):
    from rocm_fp8.kernels.arch_limits import estimate_lds_bytes
    from rocm_fp8.tune.candidates import candidates, launchable

    for m in (1, 64, 256, 4096):
        h100 = candidates(m, hopper=True)
        assert h100 == candidates(m, hopper=True, arch="sm90")
        for arch in ARCHS:
            amd = candidates(m, hopper=False, arch=arch)
            assert amd and all(estimate_lds_bytes(c, arch) <= ARCH_LIMITS[arch].lds_bytes for c in amd)
    # gfx942's 64 KiB drops the 4-stage 64x128 and 128x128 tiles that gfx950's 160 KiB keeps
    wide = dict(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=4, persistent=False, tma=False)
    assert wide in candidates(4096, hopper=False, arch="gfx950")
    assert wide not in candidates(4096, hopper=False, arch="gfx942")
    # 256x256 at 8 warps and 2 stages fits gfx950's LDS but spills: the cross-compile drops it before timing
    spilling = dict(block_m=256, block_n=256, group_m=8, num_warps=8, num_stages=2)
    fine = dict(block_m=64, block_n=64, group_m=8, num_warps=4, num_stages=4)
    assert launchable([spilling, fine], "gfx950", 7168, 2304) == [fine]
    assert "VGPRs spilled" in capsys.readouterr().out


def test_tuned_shape_list_is_read_from_the_installed_aiter(monkeypatch):
    """With aiter importable (the pinned wheel's files), the tuned list comes from its config files and
    equals the fallback list, which names its source and none of the shapes no aiter ships."""
    from rocm_fp8.backends import _aiter

    root = aiter_dir()
    monkeypatch.syspath_prepend(str(root.parent))
    _aiter.installed_tuned_shapes.cache_clear()
    try:
        assert _aiter.aiter_package_dir() == root
        assert _aiter.installed_tuned_shapes("gfx950") == frozenset(_aiter.FALLBACK_TUNED_GFX950)
        assert _aiter.installed_tuned_shapes("gfx942") == frozenset()
    finally:
        _aiter.installed_tuned_shapes.cache_clear()
    for gone in ((7168, 2304), (7168, 16384), (16384, 1536)):
        assert gone not in _aiter.FALLBACK_TUNED_GFX950
    for (n, k), source in _aiter.FALLBACK_TUNED_GFX950.items():
        assert (root / "ops/triton/configs/gemm" / source.rsplit("/", 1)[1]).is_file(), source
    assert "aiter" not in sys.modules  # read without importing it


def test_doctor_reports_the_kernel_compiling_for_the_images_arch():
    """`rocm-fp8 doctor`'s check, over a real compile with this Triton (as it runs in an image)."""
    import triton

    from rocm_fp8.cli.doctor import FAIL, OK, WARN, Facts, _kernel_check, gather_kernel_facts

    for arch in ARCHS:
        facts = Facts()
        gather_kernel_facts(facts, arch)
        check = _kernel_check(facts)
        assert check.status == OK, check
        assert f"compiles for {arch} with Triton {triton.__version__}" in check.detail
        assert "0 spilled" in check.detail and "LDS" in check.detail and "occupancy" in check.detail
        assert len(facts.kernel_reports) == 2  # the table default and the small-M split-K default
    none = Facts()
    gather_kernel_facts(none, "sm90")
    assert none.kernel_arch is None  # nothing to cross-compile for a non-AMD arch
    bad = amd_compile.compile_blockscale(KernelConfig(block_m=128, block_n=128, num_warps=8, num_stages=2),
                                         "gfx942", 7168, 2304, fp8="e4m3fn")
    check = _kernel_check(Facts(kernel_arch="gfx942", kernel_reports=[bad.to_dict()]))
    assert check.status == FAIL and "f16/bf16 MFMA" in check.detail, check
    check = _kernel_check(Facts(kernel_arch="gfx950", kernel_error="ModuleNotFoundError: No module named 'triton'"))
    assert check.status == WARN and "pytorch-triton-rocm" in check.fix
