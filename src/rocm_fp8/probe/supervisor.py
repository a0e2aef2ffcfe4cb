"""The probe's supervisor: one worker process per backend, restarted after a crash or a hang, and
each case's outcome collected per shape (:class:`ShapeState`).

A case in flight when the worker dies is a ``crash``; no event within the time limit is a ``hang``
(the worker and what it started are killed); the sweep then goes on with the shapes after it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


@dataclass
class ShapeState:
    n: int
    k: int
    status: str = "pending"           # pending | supported | skipped | done
    reason: str = ""
    cases: list[dict[str, Any]] = field(default_factory=list)
    failure: Optional[dict[str, Any]] = None
    aborted: bool = False             # the sweep stopped early (crash/hang)
    time_s: float = 0.0


def _worker_env(extra_plugins: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    # the worker must see the same modules as this process (test helpers, plugin packages)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and what it started
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()


def _tail(path: str, limit: int = 1500) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _describe_exit(rc: Optional[int]) -> str:
    if rc is None:
        return "killed"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def run_backend(name: str, shapes: list[tuple[int, int]], spec_base: dict[str, Any], *, timeout: float,
                 build_timeout: float, startup_timeout: float, log=None,
                 progress=None) -> tuple[dict, list[ShapeState]]:
    """Probe one backend over all shapes; returns (backend info, per-shape states)."""
    states = [ShapeState(n, k) for n, k in shapes]
    info: dict[str, Any] = {"available": True, "reason": "", "workers": 0}
    first_launch = True
    remaining = list(range(len(states)))
    while remaining:
        spec = dict(spec_base, backend=name, shapes=[[states[i].n, states[i].k] for i in remaining])
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="rocm-fp8-probe-", delete=False) as fh:
            json.dump(spec, fh)
            spec_path = fh.name
        log_fd, log_path = tempfile.mkstemp(prefix=f"rocm-fp8-probe-{name}-", suffix=".log")
        r, w = os.pipe()
        cmd = [sys.executable, "-c", "import sys; from rocm_fp8.probe.worker import worker_main; "
                                     "sys.exit(worker_main(sys.argv[1:]))", spec_path, str(w)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, pass_fds=(w,),
                                env=_worker_env(spec_base.get("plugins", ())), start_new_session=True)
        os.close(w)
        os.close(log_fd)
        info["workers"] += 1
        current: Optional[ShapeState] = None
        current_m: Optional[int] = None
        case_t0 = time.perf_counter()
        deadline = time.monotonic() + startup_timeout
        phase = "startup"
        ended = None  # None: still running; "done" | "fatal" | "died" | "hang"
        buf = ""
        try:
            while ended is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    ended = "hang"
                    break
                ready, _, _ = select.select([r], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(r, 65536).decode("utf-8", "replace")
                if not chunk:
                    ended = "died"
                    break
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    kind = ev["event"]
                    if kind == "fatal":
                        info.update(available=False, reason=ev["reason"])
                        ended = "fatal"
                    elif kind == "ready":
                        info["setup_s"] = ev.get("setup_s")
                        phase = "ready"
                        deadline = time.monotonic() + (build_timeout if first_launch else timeout)
                    elif kind == "shape_start":
                        current = next(s for s in states if (s.n, s.k) == (ev["n"], ev["k"]))
                        if log:
                            log(f"  {name} N={ev['n']} K={ev['k']}: sweeping {len(spec_base['ms'])} M values")
                        phase = "prepare"
                        deadline = time.monotonic() + (build_timeout if first_launch else timeout)
                    elif kind == "shape":
                        current = next(s for s in states if (s.n, s.k) == (ev["n"], ev["k"]))
                        if not ev.get("supported"):
                            current.status, current.reason = "skipped", ev.get("reason", "")
                        elif ev.get("error"):
                            current.status = "done"
                            current.failure = {"m": None, "symptom": "error", "detail": ev["error"]}
                        else:
                            current.status = "supported"
                        deadline = time.monotonic() + (build_timeout if first_launch else timeout)
                    elif kind == "case_start":
                        current_m = ev["m"]
                        case_t0 = time.perf_counter()
                        phase = "build" if first_launch else "case"
                        deadline = time.monotonic() + (build_timeout if first_launch else timeout)
                        if log and first_launch:
                            log(f"  {name} N={ev['n']} K={ev['k']} M={ev['m']}: first launch (builds, then runs)")
                    elif kind == "case":
                        if first_launch:
                            info["first_launch_s"] = ev.get("wall_s")
                        first_launch = False
                        current.cases.append({k: v for k, v in ev.items() if k not in ("event", "n", "k")})
                        current.time_s += ev.get("wall_s", 0.0)
                        current_m = None
                        if progress is not None:
                            progress.advance(1, f"{name} N={current.n} K={current.k} M={ev.get('m')}")
                        deadline = time.monotonic() + timeout
                    elif kind == "done":
                        ended = "done"
        finally:
            if proc.poll() is None and ended != "done":
                _kill(proc)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                _kill(proc)
            os.close(r)
            os.unlink(spec_path)
        tail = _tail(log_path)
        os.unlink(log_path)
        if ended in ("done", "fatal"):
            for s in states:
                if s.status in ("pending", "supported"):
                    s.status = "done" if s.status == "supported" else s.status
            if ended == "fatal":
                for s in states:
                    if s.status == "pending":
                        s.status, s.reason = "unavailable", info["reason"]
            break
        # crash or hang: blame the case in flight (or the phase), then go on with the shapes after it
        if ended == "hang":
            limit = {"startup": startup_timeout, "build": build_timeout}.get(phase, timeout)
            symptom = "hang"
            limit = build_timeout if phase == "prepare" and first_launch else limit
            detail = f"no progress for {limit:g} s during {phase if current_m is None else f'M={current_m}'}; killed"
        else:
            symptom = "crash"
            detail = f"worker {_describe_exit(proc.returncode)}" + (f"; last output: {tail[-300:]}" if tail else "")
        if current is None or phase in ("startup", "ready"):
            if phase == "startup" and ended == "died":
                symptom = "error"
                detail = f"the probe worker for {name} failed to start ({_describe_exit(proc.returncode)}): {tail[-600:]}"
            info.update(available=False, reason=detail)
            for s in states:
                if s.status == "pending":
                    s.status, s.reason = "error", detail
            break
        if current_m is not None:
            current.failure = current.failure or {"m": current_m, "symptom": symptom, "detail": detail}
            current.cases.append({"m": current_m, "symptom": symptom, "detail": detail,
                                  "wall_s": time.perf_counter() - case_t0})
        elif current.failure is None:
            where = " during prepare_weight" if phase == "prepare" else " between cases"
            current.failure = {"m": None, "symptom": symptom, "detail": detail + where}
        current.status, current.aborted = "done", True
        first_launch = False
        idx = states.index(current)
        remaining = [i for i in remaining if i > idx and states[i].status == "pending"]
    return info, states
