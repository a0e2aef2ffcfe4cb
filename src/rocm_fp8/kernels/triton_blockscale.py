"""Triton FP8 block-scale GEMM: ``y = dequant(xq, x_scale) @ dequant(wq, w_scale)^T``.

Scales are dequantization multipliers: activations per 1 x 128 group along K (``x_scale [M, K/128]``,
any strides), weights per 128 x 128 block (``w_scale [ceil(N/128), ceil(K/128)]``, any strides).
Each program computes a ``BLOCK_M x BLOCK_N`` tile; per 128-wide K block it takes one FP8 dot into
fp32 and folds the two scales into the fp32 accumulator, so no precision is lost to the scales.

Layout: the Triton code (the tile body, the kernel: plain grid or persistent, optional split-K into
an fp32 workspace plus a reduction kernel, optional TMA loads) is in
:mod:`rocm_fp8.kernels.blockscale_jit`; this file holds the host side: the config type, the
launcher :func:`blockscale_gemm`, which checks its inputs and names the offending argument, and
:class:`BoundGemm`, the launch bound to one weight that the ``triton`` backend runs.

Feature detection happens once at import: tensor descriptors (TMA) are used only where this Triton
has them and the device is Hopper or newer; under ``TRITON_INTERPRET=1`` everything runs on the CPU.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

import torch
import triton

from rocm_fp8.kernels.blockscale_jit import blockscale_gemm_kernel, fma_gemm_kernel, splitk_reduce
from rocm_fp8.quant import OUT_DTYPES

GROUP_K = 128  # activation group along K and weight block along K; the kernel's BLOCK_K
GROUP_N = 128  # weight block along N

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)

try:  # host-side tensor descriptors (Triton >= 3.4)
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except Exception:  # noqa: BLE001 - any import problem means "no TMA"
    _TensorDescriptor = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _device_caps(index: int) -> tuple[bool, tuple[int, int], int]:
    """(is_hip, capability, multiprocessor count) of a CUDA/ROCm device, read once."""
    props = torch.cuda.get_device_properties(index)
    return (torch.version.hip is not None, (props.major, props.minor), props.multi_processor_count)


def tma_supported(device: torch.device) -> bool:
    """Whether TMA loads can be used: Triton's host descriptors, an NVIDIA Hopper+ GPU, compiled mode."""
    if _TensorDescriptor is None or device.type != "cuda" or interpreting():
        return False
    is_hip, cap, _ = _device_caps(device.index if device.index is not None else torch.cuda.current_device())
    return (not is_hip) and cap[0] >= 9


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """One launch configuration. AMD-only knobs (``waves_per_eu``, ``matrix_instr_nonkdim``,
    ``kpack``) are passed to the compiler only on ROCm; ``tma`` is honoured only where supported."""

    block_m: int = 64
    block_n: int = 128
    group_m: int = 8
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    persistent: bool = False
    programs_per_sm: int = 1   # persistent grid size = SMs x this (2 when two CTAs fit on an SM)
    tma: bool = False
    frame: bool = False
    #: None: this module's Triton kernel. "gluon_ws2" (block_n 128/192/256), "gluon_ws",
    #: "gluon_pipelined": the Gluon sm90 kernel (kernels/gluon_sm90.py; block_m 128, block_n,
    #: num_stages and group_m are its tile, ring depth and L2 grouping), used where it can run
    #: (gluon_support.unavailable_reason) and the operands suit TMA (K % 128 == 0, 16-byte
    #: alignment); elsewhere the Triton kernel runs this tile. gluon_ws2 stages what fits beside the
    #: ring (gluon_support.ws2_staging) and writes fp32 or unaligned outputs with plain stores.
    kernel: Optional[str] = None
    #: kernel "fma" only: 128-wide K groups per loop step (1, 2, 4 or 8)
    k_groups: Optional[int] = None
    waves_per_eu: Optional[int] = None
    matrix_instr_nonkdim: Optional[int] = None
    kpack: Optional[int] = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KernelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def with_(self, **changes: Any) -> "KernelConfig":
        return replace(self, **changes)

    def validate(self) -> "KernelConfig":
        def pow2(v: int) -> bool:
            return v > 0 and (v & (v - 1)) == 0

        if self.kernel == FMA_KERNEL:
            if self.block_m != 1:
                raise ValueError(f"config.block_m: the fma kernel computes one row per program (block_m 1), "
                                 f"got {self.block_m}")
            if not (pow2(self.block_n) and 2 <= self.block_n <= 128):
                raise ValueError(f"config.block_n: the fma kernel takes a power of two in [2, 128], got {self.block_n}")
            if self.k_groups not in (1, 2, 4, 8):
                raise ValueError(f"config.k_groups: the fma kernel takes 1, 2, 4 or 8, got {self.k_groups!r}")
            if self.split_k != 1 or self.persistent or self.tma:
                raise ValueError("config: the fma kernel takes split_k 1 and no persistent/tma, got "
                                 f"split_k {self.split_k}, persistent {self.persistent}, tma {self.tma}")
            if not pow2(self.num_warps) or self.num_stages < 1:
                raise ValueError(f"config.num_warps/num_stages: expected a power of two and >= 1, got "
                                 f"{self.num_warps}/{self.num_stages}")
            return self
        if self.k_groups is not None:
            raise ValueError(f"config.k_groups: only the fma kernel takes it, got {self.k_groups} with kernel "
                             f"{self.kernel!r}")
        if not (pow2(self.block_m) and 16 <= self.block_m <= 256):
            raise ValueError(f"config.block_m: expected a power of two in [16, 256], got {self.block_m}")
        ws2_192 = self.block_n == 192 and self.kernel == "gluon_ws2"  # (ws2's v3 tile, not a power of two)
        if not ((pow2(self.block_n) and 16 <= self.block_n <= 256) or ws2_192):
            raise ValueError(f"config.block_n: expected a power of two in [16, 256] (or 192 with kernel gluon_ws2), "
                             f"got {self.block_n}")
        if self.programs_per_sm < 1:
            raise ValueError(f"config.programs_per_sm: expected >= 1, got {self.programs_per_sm}")
        if self.group_m < 1 or self.split_k < 1:
            raise ValueError(f"config.group_m/split_k: expected >= 1, got {self.group_m}/{self.split_k}")
        if not pow2(self.num_warps):
            raise ValueError(f"config.num_warps: expected a power of two, got {self.num_warps}")
        if self.num_stages < 1:
            raise ValueError(f"config.num_stages: expected >= 1, got {self.num_stages}")
        if self.kernel is not None:
            if self.kernel not in GLUON_KERNELS:
                raise ValueError(f"config.kernel: expected None, {FMA_KERNEL!r} or one of {sorted(GLUON_KERNELS)}, "
                                 f"got {self.kernel!r}")
            if self.block_m != 128 or self.block_n not in (64, 128, 192, 256) or self.split_k != 1:
                raise ValueError(f"config: the {self.kernel} kernel takes block_m 128, block_n 64/128/256 and "
                                 f"split_k 1, got block_m {self.block_m}, block_n {self.block_n}, "
                                 f"split_k {self.split_k}")
            if not 2 <= self.num_stages <= 8:
                raise ValueError(f"config.num_stages: the {self.kernel} kernel takes 2..8, got {self.num_stages}")
            from rocm_fp8.kernels import gluon_support as gs

            if self.kernel == "gluon_ws2":
                if self.block_n not in (128, 192, 256):
                    raise ValueError(f"config.block_n: the gluon_ws2 kernel takes 128, 192 or 256, got {self.block_n}")
                fits = gs.ws2_staging(self.block_n, self.num_stages) is not None
            else:
                fits = gs.gluon_shared_bytes(GLUON_KERNELS[self.kernel], self.block_n,
                                             self.num_stages) <= gs.SM90_SHARED_BYTES
            if not fits:
                raise ValueError(f"config.num_stages: {self.num_stages} stages of a 128x{self.block_n} tile do not "
                                 f"fit the {gs.SM90_SHARED_BYTES // 1024} KiB of shared memory of the "
                                 f"{self.kernel} kernel")
        return self

    def gluon_config(self):
        """The :class:`rocm_fp8.kernels.gluon_sm90.GluonConfig` of a ``kernel="gluon_*"`` config."""
        g = gluon_module()
        variant = GLUON_KERNELS[self.kernel]
        extra = {}
        if variant == "ws2":
            from rocm_fp8.kernels.gluon_support import ws2_staging

            extra = ws2_staging(self.block_n, self.num_stages) or {}
        return g.GluonConfig(variant=variant, block_n=self.block_n, stages=self.num_stages,
                             group_m=self.group_m, **extra).validate()

    def triton_fallback(self) -> "KernelConfig":
        """The same tile for this module's Triton kernel (where the Gluon one cannot run: another
        GPU or Triton, or operands TMA cannot load, hence no TMA here either). ws2's BN 192 is not a
        power of two, which Triton's blocks must be: its fallback is BN 128."""
        return replace(self, kernel=None, num_warps=8, persistent=True, tma=False,
                       block_n=128 if self.block_n == 192 else self.block_n)


