"""Compile Triton GEMM kernels for AMD GPUs on any machine, and read back what they use.

Triton's HIP backend needs no GPU and no ROCm to compile: the pip ``triton`` wheel lowers to AMDGCN and
links the code object in-process. This module compiles

- this repository's kernel (:mod:`rocm_fp8.kernels.triton_blockscale`) for a :class:`KernelConfig`, and
- aiter's Triton block-scale kernel, loaded from an aiter package directory *without* running
  ``aiter/__init__`` (which calls ``hipconfig`` and fails where ROCm is absent),

for ``gfx942`` or ``gfx950``, and returns a :class:`ResourceReport`: the code object's target, the MFMA
instructions used, VGPRs, spills, scratch, LDS and occupancy. :meth:`ResourceReport.problems` says, in
words, why a compiled kernel could not launch or would run badly (empty when it is fine).

Each compile specializes its arguments exactly as a launch would: the arguments are bound by Triton's own
binder for the HIP backend (16-byte divisibility of pointers and integers, integers equal to 1 folded in,
``tt.pointer_range`` 32 for tensors under 2 GiB so buffer loads are used), so LDS and registers match what
the GPU would get. Triton checks LDS only at launch (``OutOfResources``); this is the way to know earlier.

Command line (used by the tests to run the same compiles under another Triton)::

    python -m rocm_fp8.kernels.amd_compile < jobs.json > reports.json

where each job is ``{"kernel": "rocm_fp8"|"aiter", "arch": ..., "m": ..., "n": ..., "k": ...,
"config": {...}, "fp8": "e4m3fn"|"e4m3fnuz"?, "aiter_dir": path?}``.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from rocm_fp8.backends._aiter import aiter_package_dir
from rocm_fp8.kernels.arch_limits import AMD_ARCHS, describe, fits, limits_for

#: MFMA instruction families that take FP8 operands, per arch
FP8_MFMA = {
    "gfx942": re.compile(r"^v_mfma_f32_\d+x\d+x\d+_fp8_fp8$"),
    "gfx950": re.compile(r"^v_mfma_f32_\d+x\d+x\d+_f8f6f4$"),
}
_MFMA_RE = re.compile(r"\b(v_mfma_[a-z0-9_]+)")
_HALF_MFMA_RE = re.compile(r"_(f16|bf16|bf16_1k)$")


@dataclass(frozen=True)
class ResourceReport:
    """What one compiled kernel uses on an AMD GPU (read from the AMDGCN text and the metadata)."""

    kernel: str
    arch: str
    triton: str
    config: dict[str, Any]
    target: str                 # the code object's target, e.g. "amdgcn-amd-amdhsa--gfx942"
    lds_bytes: int              # shared memory per workgroup (Triton's metadata.shared)
    vgprs: int                  # .vgpr_count (arch VGPRs + AGPRs)
    vgpr_spills: int
    sgpr_spills: int            # spilled to VGPR lanes: cheap, reported only
    scratch_bytes: int          # .private_segment_fixed_size: per-lane memory (spills, stack)
    occupancy: int              # waves per SIMD the compiler reports
    mfma: tuple[str, ...] = field(default_factory=tuple)
    waves_per_eu: Optional[int] = None

    @property
    def fp8_mfma(self) -> tuple[str, ...]:
        pat = FP8_MFMA.get(self.arch)
        return tuple(i for i in self.mfma if pat and pat.match(i))

    @property
    def half_mfma(self) -> tuple[str, ...]:
        return tuple(i for i in self.mfma if _HALF_MFMA_RE.search(i))

    def problems(self) -> list[str]:
        """Why this kernel could not launch, or would run without FP8 MFMA or from scratch memory."""
        out = []
        lim = limits_for(self.arch)
        if not self.target.endswith(self.arch):
            out.append(f"code object targets {self.target!r}, not {self.arch}")
        if self.kernel == FMA_REPORT:
            pass  # the fma kernel computes on the vector ALUs: no MFMA expected
        elif not self.fp8_mfma:
            out.append(f"no FP8 MFMA instruction (found {list(self.mfma) or 'none'})")
        if self.half_mfma:
            out.append(f"f16/bf16 MFMA {list(self.half_mfma)}: the FP8 operands were converted")
        if self.vgpr_spills:
            out.append(f"{self.vgpr_spills} VGPRs spilled")
        if self.scratch_bytes:
            out.append(f"{self.scratch_bytes} bytes of scratch per lane")
        if lim is not None and self.lds_bytes > lim.lds_bytes:
            out.append(f"LDS {self.lds_bytes // 1024} KiB > {lim.lds_bytes // 1024} KiB per workgroup on {self.arch}")
        if self.waves_per_eu and self.occupancy < self.waves_per_eu:
            out.append(f"occupancy {self.occupancy} < waves_per_eu {self.waves_per_eu}")
        return out

    def summary(self) -> str:
        return (f"{self.kernel} {self.arch} (triton {self.triton}): LDS {self.lds_bytes / 1024:.0f} KiB, "
                f"{self.vgprs} VGPRs, {self.vgpr_spills} spilled, scratch {self.scratch_bytes} B, "
                f"occupancy {self.occupancy}, MFMA {', '.join(self.mfma) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mfma"] = list(self.mfma)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResourceReport":
        return cls(**{**d, "mfma": tuple(d.get("mfma", ()))})


def _last_int(pattern: str, text: str, default: int = 0) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else default


def parse_amdgcn(asm: str) -> dict[str, Any]:
    """The resource lines of an AMDGCN listing (the kernel's own entry, which comes first)."""
    target = re.search(r'\.amdgcn_target\s+"([^"]+)"', asm)
    occ = re.findall(r";\s*Occupancy:\s*(\d+)", asm)
    return {
        "target": target.group(1).split(":")[0] if target else "",
        "vgprs": _last_int(r"\.vgpr_count:\s+(\d+)", asm),
        "vgpr_spills": _last_int(r"\.vgpr_spill_count:\s+(\d+)", asm),
        "sgpr_spills": _last_int(r"\.sgpr_spill_count:\s+(\d+)", asm),
        "scratch_bytes": _last_int(r"\.private_segment_fixed_size:\s+(\d+)", asm),
        "occupancy": int(occ[0]) if occ else 0,
        "mfma": tuple(sorted(set(_MFMA_RE.findall(asm)))),
    }


def triton_version() -> str:
    import triton

    return triton.__version__


def _compile_like_launch(jit_fn, arch: str, args: tuple, kwargs: dict[str, Any]):
    """Bind ``args``/``kwargs`` with Triton's own binder for the HIP backend and compile, as
    ``JITFunction.run`` does at a launch, minus the driver (which needs a GPU)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend
    from triton.runtime.jit import create_function_from_signature

    # AMD archs (gfx942...) compile for HIP; "sm90" and the like for CUDA (what the fma kernel's
    # cross-compile check uses; needs no GPU either)
    target = (GPUTarget("cuda", int(arch[2:]), 32) if arch.startswith("sm") and arch[2:].isdigit()
              else GPUTarget("hip", arch, 64))
    backend = make_backend(target)
    kwargs = dict(kwargs)
    kwargs.setdefault("debug", False)
    binder = create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit_fn._pack_args(backend, kwargs, bound_args, specialization, options)
    src = ASTSource(jit_fn, signature, constexprs, attrs)
    return compile(src, target=target, options=options.__dict__)


def _report(kernel: str, arch: str, compiled, config: dict[str, Any], waves_per_eu: Optional[int]) -> ResourceReport:
    parsed = parse_amdgcn(compiled.asm["amdgcn"])
    return ResourceReport(kernel=kernel, arch=arch, triton=triton_version(), config=config,
                          lds_bytes=int(compiled.metadata.shared), waves_per_eu=waves_per_eu, **parsed)


def _check_arch(arch: str) -> None:
    if arch not in AMD_ARCHS:
        raise ValueError(f"arch: expected one of {', '.join(AMD_ARCHS)}, got {arch!r}")


def _fp8_dtype(arch: str, fp8: Optional[str]):
    import torch

    name = fp8 or limits_for(arch).fp8_flavour
    if name not in ("e4m3fn", "e4m3fnuz"):
        raise ValueError(f"fp8: expected 'e4m3fn' or 'e4m3fnuz', got {name!r}")
    return getattr(torch, f"float8_{name}")


def _operands(fp8_dtype, out_dtype):
    """Small real tensors standing in for the operands: a launch's specialization reads only their
    dtype, their address alignment and whether they are under 2 GiB (all real weights are)."""
    import torch

    x = torch.empty(256, dtype=torch.uint8).view(fp8_dtype)
    w = torch.empty(256, dtype=torch.uint8).view(fp8_dtype)
    out = torch.empty(64, dtype=out_dtype)
    xs = torch.empty(64, dtype=torch.float32)
    ws = torch.empty(64, dtype=torch.float32)
    part = torch.empty(64, dtype=torch.float32)
    return x, w, out, xs, ws, part


#: ResourceReport.kernel of the fma kernel (no MFMA by design)
FMA_REPORT = "rocm_fp8-fma"


def compile_fma(config, arch: str, n: int, k: int, *, quant: bool, fp8: Optional[str] = None,
                out_dtype: str = "bfloat16", in_dtype: str = "bfloat16"):
    """Compile the fma kernel (``KernelConfig.kernel == "fma"``) for ``arch``: a HIP arch or an NVIDIA
    one (``sm90``). ``quant``: the float-input variant (quantizing in the kernel), else FP8 input.
    Returns Triton's ``CompiledKernel`` (``asm``, ``metadata``); needs no GPU."""
    import torch

    from rocm_fp8.kernels import triton_blockscale as tb
    from rocm_fp8.kernels.blockscale_jit import fma_gemm_kernel

    cfg = config if isinstance(config, tb.KernelConfig) else tb.KernelConfig.from_dict(dict(config))
    cfg = cfg.validate()
    fp8_name = fp8 or (limits_for(arch).fp8_flavour if limits_for(arch) else "e4m3fn")
    fp8_dtype = _fp8_dtype(arch, fp8_name)
    x, w, out, xs, ws, _ = _operands(fp8_dtype, getattr(torch, out_dtype))
    if quant:
        x = torch.empty(64, dtype=getattr(torch, in_dtype))
    kb = -(-k // tb.GROUP_K)
    args = (x, x if quant else xs, w, ws, out, 1, n, k, k, 0 if quant else kb, 0 if quant else 1, k, kb, 1, n)
    opts: dict[str, Any] = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if not arch.startswith("sm"):
        for key in ("waves_per_eu",):
            if getattr(cfg, key) is not None:
                opts[key] = getattr(cfg, key)
    return _compile_like_launch(fma_gemm_kernel, arch, args,
                                dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, GROUPS=cfg.k_groups, QUANT_A=quant,
                                     FNUZ=fp8_name == "e4m3fnuz", RECIPROCAL=True, WIDE=cfg.frame, **opts))


@functools.lru_cache(maxsize=None)
def _compile_ours_cached(cfg_items: tuple, arch: str, fp8: str, out_dtype: str, n: int, k: int) -> ResourceReport:
    import torch
    import triton

    from rocm_fp8.kernels import triton_blockscale as tb
    from rocm_fp8.kernels.blockscale_jit import blockscale_gemm_kernel

    cfg = tb.KernelConfig(**dict(cfg_items)).validate()
    if cfg.kernel == tb.FMA_KERNEL:  # both variants must fit; report the heavier
        reports = [_report(FMA_REPORT, arch, compile_fma(cfg, arch, n, k, quant=q, fp8=fp8, out_dtype=out_dtype),
                           cfg.to_dict(), cfg.waves_per_eu) for q in (False, True)]
        return max(reports, key=lambda r: (r.vgpr_spills, r.scratch_bytes, r.vgprs))
    fp8_dtype = _fp8_dtype(arch, fp8)
    odt = getattr(torch, out_dtype)
    x, w, out, xs, ws, part = _operands(fp8_dtype, odt)
    m = 1  # M is not specialized (do_not_specialize): any M gives this code
    k_blocks = triton.cdiv(k, tb.GROUP_K)
    split = max(1, min(cfg.split_k, k_blocks))
    kb = k_blocks
    # the same argument list as triton_blockscale.launch, with contiguous operands
    args = (x, w, out, xs, ws, part if split > 1 else out,
            m, n, k,
            k, 1, k, 1, n, 1,
            kb, 1, kb, 1,
            1)
    opts: dict[str, Any] = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    for key in ("waves_per_eu", "matrix_instr_nonkdim", "kpack"):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = value
    compiled = _compile_like_launch(
        blockscale_gemm_kernel, arch, args,
        dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=tb.GROUP_K, GROUP_M=cfg.group_m, SPLIT_K=split,
             EVEN_K=(k % tb.GROUP_K == 0), USE_TMA=False, PERSISTENT=cfg.persistent,
             SCALE_BLOCK_N=tb.GROUP_N, FRAME=cfg.frame, **opts))
    return _report("rocm_fp8", arch, compiled, cfg.to_dict(), cfg.waves_per_eu)


