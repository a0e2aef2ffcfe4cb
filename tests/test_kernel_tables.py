"""Kernel tables: the family lookup, the one reader and the one (atomic) writer. CPU only.

Devices are described with ``Toolchain.hypothetical`` (a device name and an SM/CU count), so the
lookup is checked for GPUs this project does not have.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from rocm_fp8 import Toolchain, explain, kernel_configs
from rocm_fp8.cli import main as cli_main

H100 = "NVIDIA H100 80GB HBM3"
SHIPPED_H100 = kernel_configs.CONFIG_DIR / "nvidia_h100_80gb_hbm3.json"


@pytest.fixture(autouse=True)
def _tables(monkeypatch):
    for env in (kernel_configs.ENV_TABLES, kernel_configs.ENV_DIR):
        monkeypatch.delenv(env, raising=False)
    kernel_configs.clear_cache()
    yield
    kernel_configs.clear_cache()


def _row(m, bm=16, tt=None, st=None):
    r = {"m": m, "config": {"block_m": bm, "block_n": 64, "group_m": 1, "num_warps": 4, "num_stages": 4}}
    if tt is not None:
        r["triton_tflops"] = tt
    if st is not None:
        r["scaled_mm_tflops"] = st
    return r


def _table(folder, stem, device, arch, sm_count=None, shapes=None):
    data = {"device": device, "arch": arch, "shapes": shapes or {"2048,3072": [_row(16, 16, 50.0, 40.0)]}}
    if sm_count is not None:
        data["sm_count"] = sm_count
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data))
    return path


# -- the family lookup ------------------------------------------------------------------------------

def test_the_shipped_h100_table_records_where_it_was_measured():
    t = kernel_configs.read_table(SHIPPED_H100)
    assert (t.device, t.arch, t.sm_count) == (H100, "sm90", 132)
    assert t.measured_on() == "NVIDIA H100 80GB HBM3 (sm90, 132 SMs)"


def test_a_new_device_of_the_h100_family_gets_its_table():
    # the H800 (sm90, 132 SMs) has no table of its own
    h800 = Toolchain.hypothetical("sm90", device_name="NVIDIA H800", cu_count=132)
    m = kernel_configs.find_for(h800)
    assert m is not None and m.match == "family" and m.path == SHIPPED_H100
    own = kernel_configs.find_for(Toolchain.hypothetical("sm90", device_name=H100))
    assert own.match == "device" and own.path == SHIPPED_H100
    # what the dispatcher then does with it: our kernel at decode sizes, cited with the table's figure
    d = explain(2048, 3072, 16, toolchain=h800)
    assert d.backend == "triton"
    assert f"[table:{SHIPPED_H100}]" in d.reason and "measured 27.2 TFLOPS at M=16" in d.reason


def test_a_different_sm_count_is_another_family():
    pcie = Toolchain.hypothetical("sm90", device_name="NVIDIA H100 PCIe", cu_count=114)
    assert kernel_configs.find_for(pcie) is None
    d = explain(2048, 3072, 16, toolchain=pcie)
    assert d.backend == "torch-scaled-mm" and "default order" in d.reason


def test_amd_families_by_cu_count_then_the_arch_table(tmp_path, monkeypatch):
    _table(tmp_path, "amd_instinct_mi300x", "AMD Instinct MI300X", "gfx942", 304)
    _table(tmp_path, "amd_instinct_mi355x", "AMD Instinct MI355X", "gfx950", 256)
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(tmp_path))
    kernel_configs.clear_cache()
    mi325 = kernel_configs.find_table("AMD Instinct MI325X", "gfx942", 304)
    assert mi325.match == "family" and mi325.table.device == "AMD Instinct MI300X"
    assert "measured on AMD Instinct MI300X (gfx942, 304 CUs)" in mi325.describe()
    # a new gfx950 part with the MI355X's 256 CUs gets its table; one with another CU count the arch table
    assert kernel_configs.find_table("AMD Instinct MI350X", "gfx950", 256).table.device == "AMD Instinct MI355X"
    other = kernel_configs.find_table("AMD Instinct MI3xx", "gfx950", 224)
    assert other.match == "arch" and other.path == kernel_configs.CONFIG_DIR / "gfx950.json"
    # a 304-CU gfx942 device with its own table keeps it
    _table(tmp_path, "amd_instinct_mi325x", "AMD Instinct MI325X", "gfx942", 304)
    kernel_configs.clear_cache()
    assert kernel_configs.find_table("AMD Instinct MI325X", "gfx942", 304).match == "device"


def test_arch_tables_never_serve_as_family_tables(tmp_path, monkeypatch):
    # gfx942.json describes the arch (no sm_count); even one written with a CU count stays arch-level
    _table(tmp_path, "gfx942", "AMD Instinct MI300X", "gfx942", 304)
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(tmp_path))
    kernel_configs.clear_cache()
    assert kernel_configs.find_table("AMD Instinct MI325X", "gfx942", 304).match == "arch"


def test_a_table_without_sm_count_is_found_by_name_only(tmp_path, monkeypatch):
    # the format before sm_count existed (e.g. written by an older `rocm-fp8 tune`) still reads
    _table(tmp_path, "nvidia_h20_test", "NVIDIA H20 test", "sm90", None, {"2048,3072": [_row(16, 16, 60.0, 30.0)]})
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(tmp_path))
    kernel_configs.clear_cache()
    own = kernel_configs.find_table("NVIDIA H20 test", "sm90", 132)
    assert own.match == "device" and own.table.sm_count is None
    assert own.table.row(16, 2048, 3072).triton_tflops == 60.0
    # and another 132-SM device still gets the H100's table (which records its SM count)
    assert kernel_configs.find_table("NVIDIA H800", "sm90", 132).path == SHIPPED_H100


def test_env_folders_come_first_and_the_old_name_is_an_alias(tmp_path, monkeypatch):
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir(), old.mkdir()
    _table(new, "nvidia_h100_80gb_hbm3", H100, "sm90", 132, {"1,128": [_row(1)]})
    monkeypatch.setenv(kernel_configs.ENV_DIR, str(new))
    kernel_configs.clear_cache()
    assert kernel_configs.find_table(H100, "sm90", 132).path == new / "nvidia_h100_80gb_hbm3.json"
    _table(old, "nvidia_h100_80gb_hbm3", H100, "sm90", 132, {"1,256": [_row(1)]})
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(old))
    kernel_configs.clear_cache()
    assert kernel_configs.search_dirs()[:2] == [old, new]
    assert kernel_configs.find_table(H100, "sm90", 132).path == old / "nvidia_h100_80gb_hbm3.json"


# -- the reader and the writer ------------------------------------------------------------------------

def test_writer_and_reader_round_trip(tmp_path):
    path = tmp_path / "gpu_x.json"
    kernel_configs.write_table(path, "GPU X", "sm90", {"2048,3072": [_row(1, 16, 1.5), _row(4096, 128, 900.0, 950.0)]},
                               sm_count=132, versions={"torch": "2.11"})
    t = kernel_configs.read_table(path)
    assert (t.device, t.arch, t.sm_count, t.versions) == ("GPU X", "sm90", 132, {"torch": "2.11"})
    assert [r.m for r in t.shapes[(2048, 3072)]] == [1, 4096]
    assert t.row(17, 2048, 3072).scaled_mm_tflops == 950.0 and t.row(1, 2048, 3072).config["block_m"] == 16
    # merge by M keeps the other rows and the recorded device facts
    kernel_configs.write_table(path, "GPU X", "sm90", {"2048,3072": [_row(16, 32, 20.0)]})
    t = kernel_configs.read_table(path)
    assert [r.m for r in t.shapes[(2048, 3072)]] == [1, 16, 4096] and t.sm_count == 132
    assert not [p for p in tmp_path.iterdir() if p.name != "gpu_x.json"]  # no temporary file left


def test_the_writer_refuses_what_the_reader_would_refuse_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "gpu_x.json"
    kernel_configs.write_table(path, "GPU X", "sm90", {"2048,3072": [_row(1)]}, sm_count=132)
    before = path.read_text()
    with pytest.raises(ValueError, match="shape key: expected 'N,K', got '2048x3072'"):
        kernel_configs.write_table(path, "GPU X", "sm90", {"2048x3072": [_row(1)]})
    with pytest.raises(ValueError, match="sm_count: expected a positive integer, got 0"):
        kernel_configs.write_table(path, "GPU X", "sm90", {}, sm_count=0)
    assert path.read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "gpu_x.json"]


def test_reader_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json: expected a JSON kernel table, got invalid JSON"):
        kernel_configs.read_table(bad)
    bad.write_text(json.dumps({"device": "X", "arch": "sm90", "shapes": {"1,128": [{"config": {}}]}}))
    with pytest.raises(ValueError, match=r"broken.json: shape 1,128: expected rows with 'm' and 'config'"):
        kernel_configs.read_table(bad)


def test_a_broken_table_file_does_not_hide_the_others(tmp_path, monkeypatch):
    (tmp_path / "aaa.json").write_text("{not json")
    monkeypatch.setenv(kernel_configs.ENV_TABLES, str(tmp_path))
    kernel_configs.clear_cache()
    assert kernel_configs.find_table(H100, "sm90", 132).path == SHIPPED_H100


def test_readers_see_the_old_table_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "gpu_x.json"
    big = {f"{n},1024": [_row(m) for m in (1, 16, 64, 256, 1024)] for n in range(128, 128 * 200, 128)}
    kernel_configs.write_table(path, "GPU X", "sm90", big, sm_count=1)
    stop = threading.Event()
    errors = []

    def read_loop():
        while not stop.is_set():
            try:
                kernel_configs.read_table(path)
            except Exception as exc:  # noqa: BLE001 - a torn read is what this test looks for
                errors.append(exc)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(15):
            kernel_configs.write_table(path, "GPU X", "sm90", big, sm_count=i + 1, merge=False)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert kernel_configs.read_table(path).sm_count == 15


def test_tune_write_table_goes_through_the_one_writer(tmp_path):
    from rocm_fp8.tune.table import write_table

    path = tmp_path / "gpu_y.json"
    write_table(path, "GPU Y", "sm90", {"768,3072": [_row(1)]}, sm_count=132)
    data = json.loads(path.read_text())
    assert data["sm_count"] == 132 and data["versions"]["torch"]
    assert os.stat(path).st_mode & 0o777 == 0o644


# -- explain and info say which table, measured where ------------------------------------------------

def test_explain_names_the_table_and_the_device_it_was_measured_on(capsys):
    assert cli_main(["explain", "--arch", "sm90", "--device", "NVIDIA H800", "--n", "2048", "--k", "3072",
                     "--m", "16"]) == 0
    out = capsys.readouterr().out
    assert f"table:    {SHIPPED_H100} (its family's table: same arch and SM/CU count), measured on " \
           "NVIDIA H100 80GB HBM3 (sm90, 132 SMs)" in out
    assert cli_main(["explain", "--arch", "sm90", "--device", "NVIDIA H800", "--n", "2048", "--k", "3072",
                     "--m", "16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["table"]["match"] == "family" and data["table"]["device"] == H100 and data["table"]["sm_count"] == 132
    assert cli_main(["explain", "--arch", "sm90", "--device", "NVIDIA H100 PCIe", "--cu-count", "114", "--n", "2048",
                     "--k", "3072", "--m", "16"]) == 0
    assert "table:    none for NVIDIA H100 PCIe (sm90, 114 SMs)" in capsys.readouterr().out


def test_info_reports_the_table_and_the_speed_evidence(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel table: none (no GPU" in out and "speed evidence:" in out
    assert cli_main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["table"] is None and data["speed_evidence"] == []