#: KernelConfig.kernel of the small-M kernel without tensor cores (blockscale_jit.fma_gemm_kernel):
#: one launch for FP8 and float input alike, no split-K; one row x ``block_n`` columns per program
#: (``block_m`` 1), ``k_groups`` 128-wide K groups per step; ``frame`` there keeps a wide accumulator of
#: scaled products, summed across K once at the end. Runs wherever the Triton kernel does.
FMA_KERNEL = "fma"

#: KernelConfig.kernel values -> the Gluon kernel's variant (kernels/gluon_sm90.py)
GLUON_KERNELS = {"gluon_ws2": "ws2", "gluon_ws": "ws", "gluon_pipelined": "pipelined"}


def gluon_module():
    """The :mod:`rocm_fp8.kernels.gluon_sm90` module, imported only where it can run; RuntimeError
    with the reason (:func:`rocm_fp8.kernels.gluon_support.unavailable_reason`) elsewhere."""
    from rocm_fp8.kernels.gluon_support import unavailable_reason

    why = unavailable_reason()
    if why:
        raise RuntimeError(why)
    from rocm_fp8.kernels import gluon_sm90

    return gluon_sm90


def gluon_usable(cfg: "KernelConfig", x_q: torch.Tensor, w_q: torch.Tensor) -> bool:
    """Whether ``cfg`` asks for the Gluon kernel and it can run these operands here."""
    if cfg.kernel not in GLUON_KERNELS:
        return False
    from rocm_fp8.kernels.gluon_support import tma_ready, unavailable_reason

    return (x_q.dtype == torch.float8_e4m3fn and unavailable_reason(x_q.device) is None and tma_ready(x_q)
            and tma_ready(w_q))


