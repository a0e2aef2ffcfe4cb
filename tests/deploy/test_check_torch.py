"""The build guard's decision (docker/image/check_torch.py), tested on the host."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_torch", ROOT / "docker" / "image" / "check_torch.py")
check_torch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_torch)
verdict = check_torch.verdict

BASE = dict(torch_version="2.8.0+rocm7.0.2", torch_hip="7.0.51831", nvidia_packages=[],
            fixture_declared=False, allow_fixture=False)


def test_rocm_torch_passes():
    ok, lines = verdict(**BASE)
    assert ok and "ROCm build" in lines[0]


def test_cpu_torch_on_a_real_base_fails_even_when_fixtures_are_allowed():
    ok, lines = verdict(**dict(BASE, torch_version="2.8.0+cpu", torch_hip=None, allow_fixture=True))
    assert not ok and "not a ROCm build" in lines[0]


def test_fixture_is_excused_only_when_declared_and_allowed_and_says_so():
    ok, lines = verdict(**dict(BASE, torch_version="2.13.0+cpu", torch_hip=None, fixture_declared=True,
                               allow_fixture=True))
    assert ok and lines[0].startswith("FIXTURE")
    ok, lines = verdict(**dict(BASE, torch_version="2.13.0+cpu", torch_hip=None, fixture_declared=True))
    assert not ok and "test fixture" in lines[0]


def test_nvidia_packages_fail_also_for_a_fixture():
    ok, lines = verdict(**dict(BASE, nvidia_packages=["nvidia-cublas-cu12==12.8"]))
    assert not ok and any("nvidia-cublas-cu12" in line for line in lines)
    ok, _ = verdict(**dict(BASE, torch_hip=None, fixture_declared=True, allow_fixture=True,
                           nvidia_packages=["nvidia-nccl-cu12==2"]))
    assert not ok


def test_changed_torch_family_or_replaced_torch_fails():
    pins = {"torch": "2.8.0+rocm7.0.2", "triton": "3.4.0"}
    ok, _ = verdict(**BASE, pinned=pins, installed=dict(pins))
    assert ok
    ok, lines = verdict(**BASE, pinned=pins, installed={"torch": "2.8.0", "triton": "3.4.0"})
    assert not ok and "torch 2.8.0+rocm7.0.2 -> 2.8.0" in " ".join(lines)
    ok, lines = verdict(**BASE, base_torch=("2.8.0", "/a/torch"), live_torch=("2.8.0", "/b/torch"))
    assert not ok and "replaced" in " ".join(lines)


def test_missing_torch_fails():
    ok, lines = verdict(**dict(BASE, torch_version=None))
    assert not ok and "cannot be imported" in lines[0]


def test_pins_file_roundtrip(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# comment\ntorch==2.8.0+rocm7.0.2\npytorch_triton_rocm==3.4.0\n")
    assert check_torch.read_pins(str(p)) == {"torch": "2.8.0+rocm7.0.2", "pytorch-triton-rocm": "3.4.0"}
