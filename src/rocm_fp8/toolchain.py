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
        from rocm_fp8.fingerprint import fingerprint

        return fingerprint(self)

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


# =============================================================================================
# Detection of the compiler side: ROCm root, hipcc/hipconfig, .info/version, agents, aiter.
# Runs only when detect() is first called (never at import) and is cached for the process.
# =============================================================================================

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: env var naming the configuration file to read instead of detecting ("none" turns files off)
ENV_CONFIG = "ROCM_FP8_CONFIG"
#: env vars that say which aiter commit is installed when it cannot be read from the install
ENV_AITER_COMMIT = "ROCM_FP8_AITER_COMMIT"
ENV_AITER_COMMIT_DATE = "ROCM_FP8_AITER_COMMIT_DATE"

CONFIG_FORMAT = "rocm-fp8-config"
CONFIG_VERSION = 1

_TOOL_TIMEOUT_S = 30.0


def rocm_root() -> Optional[str]:
    """The ROCm install: $ROCM_PATH, then $ROCM_HOME, then the root of the hipcc on PATH, then
    /opt/rocm. None when none of them exists."""
    for var in ("ROCM_PATH", "ROCM_HOME"):
        value = os.environ.get(var)
        if value and os.path.isdir(value):
            return value
    hipcc = shutil.which("hipcc")
    if hipcc:
        root = Path(os.path.realpath(hipcc)).parent.parent
        if (root / "bin").is_dir():
            return str(root)
    return "/opt/rocm" if os.path.isdir("/opt/rocm") else None


