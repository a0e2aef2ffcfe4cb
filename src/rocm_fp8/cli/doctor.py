"""``rocm-fp8 doctor``: is this container (or host) able to run what its image was built for?

Checks, each with the fix when it fails:

  environment                        a container or a bare host (/.dockerenv, /run/.containerenv,
                                     $container, /proc/1/cgroup); on a bare host without a GPU it says
                                     that the device and GPU checks are expected to fail there
  /dev/kfd and /dev/dri/renderD*     present and read-writable by this user
  torch                              a ROCm build, and one whose arch list includes the image's arch
  GPU                                visible to torch, and of the arch the image was built for
  AITER_JIT_DIR                      set, and writable (aiter writes lock files even for prebuilt modules)
  configuration                      the baked file is readable and matches the live toolchain
  triton kernel                      rocm_fp8's Triton kernel compiles for the image's arch with this
                                     Triton (the table's default config): FP8 MFMA, no spills or scratch,
                                     LDS within the arch's limit; its resource use is reported

It never needs a GPU: without one it says what is missing.  Facts are gathered once
(:func:`gather_facts`); the verdicts are the pure function :func:`run_checks` of those facts, so
every branch is tested on a CPU.  Exit code 1 when any check fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from rocm_fp8 import integrations, kernel_configs, toolchain

OK, WARN, FAIL = "ok", "warn", "fail"

#: compared between the baked configuration and the live toolchain
COMPARED_FIELDS = ("hip_version_str", "rocm_version", "torch_version", "torch_hip", "aiter_version",
                   "aiter_commit")
FIXTURE_ENV = "ROCM_FP8_TOOLCHAIN_FIXTURE"

DEVICE_FLAGS = ("--device /dev/kfd --device /dev/dri/renderD<N> "
                "--group-add <gid of video> --group-add <gid of render> --security-opt seccomp=unconfined "
                "(numeric gids from `getent group video render` on the host)")


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass
class Node:
    path: str
    accessible: bool     # read and write for this process
    gid: Optional[int] = None


@dataclass
class Facts:
    """Everything the checks look at; gathered from the live process or written by a test."""
    kfd: Optional[Node] = None                     # None: /dev/kfd does not exist
    render_nodes: list[Node] = field(default_factory=list)
    process_groups: tuple[int, ...] = ()
    uid: int = 0
    torch_version: Optional[str] = None            # None: torch cannot be imported
    torch_error: str = ""
    torch_hip: Optional[str] = None
    torch_arch_list: Optional[list[str]] = None    # None: unknown
    gpu_count: int = 0
    gpu_arch_full: Optional[str] = None            # device 0's gcnArchName
    gpu_error: str = ""
    jit_dir: Optional[str] = None                  # $AITER_JIT_DIR
    jit_dir_exists: bool = False
    jit_dir_writable: bool = False
    jit_prebuilt: Optional[str] = None             # content of the image's prebuild marker
    config_path: Optional[str] = None
    config: Optional[dict] = None
    config_error: str = ""
    config_searched: tuple[str, ...] = ()
    live_toolchain: Optional[dict] = None
    live_error: str = ""
    fixture: str = ""                              # $ROCM_FP8_TOOLCHAIN_FIXTURE
    kernel_arch: Optional[str] = None              # AMD arch our kernel was compiled for (None: not tried)
    kernel_reports: list[dict] = field(default_factory=list)  # amd_compile.ResourceReport dicts
    kernel_error: str = ""
    # how we know this is a container ("/.dockerenv", ...); "" on a bare host; None: not looked at
    # (the fixes are then phrased for a container, the image's own use)
    container: Optional[str] = None


def _arch(name: Optional[str]) -> Optional[str]:
    return name.split(":")[0].strip() if name else None


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: None if v in (None, "", [], ()) else (".".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))  # noqa: E731
    return norm(a) == norm(b)


def _environment(facts: Facts, host: bool) -> Optional[Check]:
    if facts.container is None:
        return None
    where = "a bare host" if host else f"a container ({facts.container})"
    if facts.kfd is None and not facts.render_nodes and facts.gpu_count < 1:
        here = ("" if host else f"on a GPU host, start it with the devices: docker run {DEVICE_FLAGS}; ")
        return Check("environment", WARN,
                     f"{where} without a GPU (no /dev/kfd, no render node, torch sees none): the device and GPU "
                     "checks below fail here, as expected on a CPU-only machine",
                     f"{here}on a CPU-only machine there is nothing to repair: check an image on a ROCm GPU "
                     "host (invoke doctor --image rocm-fp8:<rocm>-<arch>), and see what an image would pick "
                     "with `rocm-fp8 explain --arch gfx950 --hip 7.2.53211 --n 2048 --k 3072 --m 4096`")
    return Check("environment", OK, where + (" (no container markers)" if host else ""))


def run_checks(facts: Facts) -> list[Check]:
    """The verdicts for ``facts``; pure."""
    checks: list[Check] = []
    baked_tc = (facts.config or {}).get("toolchain") or {}
    baked_arch = baked_tc.get("arch") if baked_tc.get("arch") not in (None, "cpu") else None
    image = f" (the image is built for {baked_arch})" if baked_arch else ""
    host = facts.container == ""
    environment = _environment(facts, host)
    if environment is not None:
        checks.append(environment)
    host_driver_fix = ("on a GPU host: install the amdgpu driver (ROCm's install guide) and check "
                       "`ls -l /dev/kfd /dev/dri`; on a CPU-only host there is nothing to fix")
    host_group_fix = ("add this user to the node's group (`sudo usermod -aG video,render $USER`, then log in "
                      "again), or run as root")

    if facts.fixture:
        checks.append(Check("toolchain fixture", WARN,
                            f"this image was built on a recorded-toolchain test fixture ({facts.fixture}): "
                            "no ROCm, no GPU support; it exists for tests only",
                            "build on a real ROCm base: invoke build --rocm <7.0|7.2> --arch <gfx942|gfx950>"))

    # -- device nodes ---------------------------------------------------------------------------
    if facts.kfd is None and host:
        checks.append(Check("/dev/kfd", FAIL, "missing: this host has no AMD GPU driver loaded (or no AMD GPU)",
                            host_driver_fix))
    elif facts.kfd is None:
        checks.append(Check("/dev/kfd", FAIL, "missing: the container was started without the AMD GPU "
                            "driver's compute node (or the host has no AMD GPU driver loaded)",
                            f"docker run {DEVICE_FLAGS}"))
    elif not facts.kfd.accessible:
        checks.append(Check("/dev/kfd", FAIL, f"present but not read-writable by uid {facts.uid} "
                            f"(groups {list(facts.process_groups)}; node gid {facts.kfd.gid})",
                            host_group_fix if host else
                            f"add --group-add {facts.kfd.gid} to docker run" if facts.kfd.gid is not None
                            else "add the user to the node's group"))
    else:
        checks.append(Check("/dev/kfd", OK, "present and accessible"))
    if not facts.render_nodes and host:
        checks.append(Check("/dev/dri/renderD*", FAIL, "no render node: this host has no GPU driver loaded",
                            host_driver_fix))
    elif not facts.render_nodes:
        checks.append(Check("/dev/dri/renderD*", FAIL, "no render node: no GPU was passed to the container",
                            f"docker run {DEVICE_FLAGS}; pass one --device /dev/dri/renderD<N> per GPU"))
    else:
        bad = [n for n in facts.render_nodes if not n.accessible]
        names = ", ".join(n.path for n in facts.render_nodes)
        if len(bad) == len(facts.render_nodes):
            gids = sorted({n.gid for n in bad if n.gid is not None})
            checks.append(Check("/dev/dri/renderD*", FAIL, f"{names} present but none read-writable by uid "
                                f"{facts.uid} (groups {list(facts.process_groups)})",
                                host_group_fix if host else
                                " ".join(f"--group-add {g}" for g in gids) or "add the render group"))
        elif bad:
            checks.append(Check("/dev/dri/renderD*", WARN, f"{len(bad)} of {len(facts.render_nodes)} render "
                                f"nodes not accessible: {', '.join(n.path for n in bad)}",
                                " ".join(sorted({f'--group-add {n.gid}' for n in bad if n.gid is not None}))))
        else:
            checks.append(Check("/dev/dri/renderD*", OK, f"{names} accessible"))

    # -- torch ------------------------------------------------------------------------------------
    if facts.torch_version is None:
        checks.append(Check("torch", FAIL, f"cannot import torch: {facts.torch_error}",
                            "use the image's Python (python3 on PATH); torch comes from the ROCm base image"))
    elif not facts.torch_hip:
        checks.append(Check("torch", FAIL, f"torch {facts.torch_version} is not a ROCm build "
                            "(torch.version.hip is unset)",
                            "something replaced the base image's ROCm torch (a pip install that resolved "
                            "torch?); install with PIP_CONSTRAINT=/etc/rocm-fp8/constraints.txt, rebuild"))
    else:
        checks.append(Check("torch", OK, f"torch {facts.torch_version}, ROCm build (HIP {facts.torch_hip})"))
        if baked_arch and facts.torch_arch_list is not None:
            archs = sorted({_arch(a) for a in facts.torch_arch_list if a})
            if baked_arch in archs:
                checks.append(Check("torch arch list", OK, f"torch is built for {baked_arch}"))
            else:
                checks.append(Check("torch arch list", FAIL, f"torch is built for {', '.join(archs) or 'no arch'}, "
                                    f"not {baked_arch}{image}",
                                    "use a base image whose torch supports the arch (rocm/pytorch builds "
                                    "cover gfx942 and gfx950)"))
        elif baked_arch:
            checks.append(Check("torch arch list", WARN, "torch does not report its arch list",
                                "nothing to do unless kernels fail with 'invalid device function'"))

    # -- GPU --------------------------------------------------------------------------------------
    if facts.gpu_count < 1:
        why = facts.gpu_error or "torch.cuda.is_available() is False"
        hint = (host_driver_fix if host and (facts.kfd is None or not facts.render_nodes) else
                f"docker run {DEVICE_FLAGS}; check HIP_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES"
                if facts.kfd is None or not facts.render_nodes else
                "the device nodes are there but torch sees no GPU: check HIP_VISIBLE_DEVICES, "
                "ROCR_VISIBLE_DEVICES and the host driver (`rocm-smi` on the host)")
        checks.append(Check("GPU", FAIL, f"no GPU visible to torch ({why}){image}", hint))
    else:
        live_arch = _arch(facts.gpu_arch_full)
        if baked_arch and live_arch != baked_arch:
            checks.append(Check("GPU arch", FAIL, f"GPU 0 is {facts.gpu_arch_full} but the image is built for "
                                f"{baked_arch}: its kernels and configuration do not fit this GPU",
                                f"use the {live_arch} flavour of the image (rocm-fp8:<rocm>-{live_arch})"))
        else:
            checks.append(Check("GPU arch", OK, f"{facts.gpu_count} GPU(s), GPU 0 is {facts.gpu_arch_full}"
                                + (", as the image expects" if baked_arch else "")))

    # -- aiter JIT cache ---------------------------------------------------------------------------
    jit_fix = ("run as the image's user (rocm-fp8, the default) or mount a writable directory and point "
               "AITER_JIT_DIR at it (modules not in it are then compiled on first use, minutes each)")
    if not facts.jit_dir:
        checks.append(Check("AITER_JIT_DIR", WARN, "not set: aiter compiles into its package directory or "
                            "~/.aiter, and nothing was prebuilt for it",
                            "set AITER_JIT_DIR to a writable cache directory"))
    elif not facts.jit_dir_exists:
        checks.append(Check("AITER_JIT_DIR", FAIL, f"{facts.jit_dir} does not exist", jit_fix))
    elif not facts.jit_dir_writable:
        checks.append(Check("AITER_JIT_DIR", FAIL, f"{facts.jit_dir} is not writable by uid {facts.uid}", jit_fix))
    else:
        prebuilt = {"1": "kernels prebuilt at image build", "0": "kernels NOT prebuilt (--no-prebuild): "
                    "the first call of each aiter CK kernel compiles it"}.get((facts.jit_prebuilt or "").strip(), "")
        status = WARN if (facts.jit_prebuilt or "").strip() == "0" else OK
        checks.append(Check("AITER_JIT_DIR", status, f"{facts.jit_dir} writable" + (f"; {prebuilt}" if prebuilt else ""),
                            "rebuild the image without --no-prebuild on a ROCm host" if status == WARN else ""))

    # -- our Triton kernel, compiled for the image's arch with this Triton ---------------------------
    if facts.kernel_arch:
        checks.append(_kernel_check(facts))

    # -- configuration -----------------------------------------------------------------------------
    if facts.config is None:
        where = facts.config_path or ", ".join(facts.config_searched) or "the search path"
        detail = facts.config_error or f"no configuration file ({where})"
        checks.append(Check("configuration", FAIL if facts.config_error else WARN,
                            detail + "; the dispatcher detects the toolchain at import instead",
                            "rocm-fp8 configure --output /etc/rocm-fp8/config.json (as root), or rebuild the image"))
    else:
        checks.append(Check("configuration", OK, f"{facts.config_path}"))
        if facts.live_toolchain is None:
            checks.append(Check("configuration vs toolchain", FAIL,
                                f"cannot detect the live toolchain: {facts.live_error}", "see the error above"))
        else:
            diffs = [f"{k}: baked {baked_tc.get(k)!r}, live {facts.live_toolchain.get(k)!r}"
                     for k in COMPARED_FIELDS if not _same(baked_tc.get(k), facts.live_toolchain.get(k))]
            if diffs:
                checks.append(Check("configuration vs toolchain", FAIL,
                                    "the baked configuration was made for another toolchain: " + "; ".join(diffs),
                                    "rebuild the image (invoke build), or re-bake for this toolchain: "
                                    f"rocm-fp8 configure --output {facts.config_path}"))
            else:
                summary = ", ".join(f"{k}={baked_tc.get(k)}" for k in ("rocm_version", "hip_version_str",
                                                                        "aiter_version") if baked_tc.get(k))
                checks.append(Check("configuration vs toolchain", OK, f"matches the live toolchain ({summary})"))
    return checks


def _kernel_check(facts: Facts) -> Check:
    from rocm_fp8.kernels.amd_compile import ResourceReport

    name, arch = "triton kernel", facts.kernel_arch
    if facts.kernel_error:
        missing = facts.kernel_error.startswith(("ModuleNotFoundError", "ImportError"))
        return Check(name, WARN if missing else FAIL, f"cannot compile rocm_fp8's kernel for {arch}: {facts.kernel_error}",
                     "install the Triton this image's torch pins (pytorch-triton-rocm)" if missing else
                     "report it: the Triton backend would fail at its first launch")
    reports = [ResourceReport.from_dict(r) for r in facts.kernel_reports]
    problems = [f"{r.config.get('block_m')}x{r.config.get('block_n')}: {'; '.join(r.problems())}"
                for r in reports if r.problems()]
    used = "; ".join(r.summary().split(": ", 1)[1] for r in reports)
    triton = reports[0].triton if reports else "?"
    if problems:
        return Check(name, FAIL, f"compiles for {arch} with Triton {triton} but cannot launch well: "
                     + " | ".join(problems), "use a config table whose rows fit (rocm-fp8 tune), or another Triton")
    return Check(name, OK, f"compiles for {arch} with Triton {triton}: {used}")


def gather_kernel_facts(f: Facts, arch: Optional[str]) -> None:
    """Compile our kernel for the AMD ``arch`` with the table's default config and a small-M default
    (the split-K path), as the dispatcher would launch them; no GPU needed."""
    from rocm_fp8.kernels.arch_limits import AMD_ARCHS

    if arch not in AMD_ARCHS:
        return
    f.kernel_arch = arch
    try:
        from rocm_fp8.kernels.amd_compile import compile_blockscale
        from rocm_fp8.kernels.triton_blockscale import KernelConfig, default_config

        table = kernel_configs.table_for(None, arch)
        configs = [default_config(1, 7168, 2304, arch=arch)]
        if table is not None and table.default:
            configs.insert(0, KernelConfig.from_dict({**configs[0].to_dict(), **table.default}).with_(split_k=1))
        f.kernel_reports = [compile_blockscale(c, arch, 7168, 2304).to_dict() for c in configs]
    except Exception as exc:  # noqa: BLE001 - a finding, not a crash
        f.kernel_error = f"{type(exc).__name__}: {str(exc)[:300]}"


# ---------------------------------------------------------------------------------------------
# Gathering facts (side effects live here only)


def _node(path: str) -> Node:
    try:
        gid = os.stat(path).st_gid
    except OSError:
        gid = None
    return Node(path=path, accessible=os.access(path, os.R_OK | os.W_OK), gid=gid)


def _writable(path: str) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".rocm-fp8-doctor-"):
            return True
    except OSError:
        return False


def detect_container(root: str = "/") -> str:
    """How we know this process runs in a container (e.g. ``"/.dockerenv"``), or ``""`` on a bare host."""
    for marker in (".dockerenv", "run/.containerenv"):      # Docker; Podman
        if os.path.exists(os.path.join(root, marker)):
            return "/" + marker
    if os.environ.get("container"):                         # systemd-nspawn, Podman, LXC set it
        return f"$container={os.environ['container']}"
    try:
        with open(os.path.join(root, "proc", "1", "cgroup")) as fh:
            cgroup = fh.read()
    except OSError:
        cgroup = ""
    for runtime in ("docker", "containerd", "kubepods", "libpod", "lxc"):   # cgroup v1 paths name them
        if runtime in cgroup:
            return f"/proc/1/cgroup names {runtime}"
    return ""


def gather_facts(dev: str = "/dev", root: str = "/") -> Facts:
    f = Facts(uid=os.getuid(), process_groups=tuple(sorted(set(os.getgroups()) | {os.getgid()})),
              fixture=os.environ.get(FIXTURE_ENV, ""), container=detect_container(root))
    kfd = os.path.join(dev, "kfd")
    if os.path.exists(kfd):
        f.kfd = _node(kfd)
    f.render_nodes = [_node(p) for p in sorted(glob.glob(os.path.join(dev, "dri", "renderD*")))]

    try:
        import torch

        f.torch_version = torch.__version__
        f.torch_hip = getattr(torch.version, "hip", None)
        arch_flags = getattr(torch._C, "_cuda_getArchFlags", None)
        if callable(arch_flags):
            flags = arch_flags()
            f.torch_arch_list = flags.split() if flags else ([] if f.torch_hip else None)
        try:
            if torch.cuda.is_available():
                f.gpu_count = torch.cuda.device_count()
                props = torch.cuda.get_device_properties(0)
                f.gpu_arch_full = getattr(props, "gcnArchName", None) or f"sm_{props.major}{props.minor}"
        except Exception as exc:  # noqa: BLE001 - a driver error is a finding, not a crash
            f.gpu_error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        f.torch_error = f"{type(exc).__name__}: {exc}"

    f.jit_dir = os.environ.get("AITER_JIT_DIR") or None
    if f.jit_dir:
        f.jit_dir_exists = os.path.isdir(f.jit_dir)
        f.jit_dir_writable = f.jit_dir_exists and _writable(f.jit_dir)
        try:
            with open(os.path.join(f.jit_dir, ".rocm-fp8-prebuilt")) as fh:
                f.jit_prebuilt = fh.read()
        except OSError:
            pass

    f.config_searched = tuple(str(p) for p in toolchain.config_search_paths())
    path = toolchain.find_config()
    if path is not None:
        f.config_path = str(path)
        try:
            f.config = toolchain.load_config(path)
        except ValueError as exc:
            f.config_error = str(exc)
    baked_arch = ((f.config or {}).get("toolchain") or {}).get("arch")
    try:
        f.live_toolchain = toolchain.detect_live(arch=baked_arch if baked_arch not in (None, "cpu") else None).to_dict()
    except Exception as exc:  # noqa: BLE001
        f.live_error = f"{type(exc).__name__}: {exc}"
    live_arch = (f.live_toolchain or {}).get("arch")
    gather_kernel_facts(f, baked_arch if baked_arch not in (None, "cpu") else live_arch)
    return f


# ---------------------------------------------------------------------------------------------


def format_checks(checks: Sequence[Check]) -> str:
    lines = []
    width = max((len(c.name) for c in checks), default=10)
    for c in checks:
        lines.append(f"  {c.status.upper():<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"        {'':<{width}}  fix: {c.fix}")
    failed = sum(c.failed for c in checks)
    lines.append(f"{failed} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="rocm-fp8 doctor", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--dev", default="/dev", help=argparse.SUPPRESS)  # for tests: a fake /dev tree
    args = ap.parse_args(list(argv) if argv is not None else None)
    facts = gather_facts(dev=args.dev)
    checks = run_checks(facts)
    failed = any(c.failed for c in checks)
    plugins = integrations.status()  # the sglang / vLLM plugins: information, not a check
    if args.json:
        print(json.dumps({"ok": not failed, "container": facts.container, "checks": [asdict(c) for c in checks],
                          "integrations": plugins}, indent=2))
    else:
        print("rocm-fp8 doctor" + (f" (configuration {facts.config_path})" if facts.config_path else ""))
        print(format_checks(checks))
        print("serving-stack plugins (rocm-fp8 integrations):")
        print(integrations.format_status(plugins))
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
