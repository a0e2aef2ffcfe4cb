"""Probe reports: their format, their cache, and the evidence the dispatcher reads from them.

A report is JSON (``format: "rocm-fp8-probe-report"``) holding, per backend and shape (N, K), what
the probe measured on one toolchain: the M values swept, the largest M verified safe, the first
failure (symptom ``wrong | nan | nondeterministic | error | crash | hang`` at an M), the worst
errors and the time. Measured reports live in a cache keyed by the toolchain fingerprint::

    $ROCM_FP8_CACHE/probe/<fingerprint>.json      (default ~/.cache/rocm-fp8/probe/...)

and a baked configuration file may embed one (``rocm-fp8 configure`` without ``--static``).
``static`` reports (``rocm-fp8 probe --static``) hold ledger verdicts only and are never read as
evidence: nothing in them was measured.

How a result becomes a verdict for a problem at M (:class:`ProbeEvidence`):
  * no result for (backend, N, K, fp8 flavour, device type): no opinion;
  * M <= the largest verified-safe M: safe ("verified by the probe");
  * a failure was seen and M is above the verified limit: unsafe, citing the failure;
  * every tested M passed but M is above the largest tested: no opinion (the ledger decides).

Speed (optional ``"speed"`` list, written by ``rocm-fp8 tune`` and ``rocm-fp8 probe --timing``):
one entry per (backend, N, K, M) with the median time ``us`` and ``tflops``, measured with
CUDA-graph replays over input sets that span 3x the L2 (:func:`rocm_fp8.tune.timing.time_calls`), only for
backends that were available, not marked unsafe at that M, and matched the float32 reference.
A problem at M reads the entry with the smallest measured M >= M; beyond the largest measured M only
when that is >= 4096 (compute-bound: speed no longer grows with M), else no figure;
:meth:`ProbeEvidence.speed` hands it to the policy, which ranks by it. Reports without the list
(version 1 as first written) read as before.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from rocm_fp8 import invalidation
from rocm_fp8.evidence import Speed, Verdict
from rocm_fp8.toolchain import atomic_write_json, load_config, read_json

if TYPE_CHECKING:  # pragma: no cover
    from rocm_fp8.backends.base import Problem
    from rocm_fp8.toolchain import Toolchain

REPORT_FORMAT = "rocm-fp8-probe-report"
REPORT_VERSION = 1
ENV_CACHE = "ROCM_FP8_CACHE"
#: extra report files to read as evidence (os.pathsep-separated); only those whose fingerprint
#: matches the toolchain count
ENV_REPORTS = "ROCM_FP8_PROBE_REPORT"

#: a speed measured at M >= this stands for every larger M (see the module docstring)
SPEED_FLAT_FROM_M = 4096

SYMPTOM_WORDS = {
    "wrong": "wrong results",
    "nan": "NaN/Inf in the output",
    "nondeterministic": "nondeterministic results",
    "error": "an exception",
    "crash": "a crash",
    "hang": "a hang",
}


def sanitize(obj: Any) -> Any:
    """Strict JSON: NaN/Inf (a NaN error is a finding, not a bug) become the strings "nan"/"inf"."""
    if isinstance(obj, float) and obj != obj:
        return "nan"
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def cache_root() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rocm-fp8"


def cache_path(toolchain: "Toolchain") -> Path:
    return cache_root() / "probe" / f"{toolchain.fingerprint}.json"


def result_key(r: dict[str, Any]) -> tuple:
    return (r["backend"], int(r["n"]), int(r["k"]), r.get("fp8_dtype", "e4m3fn"), r.get("device_type", "cuda"))


def speed_key(r: dict[str, Any]) -> tuple:
    return result_key(r) + (int(r["m"]),)


def check_speed_entry(r: Any, where: str = "speed entry") -> dict[str, Any]:
    if not isinstance(r, dict):
        raise ValueError(f"{where}: expected an object, got {type(r).__name__}")
    for key in ("backend", "n", "k", "m", "tflops"):
        if key not in r:
            raise ValueError(f"{where}: expected a {key!r} field, got keys {sorted(r)}")
    t = r["tflops"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0:
        raise ValueError(f"{where}: tflops: expected a positive number, got {t!r}")
    return r


def new_report(toolchain: "Toolchain", *, static: bool = False, settings: Optional[dict] = None) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "static": static,
        "fingerprint": toolchain.fingerprint,
        "created": now_iso(),
        "toolchain": toolchain.to_dict(),
        "settings": settings or {},
        "backends": {},
        "results": [],
    }


def check_report(data: Any, where: str = "report") -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ValueError(f"{where}: expected a JSON object with \"format\": \"{REPORT_FORMAT}\"")
    if data.get("version") != REPORT_VERSION:
        raise ValueError(f"{where}: expected version {REPORT_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("results"), list):
        raise ValueError(f"{where}: expected a \"results\" list")
    return data


# -- the typed view: the one reader of a report's fields ---------------------------------------------

def _opt_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Failure:
    """The first failure of a (backend, shape): its symptom at an M (``None``: while preparing the
    weight, before any M ran), and what was seen."""

    symptom: str
    m: Optional[int] = None
    detail: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Optional[Failure]":
        if not d:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("symptom"), str):
            raise ValueError(f"{where}: failure: expected an object with a \"symptom\" string, got {d!r}")
        return cls(d["symptom"], _opt_int(d.get("m")), str(d.get("detail") or ""))

    @property
    def words(self) -> str:
        return SYMPTOM_WORDS.get(self.symptom, self.symptom)


@dataclass(frozen=True)
class Result:
    """One (backend, N, K) row: measured (status ``safe | unsafe | skipped | unavailable | error``)
    or, in a static report, the ledger's verdict (``source`` names the entry)."""

    backend: str
    n: int
    k: int
    fp8_dtype: str = "e4m3fn"
    device_type: str = "cuda"
    status: str = "?"
    max_safe_m: Optional[int] = None
    failure: Optional[Failure] = None
    reason: str = ""
    source: str = ""
    worst: dict[str, Any] = field(default_factory=dict)
    deterministic: Optional[bool] = None
    time_s: Optional[float] = None

    @property
    def key(self) -> tuple:
        return (self.backend, self.n, self.k, self.fp8_dtype, self.device_type)

    @classmethod
    def from_dict(cls, r: Any, where: str) -> "Result":
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected an object, got {type(r).__name__}")
        for key in ("backend", "n", "k"):
            if key not in r:
                raise ValueError(f"{where}: expected a {key!r} field, got keys {sorted(r)}")
        worst = r.get("worst")
        return cls(str(r["backend"]), int(r["n"]), int(r["k"]), r.get("fp8_dtype", "e4m3fn"),
                   r.get("device_type", "cuda"), r.get("status", "?"), _opt_int(r.get("max_safe_m")),
                   Failure.from_dict(r.get("failure"), where), str(r.get("reason") or ""), str(r.get("source") or ""),
                   dict(worst) if isinstance(worst, dict) else {}, r.get("deterministic"), r.get("time_s"))


