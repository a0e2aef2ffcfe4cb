"""The probe's summariser: one shape's cases -> its report row (status, largest verified-safe M, the
first failure, worst errors)."""

from __future__ import annotations

from typing import Any

from rocm_fp8.probe.supervisor import ShapeState


def summarise(name: str, s: ShapeState, fp8_dtype: str, device_type: str, ms: list[int]) -> dict[str, Any]:
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