def compile_blockscale(config, arch: str, n: int, k: int, *, fp8: Optional[str] = None,
                       out_dtype: str = "bfloat16") -> ResourceReport:
    """Compile this repository's kernel for ``arch`` with ``config`` (a KernelConfig or its dict) for a
    problem with ``n`` output features and ``k`` input features (M does not change the code)."""
    _check_arch(arch)
    from rocm_fp8.kernels.triton_blockscale import KernelConfig

    cfg = config if isinstance(config, KernelConfig) else KernelConfig.from_dict(dict(config))
    cfg = cfg.with_(tma=False)  # no TMA on AMD; the launcher ignores it there too
    fp8_name = fp8 or limits_for(arch).fp8_flavour
    # The code depends on N and K only through their specialization (a multiple of 16, or 1) and on
    # K's tail after the last full 128-wide block (EVEN_K): compile one representative of each class.
    n_rep = 16 * 1024 if n % 16 == 0 else n
    k_rep = 16 * 1024 + k % 128 if k % 16 == 0 else k
    return _compile_ours_cached(tuple(sorted(cfg.__dict__.items())), arch, fp8_name, out_dtype, n_rep, k_rep)


# ------------------------------------------------------------------------------------------------
# aiter's Triton kernel
# ------------------------------------------------------------------------------------------------

