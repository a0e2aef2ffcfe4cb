"""Per-arch resource limits of the GPUs the Triton kernel runs on, in one place.

Used by :func:`rocm_fp8.kernels.triton_blockscale.default_config` (pick a tile that fits), by the tuner's
candidate filter (``rocm-fp8 tune``) and by :class:`rocm_fp8.backends.triton.TritonBackend` (never launch a
table row that cannot fit). Two answers are available:

- :func:`fits`: a cheap estimate from the tile sizes (shared memory/LDS of the software pipeline, the
  accumulator's registers). No Triton needed; this is what the hot path and the tables' checks use.
- :func:`rocm_fp8.kernels.amd_compile.fits_compiled` (AMD): compile for the arch with the installed Triton
  (:mod:`rocm_fp8.kernels.amd_compile`) and read LDS, spills, scratch and occupancy from the code object.
  Triton checks LDS only at launch, so this is the way to know before a GPU is at hand.

Sources for the numbers: AMD's CDNA3 (MI300) and CDNA4 (MI350) ISA guides and instinct docs (64 KiB LDS
per CU on CDNA3, 160 KiB on CDNA4; 512 VGPRs incl. AccVGPRs per SIMD lane at one wave; wave64;
MI300X 304 CUs, MI325X 304, MI355X 256); NVIDIA's H100/H200 tuning guide (227 KiB of shared memory per
block on sm90, 132 SMs on H100/H200 SXM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

#: the AMD archs this project ships tables and cross-compile checks for
AMD_ARCHS = ("gfx942", "gfx950")


@dataclass(frozen=True)
class ArchLimits:
    arch: str
    vendor: str                  # "amd" or "nvidia"
    lds_bytes: int               # shared memory (LDS) one workgroup/CTA may use
    registers_per_lane: int      # registers one wave/warp lane may hold at occupancy 1 (AMD: VGPR + AGPR)
    wave_size: int
    compute_units: int           # CUs (AMD) or SMs (NVIDIA) of the largest part of this arch
    fp8_flavour: str             # the FP8 format the matrix units compute in
    pipeline_buffers_delta: int  # LDS buffers = num_stages - delta (AMD's stream pipeliner keeps one in registers)

    def pipeline_buffers(self, num_stages: int) -> int:
        return max(1, num_stages - self.pipeline_buffers_delta)


ARCH_LIMITS: dict[str, ArchLimits] = {
    "gfx942": ArchLimits("gfx942", "amd", 64 * 1024, 512, 64, 304, "e4m3fnuz", 1),
    "gfx950": ArchLimits("gfx950", "amd", 160 * 1024, 512, 64, 256, "e4m3fn", 1),
    # Hopper: 227 KiB opt-in shared memory per block; the tuner leaves a little for the epilogue
    "sm90": ArchLimits("sm90", "nvidia", 220 * 1024, 255, 32, 132, "e4m3fn", 0),
}


def limits_for(arch: Optional[str]) -> Optional[ArchLimits]:
    """The limits of ``arch`` (``gfx942``, ``gfx950``, ``sm90``; other ``smNN`` >= 90 read as sm90)."""
    if arch is None:
        return None
    if arch in ARCH_LIMITS:
        return ARCH_LIMITS[arch]
    if arch.startswith("sm") and arch[2:].isdigit() and int(arch[2:]) >= 90:
        return ARCH_LIMITS["sm90"]
    return None


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def estimate_lds_bytes(cfg: Any, arch: str, block_k: int = 128) -> int:
    """Shared memory of the software pipeline: one FP8 A and B tile per buffered stage."""
    lim = limits_for(arch)
    stages = int(_get(cfg, "num_stages", 3))
    buffers = lim.pipeline_buffers(stages) if lim else stages
    return buffers * (int(_get(cfg, "block_m", 64)) + int(_get(cfg, "block_n", 128))) * block_k


def accumulator_registers(cfg: Any, arch: str) -> int:
    """fp32 accumulator registers each lane holds (the tile spread over the workgroup's lanes)."""
    lim = limits_for(arch)
    wave = lim.wave_size if lim else 32
    lanes = int(_get(cfg, "num_warps", 4)) * wave
    return int(_get(cfg, "block_m", 64)) * int(_get(cfg, "block_n", 128)) // lanes


def fits(cfg: Any, arch: Optional[str]) -> tuple[bool, str]:
    """Cheap check that ``cfg`` (a KernelConfig or its dict) can launch on ``arch``: ``(ok, reason)``.

    Shared memory/LDS must hold the pipeline's buffers. On AMD the accumulator may take less than a
    quarter of the registers a lane has at the workgroup's occupancy, leaving room for the operand
    tiles and addresses, so a config that would spill to scratch memory is refused (the estimate;
    :func:`rocm_fp8.kernels.amd_compile.fits_compiled` knows). Unknown archs pass (there is nothing to check against).
    """
    lim = limits_for(arch)
    if lim is None:
        return True, ""
    lds = estimate_lds_bytes(cfg, arch)
    if lds > lim.lds_bytes:
        return False, (f"{describe(cfg)} needs about {lds // 1024} KiB of shared memory, {arch} has "
                       f"{lim.lds_bytes // 1024} KiB per workgroup")
    if lim.vendor == "amd":
        # A workgroup's waves share the CU's 4 SIMDs: each SIMD holds ceil(num_warps / 4) of them (and
        # waves_per_eu asks for more), and they split the SIMD's registers.
        warps = int(_get(cfg, "num_warps", 4))
        waves = max(int(_get(cfg, "waves_per_eu", None) or 1), -(-warps // 4))
        budget = lim.registers_per_lane // waves
        acc = accumulator_registers(cfg, arch)
        # the operand tiles, their prefetch and addresses need the other three quarters (measured:
        # 128x256 at 8 warps, 64 accumulator registers of a 256 budget, spills on gfx942 and gfx950)
        if 4 * acc >= budget:
            return False, (f"{describe(cfg)} holds {acc} accumulator registers per lane, a quarter or more "
                           f"of the {budget} a lane has on {arch} at {waves} wave(s) per SIMD: it would spill")
    return True, ""


def describe(cfg: Any) -> str:
    return (f"a {_get(cfg, 'block_m')}x{_get(cfg, 'block_n')} tile with {_get(cfg, 'num_stages')} stages and "
            f"{_get(cfg, 'num_warps')} warps")
