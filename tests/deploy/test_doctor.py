"""`rocm-fp8 doctor`: the verdicts over hand-written facts (pure), and the live run on this machine."""

import json
import os

from rocm_fp8.cli.doctor import FAIL, OK, WARN, Facts, Node, gather_facts, main, run_checks

TC = {"arch": "gfx950", "rocm_version": "7.2.4", "hip_version_str": "7.2.53211-97f5574fe2",
      "torch_version": "2.10.0+rocm7.2.4", "torch_hip": "7.2.53211", "aiter_version": "0.1.7.post2.dev18",
      "aiter_commit": None}


def healthy(**changes) -> Facts:
    f = Facts(kfd=Node("/dev/kfd", True, 44), render_nodes=[Node("/dev/dri/renderD128", True, 109)],
              process_groups=(44, 109), uid=1001, torch_version=TC["torch_version"], torch_hip=TC["torch_hip"],
              torch_arch_list=["gfx942", "gfx950"], gpu_count=8, gpu_arch_full="gfx950:sramecc+:xnack-",
              jit_dir="/opt/rocm-fp8/aiter-jit", jit_dir_exists=True, jit_dir_writable=True, jit_prebuilt="1\n",
              config_path="/etc/rocm-fp8/config.json", config={"toolchain": dict(TC)},
              live_toolchain=dict(TC))
    for k, v in changes.items():
        setattr(f, k, v)
    return f


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_container_passes_every_check():
    checks = run_checks(healthy())
    assert [c.status for c in checks] == [OK] * len(checks), checks
    assert {"/dev/kfd", "/dev/dri/renderD*", "torch", "torch arch list", "GPU arch", "AITER_JIT_DIR",
            "configuration", "configuration vs toolchain"} == set(by_name(checks))


def test_no_devices_no_gpu_says_what_is_missing_and_how_to_fix_it():
    c = by_name(run_checks(healthy(kfd=None, render_nodes=[], gpu_count=0, gpu_arch_full=None)))
    assert c["/dev/kfd"].status == FAIL and "--device /dev/kfd" in c["/dev/kfd"].fix
    assert c["/dev/dri/renderD*"].status == FAIL and "renderD" in c["/dev/dri/renderD*"].fix
    assert c["GPU"].status == FAIL and "gfx950" in c["GPU"].detail


def test_inaccessible_nodes_name_the_group_to_add():
    c = by_name(run_checks(healthy(kfd=Node("/dev/kfd", False, 44),
                                   render_nodes=[Node("/dev/dri/renderD128", False, 109)], process_groups=(1001,))))
    assert c["/dev/kfd"].status == FAIL and "--group-add 44" in c["/dev/kfd"].fix
    assert c["/dev/dri/renderD*"].status == FAIL and "--group-add 109" in c["/dev/dri/renderD*"].fix


def test_wrong_gpu_arch_points_at_the_right_flavour():
    c = by_name(run_checks(healthy(gpu_arch_full="gfx942:sramecc+:xnack-")))
    assert c["GPU arch"].status == FAIL and "gfx942" in c["GPU arch"].fix


def test_cpu_torch_and_torch_without_the_arch_fail():
    c = by_name(run_checks(healthy(torch_hip=None, torch_version="2.10.0+cu128")))
    assert c["torch"].status == FAIL and "not a ROCm build" in c["torch"].detail
    c = by_name(run_checks(healthy(torch_arch_list=["gfx90a", "gfx942"])))
    assert c["torch arch list"].status == FAIL


def test_jit_dir_problems():
    assert by_name(run_checks(healthy(jit_dir_writable=False)))["AITER_JIT_DIR"].status == FAIL
    assert by_name(run_checks(healthy(jit_dir_exists=False, jit_dir_writable=False)))["AITER_JIT_DIR"].status == FAIL
    assert by_name(run_checks(healthy(jit_dir=None)))["AITER_JIT_DIR"].status == WARN
    c = by_name(run_checks(healthy(jit_prebuilt="0\n")))["AITER_JIT_DIR"]
    assert c.status == WARN and "NOT prebuilt" in c.detail


def test_baked_configuration_against_the_live_toolchain():
    live = dict(TC, hip_version_str="7.2.26015-fc0010cf6a", rocm_version="7.2.0")
    c = by_name(run_checks(healthy(live_toolchain=live)))["configuration vs toolchain"]
    assert c.status == FAIL and "hip_version_str" in c.detail and "rocm-fp8 configure" in c.fix
    # tuples and strings of the same version are the same
    c = by_name(run_checks(healthy(live_toolchain=dict(TC, rocm_version=[7, 2, 4]))))["configuration vs toolchain"]
    assert c.status == OK
    c = by_name(run_checks(healthy(config=None, config_path=None, config_searched=("/etc/rocm-fp8/config.json",))))
    assert c["configuration"].status == WARN and "configuration vs toolchain" not in c
    c = by_name(run_checks(healthy(config=None, config_error="config /x: not valid JSON")))
    assert c["configuration"].status == FAIL


