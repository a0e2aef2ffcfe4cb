"""The test matrix: every flavour's image x every suite, each cell in its own container.

    load_matrix(path)       ci/matrix.toml -> Matrix (validated; errors name the key and the fix)
    plan(matrix, ...)       -> [Cell] for the requested --rocm/--arch/--suite
    host_gpus(vendor)       the host's GPUs (AMD via the KFD topology, NVIDIA via its device nodes)
    run_matrix(...)         runs the cells (in parallel on disjoint GPUs), judges each from its files
    judge(...)              pure: one cell's verdict from what its container left behind

A cell's container gets the checkout's tests/ read-only, the host's pytest (copied into a tools
directory, so images need not carry pytest), and an output directory.  ``cell_runner.py`` inside
checks what the container sees (a GPU suite with no GPU visible stops there), then runs pytest with
``--junitxml`` into the output directory.  The verdict comes from the XML, and the exit code may
only make it worse: a cell passes only when its XML exists, shows at least one passed test and no
failure or error, and the container exited normally.  Exit codes of GPU processes are known to lie
(FACTS.md section 6), and a test run that saw no GPU must not look green.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from rocm_fp8_deploy.errors import DeployError

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from rocm_fp8_deploy.flavours import DEFAULT_REPOSITORY, KNOWN_ARCHS

Log = Callable[[str], None]

#: where things are mounted inside a cell's container
MOUNT = "/opt/rocm-fp8-matrix"
TESTS_IN = f"{MOUNT}/tests"
EXTRA_IN = f"{MOUNT}/extra"
TOOLS_IN = f"{MOUNT}/tools"
OUT_IN = f"{MOUNT}/out"
CELL_LABEL = "rocm-fp8.matrix-cell"
RUN_LABEL = "rocm-fp8.matrix-run"

#: pure-Python distributions copied from the host into every cell (pytest and what it imports)
PYTEST_DISTRIBUTIONS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments", "exceptiongroup", "tomli")
#: markers registered inside the cells (the checkout's pyproject is not mounted)
MARKERS = ("gpu", "docker", "slow", "bench")
LOG_TAIL_LINES = 40


# ---------------------------------------------------------------------------------------------
# The matrix file


@dataclass(frozen=True)
class FlavourSpec:
    rocm: str
    arch: str
    image: str

    @property
    def name(self) -> str:
        return f"{self.rocm}-{self.arch}"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    gpu: bool
    gpus: int
    paths: tuple[str, ...]
    ignore: tuple[str, ...]
    markers: str
    timeout: float
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Matrix:
    path: Path
    tests: Path
    shm_size: str
    flavours: list[FlavourSpec]
    suites: dict[str, Suite]
    presets: list[str] = field(default_factory=list)
    explain_m: list[int] = field(default_factory=list)


def _fail(path: Path, where: str, message: str) -> DeployError:
    return DeployError(f"{path}: {where}: {message}")


def _get(table: dict, key: str, kind, path: Path, where: str, default=None, required: bool = False):
    if key not in table:
        if required:
            raise _fail(path, where, f"missing required key {key!r}")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise _fail(path, f"{where}.{key}", f"expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kinds):
        raise _fail(path, f"{where}.{key}", f"expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "a list",
             dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _str_list(table: dict, key: str, path: Path, where: str, default=()) -> tuple[str, ...]:
    value = _get(table, key, list, path, where, default=list(default))
    if not all(isinstance(v, str) and v for v in value):
        raise _fail(path, f"{where}.{key}", f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _positive(value, path: Path, where: str) -> float:
    if value is None or value <= 0:
        raise _fail(path, where, f"expected a positive number of seconds, got {value!r}")
    return float(value)


_KNOWN = {
    "top": {"defaults", "report", "flavours", "suites"},
    "defaults": {"repository", "tests", "shm_size", "timeout"},
    "report": {"presets", "explain_m"},
    "flavour": {"rocm", "arch", "image"},
    "suite": {"description", "gpu", "gpus", "paths", "ignore", "markers", "timeout", "env"},
}


def _unknown(table: dict, known: set, path: Path, where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise _fail(path, where, f"unknown key(s) {', '.join(map(repr, extra))}; known: {', '.join(sorted(known))}")


def load_matrix(path: str | os.PathLike, repository: Optional[str] = None) -> Matrix:
    """Read and validate a matrix file; every refusal names the file, the key and what was expected.

    ``repository`` overrides ``defaults.repository`` (like ``invoke build --repo``) for flavours
    that do not name their image.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DeployError(f"matrix file {path} does not exist (the default is ci/matrix.toml in the checkout; "
                          "pass --matrix PATH)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{path}: not valid TOML: {exc}") from None
    _unknown(data, _KNOWN["top"], path, "top level")
    defaults = _get(data, "defaults", dict, path, "top level", default={})
    _unknown(defaults, _KNOWN["defaults"], path, "[defaults]")
    repository = repository or _get(defaults, "repository", str, path, "defaults", default=DEFAULT_REPOSITORY)
    tests = (path.parent / _get(defaults, "tests", str, path, "defaults", default="../tests")).resolve()
    if not tests.is_dir():
        raise _fail(path, "defaults.tests", f"tests directory {tests} does not exist")
    shm_size = _get(defaults, "shm_size", str, path, "defaults", default="16g")
    if not re.fullmatch(r"\d+[bkmg]?", shm_size):
        raise _fail(path, "defaults.shm_size", f"expected a size such as '16g', got {shm_size!r}")
    default_timeout = _positive(_get(defaults, "timeout", (int, float), path, "defaults", default=1800),
                                path, "defaults.timeout")

    report = _get(data, "report", dict, path, "top level", default={})
    _unknown(report, _KNOWN["report"], path, "[report]")
    presets = list(_str_list(report, "presets", path, "report"))
    explain_m = _get(report, "explain_m", list, path, "report", default=[16, 1024, 8192])
    if not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in explain_m):
        raise _fail(path, "report.explain_m", f"expected a list of positive integers, got {explain_m!r}")

    flavours = []
    raw_flavours = _get(data, "flavours", list, path, "top level", required=True)
    if not raw_flavours:
        raise _fail(path, "flavours", "expected at least one [[flavours]] entry")
    for i, f in enumerate(raw_flavours):
        where = f"flavours[{i}]"
        if not isinstance(f, dict):
            raise _fail(path, where, f"expected a table, got {f!r}")
        _unknown(f, _KNOWN["flavour"], path, where)
        rocm = _get(f, "rocm", str, path, where, required=True)
        arch = _get(f, "arch", str, path, where, required=True)
        if not re.fullmatch(r"\d+\.\d+", rocm):
            raise _fail(path, f"{where}.rocm", f"expected a release line such as '7.2', got {rocm!r}")
        if arch not in KNOWN_ARCHS:
            raise _fail(path, f"{where}.arch", f"unknown arch {arch!r}; known: {', '.join(KNOWN_ARCHS)}")
        image = _get(f, "image", str, path, where, default=f"{repository}:{rocm}-{arch}")
        spec = FlavourSpec(rocm=rocm, arch=arch, image=image)
        if any(o.name == spec.name for o in flavours):
            raise _fail(path, where, f"flavour {spec.name} is listed twice")
        flavours.append(spec)

    suites = {}
    raw_suites = _get(data, "suites", dict, path, "top level", required=True)
    if not raw_suites:
        raise _fail(path, "suites", "expected at least one [suites.NAME] table")
    for name, s in raw_suites.items():
        where = f"suites.{name}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise _fail(path, where, "suite names are lower-case letters, digits, '-' and '_'")
        if not isinstance(s, dict):
            raise _fail(path, where, f"expected a table, got {s!r}")
        _unknown(s, _KNOWN["suite"], path, where)
        gpu = _get(s, "gpu", bool, path, where, required=True)
        gpus = _get(s, "gpus", int, path, where, default=1 if gpu else 0)
        if gpu and gpus < 1:
            raise _fail(path, f"{where}.gpus", f"a GPU suite needs at least 1 GPU per cell, got {gpus}")
        if not gpu and gpus:
            raise _fail(path, f"{where}.gpus", f"gpu = false but gpus = {gpus}; drop gpus or set gpu = true")
        paths = _str_list(s, "paths", path, where, default=["."])
        for p in paths:
            if Path(p).is_absolute() or ".." in Path(p).parts:
                raise _fail(path, f"{where}.paths", f"{p!r} must be relative to the tests directory, inside it")
            if not (tests / p).exists():
                raise _fail(path, f"{where}.paths", f"{p!r} does not exist under {tests}")
        env = _get(s, "env", dict, path, where, default={})
        for key, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not isinstance(value, str):
                raise _fail(path, f"{where}.env", f"expected NAME = \"string\" pairs, got {key!r} = {value!r}")
        suites[name] = Suite(
            name=name, description=_get(s, "description", str, path, where, default=""), gpu=gpu, gpus=gpus,
            paths=paths, ignore=_str_list(s, "ignore", path, where),
            markers=_get(s, "markers", str, path, where, default=""),
            timeout=_positive(_get(s, "timeout", (int, float), path, where, default=default_timeout),
                              path, f"{where}.timeout"),
            env=tuple(sorted(env.items())))
    return Matrix(path=path, tests=tests, shm_size=shm_size, flavours=flavours, suites=suites,
                  presets=presets, explain_m=list(explain_m))


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Cell:
    flavour: FlavourSpec
    suite: Suite
    skip_reason: Optional[str] = None   # set: reported as a skipped cell, nothing runs

    @property
    def name(self) -> str:
        return f"{self.flavour.name}/{self.suite.name}"

    @property
    def slug(self) -> str:
        return f"{self.flavour.name}__{self.suite.name}"


