"""Invoke tasks for rocm-fp8.  Thin: the work lives in rocm_fp8_deploy (importable, tested).

    invoke build --rocm 7.0 [--rocm 7.2] [--arch gfx950] [--registry MIRROR] [--wheelhouse DIR] [--push] [--no-cache]
    invoke probe [--image TAG] [--args "..."]       invoke doctor [--image TAG]
    invoke install                                   invoke clean [--rocm ...] [--arch ...]
    invoke wheelhouse --dest DIR                     invoke standins [--prefix P]
    invoke test-matrix [--rocm R] [--arch A] [--suite S] [--gpus 0,1] [--parallel N] [--report DIR] [--cpu-only]

Defaults live in the namespace configuration at the bottom (key ``rocm_fp8``) and can be overridden
in invoke.yaml or the environment (e.g. INVOKE_ROCM_FP8_REGISTRY=mirror.example.com).
"""

from __future__ import annotations

import shlex
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
try:  # a plain checkout works without `pip install -e .`
    import rocm_fp8_deploy  # noqa: F401
except ImportError:
    import sys

    sys.path.insert(0, str(ROOT / "src"))


@contextmanager
def refusals():
    """Turn a DeployError into a clean exit with its message, instead of a traceback."""
    from rocm_fp8_deploy.errors import DeployError

    try:
        yield
    except DeployError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _cfg(c):
    return c.config.rocm_fp8


def _flavours(c, rocm, arch):
    from rocm_fp8_deploy.flavours import select_flavours

    cfg = _cfg(c)
    return select_flavours(rocm or list(cfg.rocm), arch or list(cfg.arch))


@task(iterable=["rocm", "arch"], help={
    "rocm": "ROCm release line (repeatable): 7.0, 7.2",
    "arch": "GPU arch (repeatable): gfx942, gfx950",
    "registry": "mirror prefix for base images: MIRROR/rocm/pytorch:...",
    "wheelhouse": "directory of wheels: pip inside the build runs offline from it",
    "push": "push each image after building (needs --repo with a registry)",
    "no_cache": "build without Docker's layer cache",
    "repo": "image repository; tags are <repo>:<rocm>-<arch>",
    "prebuild": "compile aiter's CK modules at build time (--no-prebuild only for compiler-less bases)",
    "allow_fixture": "accept a recorded-toolchain stand-in base (tests only)",
    "pull": "pull a base image that is not present locally",
    "max_jobs": "parallel compile jobs for the aiter prebuild (default: all cores of the build host)",
    "aiter": "aiter to install: a pip requirement, git+URL@COMMIT, a local .whl or a source directory "
             "(default: the PyPI pin)",
})
def build(c, rocm=None, arch=None, registry=None, wheelhouse=None, push=False, no_cache=False, repo=None,
          prebuild=True, allow_fixture=False, pull=True, max_jobs=None, aiter=None):
    """Build rocm-fp8 images, streaming the build; prints a summary of what was built."""
    from rocm_fp8_deploy.build import BuildOptions, build as build_images, summary

    cfg = _cfg(c)
    with refusals():
        flavours = _flavours(c, rocm, arch)
        options = BuildOptions(repository=repo or cfg.repository, registry=registry or cfg.registry,
                               wheelhouse=wheelhouse or cfg.wheelhouse, push=push, no_cache=no_cache,
                               pull=pull, prebuild=prebuild, allow_fixture=allow_fixture, source_dir=str(ROOT),
                               max_jobs=int(max_jobs) if max_jobs else None, aiter=aiter)
        built = build_images(flavours, options)
    print("\n" + summary(built))


@task(help={"image": "run the probe inside this image (with the host's GPUs and probe cache) instead of on the host",
            "args": "extra arguments for `rocm-fp8 probe`, quoted, e.g. --args '--static'"})
def probe(c, image=None, args=""):
    """Run `rocm-fp8 probe` on the host, or inside an image."""
    from rocm_fp8_deploy import host

    with refusals():
        argv = shlex.split(args)
        code = host.probe_in_image(image, argv) if image else host.probe_host(argv)
    if code:
        raise Exit(code=code)


@task(help={"image": "run the self-check inside this image, with the host's GPU devices"})
def doctor(c, image=None):
    """Self-check: GPU devices, arch, ROCm torch, JIT cache, baked configuration vs live toolchain."""
    from rocm_fp8_deploy import host

    with refusals():
        code = host.run_cli_in_image(image, ["doctor"]) if image else host.doctor_host([])
    if code:
        raise Exit(code=code)


@task(help={"editable": "pip install -e (for development)",
            "config": "where to write the configuration (default: rocm-fp8 configure's own)"})