def test_fixture_images_say_so():
    c = by_name(run_checks(healthy(fixture="recorded-toolchain-7.2.4")))
    assert c["toolchain fixture"].status == WARN


def test_live_doctor_on_this_machine_reports_missing_devices(tmp_path, capsys):
    """This CI machine has no AMD GPU: the doctor must fail, saying so, not pass vacuously."""
    (tmp_path / "dri").mkdir()
    facts = gather_facts(dev=str(tmp_path))
    assert facts.kfd is None and facts.render_nodes == []
    assert main(["--json", "--dev", str(tmp_path)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert {c["name"] for c in out["checks"] if c["status"] == FAIL} >= {"/dev/kfd", "/dev/dri/renderD*", "GPU"}


def test_live_doctor_sees_present_nodes(tmp_path):
    (tmp_path / "dri").mkdir()
    for name in ("kfd", "dri/renderD128"):
        (tmp_path / name).write_text("")
        os.chmod(tmp_path / name, 0o600)
    facts = gather_facts(dev=str(tmp_path))
    assert facts.kfd is not None and facts.kfd.accessible
    assert [n.path for n in facts.render_nodes] == [str(tmp_path / "dri" / "renderD128")]


def test_a_cpu_only_bare_host_is_told_failing_gpu_checks_are_expected_and_gets_no_docker_fixes():
    c = by_name(run_checks(healthy(container="", kfd=None, render_nodes=[], gpu_count=0, gpu_arch_full=None)))
    env = c["environment"]
    assert env.status == WARN and "bare host" in env.detail and "expected on a CPU-only machine" in env.detail
    assert "docker run" not in env.fix and "invoke doctor --image" in env.fix
    for name in ("/dev/kfd", "/dev/dri/renderD*", "GPU"):
        assert c[name].status == FAIL
        assert "container" not in c[name].detail and "docker run" not in c[name].fix, c[name]
        assert "amdgpu driver" in c[name].fix


def test_a_container_without_devices_says_both_what_to_pass_and_that_cpu_only_is_expected():
    c = by_name(run_checks(healthy(container="/.dockerenv", kfd=None, render_nodes=[], gpu_count=0,
                                   gpu_arch_full=None)))
    assert c["environment"].status == WARN and "a container (/.dockerenv)" in c["environment"].detail
    assert "--device /dev/kfd" in c["environment"].fix and "CPU-only" in c["environment"].fix
    assert "the container was started without" in c["/dev/kfd"].detail and "docker run" in c["/dev/kfd"].fix


def test_a_host_with_a_gpu_but_without_group_access_is_told_to_join_the_groups():
    c = by_name(run_checks(healthy(container="", kfd=Node("/dev/kfd", False, 44),
                                   render_nodes=[Node("/dev/dri/renderD128", False, 109)], process_groups=(1001,))))
    assert c["environment"].status == OK and "bare host" in c["environment"].detail
    assert "usermod -aG video,render" in c["/dev/kfd"].fix and "--group-add" not in c["/dev/kfd"].fix
    assert "usermod -aG video,render" in c["/dev/dri/renderD*"].fix
    assert by_name(run_checks(healthy(container="/run/.containerenv")))["environment"].status == OK


def test_container_detection_reads_the_markers(tmp_path, monkeypatch):
    from rocm_fp8.cli.doctor import detect_container

    monkeypatch.delenv("container", raising=False)
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "cgroup").write_text("0::/init.scope\n")
    assert detect_container(str(tmp_path)) == ""                      # a bare host (cgroup v2, no markers)
    (tmp_path / "proc" / "1" / "cgroup").write_text("12:memory:/kubepods/burstable/pod1/abc\n")
    assert detect_container(str(tmp_path)) == "/proc/1/cgroup names kubepods"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    assert detect_container(str(tmp_path)) == "/run/.containerenv"
    (tmp_path / ".dockerenv").write_text("")
    assert detect_container(str(tmp_path)) == "/.dockerenv"
    (tmp_path / ".dockerenv").unlink()
    (tmp_path / "run" / ".containerenv").unlink()
    (tmp_path / "proc" / "1" / "cgroup").write_text("0::/\n")
    monkeypatch.setenv("container", "podman")
    assert detect_container(str(tmp_path)) == "$container=podman"