def plan(matrix: Matrix, rocm=(), arch=(), suites=(), cpu_only: bool = False) -> list[Cell]:
    """The cells for the requested releases, archs and suites (all when none given), flavour-major."""
    def pick(requested, known, what):
        requested = list(dict.fromkeys(requested or ()))
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise DeployError(f"unknown {what} {', '.join(map(repr, unknown))} in {matrix.path}; "
                              f"known: {', '.join(dict.fromkeys(known))}")
        return requested

    want_rocm = pick(rocm, [f.rocm for f in matrix.flavours], "--rocm")
    want_arch = pick(arch, [f.arch for f in matrix.flavours], "--arch")
    want_suites = pick(suites, list(matrix.suites), "--suite") or list(matrix.suites)
    flavours = [f for f in matrix.flavours
                if (not want_rocm or f.rocm in want_rocm) and (not want_arch or f.arch in want_arch)]
    if not flavours:
        raise DeployError(f"no flavour in {matrix.path} matches --rocm {want_rocm or 'any'} --arch "
                          f"{want_arch or 'any'}; listed: {', '.join(f.name for f in matrix.flavours)}")
    cells = []
    for f in flavours:
        for s in want_suites:
            suite = matrix.suites[s]
            skip = "--cpu-only: this suite needs a GPU" if cpu_only and suite.gpu else None
            cells.append(Cell(f, suite, skip))
    return cells


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


