"""Runs INSIDE a matrix cell's container: preflight, then pytest writing JUnit XML to the bind mount.

Standalone on purpose (stdlib, plus torch when the image has it): the matrix copies this file into
the container, which has ``rocm_fp8`` but not the deploy tooling.  Reads ``spec.json`` from the
output directory and writes there:

  preflight.json   what the container sees: torch build, GPU count and names, device nodes
  current-test     the node id of the test running now (so a hang or a kill can be pinned on it)
  junit.xml        pytest's JUnit XML; the host takes the verdict from it

Exit codes: pytest's own, or 3 when the suite needs a GPU and none is visible (pytest not run).

``cell_runner.py facts OUT`` instead collects what the report shows per flavour, in-process (one
Python start instead of one per shape): ``rocm-fp8 info --json``, the baked configuration file, and
``rocm-fp8 explain --json`` for the preset shapes at a few M, into ``facts.json``.
"""

from __future__ import annotations

import faulthandler
import glob
import json
import os
import sys
import time

NO_GPU_EXIT = 3


def preflight() -> dict:
    info: dict = {
        "python": sys.version.split()[0],
        "uid": os.getuid(),
        "dev_kfd": os.path.exists("/dev/kfd"),
        "render_nodes": sorted(glob.glob("/dev/dri/renderD*")),
        "nvidia_nodes": sorted(p for p in glob.glob("/dev/nvidia*") if p[len("/dev/nvidia"):].isdigit()),
        "device_count": 0,
        "devices": [],
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_hip"] = getattr(torch.version, "hip", None)
        info["torch_cuda"] = getattr(torch.version, "cuda", None)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        info["device_count"] = count
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append({"name": props.name, "arch": getattr(props, "gcnArchName", None)
                                    or f"sm{props.major}{props.minor}"})
    except Exception as exc:  # noqa: BLE001 - a broken torch is a finding, reported in the cell
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    return info


class CurrentTest:
    """pytest plugin: keeps ``current-test`` naming the test that is running."""

    def __init__(self, path: str):
        self.path = path

    def pytest_runtest_logstart(self, nodeid, location):
        with open(self.path, "w") as f:
            f.write(nodeid + "\n")

    def pytest_sessionfinish(self, session, exitstatus):
        with open(self.path, "w") as f:
            f.write("")


def facts(out: str) -> int:
    import contextlib
    import io

    with open(os.path.join(out, "facts-spec.json")) as f:
        spec = json.load(f)
    result: dict = {"errors": []}
    try:
        from rocm_fp8.cli import info_dict, main as cli_main

        result["info"] = info_dict()
    except Exception as exc:  # noqa: BLE001
        result["errors"].append(f"rocm-fp8 info: {type(exc).__name__}: {exc}")
        cli_main = None
    try:
        from rocm_fp8.toolchain import find_config

        path = find_config()
        result["config_path"] = str(path) if path else None
        if path:
            with open(path) as f:
                result["config"] = json.load(f)
    except Exception as exc:  # noqa: BLE001
        result["errors"].append(f"baked configuration: {type(exc).__name__}: {exc}")
    rows = []
    try:
        from rocm_fp8.probe import PRESETS
    except Exception as exc:  # noqa: BLE001
        PRESETS = {}
        result["errors"].append(f"presets: {type(exc).__name__}: {exc}")
    for preset in spec["presets"]:
        if preset not in PRESETS:
            result["errors"].append(f"preset {preset!r} is not in this image's rocm_fp8.probe.PRESETS")
            continue
        for n, k in PRESETS[preset]:
            for m in spec["ms"]:
                row = {"preset": preset, "n": n, "k": k, "m": m}
                buf = io.StringIO()
                try:
                    with contextlib.redirect_stdout(buf):
                        code = cli_main(["explain", "--json", "--n", str(n), "--k", str(k), "--m", str(m)])
                    d = json.loads(buf.getvalue())
                    row.update(backend=d.get("backend"), reason=d.get("reason"), ok=code == 0,
                               rejected=[f"{c['backend']}: {c['reason']}" for c in d.get("considered", [])
                                         if not c.get("ok")])
                except Exception as exc:  # noqa: BLE001
                    row.update(backend=None, ok=False, reason=f"{type(exc).__name__}: {exc} {buf.getvalue()[-300:]}")
                rows.append(row)
    result["explain"] = rows
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"[facts] {len(rows)} dispatch decisions, {len(result['errors'])} errors", flush=True)
    return 0


def main() -> int:
    if sys.argv[1] == "facts":
        return facts(sys.argv[2])
    out = sys.argv[1]
    with open(os.path.join(out, "spec.json")) as f:
        spec = json.load(f)
    started = time.time()
    info = preflight()
    info["seconds"] = round(time.time() - started, 2)
    with open(os.path.join(out, "preflight.json"), "w") as f:
        json.dump(info, f, indent=2)
    seen = ", ".join(f"{d['name']} ({d['arch']})" for d in info["devices"]) or "none"
    print(f"[preflight] torch {info.get('torch', '?')} hip={info.get('torch_hip')} cuda={info.get('torch_cuda')}; "
          f"GPUs visible: {info['device_count']} [{seen}]; /dev/kfd={'yes' if info['dev_kfd'] else 'no'}, "
          f"render nodes {info['render_nodes'] or 'none'}", flush=True)
    if spec["gpu"] and info["device_count"] == 0:
        why = info.get("torch_error") or "torch.cuda.device_count() == 0"
        print(f"[preflight] no GPU visible inside the container ({why}); this suite needs one: not running it",
              flush=True)
        return NO_GPU_EXIT

    # The pytest shipped by the host comes first, so every cell runs the same pytest.
    sys.path.insert(0, spec["tools"])
    import pytest

    # If the cell is about to be killed for its timeout, leave every thread's stack in the log first.
    # (to a duplicate of the real stderr: pytest's capture replaces fd 2 while a test runs)
    if spec.get("dump_at"):
        stderr = os.fdopen(os.dup(2), "w")
        faulthandler.dump_traceback_later(max(spec["dump_at"] - (time.time() - started), 0.5), exit=False,
                                          file=stderr)
    args = list(spec["args"])
    print("[pytest] " + " ".join(args), flush=True)
    return int(pytest.main(args, plugins=[CurrentTest(os.path.join(out, "current-test"))]))


if __name__ == "__main__":
    sys.exit(main())
