"""Planning: the cells (flavour x suite) a run asks for with --rocm/--arch/--suite/--cpu-only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rocm_fp8_deploy.errors import DeployError

from rocm_fp8_deploy.matrix.spec import FlavourSpec, Matrix, Suite


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
