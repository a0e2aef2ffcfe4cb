"""Near-ties re-timed interleaved before they decide (rocm_fp8.tune.ties, speed_cell, tune's table row).

CPU only: the timing harness needs a GPU, so the timer here is a scripted function that runs the calls
it is given (real calls on CPU tensors) and answers the times of a scenario. The scenario is the H200
cell that motivated this: N=2048 K=3072 M=16384, tuned first as our kernel 171.1 us against cuBLASLt
178.7 us (4.5% apart), when side by side cuBLASLt is the faster one.
"""

from __future__ import annotations

import json

import pytest

from rocm_fp8 import Toolchain, explain, kernel_configs
from rocm_fp8 import probe_report as pr
from rocm_fp8.tune.speed import speed_entry
from rocm_fp8.tune.ties import NEAR_TIE_MARGIN, interleaved, near_tie, settle_near_tie
from rocm_fp8.tune.timing import tflops

N, K, M = 2048, 3072, 16384


@pytest.fixture(autouse=True)
def _tables(monkeypatch, tmp_path):
    for env in (kernel_configs.ENV_TABLES, kernel_configs.ENV_DIR):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv(pr.ENV_CACHE, str(tmp_path / "cache"))  # no probe report of this machine
    kernel_configs.clear_cache()


def entry(backend, us, m=M):
    return speed_entry(backend, N, K, m, "e4m3fn", {"us": us, "sets": 2})


class ScriptedTimer:
    """Runs the calls it is given (so they must be real), answers the next scripted time of the
    backend those calls belong to, and remembers the order."""

    def __init__(self, script):
        self.script = {name: list(ts) for name, ts in script.items()}
        self.order = []

    def calls_of(self, name, calls):
        for c in calls:
            c.owner = name
        return calls

    def __call__(self, calls):
        name = calls[0].owner
        for c in calls:
            c()
        self.order.append(name)
        return {"us": self.script[name].pop(0), "sets": len(calls)}


def fake_calls(name, timer, ran):
    def make():
        def call():
            ran.append(name)

        return timer.calls_of(name, [call, call])
    return make


def test_near_tie_is_the_fastest_two_within_the_margin():
    a, b, c = entry("triton", 171.056), entry("torch-scaled-mm", 178.72), entry("aiter-triton", 400.0)
    assert near_tie([c, b, a]) == (a, b)  # 4.5% apart
    assert near_tie([a, entry("torch-scaled-mm", 171.056 * 1.07)]) is None  # 7%: a clear winner
    assert near_tie([a, entry("torch-scaled-mm", 171.056 * 1.07)], margin=0.08) is not None
    assert near_tie([a]) is None and near_tie([]) is None
    assert near_tie([a, {"backend": "x", "error": "did not run"}]) is None
    with pytest.raises(ValueError, match="margin: expected a non-negative fraction, got -0.1"):
        near_tie([a, b], margin=-0.1)
    assert 0.03 < NEAR_TIE_MARGIN <= 0.1


def test_interleaved_flips_the_order_every_round():
    timer = ScriptedTimer({"a": [1, 2, 3], "b": [4, 5, 6]})
    ran = []
    calls = {"a": fake_calls("a", timer, ran)(), "b": fake_calls("b", timer, ran)()}
    times = interleaved(calls, timer, rounds=3)
    assert timer.order == ["a", "b", "b", "a", "a", "b"]
    assert times == {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}
    assert len(ran) == 12  # every call of every round ran
    with pytest.raises(ValueError, match="rounds: expected a positive integer, got 0"):
        interleaved(calls, timer, rounds=0)


