"""The matrix file (ci/matrix.toml): flavours x suites, validated; errors name the key and the fix."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import DEFAULT_REPOSITORY, KNOWN_ARCHS

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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


def default_matrix_path() -> Path:
    from rocm_fp8_deploy.build import repo_root

    return repo_root() / "ci" / "matrix.toml"