def _tool(root: Optional[str], name: str) -> Optional[str]:
    """A ROCm tool from the chosen root first (so ROCM_PATH wins over PATH), else from PATH."""
    if root:
        for sub in ("bin", "llvm/bin", "lib/llvm/bin"):
            candidate = os.path.join(root, sub, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which(name)


def _run(argv: list[str], timeout: float = _TOOL_TIMEOUT_S) -> Optional[str]:
    """stdout (+stderr) of a tool, or None when it is missing, fails or hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return (proc.stdout or "") + (proc.stderr or "")


def _detect_compiler(root: Optional[str]) -> dict[str, Any]:
    from rocm_fp8 import fingerprint as fp

    facts: dict[str, Any] = {"rocm_path": root}
    hipconfig = _tool(root, "hipconfig")
    hipcc = _tool(root, "hipcc")
    # aiter asks hipconfig; hipcc --version adds the clang line with the roc-X.Y.Z token.
    if hipconfig:
        out = _run([hipconfig, "--version"])
        if out:
            v, text = fp.parse_hipconfig_version(out)
            if v:
                facts["hip_version"], facts["hip_version_str"] = v, text
    if hipcc:
        out = _run([hipcc, "--version"])
        if out:
            info = fp.parse_hipcc_version(out)
            if "hip_version" not in facts and info.hip_version:
                facts["hip_version"], facts["hip_version_str"] = info.hip_version, info.hip_version_str
            facts["clang_version"] = info.clang_line or info.clang_version
            if info.rocm_version:
                facts["rocm_version"] = info.rocm_version
    if root:
        try:
            text = Path(root, ".info", "version").read_text()
        except OSError:
            text = ""
        v, _build = fp.parse_rocm_info_version(text)
        if v:
            facts["rocm_version"] = v  # the file is authoritative over the clang token
    facts["_hipconfig"] = hipconfig
    facts["_hipcc"] = hipcc
    return facts


def _detect_agents(root: Optional[str]) -> tuple[list[str], Optional[int]]:
    """GPU arches the ROCm tools see (without torch), and the CU count of the first when known."""
    from rocm_fp8 import fingerprint as fp

    for tool in ("rocm_agent_enumerator", "amdgpu-arch"):
        path = _tool(root, tool)
        if path:
            out = _run([path])
            arches = fp.parse_agent_list(out or "")
            if arches:
                return arches, None
    path = _tool(root, "rocminfo")
    if path:
        agents = fp.parse_rocminfo(_run([path]) or "")
        if agents:
            return [a.arch for a in agents], agents[0].compute_units
    return [], None


# -- aiter, without importing it ----------------------------------------------------------------

def _git_dir(start: Path) -> Optional[Path]:
    for parent in [start, *start.parents]:
        candidate = parent / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # a worktree: "gitdir: <path>"
            text = candidate.read_text().strip()
            if text.startswith("gitdir:"):
                return (parent / text.split(":", 1)[1].strip()).resolve()
    return None


def _git_head(git_dir: Path) -> Optional[str]:
    """The commit HEAD points to, read from the files (no git needed)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.split(":", 1)[1].strip()
    for base in (git_dir, _common_git_dir(git_dir)):
        try:
            return (base / ref).read_text().strip()
        except OSError:
            pass
        try:
            for line in (base / "packed-refs").read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
        except OSError:
            pass
    return None


def _common_git_dir(git_dir: Path) -> Path:
    try:
        return (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    except OSError:
        return git_dir


def _commit_from_version(version: Optional[str]) -> Optional[str]:
    """setuptools-scm versions carry the commit: ``0.1.5.dev38+g1a2b3c4d`` -> ``1a2b3c4d``."""
    import re

    if not version:
        return None
    m = re.search(r"[+.]g([0-9a-f]{7,40})\b", version)
    return m.group(1) if m else None


def _fix_commits() -> list[str]:
    try:
        from rocm_fp8.ledger import fix_commits

        return fix_commits()
    except Exception:  # noqa: BLE001 - detection must not fail because of the ledger
        return []


def _detect_aiter(compiler: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md
    import importlib.util

    facts: dict[str, Any] = {}
    try:
        spec = importlib.util.find_spec("aiter")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        facts.update(aiter_installed=False, aiter_reason="aiter is not installed (pip package amd-aiter)")
        return facts
    facts["aiter_installed"] = True
    dist = None
    for name in ("amd-aiter", "aiter"):
        try:
            dist = md.distribution(name)
            break
        except md.PackageNotFoundError:
            continue
    version = dist.version if dist is not None else None
    commit = _commit_from_version(version)
    if commit is None and dist is not None:
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
            commit = (direct.get("vcs_info") or {}).get("commit_id")
        except (ValueError, TypeError):
            pass
    pkg_dir = Path(spec.origin).parent if spec.origin else (
        Path(list(spec.submodule_search_locations)[0]) if spec.submodule_search_locations else None)
    git_dir = _git_dir(pkg_dir) if pkg_dir else None
    commit_date = None
    includes: list[str] = []
    if git_dir is not None:
        commit = _git_head(git_dir) or commit
        git = shutil.which("git")
        if git and commit:
            work = str(git_dir.parent)
            out = _run([git, "-C", work, "log", "-1", "--format=%cs", commit], timeout=10)
            commit_date = out.strip() if out else None
            for fix in _fix_commits():
                try:
                    rc = subprocess.run([git, "-C", work, "merge-base", "--is-ancestor", fix, commit],
                                        capture_output=True, timeout=10).returncode
                except (OSError, subprocess.SubprocessError):
                    continue
                if rc == 0:
                    includes.append(fix)
    if os.environ.get(ENV_AITER_COMMIT):
        commit = os.environ[ENV_AITER_COMMIT].strip()
        # fix commits verified where the source was (an image build host's git): ROCM_FP8_AITER_INCLUDES
        includes = [c for c in os.environ.get("ROCM_FP8_AITER_INCLUDES", "").split(",") if c.strip()]
    if os.environ.get(ENV_AITER_COMMIT_DATE):
        commit_date = os.environ[ENV_AITER_COMMIT_DATE].strip()
    facts.update(aiter_version=version, aiter_commit=commit, aiter_commit_date=commit_date,
                 aiter_includes=tuple(includes))
    # `import aiter` runs hipconfig and JIT-builds with hipcc: without them it cannot be used.
    if not compiler.get("_hipconfig"):
        where = compiler.get("rocm_path") or "ROCM_PATH, ROCM_HOME, PATH or /opt/rocm"
        facts["aiter_reason"] = (f"aiter {version or ''} is installed but unusable here: importing it runs "
                                 f"hipconfig, which was not found in {where} (no ROCm install)").replace("  ", " ")
    elif not compiler.get("_hipcc"):
        facts["aiter_reason"] = "aiter is installed but hipcc was not found: it cannot JIT-build its kernels"
    else:
        facts["aiter_reason"] = ""
    return facts


def _mismatch_warnings(tc: Toolchain) -> list[str]:
    """torch's HIP and the hipcc that builds aiter's kernels can differ in a mixed image."""
    warnings = []
    torch_v = tc.torch_hip_version
    if tc.torch_hip and tc.hip_version is None and tc.vendor == "amd":
        warnings.append(f"hipcc/hipconfig not found: judging kernels by torch's HIP {tc.torch_hip}, "
                        f"which need not be the compiler that built aiter's kernels")
    if torch_v and tc.hip_version and tuple(torch_v[:3]) != tuple(tc.hip_version[:3]):
        warnings.append(
            f"HIP mismatch: torch was built with HIP {tc.torch_hip} but the hipcc that builds aiter's "
            f"kernels is HIP {tc.hip_version_str}; known kernel defects are judged by the hipcc "
            f"({format_version(tc.hip_version)})")
    return warnings


def detect_live(arch: Optional[str] = None, aiter_commit: Optional[str] = None,
                aiter_commit_date: Optional[str] = None) -> Toolchain:
    """Detect everything on this machine now, ignoring configuration files and the cache.

    ``arch`` names the target when no GPU is visible (docker build): it is used only if no device
    is seen, and a device that disagrees wins with a warning. ``aiter_commit`` overrides what the
    install says (e.g. a wheel built from a known commit).
    """
    facts = _detect_from_torch()
    warnings = list(facts.pop("warnings", ()))
    root = rocm_root()
    compiler = _detect_compiler(root)
    facts.update({k: v for k, v in compiler.items() if not k.startswith("_")})
    facts.update(_detect_aiter(compiler))
    if (facts.get("torch_hip") or root) and facts.get("arch", "cpu") == "cpu":
        agents, cus = _detect_agents(root)
        if agents and not arch:
            warnings.append(f"the ROCm tools see {', '.join(sorted(set(agents)))} but torch sees no GPU: "
                            f"check --device /dev/kfd /dev/dri and the video/render groups")
        facts.setdefault("extra", {})["agents"] = agents
        if cus and agents:
            facts["extra"]["agent_cu_count"] = cus
    if arch:
        if facts.get("arch", "cpu") not in ("cpu", arch):
            warnings.append(f"--arch {arch} given but the visible device is {facts['arch']}: using the device")
        elif facts.get("arch", "cpu") == "cpu":
            facts["arch"] = arch
            facts["arch_full"] = arch
            facts.setdefault("extra", {})["arch_source"] = "argument"
            default_cus = {"gfx942": 304, "gfx950": 256}
            facts["cu_count"] = facts.get("cu_count") or default_cus.get(arch)
    if aiter_commit:
        facts["aiter_commit"] = aiter_commit
        facts["aiter_includes"] = ()
    if aiter_commit_date:
        facts["aiter_commit_date"] = aiter_commit_date
    fields = Toolchain.__dataclass_fields__
    tc = Toolchain(**{k: v for k, v in facts.items() if k in fields})
    warnings.extend(_mismatch_warnings(tc))
    return tc.with_(warnings=tuple(warnings), source="detected")


# -- the configuration file baked into an image ---------------------------------------------------

def config_search_paths() -> list[Path]:
    """Where configuration files are looked for, in order: $ROCM_FP8_CONFIG, then
    {sys.prefix}/etc/rocm-fp8/config.json, then /etc/rocm-fp8/config.json.
    ``ROCM_FP8_CONFIG=none`` turns configuration files off (detect live)."""
    env = os.environ.get(ENV_CONFIG)
    if env is not None and env.strip().lower() in ("none", "off", "0", ""):
        return []
    paths = [Path(env)] if env else []
    paths += [Path(sys.prefix) / "etc" / "rocm-fp8" / "config.json", Path("/etc/rocm-fp8/config.json")]
    return paths


def find_config() -> Optional[Path]:
    for path in config_search_paths():
        if path.is_file():
            return path
    return None


def read_json(path: "str | os.PathLike[str]", what: str) -> Any:
    """Parse a JSON file; ValueError says which ``what`` (config, report) and file, and why."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{what} {path}: not valid JSON ({exc})") from None


def load_config(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Read and check a configuration file; ValueError names the file and what is wrong."""
    path = Path(path)
    data = read_json(path, "config")
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        raise ValueError(f"config {path}: expected a JSON object with \"format\": \"{CONFIG_FORMAT}\", "
                         f"got {str(data)[:80]!r}")
    if data.get("version") != CONFIG_VERSION:
        raise ValueError(f"config {path}: expected version {CONFIG_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("toolchain"), dict):
        raise ValueError(f"config {path}: expected a \"toolchain\" object")
    return data


def atomic_write_json(path: "str | os.PathLike[str]", obj: Any) -> Path:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _from_config(path: Path) -> Toolchain:
    data = load_config(path)
    tc = Toolchain.from_dict(data["toolchain"]).with_(source=f"config:{path}")
    warnings = list(tc.warnings)
    # The file was written for one image: a different torch means a different image.
    try:
        import torch

        if data["toolchain"].get("torch_version") not in (None, torch.__version__):
            raise ValueError(f"config {path}: written for torch {data['toolchain'].get('torch_version')}, "
                             f"this process has torch {torch.__version__}")
    except ImportError:
        pass
    # An arch given at build time (--arch, no GPU visible) is checked against the device now.
    if (tc.extra or {}).get("arch_source") == "argument":
        live = _detect_from_torch()
        if live.get("arch", "cpu") not in ("cpu", tc.arch):
            warnings.append(f"config {path} was written for {tc.arch} but the device is {live['arch']}: "
                            f"using the device")
            tc = tc.with_(arch=live["arch"], arch_full=live.get("arch_full"), cu_count=live.get("cu_count"),
                          device_name=live.get("device_name"))
        elif live.get("arch") == tc.arch:
            tc = tc.with_(arch_full=live.get("arch_full") or tc.arch_full,
                          cu_count=live.get("cu_count") or tc.cu_count, device_name=live.get("device_name"))
    return tc.with_(warnings=tuple(warnings))


_DETECTED: Optional[Toolchain] = None
_CONFIG_USED: Optional[Path] = None


def detect(refresh: bool = False) -> Toolchain:
    """The toolchain of this process: read from the configuration file when one is installed
    (see :func:`config_search_paths`), else detected; once per process, then cached."""
    global _DETECTED
    if _DETECTED is None or refresh:
        _DETECTED = _detect()
    return _DETECTED


def _detect() -> Toolchain:
    global _CONFIG_USED
    _CONFIG_USED = None
    path = find_config()
    explicit = os.environ.get(ENV_CONFIG)
    missing = None
    if (explicit and explicit.strip().lower() not in ("none", "off", "0", "")
            and not Path(explicit).expanduser().is_file()):
        # said explicitly and absent: say so, whatever is used instead
        missing = f"{ENV_CONFIG}={explicit} does not exist"
    problem = None
    if path is not None:
        try:
            tc = _from_config(path)
            _CONFIG_USED = path
            if missing:
                tc = tc.with_(warnings=tc.warnings + (f"{missing}; used {path} instead",))
            return tc
        except ValueError as exc:
            problem = f"{exc}; detected the toolchain instead"
    elif missing:
        problem = f"{missing}; detected the toolchain instead"
    tc = detect_live()
    if problem:
        tc = tc.with_(warnings=tc.warnings + (problem,))
    return tc


def config_used() -> Optional[Path]:
    """The configuration file the cached toolchain came from, if any."""
    return _CONFIG_USED


def set_current(toolchain: Optional[Toolchain]) -> None:
    """Replace the cached toolchain (tests, or a process that knows better). None re-detects later."""
    global _DETECTED
    _DETECTED = toolchain


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