# ---------------------------------------------------------------------------------------------
# The host's GPUs


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


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Counts:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)     # {"test", "kind", "message"}
    properties: dict = field(default_factory=dict)          # test -> {name: value}


def parse_junit(path: Path) -> Counts:
    """Count JUnit XML testcases (not the summary attributes, which hooks can rewrite)."""
    root = ET.parse(path).getroot()
    counts = Counts()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        counts.tests += 1
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            counts.failures.append({"test": name, "kind": node.tag,
                                    "message": (node.get("message") or node.text or "").strip()[:500]})
            if failure is not None:
                counts.failed += 1
            else:
                counts.errors += 1
        elif case.find("skipped") is not None:
            counts.skipped += 1
        else:
            counts.passed += 1
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props:
            counts.properties[name] = props
    return counts


@dataclass
class CellResult:
    cell: str
    flavour: str
    suite: str
    image: str
    status: str                  # passed | failed | skipped
    reason: str                  # one line: why, in words
    gpus: list[int] = field(default_factory=list)
    exit_code: Optional[int] = None
    seconds: float = 0.0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    log_tail: str = ""
    log: Optional[str] = None        # path relative to the report directory
    junit: Optional[str] = None
    preflight: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def judge(cell: Cell, *, exit_code: Optional[int], timed_out: bool, timeout: float, junit: Optional[Counts],
          preflight: Optional[dict], current_test: Optional[str], oom_killed: bool = False) -> tuple[str, str]:
    """(status, reason) for a cell that ran.  Pure: tested on a CPU with made-up outcomes."""
    where = f" during {current_test}" if current_test else ""
    if timed_out:
        return "failed", f"timeout: still running after {timeout:.0f} s{where}; killed"
    if preflight is None:
        return "failed", (f"crashed before its preflight (exit code {exit_code}): the container never reported "
                          "what it sees; see the log tail")
    if cell.suite.gpu and int(preflight.get("device_count") or 0) == 0:
        why = preflight.get("torch_error") or "torch.cuda.device_count() == 0"
        return "failed", f"no GPU visible inside the container ({why}); pass --cpu-only to skip GPU suites"
    if exit_code is not None and exit_code >= 128 or oom_killed:
        sig = _signal_name(exit_code) if exit_code is not None and exit_code >= 128 else "SIGKILL"
        oom = " by the OOM killer" if oom_killed else ""
        return "failed", f"crashed: killed by {sig}{oom} (exit code {exit_code}){where}; no verdict from pytest"
    if junit is None:
        return "failed", f"no JUnit XML was written (exit code {exit_code}); see the log tail"
    if junit.failed or junit.errors:
        first = junit.failures[0]["test"] if junit.failures else "?"
        return "failed", (f"{junit.failed} failed, {junit.errors} errors (first: {first})")
    if junit.passed == 0:
        what = "GPU suite" if cell.suite.gpu else "suite"
        return "failed", (f"{what} passed nothing: {junit.tests} tests, {junit.skipped} skipped "
                          "(a run that tested nothing is not a pass)")
    if exit_code != 0:
        return "failed", (f"the XML shows {junit.passed} passed and nothing failed, but pytest exited "
                          f"{exit_code}; see the log tail")
    return "passed", f"{junit.passed} passed, {junit.skipped} skipped"


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class RunOptions:
    gpus: Optional[list[int]] = None       # host GPU indices to use; None = all
    vendor: str = "auto"
    parallel: int = 1
    cpu_only: bool = False
    extra_tests: Optional[str] = None      # a directory of test files added to every cell
    report_dir: Optional[str] = None       # keep logs/XML/report here (else a temporary directory)
    pytest_args: tuple[str, ...] = ()
    with_facts: bool = True                # collect info/explain/config per flavour for the report


