"""The image flavours: ROCm release x GPU arch, with pinned bases and pinned aiter.

Pure data and pure functions (no Docker here), so the table, the tag scheme and the registry
rewriting are tested without a daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
