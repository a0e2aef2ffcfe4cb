"""Near-ties, measured twice before they decide.

The tuner times each backend of a cell on its own, one after the other. Two timings of one kernel
taken a minute apart on the same GPU can differ by a few per cent (clocks, heat after long
large-M runs), so when the two fastest backends of a cell come out within
:data:`NEAR_TIE_MARGIN` of each other, the first timings cannot say which one is faster. Such a
cell is timed again, the two backends interleaved on the same input sets (A B, B A, A B, ...: the
order flips each round so that a steady drift weighs on both alike), and the median of each
backend's rounds becomes its evidence. The first timings stay in the entry (``first_us``) and in
the tune log.

Pure bookkeeping: the timer (``rocm_fp8.tune.time_calls`` on a GPU) and the calls are passed in.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Mapping, Optional, Sequence

from rocm_fp8.tune.timing import tflops

#: the two fastest backends of a cell are re-timed when the slower is at most this much slower
NEAR_TIE_MARGIN = 0.06
#: timings per backend in the interleaved re-timing
NEAR_TIE_ROUNDS = 3


def near_tie(entries: Sequence[dict[str, Any]], margin: float = NEAR_TIE_MARGIN
             ) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
    """The two fastest entries (by ``us``) when the slower is within ``margin`` of the faster, else None."""
    if not margin >= 0:
        raise ValueError(f"margin: expected a non-negative fraction, got {margin!r}")
    timed = sorted((e for e in entries if isinstance(e.get("us"), (int, float)) and e["us"] > 0),
                   key=lambda e: e["us"])
    if len(timed) < 2:
        return None
    fast, slow = timed[0], timed[1]
    return (fast, slow) if slow["us"] <= fast["us"] * (1.0 + margin) else None


def interleaved(calls: Mapping[str, Sequence[Callable[[], Any]]], timer: Callable[[Sequence[Callable[[], Any]]], dict],
                rounds: int = NEAR_TIE_ROUNDS) -> dict[str, list[float]]:
    """Time each backend's calls ``rounds`` times, interleaved: round r runs the backends in order,
    reversed every other round (A B, B A, A B). Returns each backend's per-round times (us)."""
    if rounds < 1:
        raise ValueError(f"rounds: expected a positive integer, got {rounds!r}")
    names = list(calls)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            res = timer(calls[name])
            if "us" not in res:
                raise RuntimeError(f"{name}: re-timing gave no time ({res.get('error', res)})")
            out[name].append(float(res["us"]))
    return out


def settle_near_tie(entries: list[dict[str, Any]], builders: Mapping[str, Callable[[], Sequence[Callable[[], Any]]]],
                    timer: Callable[[Sequence[Callable[[], Any]]], dict], *, m: int, n: int, k: int,
                    margin: float = NEAR_TIE_MARGIN, rounds: int = NEAR_TIE_ROUNDS,
                    say: Callable[[str], None] = print) -> Optional[dict[str, Any]]:
    """When the two fastest of ``entries`` (speed entries of one cell) are a near-tie, re-time them
    interleaved and write the medians into both entries (``us``, ``tflops``; ``first_us`` and
    ``rounds_us`` keep the record). ``builders[name]()`` gives that backend's calls, one per input
    set. Says one line; returns a record for the tune log, or None when the cell is no near-tie."""
    pair = near_tie(entries, margin)
    if pair is None:
        return None
    fast, slow = pair
    first = {e["backend"]: e["us"] for e in pair}
    gap = slow["us"] / fast["us"] - 1.0
    head = (f"near-tie N={n} K={k} M={m}: {fast['backend']} {fast['us']:.1f} us, {slow['backend']} "
            f"{slow['us']:.1f} us ({100 * gap:.1f}% apart, under {100 * margin:.0f}%)")
    record: dict[str, Any] = {"near_tie": {"m": m, "n": n, "k": k}, "first_us": first, "margin": margin}
    try:
        missing = [e["backend"] for e in pair if e["backend"] not in builders]
        if missing:
            raise LookupError(f"no calls to re-time {', '.join(missing)}")
        calls = {e["backend"]: builders[e["backend"]]() for e in pair}
        times = interleaved(calls, timer, rounds)
    except Exception as exc:  # noqa: BLE001 - the first timings stand
        record["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        say(f"{head}; not re-timed ({record['error'][:160]}): the first timings stand")
        return record
    for e in pair:
        rounds_us = times[e["backend"]]
        e["first_us"] = e["us"]
        e["us"] = round(statistics.median(rounds_us), 3)
        e["tflops"] = round(tflops(m, n, k, e["us"]), 2)
        e["rounds_us"] = [round(t, 3) for t in rounds_us]
        e["retimed"] = f"interleaved x{rounds}"
    record["rounds_us"] = {name: [round(t, 3) for t in ts] for name, ts in times.items()}
    record["us"] = {e["backend"]: e["us"] for e in pair}
    winner = min(pair, key=lambda e: e["us"])
    record["faster"] = winner["backend"]
    say(f"{head}; re-timed interleaved x{rounds}, medians: "
        + ", ".join(f"{e['backend']} {e['us']:.1f} us" for e in pair) + f" -> {winner['backend']}")
    return record
