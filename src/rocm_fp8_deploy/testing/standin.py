"""Stand-in base images for machines without ROCm (tests and CI).

No registry is reachable and no ROCm exists on the CI machine, so the tests cannot pull
``rocm/pytorch``.  Instead this builds, from Debian packages and local wheels:

  rocm-fp8-standin/debian:bookworm-<sha>     debootstrapped Debian bookworm (python3, pip, venv),
                                             imported from a cached rootfs tarball
  rocm-fp8-standin/python:bookworm-<recipe>  + a venv on PATH with torch (CPU) and triton
  <prefix>/rocm/pytorch:<upstream tag>       + a RECORDED TOOLCHAIN FIXTURE: hipcc, hipconfig and
                                             /opt/rocm/.info/version replaying the outputs recorded
                                             from real ROCm 7.0.2 / 7.2.4 installs (docs/reference.md s.3)

The last images carry the upstream base image's name under a fixture registry prefix, so
``invoke build --rocm 7.0 --registry <prefix> --allow-fixture --no-prebuild`` runs the unmodified
product path.  They are labelled ``rocm-fp8.fixture=recorded-toolchain`` and set
ROCM_FP8_TOOLCHAIN_FIXTURE, which the build guard requires before it excuses their CPU torch.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from rocm_fp8_deploy import engine
from rocm_fp8_deploy.build import CONTEXT_MTIME, stream_build
from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import ROCM_RELEASES, rewrite_registry
from rocm_fp8_deploy.labels import FIXTURE_LABEL, FIXTURE_VALUE
from rocm_fp8_deploy.wheelhouse import cache_dir, standin_wheelhouse

Log = Callable[[str], None]

DEFAULT_FIXTURE_PREFIX = "fixture.rocm-fp8.invalid"   # .invalid: never resolvable, never pulled
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("ROCM_FP8_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
STANDIN_LABEL = "rocm-fp8.standin-recipe"


@dataclass(frozen=True)
class RecordedToolchain:
    rocm_full: str
    hipcc_version: tuple[str, ...]   # `hipcc --version`, line by line
    hipconfig_version: str           # `hipconfig --version` (no prefix, no newline)
    info_version: str                # /opt/rocm/.info/version


# Recorded outputs from real installs, as listed in docs/reference.md section 3.  "..." marks text that the
# record elides; it is replayed as recorded rather than invented.
RECORDED_TOOLCHAINS: dict[str, RecordedToolchain] = {
    "7.0": RecordedToolchain(
        rocm_full="7.0.2",
        hipcc_version=("HIP version: 7.0.51831-7c9236b16",
                       "AMD clang version 20.0.0git (roc-7.0.2 25385 0dda3adf...)",
                       "Target: x86_64-unknown-linux-gnu",
                       "Thread model: posix",
                       "InstalledDir: /opt/rocm-7.0.2/lib/llvm/bin"),
        hipconfig_version="7.0.51831-7c9236b16",
        info_version="7.0.2",
    ),
    "7.2": RecordedToolchain(
        rocm_full="7.2.4",
        hipcc_version=("HIP version: 7.2.53211-97f5574fe2",
                       "AMD clang version 22.0.0git (... roc-7.2.4 26084 ...)",
                       "Target: x86_64-unknown-linux-gnu",
                       "Thread model: posix",
                       "InstalledDir: /opt/rocm-7.2.4/lib/llvm/bin"),
        hipconfig_version="7.2.53211-97f5574fe2",
        info_version="7.2.4",
    ),
}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _labels_of(client: docker.DockerClient, reference: str) -> Optional[dict]:
    try:
        return engine.image_config(client, reference).labels
    except ImageNotFound:
        return None


# ---------------------------------------------------------------------------------------------
# 1. Debian rootfs


def rootfs_tarball(log: Log = print, cache: Optional[Path] = None) -> Path:
    """A debootstrapped Debian rootfs as a tarball, cached (about 45 s cold, then instant)."""
    cache = cache or cache_dir()
    key = hashlib.sha256(f"{DEBIAN_SUITE}|minbase|{','.join(DEBIAN_PACKAGES)}|{DEBIAN_MIRROR}".encode()).hexdigest()[:12]
    tarball = cache / f"debian-{DEBIAN_SUITE}-rootfs-{key}.tar"
    if tarball.is_file():
        log(f"[stand-in] using cached rootfs {tarball}")
        return tarball
    if shutil.which("debootstrap") is None:
        raise DeployError("debootstrap is not installed; `sudo apt-get install debootstrap` "
                          "(or run ci/setup-docker.sh start, which installs it)")
    if os.geteuid() != 0:
        raise DeployError("building the stand-in rootfs needs root (debootstrap); run the tests as root or "
                          f"provide the cached tarball {tarball}")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        rootfs = work / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
               DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR]
        log("[stand-in] $ " + " ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = []
        assert proc.stdout is not None
        started = shown = time.monotonic()
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking",
                                "I: Configuring")):
                # hundreds of per-package lines: show one every 20 s so the phase is not silent
                if time.monotonic() - shown < 20:
                    continue
                line = f"{line} ({time.monotonic() - started:.0f} s)"
            log(f"[debootstrap] {line}")
            shown = time.monotonic()
        if proc.wait() != 0:
            raise DeployError(f"debootstrap failed (is {DEBIAN_MIRROR} reachable?):\n" + "\n".join(tail))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        os.replace(partial, tarball)
        log(f"[stand-in] cached rootfs {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
        return tarball
    finally:
        shutil.rmtree(work, ignore_errors=True)


def debian_image(client: docker.DockerClient, log: Log = print) -> tuple[str, str]:
    """(tag, tarball sha) of the imported rootfs; the tag is derived from the tarball's content."""
    tarball = rootfs_tarball(log)
    sha = _sha256_file(tarball)
    tag = f"rocm-fp8-standin/debian:{DEBIAN_SUITE}-{sha[:12]}"
    if _labels_of(client, tag) is not None:
        return tag, sha
    log(f"[stand-in] docker import {tarball.name} -> {tag}")
    repository, name = tag.split(":")
    try:
        client.api.import_image_from_file(str(tarball), repository=repository, tag=name,
                                          changes=['CMD ["/bin/bash"]'])
    except APIError as exc:
        raise DeployError(f"docker import of {tarball} failed: {exc.explanation or exc}") from exc
    if _labels_of(client, tag) is None:
        raise DeployError(f"docker import of {tarball} did not produce {tag}")
    return tag, sha


