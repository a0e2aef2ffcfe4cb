"""The image flavours: ROCm release x GPU arch, with pinned bases and pinned aiter.

Pure data and pure functions (no Docker here), so the table, the tag scheme and the registry
rewriting are tested without a daemon.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rocm_fp8_deploy.errors import DeployError

#: aiter is a JIT package: the version pins the Python side and the CK sources it compiles.
AITER_VERSION = "0.1.7.post2.dev18"
AITER_REQUIREMENT = f"amd-aiter=={AITER_VERSION}"

#: rocm/pytorch bases carry a ROCm build of torch and triton (docs/reference.md section 6).  Both are
#: Ubuntu 24.04 / Python 3.12, so one wheelhouse serves both ROCm releases.
ROCM_RELEASES: dict[str, dict[str, str]] = {
    "7.0": {
        "base_image": "rocm/pytorch:rocm7.0.2_ubuntu24.04_py3.12_pytorch_release_2.8.0",
        "rocm_full": "7.0.2",
        "python": "3.12",
    },
    "7.2": {
        "base_image": "rocm/pytorch:rocm7.2.4_ubuntu24.04_py3.12_pytorch_release_2.10.0",
        "rocm_full": "7.2.4",
        "python": "3.12",
    },
}

KNOWN_ARCHS = ("gfx942", "gfx950")

# aiter CK modules the dispatcher can select, per (rocm, arch).  gfx942 runs aiter's Triton
# kernel (nothing to prebuild); gfx950 runs plain CK on every release, and bpreshuffle only where
# its hipcc does not miscompile it (ledger entry bpreshuffle-rocm70: not on ROCm 7.0).
# tests/deploy/test_flavours.py cross-checks this table against the dispatcher.
CK_BLOCKSCALE = "module_gemm_a8w8_blockscale"
CK_BLOCKSCALE_BPRESHUFFLE = "module_gemm_a8w8_blockscale_bpreshuffle"
_PREBUILD_MODULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("7.0", "gfx942"): (),
    ("7.0", "gfx950"): (CK_BLOCKSCALE,),
    ("7.2", "gfx942"): (),
    ("7.2", "gfx950"): (CK_BLOCKSCALE, CK_BLOCKSCALE_BPRESHUFFLE),
}

DEFAULT_REPOSITORY = "rocm-fp8"


@dataclass(frozen=True)
class Flavour:
    rocm: str                 # release line the user asks for: "7.0", "7.2"
    rocm_full: str            # exact release in the base image: "7.0.2"
    arch: str                 # gfx942 | gfx950
    base_image: str           # upstream reference, before any --registry rewrite
    python: str               # the base's Python, for building a matching wheelhouse
    aiter_requirement: str
    prebuild_modules: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.rocm}-{self.arch}"

    @property
    def gpu_archs(self) -> str:
        # Explicit so that no GPU is needed at build time; aiter's codegen uses the last entry.
        return self.arch

    def tag(self, repository: str = DEFAULT_REPOSITORY) -> str:
        return f"{repository}:{self.name}"

    def base_for(self, registry: str | None) -> str:
        return rewrite_registry(self.base_image, registry) if registry else self.base_image


def flavour(rocm: str, arch: str) -> Flavour:
    """The flavour for one (rocm, arch); unknown values are refused with the known ones listed."""
    rocm = str(rocm).strip()
    if rocm not in ROCM_RELEASES:
        raise DeployError(
            f"unknown ROCm version {rocm!r}; known: {', '.join(sorted(ROCM_RELEASES))} "
            "(the flavour table is in src/rocm_fp8_deploy/flavours.py)")
    if arch not in KNOWN_ARCHS:
        raise DeployError(
            f"unknown GPU arch {arch!r}; known: {', '.join(KNOWN_ARCHS)} "
            "(gfx942 = MI300X/MI325X, gfx950 = MI350X/MI355X)")
    release = ROCM_RELEASES[rocm]
    return Flavour(
        rocm=rocm,
        rocm_full=release["rocm_full"],
        arch=arch,
        base_image=release["base_image"],
        python=release["python"],
        aiter_requirement=AITER_REQUIREMENT,
        prebuild_modules=_PREBUILD_MODULES[(rocm, arch)],
    )


def select_flavours(rocm: list[str] | tuple[str, ...] | None,
                    arch: list[str] | tuple[str, ...] | None,
                    default_rocm: tuple[str, ...] = tuple(ROCM_RELEASES),
                    default_arch: tuple[str, ...] = KNOWN_ARCHS) -> list[Flavour]:
    """The cross product of the requested releases and archs, in the order given, no duplicates.

    Every value is validated before anything is built, so a typo in the last ``--arch`` does not
    surface after an hour of building the first flavour.
    """
    rocms = list(dict.fromkeys(rocm or default_rocm))
    archs = list(dict.fromkeys(arch or default_arch))
    return [flavour(r, a) for r in rocms for a in archs]


# ---------------------------------------------------------------------------------------------
# Image references

_REGISTRY_HOST = re.compile(r"^(localhost|[^/]*[.:][^/]*)$")


def split_registry(reference: str) -> tuple[str | None, str]:
    """``"quay.io/rocm/pytorch:x"`` -> ``("quay.io", "rocm/pytorch:x")``; a Docker Hub ref has no host.

    The first path component is a registry host only when it looks like one (contains '.' or ':'
    or is 'localhost'), which is Docker's own rule.
    """
    first, sep, rest = reference.partition("/")
    if sep and _REGISTRY_HOST.match(first):
        return first, rest
    return None, reference


def rewrite_registry(reference: str, mirror: str) -> str:
    """Point an image reference at a mirror: ``MIRROR/<path>:<tag>``.

    The original registry host (if any) is dropped; Docker Hub's official images gain their
    implicit ``library/`` namespace, which is how pull-through mirrors lay them out.
    """
    mirror = normalise_mirror(mirror)
    _host, path = split_registry(reference)
    if "/" not in path.split(":")[0].split("@")[0]:
        path = f"library/{path}"
    return f"{mirror}/{path}"


def normalise_mirror(mirror: str) -> str:
    mirror = (mirror or "").strip()
    if "://" in mirror:
        raise DeployError(
            f"--registry takes an image prefix such as mirror.example.com:5000/dockerhub, not a URL "
            f"(got {mirror!r}; drop the scheme)")
    mirror = mirror.rstrip("/")
    if not mirror:
        raise DeployError("--registry is empty; give an image prefix such as mirror.example.com:5000/dockerhub")
    if any(c.isspace() for c in mirror) or mirror.startswith("/"):
        raise DeployError(f"--registry {mirror!r} is not a valid image prefix")
    return mirror


def split_tag(reference: str) -> tuple[str, str]:
    """``"a/b:c"`` -> ``("a/b", "c")``; a digest or a host port is not mistaken for a tag."""
    if "@" in reference:
        repo, digest = reference.split("@", 1)
        return repo, "@" + digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, "latest"


# ---------------------------------------------------------------------------------------------
# Where the image's aiter comes from (`invoke build --aiter SPEC`)

_HEX = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class AiterSource:
    """One aiter source for an image build.

    ``kind``: ``pypi`` (the default pin), ``requirement`` (another pip requirement), ``git`` (a git URL
    at a commit), ``wheel`` (a local wheel file) or ``source`` (a local source tree: air-gapped builds).
    ``requirement`` is what pip installs inside the build; ``context_path`` what goes into the build
    context under ``aiter/`` (wheel or source tree). ``commit``/``commit_date``/``includes`` are what is
    known on the build host (the commit of a git URL, a source tree's HEAD, its date, and which of the
    ledger's fix commits its history contains); the image records them for the toolchain detection.
    """

    spec: str
    kind: str
    requirement: str
    context_path: str | None = None
    commit: str | None = None
    commit_date: str | None = None
    includes: tuple[str, ...] = ()

    def describe(self) -> str:
        at = f" at {self.commit[:12]}" if self.commit else ""
        return {"pypi": f"PyPI {self.requirement}", "requirement": f"pip requirement {self.requirement}",
                "git": f"git {self.spec.split('@')[0]}{at}", "wheel": f"wheel {Path(self.spec).name}{at}",
                "source": f"source tree {self.spec}{at}"}[self.kind]


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _commit_from_version(version: str) -> str | None:
    m = re.search(r"[+.]g([0-9a-f]{7,40})\b", version)
    return m.group(1) if m else None


def parse_aiter_spec(spec: str | None, fix_commits: tuple[str, ...] = ()) -> AiterSource:
    """Resolve ``--aiter SPEC``; a malformed one is refused naming what was expected.

    - nothing: the default pin (``amd-aiter==0.1.7.post2.dev18``, the only release on PyPI);
    - ``git+https://HOST/ROCm/aiter@COMMIT``: a git URL at a commit (7-40 hex digits; a branch name
      is refused, the image must say which code it carries);
    - a path ending in ``.whl``: a local wheel (a ``+g<hash>`` local version gives the commit);
    - a directory with ``setup.py`` or ``pyproject.toml``: a local source tree (its git HEAD, date and
      the ledger's fix commits it contains are read here, on the build host);
    - anything else: a pip requirement (``amd-aiter==0.1.6``), commit unknown.
    """
    spec = (spec or "").strip()
    if not spec:
        return AiterSource(spec=AITER_REQUIREMENT, kind="pypi", requirement=AITER_REQUIREMENT)
    if spec.startswith("git+"):
        url, sep, ref = spec.rpartition("@")
        if not sep or "://" not in url or not _HEX.match(ref.lower()):
            raise DeployError(f"--aiter {spec}: expected a git URL at a commit, git+https://HOST/PATH@COMMIT "
                              f"(7 to 40 hex digits), got {ref!r} after the last '@'" if sep else
                              f"--aiter {spec}: expected a git URL at a commit, git+https://HOST/PATH@COMMIT")
        ref = ref.lower()
        return AiterSource(spec=spec, kind="git", requirement=f"amd-aiter @ {spec}", commit=ref,
                           includes=tuple(f for f in fix_commits if ref.startswith(f) or f.startswith(ref)))
    path = Path(spec).expanduser()
    if spec.endswith(".whl"):
        if not path.is_file():
            raise DeployError(f"--aiter {spec}: expected a wheel file, and there is none at {path}")
        commit = _commit_from_version(path.name.split("-")[1] if "-" in path.name else "")
        return AiterSource(spec=str(path), kind="wheel", requirement=f"/opt/rocm-fp8/aiter/{path.name}",
                           context_path=str(path.resolve()), commit=commit)
    if path.is_dir():
        if not ((path / "setup.py").is_file() or (path / "pyproject.toml").is_file()):
            raise DeployError(f"--aiter {spec}: expected an aiter source tree (setup.py or pyproject.toml), "
                              f"found neither in {path}")
        commit = _git(path, "rev-parse", "HEAD")
        date = _git(path, "log", "-1", "--format=%cs", "HEAD") if commit else None
        includes = tuple(f for f in fix_commits
                         if commit and _git(path, "merge-base", "--is-ancestor", f, "HEAD") is not None)
        return AiterSource(spec=str(path), kind="source", requirement="/opt/rocm-fp8/aiter/src",
                           context_path=str(path.resolve()), commit=commit, commit_date=date, includes=includes)
    if "/" in spec or spec.startswith("."):
        raise DeployError(f"--aiter {spec}: no such file or directory (expected a wheel, a source tree, a git URL "
                          "at a commit or a pip requirement)")
    return AiterSource(spec=spec, kind="requirement", requirement=spec)