@dataclass(frozen=True)
class SpeedEntry:
    """One speed measurement: a backend at (N, K, M), median ``us`` and ``tflops``."""

    backend: str
    n: int
    k: int
    m: int
    tflops: float
    fp8_dtype: str = "e4m3fn"
    device_type: str = "cuda"
    us: Optional[float] = None

    @property
    def key(self) -> tuple:
        """The (backend, N, K, fp8 flavour, device type) it belongs to, as :attr:`Result.key`."""
        return (self.backend, self.n, self.k, self.fp8_dtype, self.device_type)

    @classmethod
    def from_dict(cls, r: Any, where: str) -> "SpeedEntry":
        check_speed_entry(r, where)
        us = r.get("us")
        return cls(str(r["backend"]), int(r["n"]), int(r["k"]), int(r["m"]), float(r["tflops"]),
                   r.get("fp8_dtype", "e4m3fn"), r.get("device_type", "cuda"), None if us is None else float(us))


@dataclass(frozen=True)
class Report:
    """A report as read: every reader of a report (the evidence, the tables printed) goes through
    :meth:`from_dict`, which checks the format and fills the defaults of older files. The JSON dict
    stays what is written (:func:`new_report`, :func:`write_report`)."""

    fingerprint: str
    static: bool
    created: str
    toolchain: dict[str, Any]
    settings: dict[str, Any]
    backends: dict[str, dict[str, Any]]
    results: tuple[Result, ...]
    speed: tuple[SpeedEntry, ...] = ()
    speed_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> "Report":
        check_report(data, where)
        results = tuple(Result.from_dict(r, f"{where}: results[{i}]") for i, r in enumerate(data["results"]))
        speed = []
        for i, r in enumerate(data.get("speed") or []):
            try:
                speed.append(SpeedEntry.from_dict(r, f"{where}: speed[{i}]"))
            except (ValueError, TypeError):
                continue  # one bad entry does not void the others
        return cls(str(data.get("fingerprint") or ""), bool(data.get("static")), str(data.get("created") or ""),
                   dict(data.get("toolchain") or {}), dict(data.get("settings") or {}),
                   dict(data.get("backends") or {}), results, tuple(speed), dict(data.get("speed_settings") or {}))