# ---------------------------------------------------------------------------------------------
# 2. Python base


def _python_dockerfile(debian_tag: str, recipe: str) -> str:
    return f"""FROM {debian_tag}
# Stand-in for the Python layer of a rocm/pytorch base: a venv on PATH with torch (CPU) + triton,
# and numpy as the real bases have (without it `import torch` warns "Failed to initialize NumPy").
COPY wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \\
        --find-links /tmp/wheelhouse torch triton numpy "setuptools>=68" wheel \\
 && rm -rf /tmp/wheelhouse
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL {STANDIN_LABEL}="{recipe}" rocm-fp8.standin="debian {DEBIAN_SUITE} + torch cpu + triton"
"""


def python_image(client: docker.DockerClient, log: Log = print, wheelhouse: Optional[Path] = None) -> str:
    """The shared stand-in Python base; rebuilt only when its recipe (rootfs, wheels, Dockerfile) changes."""
    debian_tag, rootfs_sha = debian_image(client, log)
    wheelhouse = wheelhouse or standin_wheelhouse(cache_dir() / "wheelhouse-standin-py311", log=log)
    wheels = sorted(p for p in Path(wheelhouse).glob("*.whl"))
    if not any(w.name.startswith("torch-") for w in wheels):
        raise DeployError(f"stand-in wheelhouse {wheelhouse} has no torch wheel")
    h = hashlib.sha256(rootfs_sha.encode())
    h.update(_python_dockerfile("-", "-").encode())
    for w in wheels:
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    recipe = h.hexdigest()[:16]
    tag = f"rocm-fp8-standin/python:{DEBIAN_SUITE}-{recipe}"
    labels = _labels_of(client, tag)
    if labels is not None and labels.get(STANDIN_LABEL) == recipe:
        log(f"[stand-in] reusing {tag}")
        return tag
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add(tar, "Dockerfile", _python_dockerfile(debian_tag, recipe).encode())
            for w in wheels:
                tar.add(str(w), arcname=f"wheelhouse/{w.name}")
        context.seek(0)
        stream_build(client, "stand-in python", log, fileobj=context, custom_context=True, tag=tag, pull=False)
    return tag


