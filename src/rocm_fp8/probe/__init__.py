"""The probe: measure each backend's numerics on this machine, in a subprocess per backend.

    rocm-fp8 probe [--backend NAME ...] [--n N --k K ... | --preset NAME ... | --from-config CONFIG [--tp N]]
                   [--m M ...] [--max-m M] [--timing [--timing-m M ...]] [--timeout S] [--build-timeout S]
                   [--repeats R] [--plugin SPEC ...] [--json] [--output PATH] [--no-cache] [--static]

For every backend x shape x M it draws fresh random inputs, quantizes them the way the backend
does in production (``backend.quantize_input``), runs the backend ``--repeats`` times and compares
with the float32 dequantize-and-matmul reference computed from the same quantized operands:

* NaN/Inf anywhere                              -> ``nan``
* relative Frobenius error, worst row relative error, cosine beyond tolerance -> ``wrong``
  (the row check catches sparse bad rows that a global norm hides)
* repeated launches not bitwise equal           -> ``nondeterministic``
* an exception                                  -> ``error``
* the worker process dies (abort, segfault)     -> ``crash``
* no progress within ``--timeout``              -> ``hang`` (the worker is killed)

The default M sweep crosses 16-row tile boundaries (15/16/17, 255/256/257, ...) up to 16384, the
prefill chunk size; on a machine without a GPU it stops at 512 unless ``--max-m`` says otherwise
(the float32 reference at 16384 x 7168 is slow on a few cores), and the report says so. The
"largest verified-safe M" is the largest tested M with no failure at or below it.

The first launch of each backend gets ``--build-timeout``: aiter's CK modules are JIT-built by the
image's hipcc on first use, so for ``aiter-ck``/``aiter-bpreshuffle`` that launch is the hipcc
miscompilation probe (the build, then the numbers of what it built).

``--timing`` then times every backend that is available and safe (after this very probe) per
(N, K, M), with the tuner's method (CUDA-graph replays over inputs that span 3x the L2), and adds the
figures to the report's ``speed`` list, which ``auto`` ranks by (:mod:`rocm_fp8.probe_report`).

Results go to the cache keyed by the toolchain fingerprint (see :mod:`rocm_fp8.probe_report`),
where the dispatcher finds them, and optionally to ``--output``. ``--static`` runs no kernel: it
prints the known-issues ledger's verdicts for the same backends and shapes, labelled as such.

Third-party backends: see :mod:`rocm_fp8.plugins` (``--plugin``, ``ROCM_FP8_PLUGINS``, entry
points, or automatic re-creation of backends registered in the calling process).

Python API: :func:`run_probe` (returns the report dict), :func:`static_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from rocm_fp8 import probe_report as pr
from rocm_fp8 import shapes as shape_mod

if TYPE_CHECKING:  # pragma: no cover
    from rocm_fp8.toolchain import Toolchain

#: (N, K) per preset (see :mod:`rocm_fp8.shapes`, which also reads HF model configs)
PRESETS = shape_mod.PRESETS

#: M values: small decode sizes, then both sides of every 16-row tile boundary that is a power of
#: two, and a few values that are not near one, up to the prefill chunk size.
FULL_SWEEP: tuple[int, ...] = (
    1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513,
    1000, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 4095, 4096, 4097, 6000, 8191, 8192, 8193, 12000,
    16383, 16384,
)
PREFILL_CHUNK = 16384
CPU_DEFAULT_MAX_M = 512

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_BUILD_TIMEOUT_S = 900.0   # cold JIT of aiter's blockscale modules took 85-363 s
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_REPEATS = 3
TOLERANCES = {"rtol": 0.02, "row_rtol": 0.05, "min_cosine": 0.999}


def default_ms(max_m: Optional[int] = None) -> list[int]:
    limit = PREFILL_CHUNK if max_m is None else max_m
    ms = [m for m in FULL_SWEEP if m <= limit]
    if max_m is not None and max_m not in ms and max_m > 0:
        ms.append(max_m)
    return sorted(ms)


def resolve_shapes(ns: Sequence[int] = (), ks: Sequence[int] = (), presets: Sequence[str] = (),
                   configs: Sequence[str] = (), tps: Sequence[int] = (), ep: bool = False,
                   log=None) -> list[tuple[int, int]]:
    return shape_mod.resolve(ns, ks, presets, configs, tps, ep, log=log)


# =============================================================================================
# The worker: runs in its own process, one backend, streams one JSON event per line to a pipe.
# =============================================================================================

def _worker_main(argv: Sequence[str]) -> int:
    spec_path, fd = argv[0], int(argv[1])
    with open(spec_path) as fh:
        spec = json.load(fh)
    out = os.fdopen(fd, "w", buffering=1)

    def emit(**event: Any) -> None:
        out.write(json.dumps(event, default=float) + "\n")
        out.flush()

    t0 = time.perf_counter()
    import torch

    from rocm_fp8 import plugins
    from rocm_fp8.backends import find, safe_call
    from rocm_fp8.toolchain import Toolchain, set_current

    tc = Toolchain.from_dict(spec["toolchain"])
    set_current(tc)
    try:
        plugins.load_all(spec.get("plugins", ()))
    except Exception as exc:  # noqa: BLE001
        emit(event="fatal", reason=f"loading plugins failed: {type(exc).__name__}: {exc}")
        return 2
    errors = plugins.recreate(spec.get("third_party", ()))
    name = spec["backend"]
    if name in errors:
        emit(event="fatal", reason=errors[name])
        return 2
    backend = find(name)
    if backend is None:
        emit(event="fatal", reason=f"backend {name!r} is not registered in the worker; pass --plugin module:attr")
        return 2
    ok, why = safe_call(backend.available, tc)
    if not ok:
        emit(event="fatal", reason=why)
        return 2
    emit(event="ready", setup_s=time.perf_counter() - t0)

    from rocm_fp8.backends.base import Problem
    from rocm_fp8.quant import FP8_DTYPES, dequantize_activation, dequantize_weight, quantize_activation, quantize_weight

    device = spec["device"]
    fp8 = FP8_DTYPES[spec["fp8_dtype"]]
    out_dtype = getattr(torch, spec["out_dtype"])
    tol = spec["tolerances"]
    gen_seed = int(spec["seed"])

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for n, k in spec["shapes"]:
        emit(event="shape_start", n=n, k=k)
        problem = Problem(1, n, k, spec["fp8_dtype"], spec["out_dtype"], 128, 128, device)
        ok, why = safe_call(backend.supports, problem, tc)
        if not ok:
            emit(event="shape", n=n, k=k, supported=False, reason=why)
            continue
        g = torch.Generator(device="cpu").manual_seed(gen_seed * 1000003 + n * 131 + k)
        w = (torch.randn(n, k, generator=g) * 0.05).to(device)
        try:
            wq, ws = quantize_weight(w, (128, 128), dtype=fp8)
            w_ref = dequantize_weight(wq, ws, (128, 128))
            prepared = backend.prepare_weight(wq, ws)
        except Exception as exc:  # noqa: BLE001
            emit(event="shape", n=n, k=k, supported=True, error=f"prepare_weight raised {type(exc).__name__}: {exc}")
            continue
        emit(event="shape", n=n, k=k, supported=True)
        for m in spec["ms"]:
            if not safe_call(backend.supports, problem.with_m(m), tc)[0]:
                continue
            emit(event="case_start", n=n, k=k, m=m)
            t_case = time.perf_counter()
            # fresh inputs per M, rows of different magnitude so that per-row scales matter
            gx = g if device == "cpu" else torch.Generator(device=device).manual_seed(gen_seed + 7919 * m + n + k)
            x = torch.randn(m, k, generator=gx, device=device) * (torch.rand(m, 1, generator=gx, device=device) * 4
                                                                  + 0.25)
            try:
                quant = getattr(backend, "quantize_input", None)
                xq, xs = quant(x, fp8) if callable(quant) else quantize_activation(x, 128, dtype=fp8)
                ref = dequantize_activation(xq, xs, 128) @ w_ref.t()
                outs, times = [], []
                for _ in range(max(1, int(spec["repeats"]))):
                    sync()
                    t = time.perf_counter()
                    y = backend.run(xq, xs, prepared, out_dtype)
                    sync()
                    times.append(time.perf_counter() - t)
                    outs.append(y)
            except Exception as exc:  # noqa: BLE001
                emit(event="case", n=n, k=k, m=m, symptom="error",
                     detail=f"{type(exc).__name__}: {str(exc)[:300]}", wall_s=time.perf_counter() - t_case)
                continue
            emit(event="case", n=n, k=k, m=m, wall_s=time.perf_counter() - t_case,
                 **_compare(outs, ref, m, n, out_dtype, tol, times))
        del prepared, w, wq, ws, w_ref
    emit(event="done")
    return 0


def _compare(outs, ref, m, n, out_dtype, tol, times) -> dict[str, Any]:
    import torch

    y = outs[0]
    res: dict[str, Any] = {"us": sorted(times)[len(times) // 2] * 1e6}
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (m, n):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        res.update(symptom="wrong", detail=f"output shape {got}, expected {(m, n)}")
        return res
    if y.dtype != out_dtype:
        res.update(symptom="wrong", detail=f"output dtype {y.dtype}, expected {out_dtype}")
        return res
    yf = y.double()
    rf = ref.double()
    nonfinite = int((~torch.isfinite(yf)).sum().item())
    diff = yf - rf
    ref_norm = rf.norm().item()
    rel = diff.norm().item() / max(ref_norm, 1e-30)
    row_norms = rf.norm(dim=1).clamp_min(1e-30)
    row_rel = (diff.norm(dim=1) / row_norms)
    worst_row = int(torch.nan_to_num(row_rel, nan=float("inf")).argmax().item()) if m else 0
    row_rel_max = float(row_rel.max().item()) if m else 0.0
    cos = float((yf.flatten() @ rf.flatten()).item() / max(yf.norm().item() * ref_norm, 1e-30))
    bits = [o.contiguous().view(torch.uint8) for o in outs]
    deterministic = all(torch.equal(bits[0], b) for b in bits[1:])
    res.update(rel_err=rel, row_rel_err=row_rel_max, cosine=cos, nonfinite=nonfinite, deterministic=deterministic)
    if nonfinite:
        res.update(symptom="nan", detail=f"{nonfinite} NaN/Inf of {m * n} outputs")
    elif not (rel <= tol["rtol"] and row_rel_max <= tol["row_rtol"] and cos >= tol["min_cosine"]):
        res.update(symptom="wrong", detail=f"rel err {rel:.3g}, worst row {worst_row} rel err {row_rel_max:.3g}, "
                                           f"cosine {cos:.6f}")
    elif not deterministic:
        res.update(symptom="nondeterministic", detail=f"{len(outs)} launches not bitwise equal")
    return pr.sanitize(res)


# =============================================================================================
# The parent: one worker per backend (restarted after a crash or hang), results aggregated.
# =============================================================================================

@dataclass
class _ShapeState:
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


def _run_backend(name: str, shapes: list[tuple[int, int]], spec_base: dict[str, Any], *, timeout: float,
                 build_timeout: float, startup_timeout: float, log=None,
                 progress=None) -> tuple[dict, list[_ShapeState]]:
    """Probe one backend over all shapes; returns (backend info, per-shape states)."""
    states = [_ShapeState(n, k) for n, k in shapes]
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
        cmd = [sys.executable, "-c", "import sys; from rocm_fp8.probe import _worker_main; "
                                     "sys.exit(_worker_main(sys.argv[1:]))", spec_path, str(w)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, pass_fds=(w,),
                                env=_worker_env(spec_base.get("plugins", ())), start_new_session=True)
        os.close(w)
        os.close(log_fd)
        info["workers"] += 1
        current: Optional[_ShapeState] = None
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


def _summarise(name: str, s: _ShapeState, fp8_dtype: str, device_type: str, ms: list[int]) -> dict[str, Any]:
    r: dict[str, Any] = {"backend": name, "n": s.n, "k": s.k, "fp8_dtype": fp8_dtype, "device_type": device_type}
    if s.status in ("skipped", "unavailable", "error", "pending"):
        r.update(status="skipped" if s.status in ("skipped", "pending") else s.status,
                 reason=s.reason or "not reached", max_safe_m=None)
        if s.status == "error":
            r["failure"] = {"m": None, "symptom": "error", "detail": s.reason}
        return r
    cases = sorted(s.cases, key=lambda c: c["m"])
    max_safe = None
    first_fail = None
    for c in cases:
        if c.get("symptom"):
            first_fail = first_fail or c
            break
        max_safe = c["m"]
    failure = s.failure if (s.failure and s.failure.get("m") is None) else None
    if first_fail is not None:
        failure = {"m": first_fail["m"], "symptom": first_fail["symptom"], "detail": first_fail.get("detail", "")}
    elif s.failure:
        failure = s.failure
    tested = [c["m"] for c in cases]
    def worst(key, fn):
        vals = [c[key] for c in cases if c.get(key) is not None]
        if any(isinstance(v, str) or v != v for v in vals):  # NaN is the worst value there is
            return "nan"
        return fn(vals) if vals else None
    dets = [c["deterministic"] for c in cases if "deterministic" in c]
    r.update(
        status="unsafe" if failure else "safe",
        max_safe_m=max_safe,
        max_tested_m=max(tested) if tested else None,
        ms_tested=tested,
        failure=failure,
        failures=[{"m": c["m"], "symptom": c["symptom"]} for c in cases if c.get("symptom")],
        aborted=s.aborted,
        worst={"rel_err": worst("rel_err", max), "row_rel_err": worst("row_rel_err", max),
               "min_cosine": worst("cosine", min), "nonfinite": worst("nonfinite", max)},
        deterministic=all(dets) if dets else None,
        time_s=s.time_s,
        cases=cases,
    )
    if s.aborted:
        r["not_tested"] = [m for m in ms if m not in tested]
    return r


def run_probe(backends: Optional[Sequence[str]] = None, shapes: Sequence[tuple[int, int]] = ((4096, 4096),),
              ms: Optional[Sequence[int]] = None, *, max_m: Optional[int] = None,
              timeout: float = DEFAULT_TIMEOUT_S, build_timeout: float = DEFAULT_BUILD_TIMEOUT_S,
              startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S, repeats: int = DEFAULT_REPEATS,
              plugins: Sequence[str] = (), toolchain: "Optional[Toolchain]" = None, device: Optional[str] = None,
              seed: Optional[int] = None, tolerances: Optional[dict[str, float]] = None,
              out_dtype: str = "bfloat16", write_cache: bool = True, output: Optional[str] = None,
              log=None, progress: bool = False, timing_ms: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Probe ``backends`` (default: every registered backend available here) on ``shapes`` and
    return the report. Each backend runs in its own worker process.

    ``timing_ms``: afterwards, time every backend that is available and safe (the report just
    measured included) at these M on a GPU, and record the speeds in the report (``"speed"``),
    which the dispatcher ranks by. ``progress``: a bar with an ETA on stderr."""
    from rocm_fp8 import plugins as plugin_mod
    from rocm_fp8.backends import all_backends, find, safe_call
    from rocm_fp8.toolchain import detect

    tc = toolchain or detect()
    plugin_mod.load_all(plugins)  # so that named plugin backends exist here too
    if device is None:
        device = "cuda" if tc.has_gpu else "cpu"
    if ms is None:
        if max_m is None and device == "cpu":
            max_m = CPU_DEFAULT_MAX_M
        ms = default_ms(max_m)
    else:
        ms = sorted({int(m) for m in ms if (max_m is None or m <= max_m)})
    if not ms or min(ms) < 1:
        raise ValueError(f"ms: expected positive M values, got {list(ms)}")
    shapes = [tuple(s) for s in shapes]
    tol = dict(TOLERANCES, **(tolerances or {}))
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    settings = {"ms": list(ms), "device": device, "repeats": repeats, "timeout_s": timeout,
                "build_timeout_s": build_timeout, "seed": seed, "out_dtype": out_dtype, **tol,
                "full_sweep": max(ms) >= PREFILL_CHUNK}
    report = pr.new_report(tc, settings=settings)

    if backends is None or len(backends) == 0:
        names = [b.name for b in all_backends() if safe_call(b.available, tc)[0]]
    else:
        names = list(dict.fromkeys(backends))
    spec_base = {"toolchain": tc.to_dict(), "ms": list(ms), "repeats": repeats, "seed": seed,
                 "fp8_dtype": tc.fp8_flavour, "out_dtype": out_dtype, "device": device, "tolerances": tol,
                 "plugins": list(plugins), "third_party": plugin_mod.describe_third_party()}
    runnable = []
    for name in names:
        b = find(name)
        if b is None:
            raise ValueError(f"backend: expected a registered backend name, got {name!r} "
                             f"(load third-party ones with --plugin module:attr)")
        ok, why = safe_call(b.available, tc)
        if not ok:
            report["backends"][name] = {"available": False, "reason": why}
            continue
        runnable.append(name)
    if timing_ms and device != "cuda":
        raise ValueError("--timing: measuring speed needs a GPU (CUDA or ROCm), and none is visible")
    bar = None
    if progress and runnable:
        from rocm_fp8.progress import Progress

        bar = Progress(len(runnable) * len(shapes) * len(ms) + (len(shapes) * len(timing_ms or ())), "probe")
        log = bar.note
    for name in runnable:
        if log:
            log(f"probing {name} on {len(shapes)} shape(s) x {len(ms)} M values ({device})")
        t0 = time.perf_counter()
        info, states = _run_backend(name, shapes, spec_base, timeout=timeout, build_timeout=build_timeout,
                                    startup_timeout=startup_timeout, log=log, progress=bar)
        info["time_s"] = time.perf_counter() - t0
        report["backends"][name] = info
        for s in states:
            report["results"].append(_summarise(name, s, tc.fp8_flavour, device, list(ms)))
    if write_cache and tc.source != "hypothetical":
        report["cache_path"] = str(pr.write_report(report))
    if timing_ms:
        from rocm_fp8 import tune

        # correctness first: what this probe (now in the cache) or the ledger marks unsafe is not timed
        extra = [] if write_cache else [pr.ProbeEvidence(report, "this probe run")]
        report["speed"] = tune.measure_speed(tc, shapes, sorted(set(timing_ms)), tc.fp8_flavour,
                                             names=[n for n in runnable], say=log or print, progress=bar,
                                             evidence_extra=extra)
        report["speed_settings"] = {"device": tc.device_name, "created": pr.now_iso(), "versions": tune.versions(),
                                    "method": "median of CUDA-graph replays over input sets spanning 3x L2 "
                                              "(rocm_fp8.tune.time_calls)"}
        if write_cache and tc.source != "hypothetical":
            report["cache_path"] = str(pr.write_report(report))
    if bar is not None:
        bar.close()
    if output:
        pr.write_report(report, output, merge_existing=False)
    return report


