"""Verdicts, pure: one cell's result from what its container left behind (JUnit XML, exit code).

The XML decides and the exit code may only make it worse: a cell passes only when its XML exists,
shows at least one passed test and no failure or error, and the container exited normally."""

from __future__ import annotations

import signal
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from rocm_fp8_deploy.matrix.planning import Cell


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