_AITER_ALIAS = "_rocm_fp8_aiter_tree"
#: aiter's per-device config files are named by product in 0.1.x and by arch in later trees
AITER_DEVICE_NAMES = {"gfx942": ("MI300X", "gfx942"), "gfx950": ("MI350X", "gfx950")}
_AITER_KERNEL_MODULES = ("ops.triton._triton_kernels.gemm.basic.gemm_a8w8_blockscale",
                         "ops.triton._triton_kernels.gemm_a8w8_blockscale")


def aiter_dir_from_installed() -> Optional[Path]:
    """The installed aiter's package directory (found without importing it), or None."""
    return aiter_package_dir()


def load_aiter_kernels(aiter_dir: Path):
    """aiter's Triton block-scale kernel module, imported from ``aiter_dir`` (the ``aiter`` package
    folder) under a private name so that ``aiter/__init__`` (which needs ROCm) never runs."""
    aiter_dir = Path(aiter_dir)
    if not (aiter_dir / "ops" / "triton").is_dir():
        raise FileNotFoundError(f"aiter_dir: expected an aiter package folder with ops/triton, got {aiter_dir}")
    alias = f"{_AITER_ALIAS}_{abs(hash(str(aiter_dir.resolve())))}"
    # aiter/__init__ (hipconfig) and aiter/ops/triton/__init__ (absolute "aiter." imports) are skipped:
    # these package levels get empty modules; the kernel modules below them import relatively.
    for sub in ("", "ops", "ops/triton"):
        name = alias + (("." + sub.replace("/", ".")) if sub else "")
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(aiter_dir / sub)]
            pkg.__file__ = str(aiter_dir / sub / "__init__.py")
            sys.modules[name] = pkg
    for rel in _AITER_KERNEL_MODULES:
        parts = rel.split(".")
        if (aiter_dir.joinpath(*parts[:-1]) / f"{parts[-1]}.py").is_file():
            return importlib.import_module(f"{alias}.{rel}")
    raise FileNotFoundError(f"aiter_dir: no Triton gemm_a8w8_blockscale kernel under {aiter_dir}/ops/triton")