@dataclass
class MatrixResult:
    run_id: str
    matrix: str
    started: float
    seconds: float
    cells: list[CellResult]
    flavours: dict          # flavour name -> {"image": ..., "labels": ..., "facts": ...}
    host: dict
    report_dir: Optional[str] = None

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.cells)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "matrix": self.matrix, "started": self.started, "seconds": self.seconds,
                "ok": self.ok, "host": self.host, "flavours": self.flavours,
                "cells": [c.to_dict() for c in self.cells]}


def pytest_tools(dest: Path) -> Path:
    """Copy the host's pytest (pure Python) into ``dest``, so images need not carry it."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)   # mounted read-only for the image's (non-root) user
    try:
        metadata.distribution("pytest")
    except metadata.PackageNotFoundError:
        raise DeployError("pytest is not installed on this host; the matrix ships the host's pytest into each "
                          "container: pip install 'rocm-fp8[test]' (or pytest)") from None
    for name in PYTEST_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # exceptiongroup/tomli exist only for Python < 3.11
        for rel in dist.files or ():
            if str(rel).startswith("..") or "__pycache__" in rel.parts or rel.suffix == ".pyc":
                continue
            src = Path(dist.locate_file(rel))
            if src.is_file():
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
    shutil.copyfile(Path(__file__).with_name("cell_runner.py"), dest / "cell_runner.py")
    markers = "\n".join(f"    {m}: registered by the rocm-fp8 matrix" for m in MARKERS)
    (dest / "pytest.ini").write_text(
        "[pytest]\n"
        "# written by rocm_fp8_deploy.matrix for the cells: the checkout's pyproject is not mounted\n"
        f"markers =\n{markers}\n"
        "junit_family = xunit1\n"
        "filterwarnings = ignore::DeprecationWarning:triton.*\n")
    return dest


def pytest_args(suite: Suite, extra: bool, additional: tuple[str, ...] = ()) -> list[str]:
    args = [f"{TESTS_IN}/{p}".rstrip("/.") if p != "." else TESTS_IN for p in suite.paths]
    if extra:
        args.append(EXTRA_IN)
    for ig in suite.ignore:
        args.append(f"--ignore={TESTS_IN}/{ig}")
    if suite.markers:
        args += ["-m", suite.markers]
    args += ["-c", f"{TOOLS_IN}/pytest.ini", "--rootdir", TESTS_IN, "-p", "no:cacheprovider",
             f"--junitxml={OUT_IN}/junit.xml", "-o", f"junit_suite_name={suite.name}",
             # xunit1 keeps record_property (the bench suite records TFLOPS, models the chosen backend)
             "-o", "junit_family=xunit1", "-q", "-rfE",
             "--tb=short", *additional]
    return args


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Progress:
    """Live, per-cell lines on one console; cells running at once are told apart by their prefix."""

    def __init__(self, log: Log, total: int):
        self.log = log
        self.total = total
        self.done = 0
        self.lock = threading.Lock()

    def line(self, cell: str, text: str) -> None:
        with self.lock:
            self.log(f"[{cell}] {text}")

    def finished(self, result: CellResult) -> None:
        with self.lock:
            self.done += 1
            mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[result.status]
            self.log(f"[{result.cell}] {mark} ({self.done}/{self.total} cells) in {result.seconds:.0f} s: "
                     f"{result.reason}")


def run_cell(client, cell: Cell, *, tools: Path, out_dir: Path, gpus: list[HostGpu], shm_size: str,
             tests: Path, options: RunOptions, run_id: str, progress: Progress) -> CellResult:
    from rocm_fp8_deploy import engine

    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o777)   # the image's user (not root) writes here
    for stale in ("junit.xml", "preflight.json", "current-test", "log.txt"):
        (out_dir / stale).unlink(missing_ok=True)
    timeout = cell.suite.timeout
    spec = {"gpu": cell.suite.gpu, "tools": TOOLS_IN, "dump_at": timeout - min(15.0, timeout * 0.25),
            "args": pytest_args(cell.suite, bool(options.extra_tests), options.pytest_args)}
    (out_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    volumes = {str(tests): {"bind": TESTS_IN, "mode": "ro"}, str(tools): {"bind": TOOLS_IN, "mode": "ro"},
               str(out_dir): {"bind": OUT_IN, "mode": "rw"}}
    if options.extra_tests:
        volumes[str(Path(options.extra_tests).resolve())] = {"bind": EXTRA_IN, "mode": "ro"}
    run_options = gpu_run_options(gpus, shm_size)
    # Child processes a test starts (`python -m pytest ...`) need the shipped pytest too.
    image_env = dict(e.split("=", 1) for e in ((client.api.inspect_image(cell.flavour.image).get("Config") or {})
                                                .get("Env") or []) if "=" in e)
    pythonpath = ":".join(p for p in (TOOLS_IN, image_env.get("PYTHONPATH", "")) if p)
    environment = {**dict(cell.suite.env), "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONUNBUFFERED": "1", "ROCM_FP8_MATRIX_CELL": cell.name}
    progress.line(cell.name, f"start: {cell.flavour.image}, GPUs {[g.index for g in gpus] or 'none'}, "
                             f"timeout {timeout:.0f} s")
    started = time.time()
    log_lines: list[str] = []
    log_file = (out_dir / "log.txt").open("w")

    def stream(line: str) -> None:
        log_file.write(line + "\n")
        log_file.flush()
        log_lines.append(line)
        progress.line(cell.name, line)

    try:
        outcome = engine.run_in_image(
            client, cell.flavour.image, ["python3", f"{TOOLS_IN}/cell_runner.py", OUT_IN], entrypoint="",
            environment=environment, volumes=volumes, timeout=timeout, stream=stream, init=True,
            labels={CELL_LABEL: cell.name, RUN_LABEL: run_id}, name=f"rocm-fp8-matrix-{run_id}-{cell.slug}"
            .replace(".", "_"), **run_options)
        exit_code, timed_out, output = outcome.exit_code, outcome.timed_out, outcome.output
    except DeployError as exc:
        exit_code, timed_out, output = None, False, str(exc)
        stream(f"[matrix] {exc}")
    finally:
        log_file.close()
    seconds = time.time() - started
    if not log_lines and output:
        (out_dir / "log.txt").write_text(output)
    preflight = _read_json(out_dir / "preflight.json")
    junit = None
    junit_path = out_dir / "junit.xml"
    junit_note = ""
    if junit_path.is_file():
        try:
            junit = parse_junit(junit_path)
        except ET.ParseError as exc:
            junit_note = f" (junit.xml unreadable: {exc})"
    current = None
    if (out_dir / "current-test").is_file():
        current = (out_dir / "current-test").read_text().strip() or None
    if exit_code is None:
        status, reason = "failed", f"the container could not start: {output.strip()[:300]}"
    else:
        status, reason = judge(cell, exit_code=exit_code, timed_out=timed_out, timeout=timeout, junit=junit,
                               preflight=preflight, current_test=current)
    counts = junit or Counts()
    report_root = out_dir.parent.parent
    return CellResult(
        cell=cell.name, flavour=cell.flavour.name, suite=cell.suite.name, image=cell.flavour.image,
        status=status, reason=reason + junit_note, gpus=[g.index for g in gpus], exit_code=exit_code,
        seconds=round(seconds, 1), passed=counts.passed, failed=counts.failed, errors=counts.errors,
        skipped=counts.skipped, failures=counts.failures, properties=counts.properties,
        log_tail=_tail(output) if status == "failed" else "",
        log=str((out_dir / "log.txt").relative_to(report_root)),
        junit=str(junit_path.relative_to(report_root)) if junit_path.is_file() else None,
        preflight=preflight or {})


def flavour_facts(client, flavour: FlavourSpec, matrix: Matrix, tools: Path, out_dir: Path, log: Log) -> dict:
    """Image labels, and (from inside the image) info, the baked configuration and the dispatch table."""
    from docker.errors import ImageNotFound

    from rocm_fp8_deploy import engine

    facts: dict = {"image": flavour.image, "labels": {}, "errors": []}
    try:
        info = client.api.inspect_image(flavour.image)
        facts["labels"] = {k: v for k, v in ((info.get("Config") or {}).get("Labels") or {}).items()
                           if k.startswith("rocm-fp8.")}
        facts["image_id"] = info.get("Id", "")
    except ImageNotFound:
        facts["errors"].append(f"image {flavour.image} is not present locally; build it with "
                               f"`invoke build --rocm {flavour.rocm} --arch {flavour.arch}`")
        return facts
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o777)
    (out_dir / "facts-spec.json").write_text(json.dumps({"presets": matrix.presets, "ms": matrix.explain_m}))
    result = engine.run_in_image(client, flavour.image, ["python3", f"{TOOLS_IN}/cell_runner.py", "facts", OUT_IN],
                                 entrypoint="", timeout=600, environment={"PYTHONDONTWRITEBYTECODE": "1"},
                                 volumes={str(tools): {"bind": TOOLS_IN, "mode": "ro"},
                                          str(out_dir): {"bind": OUT_IN, "mode": "rw"}})
    data = _read_json(out_dir / "facts.json")
    if data is None:
        facts["errors"].append(f"collecting facts inside {flavour.image} failed (exit code {result.exit_code}): "
                               f"{_tail(result.output, 8)}")
    else:
        facts.update({k: v for k, v in data.items() if k != "errors"})
        facts["errors"] += data.get("errors", [])
    log(f"[{flavour.name}] facts: {len(facts.get('explain', []))} dispatch decisions"
        f"{', ' + str(len(facts['errors'])) + ' errors' if facts['errors'] else ''}")
    return facts


def run_matrix(matrix: Matrix, cells: list[Cell], options: RunOptions, log: Log = print,
               client=None) -> MatrixResult:
    """Run the cells and write the report; the result says per cell what happened and why."""
    from rocm_fp8_deploy import engine, report

    if options.parallel < 1:
        raise DeployError(f"--parallel {options.parallel}: expected at least 1")
    if options.extra_tests and not Path(options.extra_tests).is_dir():
        raise DeployError(f"--extra-tests {options.extra_tests}: no such directory")
    to_run = [c for c in cells if c.skip_reason is None]
    gpus = select_gpus(host_gpus(options.vendor), options.gpus) if not options.cpu_only else []
    for c in to_run:
        if c.suite.gpu and gpus and c.suite.gpus > len(gpus):
            raise DeployError(f"suite {c.suite.name} needs {c.suite.gpus} GPUs per cell but only {len(gpus)} "
                              f"are available ({'--gpus ' + ','.join(str(g.index) for g in gpus)})")
    client = client or engine.connect()
    missing = [c.flavour.image for c in to_run if not engine.image_exists(client, c.flavour.image)]
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        present = [c.flavour for c in cells if engine.image_exists(client, c.flavour.image)]
        narrow = (f"; present: {', '.join(dict.fromkeys(f.image for f in present))}, so e.g. "
                  f"--arch {present[0].arch} runs what is here, or" if present else ";")
        raise DeployError(f"image(s) {names} not present locally{narrow} build them first "
                          "(`invoke build --rocm R --arch A`, tags <repo>:<rocm>-<arch>) or point the matrix's "
                          "flavours at existing images")

    run_id = uuid.uuid4().hex[:8]
    temp = None
    if options.report_dir:
        root = Path(options.report_dir).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        temp = tempfile.mkdtemp(prefix="rocm-fp8-matrix-")
        root = Path(temp)
    started = time.time()
    tools = pytest_tools(Path(tempfile.mkdtemp(prefix="rocm-fp8-matrix-tools-")))
    try:
        host = {"gpus": [asdict(g) for g in gpus], "vendor": gpus[0].vendor if gpus else None,
                "cpu_only": options.cpu_only, "parallel": options.parallel, "hostname": os.uname().nodename}
        log(f"matrix {matrix.path}: {len(cells)} cells ({len(cells) - len(to_run)} skipped), "
            f"{len(gpus)} GPU(s) {[g.index for g in gpus]}, parallel {options.parallel}, run {run_id}")
        flavours: dict = {}
        if options.with_facts:
            for f in dict.fromkeys(c.flavour for c in cells):
                flavours[f.name] = flavour_facts(client, f, matrix, tools, root / "flavours" / f.name, log)
        else:
            for f in dict.fromkeys(c.flavour for c in cells):
                flavours[f.name] = {"image": f.image, "labels": {}, "errors": []}

        progress = Progress(log, len(cells))
        results: dict[int, CellResult] = {}
        for i, c in enumerate(cells):
            if c.skip_reason:
                results[i] = CellResult(cell=c.name, flavour=c.flavour.name, suite=c.suite.name,
                                        image=c.flavour.image, status="skipped", reason=c.skip_reason)
                progress.finished(results[i])
        pool = GpuPool(gpus)
        slots = threading.Semaphore(options.parallel)
        lock = threading.Lock()

        def work(i: int, c: Cell) -> None:
            with slots:
                # GPU cells take disjoint GPUs; with none on the host they still run, and their
                # preflight fails them visibly ("no GPU visible").
                taken = pool.acquire(c.suite.gpus) if c.suite.gpu and pool.total else []
                try:
                    res = run_cell(client, c, tools=tools, out_dir=root / "cells" / c.slug, gpus=taken,
                                   shm_size=matrix.shm_size, tests=matrix.tests, options=options, run_id=run_id,
                                   progress=progress)
                except Exception as exc:  # noqa: BLE001 - one cell's surprise must not hide the others
                    res = CellResult(cell=c.name, flavour=c.flavour.name, suite=c.suite.name, image=c.flavour.image,
                                     status="failed", reason=f"the matrix could not run this cell: "
                                                             f"{type(exc).__name__}: {exc}")
                finally:
                    pool.release(taken)
                with lock:
                    results[i] = res
                progress.finished(res)

        threads = [threading.Thread(target=work, args=(i, c), name=c.name, daemon=True)
                   for i, c in enumerate(cells) if c.skip_reason is None]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = MatrixResult(run_id=run_id, matrix=str(matrix.path), started=started,
                              seconds=round(time.time() - started, 1),
                              cells=[results[i] for i in range(len(cells))], flavours=flavours, host=host,
                              report_dir=str(root) if options.report_dir else None)
        if options.report_dir:
            report.write(result, root)
        return result
    finally:
        shutil.rmtree(tools, ignore_errors=True)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def default_matrix_path() -> Path:
    from rocm_fp8_deploy.build import repo_root

    return repo_root() / "ci" / "matrix.toml"