def test_a_near_tie_is_re_timed_and_the_medians_become_the_evidence():
    timer = ScriptedTimer({"triton": [181.0, 186.0, 183.5], "torch-scaled-mm": [176.0, 175.0, 190.0]})
    ran = []
    builders = {name: fake_calls(name, timer, ran) for name in ("triton", "torch-scaled-mm")}
    builders["aiter-triton"] = lambda: pytest.fail("only the fastest two are re-timed")
    entries = [entry("triton", 171.056), entry("torch-scaled-mm", 178.72), entry("aiter-triton", 400.0)]
    lines = []
    rec = settle_near_tie(entries, builders, timer, m=M, n=N, k=K, say=lines.append)
    tri, sm, other = entries
    assert tri["us"] == 183.5 and sm["us"] == 176.0  # medians of the rounds
    assert tri["first_us"] == 171.056 and sm["first_us"] == 178.72
    assert tri["rounds_us"] == [181.0, 186.0, 183.5] and sm["retimed"] == "interleaved x3"
    assert tri["tflops"] == round(tflops(M, N, K, 183.5), 2) and sm["tflops"] == round(tflops(M, N, K, 176.0), 2)
    assert other == entry("aiter-triton", 400.0)  # untouched
    assert timer.order == ["triton", "torch-scaled-mm", "torch-scaled-mm", "triton", "triton", "torch-scaled-mm"]
    assert rec["first_us"] == {"triton": 171.056, "torch-scaled-mm": 178.72}
    assert rec["us"] == {"triton": 183.5, "torch-scaled-mm": 176.0} and rec["faster"] == "torch-scaled-mm"
    assert rec["near_tie"] == {"m": M, "n": N, "k": K}
    json.dumps(rec)  # goes to the tune log as is
    assert len(lines) == 1
    assert lines[0] == ("near-tie N=2048 K=3072 M=16384: triton 171.1 us, torch-scaled-mm 178.7 us (4.5% apart, "
                        "under 6%); re-timed interleaved x3, medians: triton 183.5 us, torch-scaled-mm 176.0 us "
                        "-> torch-scaled-mm")


def test_a_clear_winner_is_not_re_timed():
    entries = [entry("triton", 100.0), entry("torch-scaled-mm", 120.0)]
    before = [dict(e) for e in entries]
    lines = []
    assert settle_near_tie(entries, {}, lambda calls: pytest.fail("timed"), m=M, n=N, k=K, say=lines.append) is None
    assert entries == before and lines == []


def test_when_re_timing_fails_the_first_timings_stand():
    entries = [entry("triton", 171.056), entry("torch-scaled-mm", 178.72)]
    before = [dict(e) for e in entries]
    lines = []
    rec = settle_near_tie(entries, {"triton": lambda: []}, lambda calls: {"us": 1.0}, m=M, n=N, k=K,
                          say=lines.append)
    assert entries == before
    assert rec["error"] == "LookupError: no calls to re-time torch-scaled-mm"
    assert "not re-timed (LookupError: no calls to re-time torch-scaled-mm): the first timings stand" in lines[0]

    def broken(calls):
        return {"error": "graph capture failed"}

    rec = settle_near_tie(entries, {"triton": lambda: [], "torch-scaled-mm": lambda: []}, broken, m=M, n=N, k=K,
                          say=lines.append)
    assert entries == before and "re-timing gave no time (graph capture failed)" in rec["error"]


