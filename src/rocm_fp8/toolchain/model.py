"""The toolchain's data model: the facts the dispatch decision depends on, as plain data.

A :class:`Toolchain` is either detected on this machine (:mod:`rocm_fp8.toolchain.detection`), read
from the configuration file baked into an image (:mod:`rocm_fp8.toolchain.config_file`), or
described by hand (:meth:`Toolchain.hypothetical`) so that decisions can be tested and explained
for a machine we do not have.

Two HIP versions matter and can differ in a mixed image: ``torch.version.hip`` (what torch was
built with) and the hipcc that compiled aiter's CK modules (``hip_version``). Known miscompiles
belong to the latter, so the dispatcher trusts ``hip_version`` (docs/reference.md section 1).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from rocm_fp8.fingerprint import fingerprint as _fingerprint

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
    aiter_commit_date: Optional[str] = None  # ISO date of aiter_commit (git, or ROCM_FP8_AITER_COMMIT_DATE)
    #: ledger fix commits verified to be ancestors of aiter_commit (git merge-base in aiter's checkout)
    aiter_includes: tuple[str, ...] = ()
    rocm_path: Optional[str] = None          # the ROCm root detection used (ROCM_PATH, ROCM_HOME, /opt/rocm)
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

    @property
    def fingerprint(self) -> str:
        """The key probe reports are cached under (see :func:`rocm_fp8.fingerprint.fingerprint`)."""
        return _fingerprint(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hip_version"] = format_version(self.hip_version)
        d["rocm_version"] = format_version(self.rocm_version)
        d["warnings"] = list(self.warnings)
        d["aiter_includes"] = list(self.aiter_includes)
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
        for key in ("warnings", "aiter_includes"):
            if key in kw and kw[key] is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def with_(self, **changes: Any) -> "Toolchain":
        return replace(self, **changes)

    # ---------------------------------------------------------------------------------------
    @classmethod
    def hypothetical(cls, arch: str = "cpu", hip: Optional[str] = None, rocm: Optional[str] = None,
                     aiter: bool = True, aiter_version: Optional[str] = None,
                     aiter_commit: Optional[str] = None, cu_count: Optional[int] = None,
                     triton: bool = True, aiter_commit_date: Optional[str] = None,
                     device_name: Optional[str] = None) -> "Toolchain":
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
            torch_cuda="13.0" if vendor == "nvidia" else None,
            triton_version="hypothetical" if triton else None,
            aiter_installed=aiter_ok,
            aiter_reason=aiter_reason,
            aiter_version=aiter_version,
            aiter_commit=aiter_commit,
            aiter_commit_date=aiter_commit_date,
            source="hypothetical",
            device_name=device_name,
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


def format_toolchain(tc: Toolchain) -> str:
    """The toolchain as ``rocm-fp8 info`` prints it, warnings (e.g. a HIP mismatch) last."""
    def v(x: Any) -> str:
        return "-" if x in (None, "", ()) else str(x)

    aiter = "not installed"
    if tc.aiter_installed:
        aiter = v(tc.aiter_version)
        if tc.aiter_commit:
            aiter += f" (commit {tc.aiter_commit[:12]}"
            aiter += f", {tc.aiter_commit_date})" if tc.aiter_commit_date else ")"
        if tc.aiter_reason:
            aiter += f"; unusable: {tc.aiter_reason}"
    elif tc.aiter_reason:
        aiter = tc.aiter_reason
    rows = [
        ("source", tc.source),
        ("fingerprint", tc.fingerprint),
        ("arch", f"{tc.arch}" + (f" ({tc.arch_full})" if tc.arch_full and tc.arch_full != tc.arch else "")),
        ("device", v(tc.device_name) + (f", {tc.cu_count} CUs/SMs" if tc.cu_count else "")),
        ("fp8 flavour", tc.fp8_flavour),
        ("hipcc (builds aiter)", v(tc.hip_version_str)),
        ("ROCm", v(format_version(tc.rocm_version)) + (f" at {tc.rocm_path}" if tc.rocm_path else "")),
        ("clang", v(tc.clang_version)),
        ("torch", v(tc.torch_version) + (f", HIP {tc.torch_hip}" if tc.torch_hip else "")
         + (f", CUDA {tc.torch_cuda}" if tc.torch_cuda else "")),
        ("triton", v(tc.triton_version) + (" (interpreter)" if tc.triton_interpret else "")),
        ("aiter", aiter),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {val}" for k, val in rows]
    for w in tc.warnings:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)

