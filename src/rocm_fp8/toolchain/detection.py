"""Detection: what this machine has, found by asking torch and running the ROCm tools.

Nothing here runs at import. :func:`detect_live` asks torch (device, arch, HIP/CUDA build), runs
hipconfig/hipcc and reads ``.info/version`` (parsed by :mod:`rocm_fp8.fingerprint`), lists the
agents when torch sees no GPU, and finds aiter without importing it (its version, its git commit
and which known fix commits that commit includes).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from rocm_fp8 import fingerprint as fp
from rocm_fp8.toolchain.model import Toolchain, format_version, normalise_arch

#: env vars that say which aiter commit is installed when it cannot be read from the install
ENV_AITER_COMMIT = "ROCM_FP8_AITER_COMMIT"
ENV_AITER_COMMIT_DATE = "ROCM_FP8_AITER_COMMIT_DATE"

_TOOL_TIMEOUT_S = 30.0


def _detect_from_torch() -> dict[str, Any]:
    """Facts torch can tell without touching any subprocess."""
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
    if not version:
        return None
    m = re.search(r"[+.]g([0-9a-f]{7,40})\b", version)
    return m.group(1) if m else None


#: callables that list the aiter commits known to fix a defect (the ledger adds its own at import)
_fix_commit_sources: list[Callable[[], Iterable[str]]] = []


def add_fix_commit_source(source: Callable[[], Iterable[str]]) -> None:
    """Let detection check aiter's git history for the commits ``source()`` lists. The ledger
    registers itself here, so that detection does not import the ledger (which imports us)."""
    if source not in _fix_commit_sources:
        _fix_commit_sources.append(source)


def _fix_commits() -> list[str]:
    commits: set[str] = set()
    for source in _fix_commit_sources:
        try:
            commits.update(source())
        except Exception:  # noqa: BLE001 - detection must not fail because of the ledger
            continue
    return sorted(commits)


def _detect_aiter(compiler: dict[str, Any]) -> dict[str, Any]:
    md = importlib.metadata
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