def test_speed_cell_re_times_real_calls_and_the_dispatcher_reads_the_medians(tmp_path):
    import torch

    from rocm_fp8.backends.reference import ReferenceBackend
    from rocm_fp8.tune.cli import row_from_retimed
    from rocm_fp8.tune.operands import make_sets, reference
    from rocm_fp8.tune.speed import backend_calls, speed_cell, write_speed

    fp8 = torch.float8_e4m3fn
    sets = make_sets(32, 256, 512, fp8, 2, device="cpu", seed=21)
    ref = reference(*sets[0])
    outputs = []
    timer = ScriptedTimer({"triton": [181.0, 186.0, 183.5], "torch-scaled-mm": [176.0, 175.0, 190.0]})

    def real_calls(name):
        def make():
            calls = backend_calls(ReferenceBackend(), sets, fp8)
            wrapped = [lambda c=c: outputs.append(c()) for c in calls]
            return timer.calls_of(name, wrapped)
        return make

    tc = Toolchain.hypothetical("sm90", device_name="NVIDIA H200")
    known = [entry("triton", 171.056), entry("torch-scaled-mm", 178.72)]
    log, lines = [], []
    row = {"m": M, "config": {}, "triton_us": 171.056, "triton_tflops": 1205.21, "scaled_mm_us": 178.72,
           "scaled_mm_tflops": 1153.5}
    cell = speed_cell(tc, sets, ref, M, N, K, "e4m3fn", fp8, None, lines.append,
                      skip={"triton", "torch-scaled-mm"}, known=known,
                      builders={"triton": real_calls("triton"), "torch-scaled-mm": real_calls("torch-scaled-mm")},
                      timer=timer, log=log)
    assert len(outputs) == 12 and all(torch.isfinite(y).all() for y in outputs)  # 3 rounds x 2 backends x 2 sets
    assert torch.allclose(outputs[0].float(), ref, rtol=1e-2, atol=1e-2)
    assert [line.split(" ")[0] for line in lines] == ["speed", "near-tie"]
    assert {e["backend"]: e["us"] for e in cell} == {"triton": 183.5, "torch-scaled-mm": 176.0}
    assert len(log) == 1 and log[0]["first_us"] == {"triton": 171.056, "torch-scaled-mm": 178.72}
    # the tune's table row carries the medians too
    row_from_retimed(row, cell, M, N, K)
    assert row["triton_us"] == 183.5 and row["scaled_mm_us"] == 176.0
    assert row["scaled_mm_tflops"] == round(tflops(M, N, K, 176.0), 2) > row["triton_tflops"]
    # the evidence written is the medians, with the first timings kept, and auto ranks by it
    path = write_speed(tc, cell, output=tmp_path / "speed.json", cache=False, device="NVIDIA H200")[0]
    data = pr.load_report(path)
    by = {e["backend"]: e for e in data["speed"]}
    assert by["triton"]["first_us"] == 171.056 and by["torch-scaled-mm"]["rounds_us"] == [176.0, 175.0, 190.0]
    d = explain(N, K, M, toolchain=tc, evidence=[pr.ProbeEvidence(data, str(path))])
    assert d.backend == "torch-scaled-mm" and f"[probe:{path}]" in d.reason
    # without the re-timing the first timings would have picked our kernel
    first = [entry("triton", 171.056), entry("torch-scaled-mm", 178.72)]
    path1 = write_speed(tc, first, output=tmp_path / "first.json", cache=False)[0]
    assert explain(N, K, M, toolchain=tc, evidence=[pr.ProbeEvidence(pr.load_report(path1), str(path1))]).backend \
        == "triton"


def test_speed_cell_can_leave_near_ties_alone():
    import torch

    from rocm_fp8.tune.operands import make_sets, reference
    from rocm_fp8.tune.speed import speed_cell

    sets = make_sets(16, 256, 512, torch.float8_e4m3fn, 1, device="cpu", seed=22)
    tc = Toolchain.hypothetical("sm90", device_name="NVIDIA H200")
    known = [entry("triton", 171.056), entry("torch-scaled-mm", 178.72)]
    lines = []
    cell = speed_cell(tc, sets, reference(*sets[0]), M, N, K, "e4m3fn", torch.float8_e4m3fn, None, lines.append,
                      skip={"triton", "torch-scaled-mm"}, known=known, retime=False,
                      timer=lambda calls: pytest.fail("timed"))
    assert cell == known and len(lines) == 1
    cell = speed_cell(tc, sets, reference(*sets[0]), M, N, K, "e4m3fn", torch.float8_e4m3fn, None, lines.append,
                      skip={"triton", "torch-scaled-mm"}, known=known, margin=0.03,
                      timer=lambda calls: pytest.fail("timed"))  # 4.5% apart is no near-tie under 3%
    assert cell == known and len(lines) == 2


def test_tune_takes_the_near_tie_margin(capsys):
    from rocm_fp8.tune.cli import parse_args

    assert parse_args(["--n", "2048", "--k", "3072"]).near_tie == NEAR_TIE_MARGIN
    assert parse_args(["--n", "2048", "--k", "3072", "--near-tie", "0"]).near_tie == 0
    for bad in ("-0.1", "1.5"):
        with pytest.raises(SystemExit):
            parse_args(["--n", "2048", "--k", "3072", "--near-tie", bad])
        assert f"--near-tie: expected a fraction in [0, 1), got {float(bad)}" in capsys.readouterr().err
