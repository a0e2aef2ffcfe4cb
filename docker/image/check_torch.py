"""Build-time guard: the image must keep its base's ROCm torch, and no CUDA wheel may sneak in.

Runs inside `docker build` before rocm_fp8 is installed, so it is a standalone script using only the
standard library and torch.  The decision is the pure function :func:`verdict` (tested on the host
in tests/deploy/test_check_torch.py); the rest gathers facts and prints.

  --write-constraints FILE   first run: pin the torch family as installed now, remember torch
  --expect-constraints FILE  later runs: the torch family must still be exactly what was pinned
  --allow-fixture 0|1        accept a CPU torch ONLY in a base that declares itself a recorded-
                             toolchain fixture (env ROCM_FP8_TOOLCHAIN_FIXTURE and the marker file)
  --stage NAME               what this run guards (written to the log)

Every run prints its report and also appends it to torch-guard.log next to the constraints file,
so the image keeps the record even when Docker later replays the step from its layer cache.

A fixture is excused from exactly one check (torch.version.hip); the nvidia-* and constraint
checks apply to it as to a real base, and the excuse is printed, never silent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata

TORCH_FAMILY = ("torch", "triton", "pytorch-triton-rocm", "torchvision", "torchaudio")
FIXTURE_ENV = "ROCM_FP8_TOOLCHAIN_FIXTURE"
FIXTURE_MARKER = "/opt/rocm/.info/rocm-fp8-fixture"
GUARD_LOG = "torch-guard.log"


def verdict(*, torch_version, torch_hip, nvidia_packages, fixture_declared, allow_fixture,
            pinned=None, installed=None, base_torch=None, live_torch=None):
    """Return (ok, lines): every line says what was checked and what was found.

    ``pinned``/``installed`` map package -> version (None on the first run); ``base_torch`` and
    ``live_torch`` are (version, file) of torch as recorded first and as seen now.
    """
    ok = True
    lines = []
    if torch_version is None:
        return False, ["FAIL torch cannot be imported in the base image: use a ROCm PyTorch base "
                       "(e.g. rocm/pytorch:...) so the image keeps its ROCm torch"]
    if torch_hip:
        lines.append(f"ok   torch {torch_version} is a ROCm build (torch.version.hip = {torch_hip})")
    elif fixture_declared and allow_fixture:
        lines.append(f"FIXTURE torch {torch_version} has no torch.version.hip; accepted ONLY because the base "
                     f"declares itself a recorded-toolchain fixture ({FIXTURE_ENV}) and the build passed "
                     "ALLOW_TOOLCHAIN_FIXTURE=1. A real ROCm base never gets this excuse.")
    elif fixture_declared:
        ok = False
        lines.append(f"FAIL the base is a recorded-toolchain test fixture (torch {torch_version}, no ROCm); "
                     "real builds refuse it. Tests pass ALLOW_TOOLCHAIN_FIXTURE=1 (invoke build --allow-fixture)")
    else:
        ok = False
        lines.append(f"FAIL torch {torch_version} is not a ROCm build (torch.version.hip is unset): the base "
                     "image is not a ROCm PyTorch image, or a pip install replaced its torch with a CUDA/CPU "
                     "wheel. Use a rocm/pytorch base and install with the constraints in PIP_CONSTRAINT")
    if nvidia_packages:
        ok = False
        lines.append("FAIL CUDA packages are installed: " + ", ".join(sorted(nvidia_packages)) +
                     " (a dependency resolved torch from PyPI's CUDA wheels); pin torch with the "
                     "constraints file and install that package with --no-deps")
    else:
        lines.append("ok   no nvidia-* packages installed")
    if pinned is not None:
        changed = {name: (want, (installed or {}).get(name)) for name, want in pinned.items()
                   if (installed or {}).get(name) != want}
        if changed:
            ok = False
            lines.append("FAIL the torch family changed after the base: " + ", ".join(
                f"{name} {want} -> {got or 'removed'}" for name, (want, got) in sorted(changed.items())))
        else:
            lines.append("ok   torch family as pinned: " + ", ".join(
                f"{n}=={v}" for n, v in sorted(pinned.items())))
    if base_torch is not None and live_torch is not None and tuple(base_torch) != tuple(live_torch):
        ok = False
        lines.append(f"FAIL torch was replaced: base had {base_torch[0]} at {base_torch[1]}, "
                     f"now {live_torch[0]} at {live_torch[1]}")
    return ok, lines


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_packages() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found[_norm(name)] = dist.version
    return found


def nvidia_packages(packages: dict[str, str]) -> list[str]:
    return [f"{n}=={v}" for n, v in packages.items() if n.startswith("nvidia-")]


def torch_facts():
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "no usable torch"
        print(f"torch import failed: {exc}", file=sys.stderr)
        return None, None, None
    return torch.__version__, getattr(torch.version, "hip", None), os.path.realpath(torch.__file__)


def read_pins(path: str) -> dict[str, str]:
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[_norm(name)] = version.strip()
    return pins


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write-constraints", metavar="FILE")
    mode.add_argument("--expect-constraints", metavar="FILE")
    ap.add_argument("--allow-fixture", default="0", choices=("0", "1"))
    ap.add_argument("--stage", default=None, help="what this run guards, for the log")
    args = ap.parse_args(argv)

    torch_version, torch_hip, torch_file = torch_facts()
    packages = installed_packages()
    fixture_declared = bool(os.environ.get(FIXTURE_ENV)) and os.path.exists(FIXTURE_MARKER)
    common = dict(torch_version=torch_version, torch_hip=torch_hip,
                  nvidia_packages=nvidia_packages(packages), fixture_declared=fixture_declared,
                  allow_fixture=args.allow_fixture == "1")
    if args.write_constraints:
        ok, lines = verdict(**common)
        if ok:
            path = args.write_constraints
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("# The base image's torch family, pinned by rocm-fp8's build guard.\n"
                        "# PIP_CONSTRAINT points here, so no pip install can swap torch for a CUDA wheel.\n")
                for name in TORCH_FAMILY:
                    if name in packages:
                        f.write(f"{name}=={packages[name]}\n")
            with open(path + ".torch.json", "w") as f:
                json.dump({"version": torch_version, "file": torch_file, "hip": torch_hip}, f)
            lines.append(f"ok   wrote {path}")
    else:
        path = args.expect_constraints
        with open(path + ".torch.json") as f:
            base = json.load(f)
        pins = read_pins(path)
        ok, lines = verdict(**common, pinned=pins, installed={n: packages.get(n) for n in pins},
                            base_torch=(base["version"], base["file"]),
                            live_torch=(torch_version, torch_file))
    path = args.write_constraints or args.expect_constraints
    stage = args.stage or ("base" if args.write_constraints else "after install")
    report = [f"rocm-fp8 torch guard ({stage}):"] + ["  " + line for line in lines]
    print("\n".join(report))
    log = os.path.join(os.path.dirname(os.path.abspath(path)), GUARD_LOG)
    try:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w" if args.write_constraints else "a") as f:
            f.write("\n".join(report + [f"  => {'PASS' if ok else 'FAIL'}", ""]))
    except OSError as exc:  # the verdict stands even if the record cannot be written
        print(f"  (could not write {log}: {exc})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
