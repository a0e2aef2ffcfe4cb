"""Evidence: the hook through which the ledger and the probe reach the policy.

Correctness first. An evidence source answers, for a backend on a toolchain and a problem, whether
the backend is known (ledger) or measured (probe) to be safe at that M. It returns ``None`` when it
has no opinion. The policy asks the sources in order and the first opinion wins, so probe evidence
measured on this very image goes before the ledger's prior (the dispatcher wires them in that
order: ``rocm_fp8.dispatch.default_sources``).

Speed second. A source may also offer ``speed(backend, problem, toolchain) -> Speed | None``: what
a backend was measured to reach for this (N, K) at the M bucket of the problem, on this toolchain
(``rocm-fp8 tune``, ``rocm-fp8 probe --timing``). The policy ranks the backends that correctness
let through by it; it never lets a fast backend past a correctness verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from rocm_fp8.backends.base import Problem
    from rocm_fp8.toolchain import Toolchain


@dataclass(frozen=True)
class Verdict:
    safe: bool
    #: what decided, citable: "ledger:bpreshuffle-rocm70-miscompile", "probe:<report file>"
    source: str
    #: in words, for ``explain``; for an unsafe verdict, what is wrong and what would lift it
    reason: str
    #: the largest M known or measured to be safe, when the verdict depends on M
    max_safe_m: Optional[int] = None


@dataclass(frozen=True)
class Speed:
    """A measured speed, citable: ``source`` names the file, ``m`` the M it was measured at."""

    tflops: float
    source: str
    m: int
    us: Optional[float] = None

    def describe(self) -> str:
        at = f"{self.us:.1f} us, " if self.us is not None else ""
        return f"measured {self.tflops:.1f} TFLOPS ({at}M={self.m}) [{self.source}]"


class EvidenceSource(Protocol):
    name: str

    def verdict(self, backend: str, problem: "Problem", toolchain: "Toolchain") -> Optional[Verdict]:
        ...


def consult(sources: Sequence[EvidenceSource], backend: str, problem: "Problem",
            toolchain: "Toolchain") -> Optional[Verdict]:
    """The first opinion among ``sources``; a source that raises is skipped (its error is a bug
    in that source, and a broken file of evidence must not take the dispatcher down)."""
    for source in sources:
        try:
            v = source.verdict(backend, problem, toolchain)
        except Exception:  # noqa: BLE001
            continue
        if v is not None:
            return v
    return None


def measured_speed(sources: Sequence[object], backend: str, problem: "Problem",
                   toolchain: "Toolchain") -> Optional[Speed]:
    """The first speed measurement among ``sources`` that offer one; None when nothing was measured."""
    for source in sources:
        fn = getattr(source, "speed", None)
        if fn is None:
            continue
        try:
            s = fn(backend, problem, toolchain)
        except Exception:  # noqa: BLE001 - a broken file of evidence must not take the dispatcher down
            continue
        if s is not None:
            return s
    return None

