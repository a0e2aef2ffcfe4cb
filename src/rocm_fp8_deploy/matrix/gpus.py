"""The host's GPUs: found (AMD via the KFD topology, NVIDIA via its device nodes), chosen with --gpus,
handed to containers, and shared between parallel cells."""

from __future__ import annotations

import glob
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rocm_fp8_deploy.errors import DeployError


def parse_gpus(text: Optional[str]) -> Optional[list[int]]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; None or empty -> None (all of the host's GPUs)."""
    if text is None or str(text).strip() == "":
        return None
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit():
            raise DeployError(f"--gpus {text!r}: expected comma-separated GPU indices such as 0,1,2")
        if int(part) in out:
            raise DeployError(f"--gpus {text!r}: GPU {part} is listed twice")
        out.append(int(part))
    return out


@dataclass(frozen=True)
class HostGpu:
    index: int
    vendor: str                      # "amd" | "nvidia"
    render_node: Optional[str] = None   # AMD: /dev/dri/renderD<minor>


def amd_gpus(topology: str = "/sys/class/kfd/kfd/topology/nodes") -> list[HostGpu]:
    """AMD GPUs in ROCm's enumeration order (KFD topology nodes with SIMDs, by node number).

    Each one's ``drm_render_minor`` names its render node, which is what pins a GPU to a container.
    """
    gpus = []
    nodes = sorted(glob.glob(os.path.join(topology, "*")), key=lambda p: int(os.path.basename(p))
                   if os.path.basename(p).isdigit() else 1 << 30)
    for node in nodes:
        try:
            props = dict(line.split(None, 1) for line in Path(node, "properties").read_text().splitlines()
                         if len(line.split(None, 1)) == 2)
        except OSError:
            continue
        if int(props.get("simd_count", "0").strip() or 0) <= 0:
            continue  # a CPU node
        minor = props.get("drm_render_minor", "").strip()
        if not minor.isdigit():
            continue
        gpus.append(HostGpu(index=len(gpus), vendor="amd", render_node=f"/dev/dri/renderD{minor}"))
    return gpus


def nvidia_gpus(dev: str = "/dev") -> list[HostGpu]:
    ids = sorted(int(m.group(1)) for p in glob.glob(os.path.join(dev, "nvidia*"))
                 if (m := re.fullmatch(r"nvidia(\d+)", os.path.basename(p))))
    return [HostGpu(index=i, vendor="nvidia") for i in ids]


def host_gpus(vendor: str = "auto") -> list[HostGpu]:
    """The host's GPUs.  ``auto``: AMD when /dev/kfd exists, else NVIDIA when its nodes exist, else none."""
    if vendor not in ("auto", "amd", "nvidia"):
        raise DeployError(f"--vendor {vendor!r}: expected auto, amd or nvidia")
    if vendor in ("auto", "amd") and os.path.exists("/dev/kfd"):
        return amd_gpus()
    if vendor in ("auto", "nvidia"):
        return nvidia_gpus()
    return []


def select_gpus(available: list[HostGpu], requested: Optional[list[int]]) -> list[HostGpu]:
    if requested is None:
        return list(available)
    by_index = {g.index: g for g in available}
    missing = [i for i in requested if i not in by_index]
    if missing:
        raise DeployError(f"--gpus names GPU {', '.join(map(str, missing))}, but this host has "
                          f"{len(available)} GPU(s){' (' + ', '.join(str(g.index) for g in available) + ')' if available else ''}")
    return [by_index[i] for i in requested]


def gpu_run_options(gpus: list[HostGpu], shm_size: str) -> dict:
    """``containers.create`` options that give a container exactly these GPUs (none: no devices)."""
    from rocm_fp8_deploy.engine import amd_device_options

    options: dict = {"shm_size": shm_size}
    amd = [g for g in gpus if g.vendor == "amd"]
    nvidia = [g for g in gpus if g.vendor == "nvidia"]
    if amd:
        options.update(amd_device_options([g.render_node for g in amd]))
        options["shm_size"] = shm_size
    if nvidia:
        import docker

        options["device_requests"] = [docker.types.DeviceRequest(
            device_ids=[str(g.index) for g in nvidia], capabilities=[["gpu"]])]
        options["security_opt"] = ["seccomp=unconfined"]
    return options


class GpuPool:
    """Disjoint GPUs for concurrently running cells."""

    def __init__(self, gpus: list[HostGpu]):
        self.free = list(gpus)
        self.total = len(gpus)
        self.cond = threading.Condition()

    def acquire(self, count: int) -> list[HostGpu]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.free) >= count)
            taken, self.free = self.free[:count], self.free[count:]
            return taken

    def release(self, gpus: list[HostGpu]) -> None:
        with self.cond:
            self.free.extend(gpus)
            self.free.sort(key=lambda g: g.index)
            self.cond.notify_all()