def install(c, editable=False, config=None):
    """Install rocm_fp8 into this environment (torch untouched) and configure it for this toolchain."""
    from rocm_fp8_deploy import host

    with refusals():
        host.install(ROOT, config_output=config, editable=editable)


@task(iterable=["rocm", "arch"], help={"prune": "also remove dangling images left by builds",
                                       "repo": "image repository to clean",
                                       "standins": "also remove the test stand-in bases and fixtures"})
def clean(c, rocm=None, arch=None, repo=None, prune=False, standins=False):
    """Remove built rocm-fp8 images (and with --prune, dangling build layers)."""
    from rocm_fp8_deploy import host

    with refusals():
        host.clean(_flavours(c, rocm, arch), repo or _cfg(c).repository, prune_cache=prune)
        if standins:
            from rocm_fp8_deploy.engine import connect
            from rocm_fp8_deploy.testing.standin import remove_standins

            for tag in remove_standins(connect(), _cfg(c).fixture_prefix):
                print(f"removed {tag}")


@task(help={"dest": "directory to fill with wheels", "python": "the image's Python (3.12 for the rocm/pytorch bases)"})
def wheelhouse(c, dest, python="3.12"):
    """Download the wheels `invoke build --wheelhouse` needs (on a machine that can reach PyPI)."""
    from rocm_fp8_deploy.wheelhouse import product_wheelhouse

    with refusals():
        product_wheelhouse(dest, python=python)


@task(iterable=["rocm"], help={"prefix": "fixture registry prefix (use it as --registry for build)"})
def standins(c, rocm=None, prefix=None):
    """Build the stand-in base images (no ROCm; recorded toolchain fixtures) used by the tests."""
    from rocm_fp8_deploy.testing.standin import build_standins

    with refusals():
        tags = build_standins(rocm or list(_cfg(c).rocm), prefix or _cfg(c).fixture_prefix)
    for rocm_version, tag in tags.items():
        print(f"ROCm {rocm_version}: {tag}")
    print(f"now: invoke build --rocm {' --rocm '.join(tags)} --registry {prefix or _cfg(c).fixture_prefix} "
          "--allow-fixture --no-prebuild")


# ---- test matrix ---------------------------------------------------------------------------


@task(iterable=["rocm", "arch", "suite"], help={
    "rocm": "ROCm release line (repeatable); default: every flavour in the matrix",
    "arch": "GPU arch (repeatable)",
    "suite": "suite (repeatable): cpu, gpu, models, bench (see ci/matrix.toml)",
    "gpus": "host GPU indices to use, e.g. 0,1,2,3 (default: all); cells run on disjoint GPUs",
    "parallel": "cells to run at once",
    "report": "directory for report.md, report.html, report.json and each cell's log and JUnit XML",
    "cpu_only": "skip (visibly) the suites that need a GPU instead of failing them",
    "matrix": "matrix file (default: ci/matrix.toml)",
    "extra_tests": "a directory of extra test files run in every cell (e.g. a reproducer)",
    "vendor": "GPU vendor: auto, amd, nvidia",
    "repo": "image repository (as for build): images are <repo>:<rocm>-<arch>",
})
def test_matrix(c, rocm=None, arch=None, suite=None, gpus=None, parallel=1, report=None, cpu_only=False,
                matrix=None, extra_tests=None, vendor="auto", repo=None):
    """Run the test suites inside every image; verdicts from JUnit XML; non-zero exit when a cell fails."""
    from rocm_fp8_deploy import matrix as mx
    from rocm_fp8_deploy.report import headline, markdown

    with refusals():
        spec = mx.load_matrix(matrix or _cfg(c).matrix or ROOT / "ci" / "matrix.toml", repository=repo)
        cells = mx.plan(spec, rocm=rocm, arch=arch, suites=suite, cpu_only=cpu_only)
        options = mx.RunOptions(gpus=mx.parse_gpus(gpus), vendor=vendor, parallel=int(parallel), cpu_only=cpu_only,
                                extra_tests=extra_tests, report_dir=report)
        result = mx.run_matrix(spec, cells, options)
    print("\n" + markdown(result, links=False))
    if report:
        print(f"report: {Path(report).resolve() / 'report.html'}")
    if not result.ok:
        raise Exit(f"test matrix {headline(result.to_dict())}", code=1)


# ---- namespace -------------------------------------------------------------------------------
ns = Collection(build, probe, doctor, install, clean, wheelhouse, standins, test_matrix)
ns.configure({
    "rocm_fp8": {
        "repository": "rocm-fp8",
        "rocm": ["7.0", "7.2"],
        "arch": ["gfx942", "gfx950"],
        "registry": None,
        "wheelhouse": None,
        "fixture_prefix": "fixture.rocm-fp8.invalid",
        "matrix": None,   # test-matrix file; None = ci/matrix.toml
    },
})