# ---------------------------------------------------------------------------------------------
# 3. Recorded toolchain fixtures

_HEADER = """#!/bin/sh
# RECORDED TOOLCHAIN FIXTURE - this is NOT {tool}.
# rocm-fp8's test stand-in replays the output recorded from a real ROCm {rocm} install
# (docs: rocm-fp8 docs/reference.md section 3) so that toolchain detection can be exercised without ROCm.
# Only --version is replayed; anything else fails loudly.
"""


def fixture_files(recorded: RecordedToolchain) -> dict[str, tuple[bytes, int]]:
    """path inside the image -> (content, mode) for one recorded toolchain."""
    root = f"opt/rocm-{recorded.rocm_full}"
    hipcc_lines = "\n".join(recorded.hipcc_version)
    refuse = ('echo "{tool} (recorded toolchain fixture): only --version is replayed, got: $*" >&2\n'
              "exit 2\n")
    hipcc = (_HEADER.format(tool="hipcc", rocm=recorded.rocm_full)
             + 'if [ "$1" = "--version" ]; then\ncat <<\'RECORDED\'\n' + hipcc_lines + "\nRECORDED\nexit 0\nfi\n"
             + refuse.format(tool="hipcc"))
    hipconfig = (_HEADER.format(tool="hipconfig", rocm=recorded.rocm_full)
                 + 'if [ "$1" = "--version" ] || [ "$1" = "-v" ]; then\n'
                 + f"printf '%s' '{recorded.hipconfig_version}'\nexit 0\nfi\n"
                 + refuse.format(tool="hipconfig"))
    marker = (f"recorded-toolchain fixture of ROCm {recorded.rocm_full} built by rocm-fp8's test stand-in.\n"
              "hipcc/hipconfig here only replay recorded --version output; there is no compiler, no HIP "
              "runtime and no GPU support in this image.\n")
    return {
        f"{root}/bin/hipcc": (hipcc.encode(), 0o755),
        f"{root}/bin/hipconfig": (hipconfig.encode(), 0o755),
        f"{root}/.info/version": (recorded.info_version.encode() + b"\n", 0o644),
        f"{root}/.info/rocm-fp8-fixture": (marker.encode(), 0o644),
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, CONTEXT_MTIME
    tar.addfile(info, io.BytesIO(data))


def fixture_tag(rocm: str, prefix: str = DEFAULT_FIXTURE_PREFIX) -> str:
    """The stand-in for ``rocm``'s upstream base, under the fixture registry ``prefix``."""
    return rewrite_registry(ROCM_RELEASES[rocm]["base_image"], prefix)


def fixture_image(client: docker.DockerClient, rocm: str, python_tag: str, prefix: str = DEFAULT_FIXTURE_PREFIX,
                  log: Log = print) -> str:
    if rocm not in RECORDED_TOOLCHAINS:
        raise DeployError(f"no recorded toolchain for ROCm {rocm!r}; recorded: {', '.join(RECORDED_TOOLCHAINS)}")
    recorded = RECORDED_TOOLCHAINS[rocm]
    tag = fixture_tag(rocm, prefix)
    dockerfile = f"""FROM {python_tag}
COPY opt/ /opt/
RUN ln -s /opt/rocm-{recorded.rocm_full} /opt/rocm
ENV ROCM_PATH=/opt/rocm \\
    PATH=/opt/rocm/bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    ROCM_FP8_TOOLCHAIN_FIXTURE=recorded-toolchain-{recorded.rocm_full}
LABEL {FIXTURE_LABEL}="{FIXTURE_VALUE}" \\
      rocm-fp8.fixture.rocm="{recorded.rocm_full}" \\
      rocm-fp8.fixture.note="stand-in for {ROCM_RELEASES[rocm]['base_image']}: CPU torch, replayed hipcc/hipconfig --version, no ROCm"
"""
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add(tar, "Dockerfile", dockerfile.encode())
            for path, (data, mode) in fixture_files(recorded).items():
                _add(tar, path, data, mode)
        context.seek(0)
        stream_build(client, f"fixture {rocm}", log, fileobj=context, custom_context=True, tag=tag, pull=False)
    return tag


def build_standins(rocms: list[str], prefix: str = DEFAULT_FIXTURE_PREFIX, log: Log = print,
                   client: Optional[docker.DockerClient] = None) -> dict[str, str]:
    """Build (or reuse) the Python base and one fixture per ROCm release; rocm -> fixture tag."""
    client = client or engine.connect()
    python_tag = python_image(client, log)
    return {rocm: fixture_image(client, rocm, python_tag, prefix, log) for rocm in rocms}


def remove_standins(client: docker.DockerClient, prefix: str = DEFAULT_FIXTURE_PREFIX, log: Log = print) -> list[str]:
    """Remove every stand-in image: the fixtures under ``prefix`` and all rocm-fp8-standin/* bases."""
    removed = remove_fixtures(client, prefix, log)
    for repository in ("rocm-fp8-standin/python", "rocm-fp8-standin/debian"):
        removed += engine.remove_repository(client, repository)
    return removed


def remove_dangling_descendants(client: docker.DockerClient, ancestors: set[str], created_after: float = 0.0,
                                log: Log = print) -> list[str]:
    """Remove untagged leaf images built on one of ``ancestors`` (image ids) since ``created_after``.

    A failed classic build leaves its last good step as a ``<none>`` image; tests that build on the
    fixtures on purpose (refusals) would leave one each run.  Never forced: an image in use is kept."""
    removed = []
    try:
        dangling = client.api.images(filters={"dangling": True})
    except DockerException as exc:
        log(f"could not list dangling images: {exc}")
        return removed
    for image in dangling:
        if image.get("Created", 0) < created_after:
            continue
        parent, seen = image.get("ParentId") or "", 0
        while parent and parent not in ancestors and seen < 200:
            try:
                parent, seen = client.api.inspect_image(parent).get("Parent") or "", seen + 1
            except DockerException:
                parent = ""
        if not parent:
            continue
        try:
            client.api.remove_image(image["Id"])
            removed.append(image["Id"])
        except DockerException as exc:
            log(f"kept dangling image {image['Id'][7:19]}: {exc}")
    return removed


def remove_fixtures(client: docker.DockerClient, prefix: str, log: Log = print,
                    created_after: Optional[float] = None) -> list[str]:
    """Untag the fixture images under ``prefix`` (the shared Python base is kept: it is the slow one).

    With ``created_after`` (a Unix time), first remove the ``<none>`` images that failed builds on
    these fixtures left since then."""
    removed = []
    if created_after is not None:
        ids = set()
        for rocm in RECORDED_TOOLCHAINS:
            try:
                ids.add(client.api.inspect_image(fixture_tag(rocm, prefix))["Id"])
            except DockerException:
                pass
        removed += remove_dangling_descendants(client, ids, created_after, log)
    for rocm in RECORDED_TOOLCHAINS:
        tag = fixture_tag(rocm, prefix)
        try:
            client.api.remove_image(tag)
            removed.append(tag)
        except ImageNotFound:
            pass
        except APIError as exc:
            log(f"could not remove {tag}: {exc.explanation or exc}")
        except DockerException as exc:
            log(f"could not remove {tag}: {exc}")
    return removed
