"""The host-side half of the one timing harness (rocm_fp8.tune.timing.host_us); time_calls needs a GPU
and is exercised by tests/gpu (test_bench_suite, test_speed_evidence) and the benchmarks."""

from __future__ import annotations

import time

import pytest

from rocm_fp8.tune.timing import host_us


def test_host_us_is_the_per_call_time_of_the_fastest_run():
    us = host_us(lambda: time.sleep(0.002), calls=3, runs=2, warmup=1)
    assert 2000 <= us < 50_000  # at least the sleep; the bound only catches a unit error (ms vs us)


def test_host_us_takes_the_time_before_the_sync():
    synced = []

    def sync():
        synced.append(1)
        time.sleep(0.01)  # the device's work: not part of the host time

    us = host_us(lambda: None, calls=10, runs=3, sync=sync, warmup=0)
    assert len(synced) == 4  # after the warm-up, then after each run
    assert us < 1000


@pytest.mark.parametrize("calls,runs", [(0, 1), (1, 0)])
def test_host_us_refuses_no_calls(calls, runs):
    with pytest.raises(ValueError, match="calls, runs: expected positive integers"):
        host_us(lambda: None, calls=calls, runs=runs)