#: used for shapes no table knows: a middle-of-the-road tile, split-K for small M (see default_config)
DEFAULT_CONFIG = KernelConfig()

#: SMs/CUs to fill when the arch is unknown (an H100/H200 SXM has 132)
_DEFAULT_UNITS = 132


@functools.lru_cache(maxsize=None)
def _current_arch() -> Optional[str]:
    """The visible GPU's arch (``gfx942``, ``sm90``...), read once; None without a GPU."""
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        if torch.version.hip is not None:
            return str(getattr(props, "gcnArchName", "")).split(":")[0] or None
        return f"sm{props.major}{props.minor}"
    except Exception:  # noqa: BLE001 - no usable GPU: no arch
        return None


def default_config(m: int, n: int, k: int, arch: Optional[str] = None) -> KernelConfig:
    """A sane configuration for an unseen shape, from its size alone, that fits ``arch``.

    ``arch`` (``gfx942``, ``gfx950``, ``sm90``...) defaults to the visible GPU's. The size-based tile is
    checked against the arch's limits (:mod:`rocm_fp8.kernels.arch_limits`): where its software
    pipeline does not fit in shared memory/LDS (gfx942 has 64 KiB) it gets fewer stages, then a
    narrower tile, so the launch never fails on resources.
    """
    from rocm_fp8.kernels.arch_limits import fits, limits_for

    if arch is None and not interpreting():
        arch = _current_arch()
    if m <= 16:
        cfg = KernelConfig(block_m=16, block_n=64, group_m=1, num_warps=4, num_stages=4)
    elif m <= 64:
        cfg = KernelConfig(block_m=64, block_n=64, group_m=8, num_warps=4, num_stages=4)
    elif m <= 256:
        cfg = KernelConfig(block_m=64, block_n=128, group_m=8, num_warps=4, num_stages=4)
    else:
        cfg = KernelConfig(block_m=128, block_n=128, group_m=8, num_warps=8, num_stages=4)
    while not fits(cfg, arch)[0]:
        if cfg.num_stages > 2:
            cfg = cfg.with_(num_stages=cfg.num_stages - 1)
        elif cfg.block_n > 64:
            cfg = cfg.with_(block_n=cfg.block_n // 2, num_stages=4)
        elif cfg.block_m > 16:
            cfg = cfg.with_(block_m=cfg.block_m // 2, num_stages=4)
        else:
            break
    # Too few tiles to fill the GPU while K is long: split K (the reduction is deterministic).
    lim = limits_for(arch)
    units = lim.compute_units if lim is not None else _DEFAULT_UNITS
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
    k_blocks = triton.cdiv(k, GROUP_K)
    split = 1
    while tiles * split * 2 <= units and k_blocks // (split * 2) >= 4 and split < 8:
        split *= 2
    return cfg.with_(split_k=split)


# ------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------


def _fail(arg: str, expected: str, got: Any) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def check_inputs(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                 out_dtype: torch.dtype) -> tuple[int, int, int]:
    """Validate the operands; return (M, N, K). Every message names the argument."""
    for name, t in (("x_q", x_q), ("x_scale", x_scale), ("w_q", w_q), ("w_scale", w_scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            _fail(name, "a 2-D tensor", f"shape {tuple(t.shape)}")
    if x_q.dtype not in FP8_DTYPES:
        raise TypeError(f"x_q: expected torch.float8_e4m3fn or torch.float8_e4m3fnuz, got {x_q.dtype}")
    if w_q.dtype != x_q.dtype:
        raise TypeError(f"w_q: expected the same FP8 dtype as x_q ({x_q.dtype}), got {w_q.dtype}")
    if x_scale.dtype != torch.float32:
        raise TypeError(f"x_scale: expected torch.float32, got {x_scale.dtype}")
    if w_scale.dtype != torch.float32:
        raise TypeError(f"w_scale: expected torch.float32, got {w_scale.dtype}")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype: expected torch.bfloat16, torch.float16 or torch.float32, got {out_dtype}")
    m, k = x_q.shape
    n, kw = w_q.shape
    if kw != k:
        _fail("w_q", f"[N, K] with K = {k} (x_q's K)", f"shape {tuple(w_q.shape)}")
    if m == 0 or n == 0 or k == 0:
        _fail("x_q/w_q", "non-empty M, N and K", f"M={m}, N={n}, K={k}")
    kb = -(-k // GROUP_K)
    if tuple(x_scale.shape) != (m, kb):
        _fail("x_scale", f"shape ({m}, {kb}) = (M, ceil(K/{GROUP_K}))", f"{tuple(x_scale.shape)}")
    nb = -(-n // GROUP_N)
    if tuple(w_scale.shape) != (nb, kb):
        _fail("w_scale", f"shape ({nb}, {kb}) = (ceil(N/{GROUP_N}), ceil(K/{GROUP_K}))",
              f"{tuple(w_scale.shape)}")
    dev = x_q.device
    for name, t in (("x_scale", x_scale), ("w_q", w_q), ("w_scale", w_scale)):
        if t.device != dev:
            _fail(name, f"a tensor on {dev} (x_q's device)", f"{t.device}")
    if dev.type == "cpu" and not interpreting():
        _fail("x_q", "a GPU tensor (or TRITON_INTERPRET=1 for CPU tensors)", "a CPU tensor")
    for name, t in (("x_q", x_q), ("w_q", w_q)):
        if t.stride(1) != 1:
            _fail(name, "a K-contiguous tensor (stride(1) == 1)", f"strides {t.stride()}")
    return m, n, k


def _compiler_options(cfg: KernelConfig, device: torch.device) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if device.type == "cuda" and torch.version.hip is not None:
        for key in ("waves_per_eu", "matrix_instr_nonkdim", "kpack"):
            value = getattr(cfg, key)
            if value is not None:
                opts[key] = value
    return opts


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return _device_caps(device.index if device.index is not None else torch.cuda.current_device())[2]


def blockscale_gemm(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                    out_dtype: torch.dtype = torch.bfloat16, config: Optional[KernelConfig] = None,
                    out: Optional[torch.Tensor] = None, check: bool = True) -> torch.Tensor:
    """``[M, K] fp8 x [N, K] fp8 -> [M, N] out_dtype`` with per-group/per-block dequant scales.

    ``config`` None picks :func:`default_config`; ``check=False`` skips input validation (the
    dispatcher validates once per layer). ``out`` may be given (shape [M, N], dtype out_dtype).
    """
    if check:
        m, n, k = check_inputs(x_q, x_scale, w_q, w_scale, out_dtype)
    else:
        m, k = x_q.shape
        n = w_q.shape[0]
    cfg = config if config is not None else default_config(m, n, k)
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x_q.device)
    elif check and (tuple(out.shape) != (m, n) or out.dtype != out_dtype or out.device != x_q.device):
        _fail("out", f"a ({m}, {n}) {out_dtype} tensor on {x_q.device}",
              f"{tuple(out.shape)} {out.dtype} on {out.device}")
    if cfg.kernel == FMA_KERNEL:
        launch_fma(x_q, x_scale, w_q, w_scale, out, cfg)
        return out
    if cfg.kernel is not None:  # a Gluon config: that kernel where it runs, else the same tile here
        if gluon_usable(cfg, x_q, w_q):
            gluon_module().launch(x_q, x_scale, w_q, w_scale, out, cfg.gluon_config())
            return out
        cfg = cfg.triton_fallback()
    launch(x_q, x_scale, w_q, w_scale, out, cfg)
    return out


def launch(x_q, x_scale, w_q, w_scale, out, cfg: KernelConfig):
    """Launch with no checks: the operands must already satisfy :func:`check_inputs`.

    Returns Triton's handle of the main kernel (its ``asm`` holds the PTX/SASS; None in the interpreter).
    """
    if cfg.kernel == FMA_KERNEL:
        return launch_fma(x_q, x_scale, w_q, w_scale, out, cfg)
    return _launch_jit(x_q, x_scale, w_q, w_scale, out, cfg)[0]


def launch_fma(x, x_scale, w_q, w_scale, out, cfg: KernelConfig):
    """The fma kernel through Triton's JIT. ``x_scale`` None: ``x`` is float (bf16/fp16/fp32, K-contiguous)
    and the kernel quantizes it per 1 x 128 group itself; else ``x`` is FP8 with its fp32 scales.
    Returns Triton's handle of the compiled kernel (None in the interpreter)."""
    m, k = x.shape
    n = w_q.shape[0]
    if out.stride(1) != 1:  # the kernel writes rows of unit stride
        tmp = torch.empty((m, n), dtype=out.dtype, device=out.device)
        compiled = launch_fma(x, x_scale, w_q, w_scale, tmp, cfg)
        out.copy_(tmp)
        return compiled
    if x.stride(1) != 1:
        x = x.contiguous()
    quant = x_scale is None
    xs = x if quant else x_scale  # (an unused pointer when quantizing)
    grid = (_cdiv(n, cfg.block_n), _cdiv(m, cfg.block_m))
    return fma_gemm_kernel[grid](
        x, xs, w_q, w_scale, out, m, n, k,
        x.stride(0), 0 if quant else x_scale.stride(0), 0 if quant else x_scale.stride(1),
        w_q.stride(0), w_scale.stride(0), w_scale.stride(1), out.stride(0),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, GROUPS=cfg.k_groups, QUANT_A=quant,
        FNUZ=w_q.dtype == torch.float8_e4m3fnuz, RECIPROCAL=x.is_cuda, WIDE=cfg.frame,
        **_compiler_options(cfg, x.device))


def _launch_jit(x_q, x_scale, w_q, w_scale, out, cfg: KernelConfig, b_arg=None):
    """:func:`launch` through Triton's JIT; returns the compiled (GEMM, split-K reduction or None)."""
    m, k = x_q.shape
    n = w_q.shape[0]
    dev = x_q.device
    bm, bn = cfg.block_m, cfg.block_n
    k_blocks = _cdiv(k, GROUP_K)
    split = max(1, min(cfg.split_k, k_blocks))
    tiles = _cdiv(m, bm) * _cdiv(n, bn) * split
    if cfg.persistent:
        programs = min(tiles, num_sms(dev) * cfg.programs_per_sm)
    else:
        programs = tiles
    ws = out
    if split > 1:
        ws = torch.empty((split, m, n), dtype=torch.float32, device=dev)
    use_tma = cfg.tma and k % GROUP_K == 0 and tma_supported(dev)
    if use_tma:
        a_arg = _TensorDescriptor(x_q, [m, k], [x_q.stride(0), 1], [bm, GROUP_K])
        if b_arg is None:
            b_arg = _TensorDescriptor(w_q, [n, k], [w_q.stride(0), 1], [bn, GROUP_K])
    else:
        a_arg, b_arg = x_q, w_q
    compiled = blockscale_gemm_kernel[(programs,)](
        a_arg, b_arg, out, x_scale, w_scale, ws,
        m, n, k,
        x_q.stride(0), x_q.stride(1), w_q.stride(0), w_q.stride(1), out.stride(0), out.stride(1),
        x_scale.stride(0), x_scale.stride(1), w_scale.stride(0), w_scale.stride(1),
        programs,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=GROUP_K, GROUP_M=cfg.group_m, SPLIT_K=split,
        EVEN_K=(k % GROUP_K == 0), USE_TMA=use_tma, PERSISTENT=cfg.persistent,
        SCALE_BLOCK_N=GROUP_N, FRAME=cfg.frame,
        **_compiler_options(cfg, dev),
    )
    reduce = None
    if split > 1:
        reduce = splitk_reduce[(_cdiv(m * n, _REDUCE_BLOCK),)](
            ws, out, m, n, out.stride(0), out.stride(1), SPLIT_K=split, BLOCK=_REDUCE_BLOCK, num_warps=4)
    return compiled, reduce


_REDUCE_BLOCK = 1024


# Split-K partial sums of the direct launches: one fp32 buffer per (device, stream), grown to the
# largest need and shared by every bound layer (like a BLAS workspace). Calls on one stream run in
# order, so they never overlap; two streams get two buffers. Inside a CUDA/HIP-graph capture a fresh
# tensor is taken instead (from the graph's pool), so no graph shares scratch with eager calls.
_scratch: dict[tuple[int, int], torch.Tensor] = {}


def _splitk_scratch(numel: int, dev_index: int, stream: int, device: torch.device) -> torch.Tensor:
    if torch.cuda.is_current_stream_capturing():
        return torch.empty(numel, dtype=torch.float32, device=device)
    buf = _scratch.get((dev_index, stream))
    if buf is None or buf.numel() < numel:
        buf = _scratch[(dev_index, stream)] = torch.empty(max(numel, 1 << 16), dtype=torch.float32, device=device)
    return buf


def _cdiv(a: int, b: int) -> int:
    # plain arithmetic: triton.cdiv is a constexpr function whose call costs microseconds of host time
    return -(-a // b)



# ------------------------------------------------------------------------------------------------
# Bound launch: one weight, one output dtype, one config (a layer's M bucket)
# ------------------------------------------------------------------------------------------------


class BoundGemm:
    """``run(x_q [M, K], x_scale [M, ceil(K/128)]) -> y [M, N]`` for one weight, out dtype and config.

    Everything except M is settled here, once: the config, the split-K factor, the grid as a
    function of M, the constexprs and compiler options, the weight's strides and (TMA) descriptor.
    The split-K partial sums go to a per-stream scratch buffer (``_splitk_scratch``), or to a fresh
    tensor from the graph's pool while a CUDA/HIP graph is being captured.

    The first call whose activation is canonical (rows of exactly K elements, x_q and x_scale
    16-byte aligned) launches through Triton's JIT and keeps the compiled kernels; later canonical
    calls launch them directly (:mod:`rocm_fp8.kernels.fast_launch`), since M and the scale strides
    are not specialized and everything else is fixed. Any other activation, the interpreter, a
    Triton without the fast path, or an installed launch hook take the JIT launch. The operands
    must satisfy :func:`check_inputs`, which is not repeated (the dispatcher checks once per layer).
    """

    def __init__(self, w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype,
                 config: KernelConfig) -> None:
        from rocm_fp8.kernels import fast_launch

        n, k = w_q.shape
        dev = w_q.device
        cfg = config
        self.w_q, self.w_scale, self.out_dtype, self.config = w_q, w_scale, out_dtype, cfg
        self.n, self.k, self.device = n, k, dev
        self.split = max(1, min(cfg.split_k, _cdiv(k, GROUP_K)))
        self._tiles_n = _cdiv(n, cfg.block_n) * self.split
        self._max_programs = num_sms(dev) * cfg.programs_per_sm if cfg.persistent else None
        even_k = k % GROUP_K == 0
        self._use_tma = cfg.tma and even_k and tma_supported(dev)
        self._b_desc = (_TensorDescriptor(w_q, [n, k], [w_q.stride(0), 1], [cfg.block_n, GROUP_K])
                        if self._use_tma else None)
        self._b_arg = self._b_desc if self._use_tma else w_q.data_ptr()
        self._w_scale_ptr = w_scale.data_ptr()
        self._block_m = cfg.block_m
        # launch arguments after M (N, K and every stride but the activation scale's) and after
        # NUM_PROGRAMS (the constexprs), in the kernel's parameter order
        self._nk_strides = (n, k, k, 1, w_q.stride(0), w_q.stride(1), n, 1)
        self._w_scale_strides = (w_scale.stride(0), w_scale.stride(1))
        self._constexprs = (cfg.block_m, cfg.block_n, GROUP_K, cfg.group_m, self.split, even_k, self._use_tma,
                            cfg.persistent, GROUP_N, cfg.frame)
        self._hooks_idle = fast_launch.hooks_idle
        self._stream = fast_launch.stream_getter() if dev.type == "cuda" else None
        self._warm = fast_launch.warm
        self._can_warm = dev.type == "cuda" and fast_launch.fast_launch_supported()
        self._dev_index = dev.index if dev.index is not None else 0
        self._gemm = None    # WarmKernel of the GEMM, once warmed
        self._reduce = None  # WarmKernel of the split-K reduction, once warmed

    @property
    def warmed(self) -> bool:
        """Whether calls now take the direct launch (False under the interpreter)."""
        return self._gemm is not None and (self.split == 1 or self._reduce is not None)

    def programs(self, m: int) -> int:
        """The grid for M rows (what the direct launch computes inline)."""
        tiles = _cdiv(m, self._block_m) * self._tiles_n
        return tiles if self._max_programs is None else min(tiles, self._max_programs)

    def __call__(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        gemm = self._gemm
        if gemm is not None:
            m = x_q.shape[0]
            xp, sp = x_q.data_ptr(), x_scale.data_ptr()
            if m and not (xp | sp) & 15 and x_q.is_contiguous() and self._hooks_idle():
                # pointers go as ints (the launcher would call data_ptr() again); the weight's are bound
                n = self.n
                out = torch.empty((m, n), dtype=self.out_dtype, device=self.device)
                programs = -(-m // self._block_m) * self._tiles_n
                if self._max_programs is not None and programs > self._max_programs:
                    programs = self._max_programs
                stream = self._stream(self._dev_index)
                a_arg = (_TensorDescriptor(x_q, [m, self.k], [self.k, 1], [self._block_m, GROUP_K])
                         if self._use_tma else xp)
                ss = x_scale.stride()
                if self.split == 1:
                    gemm(programs, 1, stream, a_arg, self._b_arg, out, sp, self._w_scale_ptr, out, m,
                         *self._nk_strides, ss[0], ss[1], *self._w_scale_strides, programs, *self._constexprs)
                    return out
                ws = _splitk_scratch(self.split * m * n, self._dev_index, stream, self.device)
                gemm(programs, 1, stream, a_arg, self._b_arg, out, sp, self._w_scale_ptr, ws, m,
                     *self._nk_strides, ss[0], ss[1], *self._w_scale_strides, programs, *self._constexprs)
                self._reduce(-(-m * n // _REDUCE_BLOCK), 1, stream, ws, out, m, n, n, 1, self.split, _REDUCE_BLOCK)
                return out
        return self._jit(x_q.shape[0], x_q, x_scale)

    def _jit(self, m: int, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        out = torch.empty((m, self.n), dtype=self.out_dtype, device=self.device)
        if m == 0:
            return out
        if x_q.stride(-1) != 1:
            x_q = x_q.contiguous()
        gemm, reduce = _launch_jit(x_q, x_scale, self.w_q, self.w_scale, out, self.config,
                                   b_arg=self._b_desc)
        canonical = x_q.stride(0) == self.k and not x_q.data_ptr() & 15 and not x_scale.data_ptr() & 15
        if self._gemm is None and self._can_warm and canonical:
            warm_gemm = self._warm(gemm)
            warm_reduce = self._warm(reduce) if self.split > 1 else None
            if warm_gemm is not None and (self.split == 1 or warm_reduce is not None):
                self._gemm, self._reduce = warm_gemm, warm_reduce
        return out


class BoundFma:
    """The fma kernel (:data:`FMA_KERNEL`) bound to one weight, out dtype and config: one launch per
    call for FP8 input (``fn(x_q, x_scale)``) and for float input (``fn.float_input(x)``, quantized
    in the kernel, the same bits as the fused quant kernel).

    As :class:`BoundGemm`: the first canonical call of each input kind (FP8, or one float dtype;
    rows of exactly K elements, 16-byte aligned pointers) goes through Triton's JIT and keeps the
    compiled kernel; later canonical calls launch it directly; anything else takes the JIT launch.
    """

    def __init__(self, w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype,
                 config: KernelConfig) -> None:
        from rocm_fp8.kernels import fast_launch

        n, k = w_q.shape
        dev = w_q.device
        self.w_q, self.w_scale, self.out_dtype, self.config = w_q, w_scale, out_dtype, config
        self.n, self.k, self.device = n, k, dev
        self._block_m = config.block_m
        self._grid_n = _cdiv(n, config.block_n)
        self._w = (w_q.data_ptr(), w_scale.data_ptr())
        self._w_strides = (w_q.stride(0), w_scale.stride(0), w_scale.stride(1), n)
        fnuz = w_q.dtype == torch.float8_e4m3fnuz
        on_gpu = dev.type == "cuda"
        self._constexprs = {q: (config.block_m, config.block_n, config.k_groups, q, fnuz, on_gpu, config.frame)
                            for q in (False, True)}
        self._hooks_idle = fast_launch.hooks_idle
        self._stream = fast_launch.stream_getter() if on_gpu else None
        self._warm = fast_launch.warm
        self._can_warm = on_gpu and fast_launch.fast_launch_supported()
        self._dev_index = dev.index if dev.index is not None else 0
        self._launchers: dict = {}  # input dtype -> WarmKernel

    @property
    def warmed(self) -> bool:
        return bool(self._launchers)

    def programs(self, m: int) -> int:
        return self._grid_n * _cdiv(m, self._block_m)

    def __call__(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        return self._run(x_q, x_scale)

    def float_input(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def _run(self, x: torch.Tensor, x_scale: Optional[torch.Tensor]) -> torch.Tensor:
        m = x.shape[0]
        kernel = self._launchers.get(x.dtype)
        if kernel is not None and m:
            xp = x.data_ptr()
            if x_scale is None:
                sp, ss0, ss1 = xp, 0, 0
            else:
                sp = x_scale.data_ptr()
                ss0, ss1 = x_scale.stride()
            if not (xp | sp) & 15 and x.is_contiguous() and self._hooks_idle():
                out = torch.empty((m, self.n), dtype=self.out_dtype, device=self.device)
                w, ws = self._w
                wn, wsn, wsk, cm = self._w_strides
                kernel(self._grid_n, -(-m // self._block_m), self._stream(self._dev_index), xp, sp, w, ws, out,
                       m, self.n, self.k, self.k, ss0, ss1, wn, wsn, wsk, cm, *self._constexprs[x_scale is None])
                return out
        out = torch.empty((m, self.n), dtype=self.out_dtype, device=self.device)
        if m == 0:
            return out
        compiled = launch_fma(x, x_scale, self.w_q, self.w_scale, out, self.config)
        canonical = (x.stride(1) == 1 and x.stride(0) == self.k and not x.data_ptr() & 15
                     and (x_scale is None or not x_scale.data_ptr() & 15))
        if self._can_warm and canonical and x.dtype not in self._launchers:
            warm = self._warm(compiled)
            if warm is not None:
                self._launchers[x.dtype] = warm
        return out


def bind(w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype, config: KernelConfig):
    """The bound launch for ``config``: the routing hook between the kernels. A Gluon config
    (``config.kernel``) gets :class:`rocm_fp8.kernels.gluon_sm90.BoundGluonGemm` where that kernel
    can run this weight, else a :class:`BoundGemm` of the same tile; the fma kernel a
    :class:`BoundFma`; any other config a BoundGemm."""
    if config.kernel == FMA_KERNEL:
        return BoundFma(w_q, w_scale, out_dtype, config)
    if config.kernel is not None:
        from rocm_fp8.kernels.gluon_support import tma_ready, unavailable_reason

        if (w_q.dtype == torch.float8_e4m3fn and unavailable_reason(w_q.device) is None and tma_ready(w_q)):
            return gluon_module().BoundGluonGemm(w_q, w_scale, out_dtype, config)
        config = config.triton_fallback()
    return BoundGemm(w_q, w_scale, out_dtype, config)


def bind_gemm(w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16,
              config: Optional[KernelConfig] = None, m_hint: int = 1) -> BoundGemm:
    """A :class:`BoundGemm` for one weight; ``config`` None picks :func:`default_config` for ``m_hint``."""
    n, k = w_q.shape
    cfg = config if config is not None else default_config(m_hint, n, k)
    return bind(w_q, w_scale, out_dtype, cfg)
