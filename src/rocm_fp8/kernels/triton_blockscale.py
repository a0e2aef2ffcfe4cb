"""Triton FP8 block-scale GEMM: ``y = dequant(xq, x_scale) @ dequant(wq, w_scale)^T``.

Scales are dequantization multipliers: activations per 1 x 128 group along K (``x_scale [M, K/128]``,
any strides), weights per 128 x 128 block (``w_scale [ceil(N/128), ceil(K/128)]``, any strides).
Each program computes a ``BLOCK_M x BLOCK_N`` tile; per 128-wide K block it takes one FP8 dot into
fp32 and folds the two scales into the fp32 accumulator, so no precision is lost to the scales.

Layout of this file: the tile body (``_tile``), the kernel (plain grid or persistent, optional
split-K into an fp32 workspace plus a reduction kernel, optional TMA loads), the config type, and the
launcher :func:`blockscale_gemm`, which checks its inputs and names the offending argument.

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
import triton.language as tl

GROUP_K = 128  # activation group along K and weight block along K; the kernel's BLOCK_K
GROUP_N = 128  # weight block along N

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

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
# Kernels
# ------------------------------------------------------------------------------------------------


@triton.jit
def _kstep(acc, pa, pb, kb, pid_m, pid_n, a_ptr, b_ptr, a_offs, b_offs, as_ptrs, bs_ptrs, offs_k, K,
           stride_ak, stride_bk, stride_ask, stride_bsk,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
           USE_TMA: tl.constexpr, SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    """One 128-wide K block: an FP8 dot into fp32, scaled by the activation and weight scales.

    FRAME=False: ``acc += dot(a, b) * s`` (a multiply and an add per element per block).
    FRAME=True: ``acc`` is kept divided by the current block's scale (``pa`` per row, ``pb`` per
    column), so the tensor cores do the add: ``acc = dot(a, b, acc * s_prev / s)``; one multiply per
    element, fewer live registers (no separate product tile), and ``_tile`` multiplies the last scale
    back in. Scales are clamped to |s| >= 1e-15 so the division stays finite.
    Precision: the running sum then lives in the dot's accumulator for all of K. On NVIDIA Hopper
    FP8 wgmma accumulates with reduced precision, so the error grows with K (H100: 1.9e-3 at
    K=1536, 5.1e-3 at K=16384, against the 1.66e-3 bf16 rounding floor that FRAME=False keeps);
    the tuner's accuracy gate (tune.ACCURACY_SLACK) admits it only where it stays near the floor.
    """
    k0 = kb * BLOCK_K
    if USE_TMA:
        a = a_ptr.load([pid_m * BLOCK_M, k0])
        b = b_ptr.load([pid_n * BLOCK_N, k0])
    elif EVEN_K:
        a = tl.load(a_ptr + a_offs + k0 * stride_ak)
        b = tl.load(b_ptr + b_offs + k0 * stride_bk)
    else:
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptr + a_offs + k0 * stride_ak, mask=k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + b_offs + k0 * stride_bk, mask=k_ok[None, :], other=0.0)
    a_s = tl.load(as_ptrs + kb * stride_ask)
    b_s = tl.load(bs_ptrs + kb * stride_bsk)
    if FRAME:
        a_s = tl.where(tl.abs(a_s) < 1e-15, 1e-15, a_s)
        b_s = tl.where(tl.abs(b_s) < 1e-15, 1e-15, b_s)
        if BLOCK_N > SCALE_BLOCK_N:
            ratio = (pa / a_s)[:, None] * (pb / b_s)[None, :]
            pb = b_s
        else:
            s = a_s * b_s
            ratio = (pa / s)[:, None]
            a_s = s
        acc = tl.dot(a, tl.trans(b), acc * ratio)
        pa = a_s
    else:
        part = tl.dot(a, tl.trans(b))
        if BLOCK_N > SCALE_BLOCK_N:
            acc += part * (a_s[:, None] * b_s[None, :])
        else:
            acc += part * (a_s * b_s)[:, None]
    return acc, pa, pb


@triton.jit
def _tile(tile_id, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr,
          M, N, K,
          stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
          stride_asm, stride_ask, stride_bsn, stride_bsk,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
          GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
          USE_TMA: tl.constexpr, SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles_per_split = num_pid_m * num_pid_n
    split = tile_id // tiles_per_split
    t = tile_id % tiles_per_split
    # Grouped ordering: GROUP_M row-tiles share the same column tiles while they are in L2.
    group_size = GROUP_M * num_pid_n
    first_m = (t // group_size) * GROUP_M
    rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (t % group_size) % rows
    pid_n = (t % group_size) // rows

    k_blocks = tl.cdiv(K, BLOCK_K)
    kb_per_split = tl.cdiv(k_blocks, SPLIT_K)
    kb_lo = split * kb_per_split
    kb_hi = tl.minimum(kb_lo + kb_per_split, k_blocks)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrap out-of-range rows/columns onto valid ones so the loads need no mask; the store drops them.
    offs_am = offs_m % M
    offs_bn = offs_n % N
    offs_k = tl.arange(0, BLOCK_K)

    as_ptrs = as_ptr + offs_am * stride_asm
    if BLOCK_N > SCALE_BLOCK_N:
        bs_ptrs = bs_ptr + (offs_bn // SCALE_BLOCK_N) * stride_bsn
    else:
        bs_ptrs = bs_ptr + (pid_n * BLOCK_N // SCALE_BLOCK_N) * stride_bsn
    # (unused when USE_TMA: the descriptors carry the addressing)
    a_ptrs = offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = offs_bn[:, None] * stride_bn + offs_k[None, :] * stride_bk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # FRAME: per-row (pa) and per-column (pb) scale the accumulator is currently divided by;
    # with BLOCK_N <= 128, pa holds the product of both scales and pb stays 1.
    pa = tl.full((BLOCK_M,), 1.0, tl.float32)
    pb = tl.full((BLOCK_N,), 1.0, tl.float32)
    for kb in range(kb_lo, kb_hi):
        acc, pa, pb = _kstep(acc, pa, pb, kb, pid_m, pid_n, a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs,
                             offs_k, K, stride_ak, stride_bk, stride_ask, stride_bsk,
                             BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, USE_TMA, SCALE_BLOCK_N, FRAME)
    if FRAME:
        if BLOCK_N > SCALE_BLOCK_N:
            acc = acc * (pa[:, None] * pb[None, :])
        else:
            acc = acc * pa[:, None]

    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    if SPLIT_K == 1:
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)
    else:
        # fp32 partial sums, reduced in a fixed order by _splitk_reduce (deterministic).
        w_ptrs = ws_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(w_ptrs, acc, mask=mask)


# M, NUM_PROGRAMS and the scale strides vary between shapes without changing the code worth
# generating; not specializing them lets one compiled kernel per config serve every shape.
@triton.jit(do_not_specialize=["M", "NUM_PROGRAMS", "stride_asm", "stride_ask", "stride_bsn", "stride_bsk"])
def _blockscale_gemm_kernel(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr,
                            M, N, K,
                            stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                            stride_asm, stride_ask, stride_bsn, stride_bsk,
                            NUM_PROGRAMS,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
                            USE_TMA: tl.constexpr, PERSISTENT: tl.constexpr,
                            SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    pid = tl.program_id(0)
    if PERSISTENT:
        num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N) * SPLIT_K
        for tile_id in range(pid, num_tiles, NUM_PROGRAMS):
            _tile(tile_id, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, M, N, K,
                  stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                  stride_asm, stride_ask, stride_bsn, stride_bsk,
                  BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, EVEN_K, USE_TMA, SCALE_BLOCK_N,
                  FRAME)
    else:
        _tile(pid, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, M, N, K,
              stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
              stride_asm, stride_ask, stride_bsn, stride_bsk,
              BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, EVEN_K, USE_TMA, SCALE_BLOCK_N,
              FRAME)


# M is not specialized so that one compiled reduction serves every M of a bound layer (see BoundGemm).
@triton.jit(do_not_specialize=["M"])
def _splitk_reduce(ws_ptr, c_ptr, M, N, stride_cm, stride_cn,
                   SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    total = M * N
    ok = offs < total
    acc = tl.load(ws_ptr + offs, mask=ok, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(ws_ptr + s * total + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(c_ptr + m * stride_cm + n * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=ok)


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

        if not (pow2(self.block_m) and 16 <= self.block_m <= 256):
            raise ValueError(f"config.block_m: expected a power of two in [16, 256], got {self.block_m}")
        if not (pow2(self.block_n) and 16 <= self.block_n <= 256):
            raise ValueError(f"config.block_n: expected a power of two in [16, 256], got {self.block_n}")
        if self.programs_per_sm < 1:
            raise ValueError(f"config.programs_per_sm: expected >= 1, got {self.programs_per_sm}")
        if self.group_m < 1 or self.split_k < 1:
            raise ValueError(f"config.group_m/split_k: expected >= 1, got {self.group_m}/{self.split_k}")
        if not pow2(self.num_warps):
            raise ValueError(f"config.num_warps: expected a power of two, got {self.num_warps}")
        if self.num_stages < 1:
            raise ValueError(f"config.num_stages: expected >= 1, got {self.num_stages}")
        return self


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
    launch(x_q, x_scale, w_q, w_scale, out, cfg)
    return out


def launch(x_q, x_scale, w_q, w_scale, out, cfg: KernelConfig):
    """Launch with no checks: the operands must already satisfy :func:`check_inputs`.

    Returns Triton's handle of the main kernel (its ``asm`` holds the PTX/SASS; None in the interpreter).
    """
    return _launch_jit(x_q, x_scale, w_q, w_scale, out, cfg)[0]


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
    compiled = _blockscale_gemm_kernel[(programs,)](
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
        reduce = _splitk_reduce[(_cdiv(m * n, _REDUCE_BLOCK),)](
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


def bind_gemm(w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16,
              config: Optional[KernelConfig] = None, m_hint: int = 1) -> BoundGemm:
    """A :class:`BoundGemm` for one weight; ``config`` None picks :func:`default_config` for ``m_hint``."""
    n, k = w_q.shape
    cfg = config if config is not None else default_config(m_hint, n, k)
    return BoundGemm(w_q, w_scale, out_dtype, cfg)