def load_report(path: "str | os.PathLike[str]") -> dict[str, Any]:
    path = Path(path)
    return check_report(read_json(path, "report"), f"report {path}")


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the results of ``old`` it does not re-measure (same fingerprint)."""
    if old.get("fingerprint") != new.get("fingerprint") or old.get("static") != new.get("static"):
        return new
    keys = {result_key(r) for r in new["results"]}
    kept = [r for r in old["results"] if result_key(r) not in keys]
    out = dict(new)
    out["results"] = kept + list(new["results"])
    if not new.get("results") and old.get("settings"):
        out["settings"] = old["settings"]  # a speed-only report keeps the correctness sweep's settings
    skeys = {speed_key(r) for r in new.get("speed", [])}
    speed = [r for r in old.get("speed", []) if speed_key(r) not in skeys] + list(new.get("speed", []))
    if speed:
        out["speed"] = speed
    if old.get("speed_settings") and not new.get("speed_settings"):
        out["speed_settings"] = old["speed_settings"]
    backends = dict(old.get("backends", {}))
    backends.update(new.get("backends", {}))
    out["backends"] = backends
    return out


def write_report(report: dict[str, Any], path: "Optional[str | os.PathLike[str]]" = None,
                 toolchain: "Optional[Toolchain]" = None, merge_existing: bool = True) -> Path:
    """Write atomically; to the cache (by fingerprint) unless ``path`` is given. Results already
    in the file for other (backend, shape) are kept."""
    if path is None:
        if report.get("static"):
            raise ValueError("report: a static report (ledger only) is not written to the probe cache; "
                             "pass an output path")
        path = cache_root() / "probe" / f"{report['fingerprint']}.json"
    path = Path(path)
    if merge_existing and path.is_file():
        try:
            report = merge(load_report(path), report)
        except ValueError:
            pass  # an unreadable old file is replaced
    atomic_write_json(path, sanitize(report))
    invalidation.invalidate()
    return path


# -- evidence -----------------------------------------------------------------------------------

class ProbeEvidence:
    """The measured results of one report as an evidence source."""

    name = "probe"

    def __init__(self, report: dict[str, Any], origin: str):
        self.report = check_report(report, origin)
        self.parsed = Report.from_dict(report, origin)
        self.origin = origin
        self._by_key = {r.key: r for r in self.parsed.results}
        self._speed: dict[tuple, list[SpeedEntry]] = {}
        if not self.parsed.static:
            for e in self.parsed.speed:
                self._speed.setdefault(e.key, []).append(e)
            for rows in self._speed.values():
                rows.sort(key=lambda e: e.m)

    def speed(self, backend: str, problem: "Problem", toolchain: "Toolchain") -> Optional[Speed]:
        rows = self._speed.get((backend, problem.n, problem.k, problem.fp8_dtype, problem.device_type))
        if not rows:
            return None
        row = next((e for e in rows if e.m >= problem.m), None)
        if row is None:
            # beyond the largest measured M: only from the compute-bound regime, where speed is flat in M
            if rows[-1].m < SPEED_FLAT_FROM_M:
                return None
            row = rows[-1]
        return Speed(row.tflops, f"probe:{self.origin}", row.m, row.us)

    def verdict(self, backend: str, problem: "Problem", toolchain: "Toolchain") -> Optional[Verdict]:
        if self.parsed.static:
            return None
        r = self._by_key.get((backend, problem.n, problem.k, problem.fp8_dtype, problem.device_type))
        if r is None or r.status in ("skipped", "unavailable"):
            return None
        source = f"probe:{self.origin}"
        limit, failure = r.max_safe_m, r.failure
        when = self.parsed.created[:10]
        what = f"N={problem.n} K={problem.k}"
        if limit is not None and problem.m <= limit:
            tail = f"; {failure.words} at M={failure.m}" if failure else ""
            return Verdict(True, source, f"{backend}: probe on this toolchain ({when}) verified {what} correct "
                                         f"for every tested M up to {limit}{tail}", limit)
        if failure:
            safe_part = (f"verified safe only up to M={limit}" if limit is not None
                         else "not safe at any tested M")
            at = f"at M={failure.m}" if failure.m is not None else "while preparing the weight"
            return Verdict(False, source,
                           f"{backend}: probe on this toolchain ({when}) measured {failure.words} {at} "
                           f"for {what}" + (f" ({failure.detail})" if failure.detail else "") + f"; {safe_part}",
                           limit)
        return None  # passed everything tested, but this M was not tested


def _reports_for(toolchain: "Toolchain") -> Iterable[tuple[dict, str]]:
    fp = toolchain.fingerprint
    seen: set[str] = set()
    env = os.environ.get(ENV_REPORTS, "")
    candidates = [Path(p) for p in env.split(os.pathsep) if p.strip()] + [cache_path(toolchain)]
    for p in candidates:
        key = str(p.resolve()) if p.exists() else str(p)
        if key in seen or not p.is_file():
            continue
        seen.add(key)
        try:
            data = load_report(p)
        except ValueError:
            continue
        if data.get("fingerprint") == fp and not data.get("static"):
            yield data, str(p)
    # a report embedded in the baked configuration file
    if toolchain.source.startswith("config:"):
        path = toolchain.source.split(":", 1)[1]
        try:
            embedded = load_config(path).get("probe")
        except ValueError:
            embedded = None
        if isinstance(embedded, dict) and embedded.get("fingerprint") == fp and not embedded.get("static"):
            try:
                yield check_report(embedded, f"config {path}"), f"{path}#probe"
            except ValueError:
                pass


def sources_for(toolchain: "Toolchain") -> list[ProbeEvidence]:
    """Evidence from the probe reports measured on this toolchain (none for hypothetical ones):
    $ROCM_FP8_PROBE_REPORT files first, then the cache, then the configuration file."""
    if toolchain.source == "hypothetical":
        return []
    return [ProbeEvidence(data, origin) for data, origin in _reports_for(toolchain)]


# -- presentation ---------------------------------------------------------------------------------

def _fmt(x: Any, spec: str = ".1e") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, with what was swept stated up front."""
    rep = Report.from_dict(report)
    s, tc = rep.settings, rep.toolchain
    lines = []
    if rep.static:
        lines.append("STATIC report: known-issues ledger verdicts only; no kernel was run.")
    lines.append(f"toolchain {rep.fingerprint}  ({tc.get('arch')}, hipcc {tc.get('hip_version_str') or '-'}, "
                 f"torch {tc.get('torch_version')}, aiter {tc.get('aiter_version') or '-'})  created {rep.created}")
    if s.get("ms") and rep.static:
        lines.append(f"verdicts evaluated at {len(s['ms'])} M values from {min(s['ms'])} to {max(s['ms'])}")
    elif s.get("ms"):
        ms = s["ms"]
        lines.append(f"swept M: {len(ms)} values from {min(ms)} to {max(ms)}"
                     + ("" if max(ms) >= 16384 else "  (NOTE: below the prefill chunk size 16384; "
                        "pass --max-m 16384 for the full sweep)")
                     + f"; device {s.get('device', '?')}; {s.get('repeats', '?')} launches per M; "
                       f"tolerances rel<={s.get('rtol')}, row rel<={s.get('row_rtol')}, cos>={s.get('min_cosine')}")
    for name, b in sorted(rep.backends.items()):
        if not b.get("available", True):
            lines.append(f"  {name}: not probed: {b.get('reason')}")
    head = ("backend", "N", "K", "status", "max safe M", "first failure", "rel err", "row rel", "min cos", "det",
            "time s")
    rows = [head]
    for r in rep.results:
        if rep.static:
            rows.append((r.backend, str(r.n), str(r.k), r.status, _fmt(r.max_safe_m), r.source or "-",
                         "", "", "", "", ""))
            continue
        f = r.failure
        first = f"{f.symptom}@M={f.m}" if f else ("-" if r.status == "safe" else r.reason[:40])
        w = r.worst
        det = r.deterministic
        rows.append((r.backend, str(r.n), str(r.k), r.status, _fmt(r.max_safe_m), first,
                     _fmt(w.get("rel_err")), _fmt(w.get("row_rel_err")), _fmt(w.get("min_cosine"), ".6f"),
                     "-" if det is None else ("yes" if det else "NO"), _fmt(r.time_s, ".1f")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if rep.static:
        for r in rep.results:
            if r.reason and r.status != "no-known-issue":
                lines.append(f"  {r.backend} N={r.n} K={r.k}: {r.reason}")
    speed = format_speed(report)
    if speed:
        lines.append(speed)
    return "\n".join(lines)


def format_speed(report: dict[str, Any]) -> str:
    """The report's speed measurements: one line per (N, K, M), backends fastest first."""
    rep = Report.from_dict(report)
    if not rep.speed:
        return ""
    s = rep.speed_settings
    lines = [f"speed (TFLOPS, median of CUDA-graph replays over inputs spanning 3x L2; device "
             f"{s.get('device', '?')}, measured {s.get('created', '?')}):"]
    cells: dict[tuple, list[SpeedEntry]] = {}
    for e in rep.speed:
        cells.setdefault((e.n, e.k, e.m), []).append(e)
    for (n, k, m), rows in sorted(cells.items()):
        rows = sorted(rows, key=lambda e: -e.tflops)
        lines.append(f"  N={n} K={k} M={m}: " + ", ".join(f"{e.backend} {e.tflops:.1f}" for e in rows))
    return "\n".join(lines)
