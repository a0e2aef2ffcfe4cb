"""The tuner's table file and accuracy gate (CPU: no timing happens here)."""

import json

import pytest
import torch

from rocm_fp8.tune.operands import ACCURACY_SLACK, accuracy_floor, accurate_enough, rel_error
from rocm_fp8.tune.table import write_table


def test_rows_merge_by_m_and_other_shapes_survive(tmp_path):
    path = tmp_path / "gpu.json"
    row = lambda m, bm: {"m": m, "config": {"block_m": bm}, "triton_tflops": float(m)}  # noqa: E731
    write_table(path, "GPU X", "sm_90", {"2048,3072": [row(1, 16), row(16, 16), row(4096, 128)],
                                         "768,3072": [row(1, 16)]})
    write_table(path, "GPU X", "sm_90", {"2048,3072": [row(4096, 64), row(1024, 128)]})
    data = json.loads(path.read_text())
    rows = data["shapes"]["2048,3072"]
    assert [r["m"] for r in rows] == [1, 16, 1024, 4096]
    assert rows[-1]["config"] == {"block_m": 64}          # the new M=4096 row replaced the old one
    assert data["shapes"]["768,3072"] == [row(1, 16)]     # untouched shape kept
    # another device's table is not merged into
    write_table(path, "GPU Y", "sm_90", {"768,3072": [row(16, 32)]})
    data = json.loads(path.read_text())
    assert data["device"] == "GPU Y" and list(data["shapes"]) == ["768,3072"]


def test_accuracy_gate_is_relative_to_the_rounding_floor():
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(64, 96, generator=g) * 3
    floor = accuracy_floor(ref, torch.bfloat16)
    assert 1e-4 < floor < 5e-3                         # bf16 keeps 8 bits of mantissa
    assert accurate_enough(rel_error(ref.to(torch.bfloat16), ref), floor)
    noisy = ref + torch.randn(64, 96, generator=g) * ref.abs().mean() * (2 * ACCURACY_SLACK * floor)
    assert not accurate_enough(rel_error(noisy.to(torch.bfloat16), ref), floor)
    nan = ref.clone()
    nan[3, 7] = float("nan")
    assert rel_error(nan, ref) == float("inf") and not accurate_enough(rel_error(nan, ref), floor)
    assert not accurate_enough(float("nan"), floor)


@pytest.mark.parametrize("m", [1, 16, 256, 4096])
def test_candidates_are_valid_configs(m):
    from rocm_fp8.kernels.triton_blockscale import KernelConfig
    from rocm_fp8.tune.candidates import candidates

    for hopper in (True, False):
        cands = candidates(m, hopper=hopper)
        assert cands and len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)  # no duplicates
        for c in cands:
            KernelConfig.from_dict(c).validate()
            assert hopper or not c.get("tma")