def aiter_config_files(aiter_dir: Path, arch: str) -> list[Path]:
    """aiter's A8W8 block-scale Triton config files for ``arch`` (the default one and per-shape ones)."""
    _check_arch(arch)
    root = Path(aiter_dir) / "ops" / "triton" / "configs" / "gemm"
    if not root.is_dir():
        return []
    names = AITER_DEVICE_NAMES[arch]
    pat = re.compile(r"^(%s)-GEMM-A8W8_BLOCKSCALE(-N=\d+-K=\d+)?\.json$" % "|".join(names))
    return sorted(p for p in root.iterdir() if pat.match(p.name))


def aiter_configs(aiter_dir: Path, arch: str) -> list[tuple[str, int, int, dict[str, Any]]]:
    """Every (file:entry, N, K, config) aiter ships for ``arch``; the default file's N and K are 0
    (it serves every shape without its own file)."""
    out = []
    for path in aiter_config_files(aiter_dir, arch):
        m = re.search(r"-N=(\d+)-K=(\d+)\.json$", path.name)
        n, k = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        for key, cfg in json.loads(path.read_text()).items():
            out.append((f"{path.name}:{key}", n, k, dict(cfg)))
    return out


@functools.lru_cache(maxsize=None)
def _compile_aiter_cached(aiter_dir: str, cfg_items: tuple, arch: str, m: int, n: int, k: int) -> ResourceReport:
    import torch
    import triton

    mod = load_aiter_kernels(Path(aiter_dir))
    heur = mod._gemm_a8w8_blockscale_kernel
    jit_fn = getattr(heur, "fn", heur)
    config = dict(cfg_items)
    fp8_dtype = _fp8_dtype(arch, None)
    x, w, out, xs, ws, part = _operands(fp8_dtype, torch.bfloat16)
    # what aiter's gemm_a8w8_blockscale wrapper does to its config before launching
    cfg = dict(config)
    cfg["SPLITK_BLOCK_SIZE"] = triton.cdiv(k, cfg["NUM_KSPLIT"])
    if cfg["BLOCK_SIZE_K"] > cfg["SPLITK_BLOCK_SIZE"]:
        cfg["BLOCK_SIZE_K"] = triton.next_power_of_2(cfg["SPLITK_BLOCK_SIZE"])
        if cfg["BLOCK_SIZE_K"] > cfg["SPLITK_BLOCK_SIZE"]:
            cfg["BLOCK_SIZE_K"] //= 4
    cfg["BLOCK_SIZE_K"] = max(cfg["BLOCK_SIZE_K"], 16)
    cfg["GROUP_K"] = 128
    cfg["GROUP_N"] = 128
    split = cfg["NUM_KSPLIT"] > 1
    kb = triton.cdiv(k, 128)
    # w and w_scale are passed transposed (views), as the wrapper does
    args = (x, w, part if split else out, xs, ws, m, n, k,
            k, 1, 1, k,
            m * n if split else 0, n, 1,
            kb, 1, 1, kb)
    kwargs = dict(cfg)
    bound = dict(zip(jit_fn.arg_names, args))
    bound.update(kwargs)
    for name, fn in getattr(heur, "values", {}).items():
        kwargs[name] = fn(bound)
    compiled = _compile_like_launch(jit_fn, arch, args, kwargs)
    return _report("aiter", arch, compiled, config, config.get("waves_per_eu") or None)


