"""``explain``: the decision for a problem on this machine or a hypothetical one, from Python and
from ``rocm-fp8 explain`` (in-process: argument errors are checked by calling ``main(argv)``)."""

from __future__ import annotations

import json

import pytest

from rocm_fp8 import Toolchain, explain
from rocm_fp8.cli import main as cli_main
from rocm_fp8.explain import format_decision

HIP70 = "7.0.51831"   # hipcc --version of ROCm 7.0.0 / 7.0.2 (recorded)
HIP72 = "7.2.26015"   # hipcc --version of ROCm 7.2.0 (recorded)
FIXED_AITER = "d9e5ef7ce"  # the aiter commit reported to fix bpreshuffle under the ROCm 7.2 LLVM


def _explain_json(capsys, *args):
    rc = cli_main(["explain", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return rc, out


def _exit_code(argv) -> int:
    """main(argv)'s exit code, whether it returns one or argparse raises SystemExit."""
    try:
        return cli_main(argv)
    except SystemExit as exc:
        return exc.code


# -- from Python ---------------------------------------------------------------------------------------

def test_explain_without_a_gpu_names_the_reference_and_every_backend():
    d = explain(256, 256, 3, toolchain=Toolchain.hypothetical("cpu"))
    assert d.ok and d.backend == "reference" and d.requested == "auto"
    from rocm_fp8 import backend_names

    assert {c.backend for c in d.considered} == set(backend_names())
    assert all(c.reason for c in d.considered if not c.ok), "every refusal says why"
    data = d.to_dict()
    assert data["backend"] == "reference" and data["problem"]["m"] == 3 and data["problem"]["n"] == 256
    json.dumps(data)  # serialisable as it is


def test_explain_for_a_hypothetical_machine_cites_the_ledger():
    d = explain(2048, 3072, 4096, toolchain=Toolchain.hypothetical("gfx950", hip=HIP70),
                backend="aiter-bpreshuffle")
    assert not d.ok and d.failure == "unsafe" and d.evidence == "ledger:bpreshuffle-rocm70-miscompile"
    text = format_decision(d)
    assert "backend:  (none)" in text and "bpreshuffle-rocm70-miscompile" in text and "machine:  gfx950" in text


def test_explain_disabled_and_dtypes():
    tc = Toolchain.hypothetical("gfx950", hip=HIP72, aiter_commit=FIXED_AITER)
    d = explain(2048, 3072, 64, toolchain=tc, disabled=["aiter-bpreshuffle", "aiter-ck", "aiter-triton"])
    assert d.backend == "triton"
    d = explain(256, 256, 1, fp8_dtype="e4m3fnuz", out_dtype="float32", device_type="cpu")
    assert d.problem.out_dtype == "float32" and d.problem.fp8_dtype == "e4m3fnuz" and d.problem.device_type == "cpu"


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, r"n: expected a positive int, got 0"),
    ({"m": True}, r"m: expected a positive int, got True"),
    ({"k": 0}, r"k: expected a positive int, got 0"),
    ({"backend": "nope"}, r"backend: expected one of .* or 'auto', got 'nope'"),
    ({"fp8_dtype": "e5m2"}, r"fp8_dtype: expected 'e4m3fn' or 'e4m3fnuz', got 'e5m2'"),
    ({"out_dtype": "int8"}, r"out_dtype: expected 'bfloat16', 'float16' or 'float32', got 'int8'"),
])
def test_explain_argument_errors_name_the_argument(kwargs, message):
    args = {"n": 256, "k": 256, "m": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        explain(args.pop("n"), args.pop("k"), args.pop("m"), **args)


# -- from the command line -----------------------------------------------------------------------------

def test_cli_explain_json_for_hypothetical_machines(capsys):
    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP70, "--n", "2560", "--k", "4096", "--m", "4096")
    assert rc == 0
    assert out["backend"] == "aiter-triton"
    assert set(out) >= {"backend", "reason", "considered", "toolchain"}
    by = {c["backend"]: c for c in out["considered"]}
    assert by["aiter-bpreshuffle"]["ok"] is False and "bpreshuffle-rocm70-miscompile" in by["aiter-bpreshuffle"]["reason"]
    assert by["aiter-ck"]["ok"] is False and "safe up to M=2048" in by["aiter-ck"]["reason"]
    assert out["toolchain"]["arch"] == "gfx950" and out["toolchain"]["hip_version"] == HIP70

    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP72, "--aiter-commit", FIXED_AITER,
                            "--n", "2048", "--k", "3072", "--m", "4096")
    assert out["backend"] == "aiter-bpreshuffle"
    rc, out = _explain_json(capsys, "--arch", "gfx942", "--rocm", "7.0.2", "--n", "2048", "--k", "3072", "--m", "64")
    assert out["backend"] == "aiter-triton"
    rc, out = _explain_json(capsys, "--arch", "gfx950", "--hip", HIP72, "--no-aiter", "--n", "2048", "--k", "3072",
                            "--m", "64")
    assert out["backend"] == "triton"


def test_cli_explain_text_and_errors(capsys):
    assert cli_main(["explain", "--n", "256", "--k", "256", "--m", "3"]) == 0
    text = capsys.readouterr().out
    assert "backend:  reference" in text and "considered:" in text
    assert cli_main(["explain", "--hip", HIP70, "--n", "256", "--k", "256", "--m", "3"]) == 2
    assert "--arch: required" in capsys.readouterr().err
    # a partial last K group is part of the contract: explained, not refused
    assert cli_main(["explain", "--n", "256", "--k", "200", "--m", "3"]) == 0
    assert "backend:  reference" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["explain", "--n", "0", "--k", "256", "--m", "3"])


def test_cli_argument_errors_in_process(capsys):
    assert _exit_code(["explain", "--n", "0", "--k", "256", "--m", "3"]) == 2
    assert "--n" in capsys.readouterr().err
    assert _exit_code(["explain", "--n", "256", "--k", "256"]) == 2
    assert "--m" in capsys.readouterr().err
    assert _exit_code(["explain", "--arch", "gfx999x", "--n", "256", "--k", "256", "--m", "1"]) == 2
    assert "arch" in capsys.readouterr().err