def static_report(backends: Optional[Sequence[str]] = None, shapes: Sequence[tuple[int, int]] = ((4096, 4096),),
                  ms: Optional[Sequence[int]] = None, toolchain: "Optional[Toolchain]" = None) -> dict[str, Any]:
    """The ledger's verdicts for backends x shapes, evaluated at the sweep's M values; runs nothing."""
    from rocm_fp8.backends import backend_names
    from rocm_fp8.ledger import static_verdicts
    from rocm_fp8.toolchain import detect

    tc = toolchain or detect()
    ms = list(ms) if ms else default_ms()
    names = list(backends) if backends else backend_names()
    report = pr.new_report(tc, static=True, settings={"ms": ms, "device": "none (static)",
                                                      "note": "known-issues ledger only; no kernel was run"})
    report["results"] = static_verdicts(tc, names, [tuple(s) for s in shapes], ms)
    return report


# =============================================================================================
# CLI
# =============================================================================================

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rocm-fp8 probe",
        description="Measure each backend's numerics against the float32 reference on this machine "
                    "(each backend in its own process), and cache the report for the dispatcher.",
        epilog="Third-party backends: --plugin module[:attr], env ROCM_FP8_PLUGINS=mod[:attr],..., or entry "
               "points in group 'rocm_fp8.backends'. Cache: $ROCM_FP8_CACHE/probe/<fingerprint>.json "
               "(default ~/.cache/rocm-fp8/probe).")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="a backend to probe (repeatable; default: every available backend)")
    p.add_argument("--n", action="append", type=int, default=[], help="output features; pairs with --k in order")
    p.add_argument("--k", action="append", type=int, default=[], help="input features, a multiple of 128")
    p.add_argument("--preset", action="append", default=[], choices=sorted(PRESETS),
                   help="model shapes (repeatable)")
    p.add_argument("--from-config", action="append", default=[], metavar="CONFIG_JSON",
                   help="an HF model config.json: its block-FP8 linear shapes (repeatable)")
    p.add_argument("--tp", type=int, action="append", default=[], metavar="N",
                   help="tensor-parallel degree for --from-config (repeatable; default 1)")
    p.add_argument("--ep", action="store_true", help="--from-config: experts are expert-parallel (whole)")
    p.add_argument("--timing", action="store_true",
                   help="afterwards, time every available and safe backend per (N, K, M) (GPU only) and record "
                        "the speeds in the report, where auto ranks by them")
    p.add_argument("--timing-m", action="extend", nargs="+", type=int, default=[], metavar="M",
                   help="M values to time at (default 1 16 64 256 1024 4096 16384)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--m", action="extend", nargs="+", type=int, default=[], metavar="M",
                   help="M values to test instead of the default sweep (repeatable)")
    p.add_argument("--max-m", type=int, help=f"largest M of the default sweep (default {PREFILL_CHUNK}; "
                                             f"{CPU_DEFAULT_MAX_M} without a GPU)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds one M may take before the backend counts as hung (default %(default)s)")
    p.add_argument("--build-timeout", type=float, default=DEFAULT_BUILD_TIMEOUT_S,
                   help="seconds for a backend's first launch, which includes JIT builds (default %(default)s)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="launches per M for the determinism check")
    p.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the report)")
    p.add_argument("--plugin", action="append", default=[], metavar="SPEC", help="module[:attr] registering backends")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--output", metavar="PATH", help="also write the report here")
    p.add_argument("--no-cache", action="store_true", help="do not write the report to the cache")
    p.add_argument("--static", action="store_true",
                   help="run nothing: print the known-issues ledger's verdicts for these backends and shapes")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for v in args.tp:
            if v < 1:
                raise ValueError(f"--tp: expected a positive integer, got {v}")
        log = (lambda msg: print(msg, file=sys.stderr, flush=True))
        shapes = resolve_shapes(args.n, args.k, args.preset, args.from_config, args.tp, args.ep, log=log)
        if not shapes:
            raise ValueError("shapes: expected --n N --k K, --preset NAME (e.g. --preset minimax-m2.5-tp4) "
                             "or --from-config config.json")
        if args.static and args.timing:
            raise ValueError("--timing: a --static report runs nothing, so it cannot time anything")
        timing_ms = (args.timing_m or [1, 16, 64, 256, 1024, 4096, 16384]) if args.timing else None
        if args.static:
            report = static_report(args.backend or None, shapes, args.m or None)
            if args.output:
                pr.write_report(report, args.output, merge_existing=False)
        else:
            report = run_probe(args.backend or None, shapes, args.m or None, max_m=args.max_m, timeout=args.timeout,
                               build_timeout=args.build_timeout, repeats=args.repeats, plugins=args.plugin,
                               seed=args.seed, write_cache=not args.no_cache, output=args.output, log=log,
                               progress=not args.no_progress, timing_ms=timing_ms)
    except ValueError as exc:
        print(f"rocm-fp8 probe: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(pr.sanitize(report), indent=2, default=str))
    else:
        print(pr.format_table(report))
        if report.get("cache_path"):
            print(f"report cached at {report['cache_path']}")
        if args.output:
            print(f"report written to {args.output}")
    bad = [r for r in report["results"] if r.get("status") in ("unsafe", "error")]
    return 1 if bad and not args.static else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
