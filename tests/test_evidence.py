"""Evidence: the first opinion wins, no opinion passes the question on, a broken source is skipped;
and through the policy, a verdict removes or limits a backend and is cited."""

from __future__ import annotations

from typing import Optional

import pytest

from rocm_fp8 import Toolchain, Verdict, explain
from rocm_fp8.backends.base import Problem
from rocm_fp8.evidence import consult
from rocm_fp8.ledger import default_ledger

TC = Toolchain.hypothetical("gfx950", hip="7.0.51831")
PROBLEM = Problem(64, 2048, 3072, "e4m3fn")


class Source:
    def __init__(self, name: str, verdict: Optional[Verdict] = None, error: Optional[Exception] = None):
        self.name = name
        self._verdict = verdict
        self._error = error
        self.asked: list[tuple[str, int]] = []

    def verdict(self, backend, problem, toolchain):
        self.asked.append((backend, problem.m))
        if self._error is not None:
            raise self._error
        return self._verdict


def test_the_first_opinion_wins_and_later_sources_are_not_asked():
    first = Source("a", Verdict(False, "probe:x.json", "measured wrong", max_safe_m=32))
    second = Source("b", Verdict(True, "ledger:y", "fine"))
    v = consult([first, second], "aiter-ck", PROBLEM, TC)
    assert v is first._verdict and not second.asked


def test_no_opinion_passes_on_and_none_at_all_is_none():
    silent = Source("silent")
    second = Source("b", Verdict(True, "ledger:y", "fine"))
    assert consult([silent, second], "aiter-ck", PROBLEM, TC) is second._verdict
    assert silent.asked == [("aiter-ck", 64)]
    assert consult([Source("s1"), Source("s2")], "aiter-ck", PROBLEM, TC) is None
    assert consult([], "aiter-ck", PROBLEM, TC) is None


def test_a_source_that_raises_is_skipped():
    broken = Source("broken", error=RuntimeError("bad file"))
    second = Source("b", Verdict(False, "ledger:z", "known bad"))
    assert consult([broken, second], "aiter-ck", PROBLEM, TC) is second._verdict
    assert broken.asked


def test_verdicts_are_values():
    a = Verdict(False, "ledger:x", "why", 512)
    assert a == Verdict(False, "ledger:x", "why", 512) and a.max_safe_m == 512
    with pytest.raises(AttributeError):
        a.safe = True  # type: ignore[misc]


def test_the_shipped_ledger_is_an_evidence_source():
    v = default_ledger().verdict("aiter-bpreshuffle", PROBLEM, TC)
    assert v is not None and not v.safe and v.source == "ledger:bpreshuffle-rocm70-miscompile"
    assert default_ledger().verdict("reference", PROBLEM, TC) is None


def test_the_policy_follows_the_first_source_and_cites_it():
    # a made-up measurement that says plain CK is wrong above M=128 for this shape beats the ledger
    class MeasuredCK(Source):
        def verdict(self, backend, problem, toolchain):
            if backend != "aiter-ck":
                return None
            return Verdict(problem.m <= 128, "probe:test.json", "wrong above M=128", max_safe_m=128)

    sources = [MeasuredCK("probe"), default_ledger()]
    tc72 = Toolchain.hypothetical("gfx950", hip="7.2.26015", aiter=True)
    small = explain(4096, 4096, 64, toolchain=tc72, evidence=sources, backend="aiter-ck")
    assert small.backend == "aiter-ck"
    big = explain(4096, 4096, 4096, toolchain=tc72, evidence=sources, backend="aiter-ck")
    assert big.backend is None and big.failure == "unsafe" and big.evidence == "probe:test.json"
    assert "wrong above M=128" in big.reason
