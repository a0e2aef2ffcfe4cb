"""The known-issues ledger: kernel defects by toolchain, the dispatcher's prior.

Entries live in TOML (``rocm_fp8/data/known_issues.toml`` ships with the package; users add their
own). A :class:`Ledger` is an :class:`~rocm_fp8.evidence.EvidenceSource`: for a backend, toolchain
and problem it returns the verdict of the entries that apply, citing their ids
(``source="ledger:<id>"``), or None when none applies. Probe reports measured on the image go
before it (``rocm_fp8.dispatch.default_sources``).

Matching rules
--------------
An entry applies when the backend is in ``backends``, the toolchain's arch in ``arch``, and every
version constraint holds: ``hipcc`` against the HIP version of the compiler that built the kernel
(``Toolchain.compiler_hip_version``: hipcc's, else torch's), ``rocm`` against the ROCm release,
``aiter`` against the aiter package version. Constraints are ``<op><version>`` with op in
``== != < <= > >=``; versions compare as integer tuples, so ``7.0.51831 < 7.2`` and
``7.2.26015 >= 7.2``. **A fact that is unknown on this machine counts as matching**: a defect
cannot be ruled out by what we do not know, and the reason says what was missing.

M and shape: ``max_safe_m`` limits every shape; ``shapes`` gives per-(N, K) limits
(``max_safe_m``) or clears a shape (``safe = true``); shapes not listed get
``unlisted_max_safe_m`` (reason: unverified for this shape, the probe lifts it), or, without it, are
unsafe at every M. With none of these the defect holds at every M.

Fixes in aiter (``[issue.aiter_fix]``): the entry does not apply when the installed aiter is known
to include the fix commit. "Known" means, in this order:
  1. the installed commit is the fix commit, or is in ``known_good_commits``;
  2. detection verified the fix commit is an ancestor of the installed commit in aiter's git
     checkout (``Toolchain.aiter_includes``);
  3. the aiter version is in ``known_good_versions``;
  4. the installed commit is dated on or after the fix (``Toolchain.aiter_commit_date``; from
     git, or ``ROCM_FP8_AITER_COMMIT_DATE``). A date is a proxy (a branch that forked before the
     fix would not have it) and the reason says so.
An unknown commit counts as predating the fix. When the fix is included and ``verified = false``,
the ledger does not object but returns a safe verdict that says "fix unverified: probe recommended".

Several entries can apply; the most restrictive wins (unsafe at every M, then the smallest limit)
and the others are named in its reason.

User ledgers: ``ROCM_FP8_LEDGER=/path/a.toml:/path/b.toml`` (``os.pathsep``-separated) or
:func:`add_ledger_file`. A user entry with the id of a shipped one replaces it.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from rocm_fp8 import invalidation
from rocm_fp8.backends.base import Problem
from rocm_fp8.evidence import Verdict
from rocm_fp8.toolchain import Toolchain, add_fix_commit_source, format_version, parse_version

ENV_LEDGER = "ROCM_FP8_LEDGER"
SYMPTOMS = {
    "wrong": "gives silently wrong results",
    "nan": "returns NaN",
    "crash": "crashes the process",
    "hang": "hangs",
    "nondeterministic": "gives nondeterministic results",
}
_CONSTRAINT_RE = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)\s*$")


class LedgerError(ValueError):
    """A ledger file that cannot be read or has a malformed entry."""


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10 images
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise LedgerError(f"ledger {path}: reading TOML on Python < 3.11 needs the 'tomli' package "
                              f"(pip install tomli)") from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise LedgerError(f"ledger {path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LedgerError(f"ledger {path}: not valid TOML ({exc})") from None


def _vt(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _version_of(text: Optional[str]) -> Optional[tuple[int, ...]]:
    return parse_version(text)


def _holds(constraints: Sequence[str], version: tuple[int, ...]) -> bool:
    for c in constraints:
        op, ref = _CONSTRAINT_RE.match(c).groups()
        r = _vt(ref)
        ok = {"==": version[:len(r)] == r, "!=": version[:len(r)] != r, "<": version < r,
              "<=": version[:len(r)] <= r, ">": version[:len(r)] > r, ">=": version >= r}[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class AiterFix:
    commit: str
    date: Optional[str] = None
    known_good_versions: tuple[str, ...] = ()
    known_good_commits: tuple[str, ...] = ()
    verified: bool = False

    def describe(self) -> str:
        return f"{self.commit}" + (f" ({self.date})" if self.date else "")


def _same_commit(a: Optional[str], b: Optional[str]) -> bool:
    if not a or not b:
        return False
    a, b = a.lower(), b.lower()
    n = min(len(a), len(b))
    return n >= 7 and a[:n] == b[:n]


@dataclass(frozen=True)
class Entry:
    id: str
    backends: tuple[str, ...]
    arch: tuple[str, ...]
    symptom: str
    summary: str
    sources: tuple[str, ...]
    kernel: str = ""
    remedy: str = ""
    hipcc: tuple[str, ...] = ()
    rocm: tuple[str, ...] = ()
    aiter: tuple[str, ...] = ()
    max_safe_m: Optional[int] = None
    shapes: dict[tuple[int, int], Optional[int]] = field(default_factory=dict)  # None: safe at every M
    unlisted_max_safe_m: Optional[int] = None
    aiter_fix: Optional[AiterFix] = None
    origin: str = ""

    @property
    def cites(self) -> str:
        return f"known issue {self.id}" + (f", {', '.join(self.sources)}" if self.sources else "")

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "") -> "Entry":
        where = f"ledger {origin}" if origin else "ledger"
        if not isinstance(d, dict):
            raise LedgerError(f"{where}: expected each [[issue]] to be a table, got {d!r}")
        ident = d.get("id")
        if not isinstance(ident, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", ident):
            raise LedgerError(f"{where}: expected an 'id' made of letters, digits, '-', '_' or '.', got {ident!r}")
        where = f"{where}, issue {ident}"

        def strings(key: str, required: bool = False) -> tuple[str, ...]:
            v = d.get(key, [])
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise LedgerError(f"{where}: '{key}' expected a list of strings, got {v!r}")
            if required and not v:
                raise LedgerError(f"{where}: '{key}' is required and must not be empty")
            return tuple(v)

        def constraints(key: str) -> tuple[str, ...]:
            cs = strings(key)
            for c in cs:
                if not _CONSTRAINT_RE.match(c):
                    raise LedgerError(f"{where}: '{key}' expected constraints such as '>=7.0' or '<7.2', got {c!r}")
            return cs

        def opt_int(src: dict, key: str, ctx: str) -> Optional[int]:
            v = src.get(key)
            if v is None:
                return None
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise LedgerError(f"{ctx}: '{key}' expected a non-negative integer, got {v!r}")
            return v

        symptom = d.get("symptom")
        if symptom not in SYMPTOMS:
            raise LedgerError(f"{where}: 'symptom' expected one of {', '.join(SYMPTOMS)}, got {symptom!r}")
        summary = d.get("summary") or SYMPTOMS[symptom]
        shapes: dict[tuple[int, int], Optional[int]] = {}
        for s in d.get("shapes", []):
            if not isinstance(s, dict) or not isinstance(s.get("n"), int) or not isinstance(s.get("k"), int):
                raise LedgerError(f"{where}: 'shapes' expected tables like {{ n = 2560, k = 4096, max_safe_m = 2048 }}, "
                                  f"got {s!r}")
            if s.get("safe") is True:
                shapes[(s["n"], s["k"])] = None
            else:
                limit = opt_int(s, "max_safe_m", f"{where}, shape ({s['n']}, {s['k']})")
                if limit is None:
                    raise LedgerError(f"{where}: shape ({s['n']}, {s['k']}) needs 'max_safe_m' or 'safe = true'")
                shapes[(s["n"], s["k"])] = limit
        fix = None
        if "aiter_fix" in d:
            f = d["aiter_fix"]
            if not isinstance(f, dict) or not isinstance(f.get("commit"), str) or len(f["commit"]) < 7:
                raise LedgerError(f"{where}: 'aiter_fix' expected a table with a 'commit' of >= 7 hex digits, got {f!r}")
            date = f.get("date")
            if date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(date)):
                raise LedgerError(f"{where}: 'aiter_fix.date' expected YYYY-MM-DD, got {date!r}")
            fix = AiterFix(f["commit"], str(date) if date is not None else None,
                           tuple(str(v) for v in f.get("known_good_versions", [])),
                           tuple(str(c) for c in f.get("known_good_commits", [])),
                           bool(f.get("verified", False)))
        return cls(
            id=ident, backends=strings("backends", required=True), arch=strings("arch", required=True),
            symptom=symptom, summary=str(summary), sources=strings("sources"), kernel=str(d.get("kernel", "")),
            remedy=str(d.get("remedy", "")), hipcc=constraints("hipcc"), rocm=constraints("rocm"),
            aiter=constraints("aiter"), max_safe_m=opt_int(d, "max_safe_m", where), shapes=shapes,
            unlisted_max_safe_m=opt_int(d, "unlisted_max_safe_m", where), aiter_fix=fix, origin=origin,
        )

    # -- matching ------------------------------------------------------------------------------
    def assess(self, backend: str, problem: "Problem", tc: "Toolchain") -> Optional["_Finding"]:
        """None when the entry does not apply; else what it says about this problem."""
        if backend not in self.backends or tc.arch not in self.arch:
            return None
        unknown: list[str] = []
        hip = tc.compiler_hip_version
        for key, constraints, version, what in (
                ("hipcc", self.hipcc, hip, "hipcc version"),
                ("rocm", self.rocm, tc.rocm_version, "ROCm version"),
                ("aiter", self.aiter, _version_of(tc.aiter_version), "aiter version")):
            if not constraints:
                continue
            if version is None:
                unknown.append(what)
            elif not _holds(constraints, version):
                return None
        built_by = (f"built by hipcc {format_version(hip)}" if hip is not None else "built by an unknown hipcc")
        if tc.hip_version is None and hip is not None:
            built_by = f"built by the HIP {format_version(hip)} of torch (hipcc not found)"
        fix_note = ""
        if self.aiter_fix is not None:
            included, how = _includes_fix(self.aiter_fix, tc)
            if included:
                note = (f"aiter includes the fix {self.aiter_fix.describe()} for {self.cites} ({how})")
                if not self.aiter_fix.verified:
                    note += "; fix unverified: probe recommended"
                return _Finding(self, True, None, note)
            fix_note = how
        limit, shape_note, all_m_safe = self._limit(problem)
        if all_m_safe:
            return _Finding(self, True, None,
                            f"N={problem.n} K={problem.k} is verified correct at every M under {self.cites}")
        return _Finding(self, limit is not None and problem.m <= limit, limit,
                        self._reason(backend, problem, tc, built_by, limit, shape_note, unknown, fix_note))

    def _limit(self, problem: "Problem") -> tuple[Optional[int], str, bool]:
        """(max safe M or None for "unsafe at every M", a note about the shape, safe at every M)."""
        key = (problem.n, problem.k)
        limits = [self.max_safe_m] if self.max_safe_m is not None else []
        note = ""
        if self.shapes:
            if key in self.shapes:
                if self.shapes[key] is None:
                    return (None, "", True) if not limits else (limits[0], "", False)
                limits.append(self.shapes[key])
            elif self.unlisted_max_safe_m is not None:
                limits.append(self.unlisted_max_safe_m)
                note = (f"N={problem.n} K={problem.k} is not among the shapes measured for this issue, so it is "
                        f"limited to the smallest verified limit, M <= {self.unlisted_max_safe_m} (unverified for "
                        f"this shape; `rocm-fp8 probe --n {problem.n} --k {problem.k}` on the image lifts it)")
            else:
                return None, f"N={problem.n} K={problem.k} is not among the shapes measured for this issue", False
        elif not limits:
            return None, "", False
        return min(limits), note, False

    def _reason(self, backend, problem, tc, built_by, limit, shape_note, unknown, fix_note) -> str:
        cite = f"({self.cites})"
        if limit is None:
            head = f"{backend}: {built_by}, which {self.summary} {cite}"
        else:
            head = (f"{backend}: {built_by} on {tc.arch}, {SYMPTOMS[self.symptom]} "
                    f"above M={limit} for N={problem.n} K={problem.k} {cite}; safe up to M={limit}")
        parts = [head]
        if shape_note:
            parts.append(shape_note)
        if unknown:
            parts.append("applied because the " + " and the ".join(unknown)
                         + (" are" if len(unknown) > 1 else " is") + " unknown (a defect cannot be ruled out by "
                         "what is not known)")
        if fix_note:
            parts.append(fix_note)
        if self.remedy:
            parts.append(self.remedy)
        return "; ".join(parts)


def _includes_fix(fix: AiterFix, tc: "Toolchain") -> tuple[bool, str]:
    """(whether the installed aiter includes the fix, how we know / why we cannot tell)."""
    commit = tc.aiter_commit
    if _same_commit(commit, fix.commit):
        return True, f"the installed commit {commit[:12]} is the fix"
    for good in fix.known_good_commits:
        if _same_commit(commit, good):
            return True, f"the installed commit {commit[:12]} is listed as containing it"
    for inc in tc.aiter_includes:
        if _same_commit(inc, fix.commit):
            return True, f"git history of the installed aiter {commit[:12] if commit else ''} contains it".replace("  ", " ")
    if tc.aiter_version and tc.aiter_version in fix.known_good_versions:
        return True, f"aiter {tc.aiter_version} is listed as containing it"
    if commit and tc.aiter_commit_date and fix.date and tc.aiter_commit_date[:10] >= fix.date:
        return True, (f"judged by date: the installed commit {commit[:12]} is dated {tc.aiter_commit_date[:10]}, on or "
                      f"after the fix; a branch that forked earlier would not contain it")
    if not commit:
        return False, (f"aiter commit unknown; fix landed in {fix.describe()}; pass --aiter-commit "
                       f"(or set ROCM_FP8_AITER_COMMIT) / run the probe")
    dated = f" (dated {tc.aiter_commit_date[:10]})" if tc.aiter_commit_date else " (date unknown)"
    return False, (f"aiter commit {commit[:12]}{dated} is not known to include the fix {fix.describe()}; "
                   f"set ROCM_FP8_AITER_COMMIT_DATE, or run the probe")


@dataclass(frozen=True)
class _Finding:
    entry: Entry
    safe: bool
    max_safe_m: Optional[int]
    reason: str

    @property
    def severity(self) -> tuple:
        # unsafe at every M first, then unsafe at this M (smallest limit), then limited, then notes
        if not self.safe and self.max_safe_m is None:
            return (0, 0)
        if not self.safe:
            return (1, self.max_safe_m)
        if self.max_safe_m is not None:
            return (2, self.max_safe_m)
        return (3, 0)


class Ledger:
    """A set of entries; an evidence source named "ledger"."""

    name = "ledger"

    def __init__(self, entries: Iterable[Entry] = ()):
        self._entries: dict[str, Entry] = {}
        for e in entries:
            self._entries[e.id] = e

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]") -> "Ledger":
        return cls(load_entries(path))

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, ident: str) -> Entry:
        try:
            return self._entries[ident]
        except KeyError:
            raise ValueError(f"ledger: no entry with id {ident!r}; expected one of {', '.join(self._entries)}") from None

    def extend(self, entries: Iterable[Entry]) -> None:
        """Add entries; one with an existing id replaces it."""
        for e in entries:
            self._entries[e.id] = e

    def findings(self, backend: str, problem: "Problem", toolchain: "Toolchain") -> list[_Finding]:
        out = [f for e in self._entries.values() if (f := e.assess(backend, problem, toolchain)) is not None]
        return sorted(out, key=lambda f: f.severity)

    def verdict(self, backend: str, problem: "Problem", toolchain: "Toolchain") -> Optional[Verdict]:
        found = self.findings(backend, problem, toolchain)
        if not found:
            return None
        top = found[0]
        reason = top.reason
        others = [f.entry.id for f in found[1:]]
        if others:
            reason += f"; also known issue{'s' if len(others) > 1 else ''} {', '.join(others)}"
        return Verdict(top.safe, f"ledger:{top.entry.id}", reason, top.max_safe_m)


def load_entries(path: "str | os.PathLike[str]") -> list[Entry]:
    path = Path(path)
    data = _load_toml(path)
    schema = data.get("schema", 1)
    if schema != 1:
        raise LedgerError(f"ledger {path}: expected schema = 1, got {schema!r}")
    issues = data.get("issue", [])
    if not isinstance(issues, list):
        raise LedgerError(f"ledger {path}: expected [[issue]] tables, got {type(issues).__name__}")
    entries = [Entry.from_dict(d, origin=str(path)) for d in issues]
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise LedgerError(f"ledger {path}: id {e.id!r} appears twice")
        seen.add(e.id)
    return entries


def shipped_path() -> Path:
    return Path(__file__).parent / "data" / "known_issues.toml"


class _Unreadable:
    """Stands in for a ledger that cannot be read: every aiter backend is treated as unsafe,
    because the defects it would rule out are unknown."""

    name = "ledger"

    def __init__(self, error: str):
        self.error = error

    def verdict(self, backend, problem, toolchain):
        if not backend.startswith("aiter-"):
            return None
        return Verdict(False, "ledger:unreadable",
                       f"{backend}: the known-issues ledger cannot be read ({self.error}), so known kernel "
                       f"defects cannot be ruled out")


_lock = threading.Lock()
_default: Optional[Ledger] = None
_extra_files: list[Path] = []


def default_ledger(refresh: bool = False):
    """The shipped ledger plus the files in $ROCM_FP8_LEDGER and those added with
    :func:`add_ledger_file`; loaded once. A file that cannot be read makes the whole ledger fail
    closed (aiter backends unsafe, with the error as the reason)."""
    global _default
    with _lock:
        if _default is None or refresh:
            try:
                ledger = Ledger(load_entries(shipped_path()))
                env = os.environ.get(ENV_LEDGER, "")
                for p in [Path(x) for x in env.split(os.pathsep) if x.strip()] + _extra_files:
                    ledger.extend(load_entries(p))
                _default = ledger
            except LedgerError as exc:
                return _Unreadable(str(exc))
        return _default


def add_ledger_file(path: "str | os.PathLike[str]") -> None:
    """Add a user ledger to the default one (checked now: a malformed file raises LedgerError)."""
    p = Path(path)
    load_entries(p)
    with _lock:
        _extra_files.append(p)
    default_ledger(refresh=True)
    invalidation.invalidate()


def reset() -> None:
    """Forget added files and reload on next use."""
    global _default
    with _lock:
        _extra_files.clear()
        _default = None
    invalidation.invalidate()


def fix_commits() -> list[str]:
    """The aiter fix commits the ledger knows, for detection to check against aiter's git history."""
    ledger = default_ledger()
    if not isinstance(ledger, Ledger):
        return []
    return sorted({e.aiter_fix.commit for e in ledger.entries if e.aiter_fix is not None})


