"""Pure parsers for what the ROCm tools print, and the toolchain fingerprint.

Every function here takes text and returns facts; none runs a process or reads a file, so each is
tested against real samples (tests/fixtures/toolchain/). Detection, which does run the tools, lives
in :mod:`rocm_fp8.toolchain.detection`.

Samples (docs/reference.md section 3)::

    hipcc --version     HIP version: 7.0.51831-a2e4e0c4
                        AMD clang version 20.0.0git (roc-7.0.0 25292)
                        Target: x86_64-unknown-linux-gnu ... InstalledDir: /opt/rocm-7.0.0/lib/llvm/bin
    hipconfig --version 7.2.26015-fc0010cf6a
    .info/version       7.0.0-63
    gcnArchName         gfx950:sramecc+:xnack-

The HIP build number does not identify the patch release (7.2.1 and 7.2.4 both print 7.2.53211):
the ROCm release comes from ``.info/version`` or the clang line's ``roc-X.Y.Z`` token.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

Version = tuple[int, ...]

_VERSION_RE = re.compile(r"(\d+(?:\.\d+)+)")
_HIP_LINE_RE = re.compile(r"^\s*HIP version\s*:\s*(\S+)", re.MULTILINE)
_ROC_TOKEN_RE = re.compile(r"\broc-(\d+\.\d+(?:\.\d+)?)")
_CLANG_RE = re.compile(r"^(.*\bclang version\s+(\S+).*)$", re.MULTILINE)
_INSTALLED_RE = re.compile(r"^\s*InstalledDir\s*:\s*(\S.*?)\s*$", re.MULTILINE)
_GFX_RE = re.compile(r"\bgfx[0-9a-f]{3,4}\b")


def _version_tuple(text: str) -> Optional[Version]:
    m = _VERSION_RE.match(text.strip()) if text else None
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


@dataclass(frozen=True)
class HipccInfo:
    """What ``hipcc --version`` tells."""

    hip_version: Optional[Version]      # (7, 0, 51831)
    hip_version_str: Optional[str]      # "7.0.51831-a2e4e0c4", as printed
    clang_version: Optional[str]        # "20.0.0git"
    clang_line: Optional[str]           # the whole clang line, for the report
    rocm_version: Optional[Version]     # from the "roc-7.0.2" token, when present
    installed_dir: Optional[str]        # "/opt/rocm-7.2.4/lib/llvm/bin"


def parse_hipcc_version(text: str) -> HipccInfo:
    """Parse ``hipcc --version``. Missing lines give None fields; never raises on odd text."""
    text = text or ""
    hip = _HIP_LINE_RE.search(text)
    hip_str = hip.group(1) if hip else None
    clang = _CLANG_RE.search(text)
    clang_line = clang.group(1).strip() if clang else None
    roc = _ROC_TOKEN_RE.search(text)
    inst = _INSTALLED_RE.search(text)
    return HipccInfo(
        hip_version=_version_tuple(hip_str) if hip_str else None,
        hip_version_str=hip_str,
        clang_version=clang.group(2) if clang else None,
        clang_line=clang_line,
        rocm_version=_version_tuple(roc.group(1)) if roc else None,
        installed_dir=inst.group(1) if inst else None,
    )


def parse_hipconfig_version(text: str) -> tuple[Optional[Version], Optional[str]]:
    """``hipconfig --version`` prints the bare HIP version (``7.2.26015-fc0010cf6a``), sometimes
    without a trailing newline; some builds prefix it like hipcc does. -> ((7, 2, 26015), string)."""
    text = (text or "").strip()
    hip = _HIP_LINE_RE.search(text)
    if hip:
        text = hip.group(1)
    first = text.split()[0] if text.split() else ""
    v = _version_tuple(first)
    return (v, first) if v else (None, None)


def parse_rocm_info_version(text: str) -> tuple[Optional[Version], Optional[str]]:
    """``/opt/rocm/.info/version``: ``7.0.0-63`` -> ((7, 0, 0), "63"); ``7.2.4`` -> ((7, 2, 4), None)."""
    text = (text or "").strip()
    m = re.match(r"^(\d+(?:\.\d+)+)(?:-(\S+))?", text)
    if not m:
        return None, None
    return tuple(int(p) for p in m.group(1).split(".")), m.group(2)


def parse_gcn_arch_name(text: Optional[str]) -> Optional[str]:
    """``gfx950:sramecc+:xnack-`` -> ``gfx950``; ``gfx000`` (the CPU agent) and junk -> None."""
    if not text:
        return None
    base = text.strip().split(":")[0].strip()
    if not re.fullmatch(r"gfx[0-9a-f]{3,4}", base) or base == "gfx000":
        return None
    return base


def parse_agent_list(text: str) -> list[str]:
    """``rocm_agent_enumerator`` / ``amdgpu-arch`` output: one arch per line (``gfx000`` is the CPU and is
    skipped). Returns the GPU arches in order, duplicates kept (one per device)."""
    arches = []
    for line in (text or "").splitlines():
        arch = parse_gcn_arch_name(line)
        if arch:
            arches.append(arch)
    return arches


@dataclass(frozen=True)
class RocminfoAgent:
    arch: str
    marketing_name: Optional[str]
    compute_units: Optional[int]


def parse_rocminfo(text: str) -> list[RocminfoAgent]:
    """The GPU agents of ``rocminfo``: the ``Name: gfxNNN`` of each agent block with its marketing
    name and ``Compute Unit`` count. CPU agents (and gfx000) are skipped."""
    agents: list[RocminfoAgent] = []
    blocks = re.split(r"^\*+\s*\nAgent \d+\s*\n\*+\s*$", text or "", flags=re.MULTILINE)
    for block in blocks:
        name = re.search(r"^[ \t]{0,4}Name:[ \t]*(\S+)[ \t]*$", block, re.MULTILINE)
        arch = parse_gcn_arch_name(name.group(1)) if name else None
        if not arch:
            continue
        mk = re.search(r"^\s*Marketing Name:\s*(.+?)\s*$", block, re.MULTILINE)
        cu = re.search(r"^\s*Compute Unit:\s*(\d+)", block, re.MULTILINE)
        agents.append(RocminfoAgent(arch, mk.group(1) if mk else None, int(cu.group(1)) if cu else None))
    return agents


def major_minor(v: Optional[Version]) -> Optional[Version]:
    return None if v is None else tuple(v[:2])


# -- fingerprint -------------------------------------------------------------------------------

#: The toolchain facts that can change what a kernel computes. A probe report is valid for exactly
#: one combination of these, so they name its cache file.
FINGERPRINT_FIELDS = (
    "arch", "arch_full", "cu_count", "device_name", "hip_version_str", "rocm_version", "clang_version",
    "torch_version", "torch_hip", "torch_cuda", "triton_version", "triton_interpret",
    "aiter_version", "aiter_commit",
)


def fingerprint(toolchain: Any) -> str:
    """A :class:`~rocm_fp8.toolchain.Toolchain`'s stable, file-name-safe key:
    ``<arch>-<hip or cuda or cpu>-<12 hex digits>``, e.g. ``gfx950-hip7.0.51831-3f2a9c0e1b7d``.
    Equal for two processes on the same image and device. Typed loosely: this module of parsers
    imports nothing from the toolchain package, which imports it."""
    d = toolchain.to_dict()
    facts: dict[str, Any] = {k: d.get(k) for k in FINGERPRINT_FIELDS}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if toolchain.hip_version:
        tag = "hip" + ".".join(str(p) for p in toolchain.hip_version)
    elif toolchain.torch_hip:
        tag = "hip" + re.sub(r"[^0-9.]", "", toolchain.torch_hip.split("-")[0])
    elif toolchain.torch_cuda:
        tag = "cuda" + toolchain.torch_cuda
    else:
        tag = "cpu"
    arch = re.sub(r"[^A-Za-z0-9_.]", "_", toolchain.arch or "cpu")
    return f"{arch}-{tag}-{digest}"
