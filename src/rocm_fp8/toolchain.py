"""Toolchain fingerprint: the facts the dispatch decision depends on.

A :class:`Toolchain` is plain data. It is either detected on this machine (:func:`detect`), read
from the configuration file baked into an image, or described by hand
(:meth:`Toolchain.hypothetical`) so that decisions can be tested and explained for a machine we
do not have.

Two HIP versions matter and can differ in a mixed image: ``torch.version.hip`` (what torch was
built with) and the hipcc that compiled aiter's CK modules (``hip_version``). Known miscompiles
belong to the latter, so the dispatcher trusts ``hip_version``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

Version = tuple[int, ...]

#: Architectures the dispatcher knows by name.  "sm90" is NVIDIA Hopper, "cpu" no GPU at all.
KNOWN_ARCHES = ("gfx942", "gfx950", "sm90", "cpu")


def parse_version(text: Optional[str]) -> Optional[Version]:
    """``"7.0.51831-a2e4e0c4"`` -> ``(7, 0, 51831)``; ``"7.2"`` -> ``(7, 2)``; junk -> None."""
    if not text:
        return None
    m = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def format_version(v: Optional[Version]) -> Optional[str]:
    return None if v is None else ".".join(str(p) for p in v)


def vendor_of(arch: Optional[str]) -> str:
    if not arch or arch == "cpu":
        return "cpu"
    if arch.startswith("gfx"):
        return "amd"
    if arch.startswith("sm"):
        return "nvidia"
    return "unknown"


def fp8_flavour_of(arch: Optional[str]) -> str:
    """The FP8 flavour a device computes in: fnuz on gfx942 (MI300X/MI325X), OCP e4m3fn elsewhere."""
    return "e4m3fnuz" if arch == "gfx942" else "e4m3fn"


@dataclass(frozen=True)
class Toolchain:
    arch: str = "cpu"                      # normalised: gfx942, gfx950, sm90, sm100, cpu, ...
    arch_full: Optional[str] = None        # as reported, e.g. "gfx950:sramecc+:xnack-"
    cu_count: Optional[int] = None
    device_name: Optional[str] = None
    # HIP of the hipcc that builds aiter's kernels (hipconfig/hipcc --version) and its string
    hip_version: Optional[Version] = None
    hip_version_str: Optional[str] = None
    rocm_version: Optional[Version] = None  # /opt/rocm/.info/version or the clang "roc-X.Y.Z" token
    clang_version: Optional[str] = None
    torch_version: Optional[str] = None
    torch_hip: Optional[str] = None         # torch.version.hip
    torch_cuda: Optional[str] = None        # torch.version.cuda
    triton_version: Optional[str] = None
    triton_interpret: bool = False          # TRITON_INTERPRET=1: Triton kernels run on the CPU
    aiter_installed: bool = False
    aiter_reason: str = ""                  # why aiter cannot be used, when it cannot
    aiter_version: Optional[str] = None
    aiter_commit: Optional[str] = None
    source: str = "detected"                # detected | hypothetical | config:<path>
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---------------------------------------------------------------------------------------
    @property
    def vendor(self) -> str:
        return vendor_of(self.arch)

    @property
    def fp8_flavour(self) -> str:
        return fp8_flavour_of(self.arch)

    @property
    def has_gpu(self) -> bool:
        return self.vendor in ("amd", "nvidia")

    @property
    def torch_hip_version(self) -> Optional[Version]:
        return parse_version(self.torch_hip)

    @property
    def compiler_hip_version(self) -> Optional[Version]:
        """The HIP version of the compiler that built the kernels: hipcc's, else torch's."""
        return self.hip_version or self.torch_hip_version

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hip_version"] = format_version(self.hip_version)
        d["rocm_version"] = format_version(self.rocm_version)
        d["warnings"] = list(self.warnings)
        d["vendor"] = self.vendor
        d["fp8_flavour"] = self.fp8_flavour
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Toolchain":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("hip_version", "rocm_version"):
            if isinstance(kw.get(key), str):
                kw[key] = parse_version(kw[key])
            elif isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        if "warnings" in kw:
            kw["warnings"] = tuple(kw["warnings"])
        return cls(**kw)

    def with_(self, **changes: Any) -> "Toolchain":
        return replace(self, **changes)

    # ---------------------------------------------------------------------------------------
    @classmethod
    def hypothetical(cls, arch: str = "cpu", hip: Optional[str] = None, rocm: Optional[str] = None,
                     aiter: bool = True, aiter_version: Optional[str] = None,
                     aiter_commit: Optional[str] = None, cu_count: Optional[int] = None,
                     triton: bool = True) -> "Toolchain":
        """Describe a machine we do not have, for ``explain`` and for tests.

        ``hip`` is a HIP version as printed by ``hipcc --version`` (e.g. ``7.0.51831``); ``rocm`` the
        ROCm release (e.g. ``7.0.2``).  Either implies the other's major.minor when only one is given.
        On an AMD arch aiter is assumed installed unless ``aiter=False``.
        """
        if arch not in KNOWN_ARCHES and not re.fullmatch(r"(gfx[0-9a-f]+|sm\d+)", arch or ""):
            raise ValueError(f"arch: expected one of {', '.join(KNOWN_ARCHES)} (or gfxNNN / smNN), got {arch!r}")
        vendor = vendor_of(arch)
        hip_v = parse_version(hip)
        if hip is not None and hip_v is None:
            raise ValueError(f"hip: expected a HIP version such as 7.0.51831, got {hip!r}")
        rocm_v = parse_version(rocm)
        if rocm is not None and rocm_v is None:
            raise ValueError(f"rocm: expected a ROCm version such as 7.0.2, got {rocm!r}")
        if vendor != "amd" and (hip_v or rocm_v):
            raise ValueError(f"hip/rocm: a HIP or ROCm version only makes sense for an AMD arch, got arch {arch!r}")
        if vendor == "amd":
            if hip_v is None and rocm_v is not None:
                hip_v = rocm_v[:2]
            if rocm_v is None and hip_v is not None:
                rocm_v = hip_v[:2]
        aiter_ok = bool(aiter) and vendor == "amd"
        if vendor != "amd":
            aiter_reason = "aiter runs on AMD GPUs only"
        elif not aiter:
            aiter_reason = "aiter is not installed (--no-aiter)"
        else:
            aiter_reason = ""
        default_cus = {"gfx942": 304, "gfx950": 256, "sm90": 132}
        return cls(
            arch=arch,
            arch_full=arch,
            cu_count=cu_count if cu_count is not None else default_cus.get(arch),
            hip_version=hip_v,
            hip_version_str=format_version(hip_v),
            rocm_version=rocm_v,
            torch_hip=format_version(hip_v) if vendor == "amd" else None,
            torch_cuda="12.8" if vendor == "nvidia" else None,
            triton_version="hypothetical" if triton else None,
            aiter_installed=aiter_ok,
            aiter_reason=aiter_reason,
            aiter_version=aiter_version,
            aiter_commit=aiter_commit,
            source="hypothetical",
        )


def normalise_arch(raw: Optional[str], vendor: str = "amd", capability: Optional[tuple[int, int]] = None) -> str:
    """``"gfx950:sramecc+:xnack-"`` -> ``"gfx950"``; a CUDA capability (9, 0) -> ``"sm90"``."""
    if vendor == "nvidia" and capability is not None:
        return f"sm{capability[0]}{capability[1]}"
    if not raw:
        return "cpu"
    base = raw.split(":")[0].strip()
    if base in ("", "gfx000"):
        return "cpu"
    return base


def _detect_from_torch() -> dict[str, Any]:
    """Facts torch can tell without touching any subprocess."""
    import os

    facts: dict[str, Any] = {}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        facts["warnings"] = (f"torch cannot be imported: {exc}",)
        return facts
    facts["torch_version"] = torch.__version__
    facts["torch_hip"] = getattr(torch.version, "hip", None)
    facts["torch_cuda"] = getattr(torch.version, "cuda", None)
    try:
        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if has_gpu:
        props = torch.cuda.get_device_properties(0)
        facts["device_name"] = props.name
        facts["cu_count"] = props.multi_processor_count
        if facts["torch_hip"]:
            facts["arch_full"] = getattr(props, "gcnArchName", None)
            facts["arch"] = normalise_arch(facts["arch_full"], "amd")
        else:
            cap = (props.major, props.minor)
            facts["arch_full"] = f"sm_{cap[0]}{cap[1]}"
            facts["arch"] = normalise_arch(None, "nvidia", cap)
    else:
        facts["arch"] = "cpu"
    facts["triton_interpret"] = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    try:
        from importlib.metadata import version

        facts["triton_version"] = version("triton")
    except Exception:  # noqa: BLE001
        try:
            from importlib.metadata import version

            facts["triton_version"] = version("pytorch-triton-rocm")
        except Exception:  # noqa: BLE001
            facts["triton_version"] = None
    return facts


_DETECTED: Optional[Toolchain] = None


def detect(refresh: bool = False) -> Toolchain:
    """The toolchain of this process, detected once and cached.

    Extended by the fingerprint module (hipcc, ROCm info, aiter, the baked configuration file).
    """
    global _DETECTED
    if _DETECTED is None or refresh:
        _DETECTED = _detect()
    return _DETECTED


def _detect() -> Toolchain:
    facts = _detect_from_torch()
    return Toolchain(**{k: v for k, v in facts.items() if k in Toolchain.__dataclass_fields__})


def set_current(toolchain: Optional[Toolchain]) -> None:
    """Replace the cached toolchain (tests, or a process that knows better). None re-detects later."""
    global _DETECTED
    _DETECTED = toolchain
