"""Deliberately faulty backends, registered through the public API, for the probe tests.

Each computes the right answer with plain torch (dequantize + matmul) and then misbehaves in one
way the probe must catch. They live in an importable module (not a test file) so that the probe's
worker processes can re-create them, exactly as they would a third party's backend.

    wrong-above-m   correct up to M=WRONG_ABOVE_M, then a few rows are silently off (sparse bad rows)
    nan-above-m     correct up to M=NAN_ABOVE_M, then NaN in one row
    aborts          correct up to M=ABORT_ABOVE_M, then os.abort() (SIGABRT, like a failed assert in C++)
    hangs           correct up to M=HANG_ABOVE_M, then never returns

Their priority is above every built-in, so that when the evidence allows, dispatch picks them.
"""

from __future__ import annotations

import os
import time

import torch

import rocm_fp8
from rocm_fp8.backends import OK, Backend
from rocm_fp8.quant import dequantize_activation, dequantize_weight

WRONG_ABOVE_M = 64
NAN_ABOVE_M = 32
ABORT_ABOVE_M = 16
HANG_ABOVE_M = 16


def _correct(x_q, x_scale, prepared, out_dtype):
    x = dequantize_activation(x_q, x_scale, 128)
    w = dequantize_weight(prepared.weight, prepared.weight_scale, (128, 128))
    return (x @ w.t()).to(out_dtype)


class _Faulty(Backend):
    priority = 99
    limit = 0

    def available(self, toolchain):
        return OK

    def supports(self, problem, toolchain):
        return OK


class WrongAboveM(_Faulty):
    name = "wrong-above-m"
    description = "test helper: sparse wrong rows above M=64"
    limit = WRONG_ABOVE_M

    def run(self, x_q, x_scale, prepared, out_dtype):
        y = _correct(x_q, x_scale, prepared, out_dtype)
        m = y.shape[0]
        if m > self.limit:
            # a few rows near the 16-row tile boundaries come out scaled: small globally, wrong per row
            rows = torch.arange(15, m, 16)[:4]
            y[rows] = y[rows] * 1.5
        return y


class NanAboveM(_Faulty):
    name = "nan-above-m"
    description = "test helper: NaN in one row above M=32"
    limit = NAN_ABOVE_M

    def run(self, x_q, x_scale, prepared, out_dtype):
        y = _correct(x_q, x_scale, prepared, out_dtype)
        if y.shape[0] > self.limit:
            y[-1, 0] = float("nan")
        return y


class Aborts(_Faulty):
    name = "aborts"
    description = "test helper: os.abort() above M=16"
    limit = ABORT_ABOVE_M

    def run(self, x_q, x_scale, prepared, out_dtype):
        if x_q.shape[0] > self.limit:
            os.abort()
        return _correct(x_q, x_scale, prepared, out_dtype)


class Hangs(_Faulty):
    name = "hangs"
    description = "test helper: never returns above M=16"
    limit = HANG_ABOVE_M

    def run(self, x_q, x_scale, prepared, out_dtype):
        if x_q.shape[0] > self.limit:
            while True:
                time.sleep(1)
        return _correct(x_q, x_scale, prepared, out_dtype)


ALL = (WrongAboveM, NanAboveM, Aborts, Hangs)
NAMES = tuple(cls.name for cls in ALL)


def register_all() -> list[str]:
    """Register every faulty backend (replacing earlier registrations); returns their names."""
    for cls in ALL:
        rocm_fp8.register_backend(cls(), replace=True)
    return list(NAMES)


def unregister_all() -> None:
    from rocm_fp8.backends import backend_names

    for name in NAMES:
        if name in backend_names():
            rocm_fp8.unregister_backend(name)