# detection checks aiter's git history for these commits; it asks us rather than importing us
add_fix_commit_source(fix_commits)


def static_verdicts(toolchain: "Toolchain", backends: Sequence[str], shapes: Sequence[tuple[int, int]],
                    ms: Sequence[int]) -> list[dict[str, Any]]:
    """The ledger's verdicts for each backend x shape, evaluated at the given M points (for
    ``rocm-fp8 probe --static`` and the configuration file). Pure: runs no kernel."""
    ledger = default_ledger()
    out = []
    for b in backends:
        for n, k in shapes:
            per_m = []
            for m in ms:
                v = ledger.verdict(b, Problem(m, n, k, toolchain.fp8_flavour), toolchain)
                per_m.append(v)
            decided = [v for v in per_m if v is not None]
            if not decided:
                out.append({"backend": b, "n": n, "k": k, "status": "no-known-issue", "max_safe_m": None,
                            "source": None, "reason": "no ledger entry applies"})
                continue
            unsafe_all = any((not v.safe and v.max_safe_m is None) for v in decided)
            limits = [v.max_safe_m for v in decided if v.max_safe_m is not None]
            worst = next((v for v in decided if not v.safe), decided[0])
            out.append({
                "backend": b, "n": n, "k": k,
                "status": "unsafe" if unsafe_all else ("limited" if limits else "no-objection"),
                "max_safe_m": None if unsafe_all else (min(limits) if limits else None),
                "source": worst.source, "reason": worst.reason,
            })
    return out
