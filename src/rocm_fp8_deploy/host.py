"""Host-side work behind `invoke install`, `invoke probe`, `invoke doctor` and `invoke clean`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from docker.errors import APIError, DockerException, ImageNotFound

from rocm_fp8_deploy import engine
from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import Flavour

Log = Callable[[str], None]


def _run(cmd: list[str], log: Log) -> int:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    return subprocess.call(cmd)


def install(source_dir: Path, *, config_output: Optional[str] = None, editable: bool = False,
            log: Log = print) -> None:
    """pip-install rocm_fp8 into this interpreter without touching torch, then configure it.

    ``--no-deps`` because torch is whatever this environment already has (a ROCm or CUDA build);
    letting pip resolve it could swap it for a different wheel.
    """
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + (["-e"] if editable else []) + [str(source_dir)]
    if _run(cmd, log) != 0:
        raise DeployError(f"pip install of {source_dir} failed (output above)")
    configure = [sys.executable, "-m", "rocm_fp8", "configure"]
    if config_output:
        configure += ["--output", config_output]
    if _run(configure, log) != 0:
        raise DeployError("`rocm-fp8 configure` failed (output above); the package is installed but not "
                          "configured for this toolchain: rerun `rocm-fp8 configure` after fixing it")


def probe_host(args: list[str], log: Log = print) -> int:
    return _run([sys.executable, "-m", "rocm_fp8", "probe", *args], log)


def doctor_host(args: list[str], log: Log = print) -> int:
    return _run([sys.executable, "-m", "rocm_fp8", "doctor", *args], log)


#: where the host's probe cache is mounted in a container (see ``cache_mount``)
CONTAINER_CACHE = "/var/cache/rocm-fp8"


def cache_mount(cache_dir: "str | Path") -> dict:
    """Container options that put the host folder ``cache_dir`` where rocm_fp8 in the container
    writes and reads probe reports (correctness and speed evidence, keyed by the image's toolchain
    fingerprint), so that a probe run inside an image leaves its report on the host."""
    path = Path(cache_dir).resolve()
    return {"volumes": {str(path): {"bind": CONTAINER_CACHE, "mode": "rw"}},
            "environment": {"ROCM_FP8_CACHE": CONTAINER_CACHE}}


def probe_in_image(image: str, args: list[str], *, cache_dir: "Optional[str | Path]" = None, log: Log = print) -> int:
    """`rocm-fp8 probe <args>` inside ``image`` with the host's probe cache mounted: the report
    (with ``--timing``, the speeds too) is written by the image's toolchain, into the host's cache."""
    from rocm_fp8.probe_report import cache_root

    cache_dir = Path(cache_dir) if cache_dir else cache_root()
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"probe reports go to {cache_dir}/probe/ (mounted at {CONTAINER_CACHE}); serve with the same mount "
        f"and ROCM_FP8_CACHE={CONTAINER_CACHE}, or bake them with `rocm-fp8 configure`")
    extra = cache_mount(cache_dir)
    # run as the owner of the host folder: the image's own user (rocm-fp8) has no right to write into a
    # host folder, and the report should belong to whoever asked for it (HOME: a uid the image does
    # not know has none; Triton keeps its cache there)
    extra["user"] = f"{os.getuid()}:{os.getgid()}"
    extra["environment"] = {**extra["environment"], "HOME": "/tmp"}
    return run_cli_in_image(image, ["probe", *args], log=log, extra=extra)


def run_cli_in_image(image: str, cli_args: list[str], *, gpus: bool = True, log: Log = print,
                     timeout: float = 3600, extra: Optional[dict] = None) -> int:
    """`rocm-fp8 <cli_args>` inside a container of ``image``, with the host's AMD GPUs when it has any.
    ``extra``: more container options (``volumes``, ``environment``)."""
    client = engine.connect()
    options = engine.amd_device_options() if gpus else {}
    if gpus and not options.get("devices"):
        log("note: this host has no /dev/kfd or /dev/dri/renderD*: the container sees no GPU")
        options = {}
    options.update(extra or {})
    result = engine.run_in_image(client, image, ["rocm-fp8", *cli_args], timeout=timeout, stream=log, **options)
    if result.timed_out:
        raise DeployError(f"`rocm-fp8 {' '.join(cli_args)}` in {image} did not finish in {timeout:.0f} s")
    return result.exit_code


def clean(flavours: list[Flavour], repository: str, *, log: Log = print, prune_cache: bool = False) -> list[str]:
    """Remove the images `invoke build` tagged for ``flavours``; optionally the dangling build cache."""
    client = engine.connect()
    removed = []
    for flavour in flavours:
        tag = flavour.tag(repository)
        try:
            client.api.remove_image(tag)
            removed.append(tag)
            log(f"removed {tag}")
        except ImageNotFound:
            pass
        except APIError as exc:
            raise DeployError(f"cannot remove {tag}: {exc.explanation or exc} (a container still uses it? "
                              "`docker ps -a --filter ancestor=" + tag + "`)") from exc
        except DockerException as exc:
            raise DeployError(f"cannot remove {tag}: {exc}") from exc
    if prune_cache:
        try:
            report = client.api.prune_images(filters={"dangling": True})
            log(f"pruned dangling images, reclaimed {int(report.get('SpaceReclaimed') or 0) / 1e9:.2f} GB")
        except APIError as exc:
            raise DeployError(f"pruning dangling images failed: {exc.explanation or exc}") from exc
    if not removed:
        log("nothing to remove")
    return removed
