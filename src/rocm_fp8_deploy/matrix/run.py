"""Running: each cell in its own container with the checkout's tests, the host's pytest and an
output directory; cells run in parallel on disjoint GPUs; then the report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.matrix.gpus import GpuPool, HostGpu, gpu_run_options, host_gpus, select_gpus
from rocm_fp8_deploy.matrix.planning import Cell
from rocm_fp8_deploy.matrix.spec import FlavourSpec, Matrix, Suite
from rocm_fp8_deploy.matrix.verdicts import CellResult, Counts, judge, parse_junit

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
    shutil.copyfile(Path(__file__).resolve().parents[1] / "cell_runner.py", dest / "cell_runner.py")
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
    image_env = engine.image_config(client, cell.flavour.image).env
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
        image = engine.image_config(client, flavour.image)
        facts["labels"] = {k: v for k, v in image.labels.items() if k.startswith("rocm-fp8.")}
        facts["image_id"] = image.id
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