def compile_aiter_blockscale(config: dict[str, Any], arch: str, m: int, n: int, k: int,
                             aiter_dir: Optional[Path] = None) -> ResourceReport:
    """Compile aiter's Triton block-scale kernel for ``arch`` with one of its configs, for an M that
    config serves (aiter's kernel specializes on M: its grid size is a compile-time constant)."""
    _check_arch(arch)
    root = aiter_dir or aiter_dir_from_installed()
    if root is None:
        raise FileNotFoundError("aiter_dir: aiter is not installed and no aiter package folder was given")
    items = tuple(sorted((k_, v) for k_, v in config.items()))
    return _compile_aiter_cached(str(Path(root).resolve()), items, arch, m, n, k)


# ------------------------------------------------------------------------------------------------
# Command line: JSON jobs in, JSON reports out
# ------------------------------------------------------------------------------------------------


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    try:
        if job.get("kernel", "rocm_fp8") == "aiter":
            rep = compile_aiter_blockscale(job["config"], job["arch"], job["m"], job["n"], job["k"],
                                           Path(job["aiter_dir"]) if job.get("aiter_dir") else None)
        else:
            rep = compile_blockscale(job["config"], job["arch"], job["n"], job["k"], fp8=job.get("fp8"))
        return {"job": job, "report": rep.to_dict()}
    except Exception as exc:  # noqa: BLE001 - reported per job
        return {"job": job, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}


def main(argv: Optional[list[str]] = None) -> int:
    jobs = json.load(sys.stdin)
    if not isinstance(jobs, list):
        print("amd_compile: expected a JSON list of jobs on stdin", file=sys.stderr)
        return 2
    json.dump({"triton": triton_version(), "results": [run_job(j) for j in jobs]}, sys.stdout)
    sys.stdout.write("\n")
    return 0



def fits_compiled(cfg: Any, arch: str, n: int, k: int) -> tuple[bool, str]:
    """Compile ``cfg`` for the AMD ``arch`` with the installed Triton and check the code object:
    LDS within the limit, no spills or scratch, FP8 MFMA, occupancy >= waves_per_eu.

    Falls back to :func:`fits` (saying so only on failure) when this Triton cannot compile for AMD.
    """
    if arch not in AMD_ARCHS:
        return fits(cfg, arch)
    try:
        report = compile_blockscale(cfg, arch, n, k)
    except ImportError:
        return fits(cfg, arch)
    except Exception as exc:  # noqa: BLE001 - a config the compiler rejects cannot launch
        return False, f"{describe(cfg)} does not compile for {arch}: {type(exc).__name__}: {str(exc)[:200]}"
    problems = report.problems()
    if problems:
        return False, f"{describe(cfg)} on {arch} (triton {report.triton}): " + "; ".join(problems)
    return True, ""


if __name__ == "__main__":
    raise SystemExit(main())
