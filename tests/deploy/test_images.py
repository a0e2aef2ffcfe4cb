"""The images, built with the real Docker engine over the stand-in bases (see conftest.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from rocm_fp8_deploy import engine
from rocm_fp8_deploy.labels import PREFIX
from rocm_fp8_deploy.testing.standin import RECORDED_TOOLCHAINS

pytestmark = [pytest.mark.docker, pytest.mark.slow]  # builds images
ROOT = Path(__file__).resolve().parents[2]


def labels_of(client, tag):
    return engine.image_config(client, tag).labels


def run(client, tag, command, **kw):
    return engine.run_in_image(client, tag, command, timeout=300, **kw)


def test_build_streams_steps_and_prints_a_summary(built):
    out = built["output"]
    for rocm in ("7.0", "7.2"):
        assert f"[{rocm}-gfx950] ==> step 1/" in out
        assert f"[{rocm}-gfx950] tagged {built['tags'][rocm]}" in out
    summary = out[out.rindex("tag "):]
    assert built["tags"]["7.0"] in summary and built["tags"]["7.2"] in summary and " GB " in summary


@pytest.mark.parametrize("rocm", ["7.0", "7.2"])
def test_torch_guard_ran_at_every_stage_and_said_why_a_cpu_torch_was_accepted(docker_client, built, rocm):
    # Read from the image, not the build stream: a layer-cache replay prints nothing for a cached step.
    log = engine.read_file_from_image(docker_client, built["tags"][rocm], "/etc/rocm-fp8/torch-guard.log")
    stages = [line for line in log.splitlines() if line.startswith("rocm-fp8 torch guard")]
    assert stages == ["rocm-fp8 torch guard (base):", "rocm-fp8 torch guard (after aiter):",
                      "rocm-fp8 torch guard (after rocm_fp8):"], log
    assert log.count("=> PASS") == 3 and "FAIL" not in log, log
    assert "FIXTURE torch" in log and "ok   no nvidia-* packages installed" in log


@pytest.mark.parametrize("rocm", ["7.0", "7.2"])
def test_labels_describe_the_baked_toolchain(docker_client, built, rocm):
    import rocm_fp8

    labels = labels_of(docker_client, built["tags"][rocm])
    recorded = RECORDED_TOOLCHAINS[rocm]
    assert labels[PREFIX + "flavour"] == f"{rocm}-gfx950"
    assert labels[PREFIX + "rocm-version"] == recorded.rocm_full
    assert labels[PREFIX + "hipcc-version"] == recorded.hipconfig_version
    assert labels[PREFIX + "arch"] == "gfx950"
    assert labels[PREFIX + "aiter-version"] == "0.1.7.post2.dev18"
    assert labels[PREFIX + "version"] == rocm_fp8.__version__
    assert labels[PREFIX + "aiter-prebuilt"] == "0"          # tests build with --no-prebuild, recorded
    assert labels[PREFIX + "built-on-fixture"] == "recorded-toolchain"
    assert labels[PREFIX + "verdicts"] not in ("", "none")
    json.loads(labels[PREFIX + "verdicts-json"])


def _baked(client, tag):
    return json.loads(engine.read_file_from_image(client, tag, "/etc/rocm-fp8/config.json"))


def test_baked_configuration_differs_between_rocm_7_0_and_7_2_on_gfx950(docker_client, built):
    """The ledger blocks bpreshuffle for ROCm 7.0's hipcc; the 7.2 image must not carry that verdict."""
    configs = {rocm: _baked(docker_client, tag) for rocm, tag in built["tags"].items()}
    for rocm, config in configs.items():
        tc = config["toolchain"]
        assert tc["hip_version_str"] == RECORDED_TOOLCHAINS[rocm].hipconfig_version
        assert tc["arch"] == "gfx950"
    def bpreshuffle(config):
        return [v for v in config["static_verdicts"] if v["backend"] == "aiter-bpreshuffle"]

    assert bpreshuffle(configs["7.0"]) and bpreshuffle(configs["7.2"])
    # ROCm 7.0's hipcc: unsafe for every shape, because of the miscompile entry
    assert all(v["status"] == "unsafe" and "bpreshuffle-rocm70" in (v["source"] or "")
               for v in bpreshuffle(configs["7.0"]))
    # ROCm 7.2's hipcc: that entry does not apply (whatever else the ledger says about 7.2)
    assert not any("bpreshuffle-rocm70" in (v["source"] or "") or "bpreshuffle-rocm70" in v["reason"]
                   for v in bpreshuffle(configs["7.2"]))
    labels = {rocm: labels_of(docker_client, tag)[PREFIX + "verdicts"] for rocm, tag in built["tags"].items()}
    assert "bpreshuffle-rocm70" in labels["7.0"] and "bpreshuffle-rocm70" not in labels["7.2"]


def _explain_bpreshuffle(client, tag):
    result = run(client, tag, ["rocm-fp8", "explain", "--n", "3072", "--k", "1536", "--m", "4096", "--json"])
    assert result.ok, result.output
    decision = json.loads(result.output[result.output.index("{"):])
    return decision, next(c for c in decision["considered"] if c["backend"] == "aiter-bpreshuffle")


def test_explain_runs_as_non_root_and_reads_the_baked_configuration(docker_client, built):
    for rocm, tag in built["tags"].items():
        who = run(docker_client, tag, ["id", "-u", "-n"])
        assert who.ok and who.output.strip() == "rocm-fp8"
        decision, bpreshuffle = _explain_bpreshuffle(docker_client, tag)
        assert decision["toolchain"]["source"].startswith("config:/etc/rocm-fp8/config.json")
        assert decision["toolchain"]["hip_version_str"] == RECORDED_TOOLCHAINS[rocm].hipconfig_version
        assert decision["backend"] != "aiter-bpreshuffle" or rocm == "7.2"
        if rocm == "7.0":
            assert bpreshuffle["ok"] is False and "rocm70" in (bpreshuffle["evidence"] or "")
        else:
            assert "rocm70" not in (bpreshuffle["evidence"] or "")


def test_runtime_package_imports_without_the_deploy_side(docker_client, built):
    code = ("import sys, rocm_fp8; print(rocm_fp8.__version__); "
            "bad = [m for m in ('docker', 'invoke', 'rocm_fp8_deploy') if m in sys.modules]; "
            "assert not bad, bad; import importlib.util as u; "
            "assert u.find_spec('rocm_fp8_deploy') is None, 'deploy package shipped in the image'")
    for tag in built["tags"].values():
        result = run(docker_client, tag, ["python3", "-c", code])
        assert result.ok, result.output


def test_default_command_is_the_doctor_and_it_reports_the_missing_gpu(docker_client, built):
    result = engine.run_in_image(docker_client, built["tags"]["7.2"], None, timeout=300)
    assert result.exit_code == 1, result.output
    out = result.output
    assert "FAIL  /dev/kfd" in out and "--device /dev/kfd" in out
    assert "WARN  toolchain fixture" in out
    assert "OK    configuration vs toolchain" in out
    assert "AITER_JIT_DIR" in out and "writable" in out


def test_constraints_pin_the_torch_family_for_images_built_on_top(docker_client, built):
    result = run(docker_client, built["tags"]["7.2"], ["sh", "-c", 'cat "$PIP_CONSTRAINT"'])
    assert result.ok and "torch==2.13.0+cpu" in result.output and "triton==" in result.output


def test_guard_in_the_dockerfile_refuses_a_fixture_base_unless_allowed(docker_client, fixture_prefix,
                                                                      tmp_path):
    """The Dockerfile's own guard (not just the Python pre-check) stops a CPU torch."""
    from rocm_fp8_deploy.build import stream_build, write_context
    from rocm_fp8_deploy.errors import DeployError
    from rocm_fp8_deploy.flavours import flavour

    f = flavour("7.0", "gfx950")
    context = tmp_path / "context.tar"
    with context.open("wb") as fh:
        write_context(fh, source_dir=ROOT, wheelhouse=None)
    with context.open("rb") as fh, pytest.raises(DeployError) as err:
        stream_build(docker_client, "guard", lambda line: None, fileobj=fh, custom_context=True, pull=False,
                     buildargs={"BASE_IMAGE": f.base_for(fixture_prefix), "ALLOW_TOOLCHAIN_FIXTURE": "0",
                                "AITER_REQUIREMENT": f.aiter_requirement})
    assert "recorded-toolchain test fixture" in str(err.value) and "ALLOW_TOOLCHAIN_FIXTURE=1" in str(err.value)


def test_the_build_refuses_a_fixture_base_without_allow_fixture(docker_client, fixture_prefix):
    from rocm_fp8_deploy.build import BuildOptions, build
    from rocm_fp8_deploy.errors import DeployError
    from rocm_fp8_deploy.flavours import flavour

    with pytest.raises(DeployError, match="recorded-toolchain test fixture"):
        build([flavour("7.2", "gfx950")], BuildOptions(registry=fixture_prefix), client=docker_client)


def test_unpullable_base_is_refused_naming_it_and_the_registry_option(docker_client, run_id):
    from rocm_fp8_deploy.build import BuildOptions, build
    from rocm_fp8_deploy.errors import DeployError
    from rocm_fp8_deploy.flavours import flavour

    mirror = f"nowhere-{run_id}.rocm-fp8.invalid"
    with pytest.raises(DeployError) as err:
        build([flavour("7.0", "gfx942")], BuildOptions(registry=mirror), client=docker_client)
    message = str(err.value)
    assert f"{mirror}/rocm/pytorch:rocm7.0.2" in message
    assert "cannot be pulled" in message and "--registry" in message


def test_source_only_change_rebuilds_only_the_last_layers_quickly(docker_client, built, fixture_prefix,
                                                                  product_wheelhouse, tmp_path, run_id, timings):
    from rocm_fp8_deploy.build import BuildOptions, build
    from rocm_fp8_deploy.flavours import flavour

    source = tmp_path / "src-copy"
    source.mkdir()
    shutil.copytree(ROOT / "docker", source / "docker")
    shutil.copy(ROOT / "pyproject.toml", source / "pyproject.toml")
    if (ROOT / "README.md").exists():
        shutil.copy(ROOT / "README.md", source / "README.md")
    shutil.copytree(ROOT / "src" / "rocm_fp8", source / "src" / "rocm_fp8",
                    ignore=shutil.ignore_patterns("__pycache__"))
    marker = f"SOURCE_ONLY_CHANGE_{run_id}"
    with (source / "src" / "rocm_fp8" / "__init__.py").open("a") as fh:
        fh.write(f"\n# {marker}\n")
    lines: list[str] = []
    repository = built["repository"] + "-rebuild"
    options = BuildOptions(repository=repository, registry=fixture_prefix, wheelhouse=str(product_wheelhouse),
                           prebuild=False, allow_fixture=True, source_dir=str(source))
    started = time.time()
    try:
        [image] = build([flavour("7.2", "gfx950")], options, log=lines.append, client=docker_client)
        seconds = time.time() - started
        timings["source-only rebuild 7.2-gfx950"] = seconds
        print(f"\nsource-only rebuild of 7.2-gfx950: {seconds:.1f} s")
        out = "\n".join(lines)
        # everything up to and including the aiter layers came from the cache ...
        aiter_step = next(i for i, line in enumerate(lines) if "==> step" in line and "AITER_REQUIREMENT" in line)
        assert "Using cache" in lines[aiter_step + 1], lines[aiter_step:aiter_step + 3]
        # ... and the change is in the image
        result = run(docker_client, image.tag, ["sh", "-c",
                     "grep -c " + marker + " $(python3 -c 'import rocm_fp8,sys;print(rocm_fp8.__file__)')"])
        assert result.ok and result.output.strip() == "1", result.output
        assert seconds < 180, f"source-only rebuild took {seconds:.0f} s\n{out[-2000:]}"

        # a rebuild that moves the tag removes the image it replaced (no <none> left behind)
        with (source / "src" / "rocm_fp8" / "__init__.py").open("a") as fh:
            fh.write(f"\n# {marker}_AGAIN\n")
        lines.clear()
        [again] = build([flavour("7.2", "gfx950")], options, log=lines.append, client=docker_client)
        assert again.image_id != image.image_id
        short = image.image_id.split(":")[-1][:12]
        assert f"removed the image {image.tag} replaced ({short})" in lines, lines[-5:]
        assert image.image_id not in docker_client.api.images(quiet=True, all=True)
    finally:
        engine.remove_repository(docker_client, repository)


def test_example_serving_image_builds_from_ours(docker_client, built, tmp_path):
    """The serving example with sglang's real wheel: installed under the base's constraints, the torch
    guard passes, and `rocm-fp8 integrations` shows the plugin registered and active."""
    import subprocess
    import sys
    import tarfile

    from rocm_fp8_deploy.build import stream_build

    example = ROOT / "docker" / "examples" / "serving"
    # sglang's real wheel, offline (a CPU machine cannot run it, but the install under the base's
    # constraints, the torch guard and the plugin's registration are real)
    wheels = tmp_path / "wheels"
    dl = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "sglang==0.5.23",
                         "-d", str(wheels)], capture_output=True, text=True, timeout=600)
    assert dl.returncode == 0, dl.stderr[-2000:]
    context = tmp_path / "example.tar"
    with tarfile.open(context, "w") as tar:
        for path in example.iterdir():
            if path.name != "wheelhouse":
                tar.add(str(path), arcname=path.name)
        for whl in wheels.glob("*.whl"):
            tar.add(str(whl), arcname=f"wheelhouse/{whl.name}")
    tag = built["repository"] + ":example-serving"
    lines = []
    try:
        with context.open("rb") as fh:
            stream_build(docker_client, "example", lines.append, fileobj=fh, custom_context=True, pull=False,
                         tag=tag, buildargs={"BASE": built["tags"]["7.2"], "STACK": "sglang", "OFFLINE": "1",
                                             "ALLOW_TOOLCHAIN_FIXTURE": "1"})
        build_log = "\n".join(map(str, lines))
        assert "after sglang" in build_log, build_log[-3000:]
        result = run(docker_client, tag, None)
        assert result.ok, result.output
        assert "dispatch decisions" in result.output and "forward on cpu" in result.output
        assert "sglang 0.5.23" in result.output and "hook ACTIVE" in result.output, result.output
        off = run(docker_client, tag, ["rocm-fp8", "integrations", "--json"], environment={"ROCM_FP8_INTEGRATION": "0"})
        assert off.ok, off.output
        rows = {r["stack"]: r for r in json.loads(off.output[off.output.index("["):])}
        assert rows["sglang"]["version"] == "0.5.23" and rows["sglang"]["active"] is False
        assert rows["sglang"]["entry_point"] == "rocm_fp8 = rocm_fp8.integrations.sglang:register"
    finally:
        try:
            docker_client.api.remove_image(tag, force=True)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


def _invoke(*args, timeout=600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_invoke_doctor_and_probe_in_an_image(docker_client, built):
    proc = _invoke("doctor", "--image", built["tags"]["7.0"])
    assert proc.returncode == 1, proc.stdout + proc.stderr          # no GPU here: the doctor must fail
    assert "FAIL  /dev/kfd" in proc.stdout and "OK    configuration vs toolchain" in proc.stdout
    proc = _invoke("probe", "--image", built["tags"]["7.0"], "--args", "--static --n 3072 --k 1536")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bpreshuffle-rocm70" in proc.stdout


def test_invoke_probe_in_an_image_leaves_its_report_in_the_hosts_cache(docker_client, built, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, ROCM_FP8_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "invoke", "probe", "--image", built["tags"]["7.2"], "--args",
                           "--backend reference --n 256 --k 256 --m 1 17 --no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = list((tmp_path / "probe").glob("*.json"))
    assert len(reports) == 1, proc.stdout
    report = json.loads(reports[0].read_text())
    # written by the image's toolchain (its fingerprint names the file), measured in the container
    assert reports[0].stem == report["fingerprint"] and report["settings"]["device"] == "cpu"
    assert [r["max_safe_m"] for r in report["results"]] == [17]


def test_invoke_clean_removes_the_flavour_tags(docker_client, built):
    repository = built["repository"] + "-clean"
    docker_client.api.tag(built["tags"]["7.0"], repository, "7.0-gfx950")
    proc = _invoke("clean", "--rocm", "7.0", "--arch", "gfx950", "--repo", repository)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"removed {repository}:7.0-gfx950" in proc.stdout
    assert not engine.image_exists(docker_client, f"{repository}:7.0-gfx950")
    assert engine.image_exists(docker_client, built["tags"]["7.0"])  # untagged only, not the image


def test_run_in_image_streams_and_kills_a_container_past_its_timeout(docker_client, fixture_prefix):
    from rocm_fp8_deploy.testing.standin import fixture_tag

    seen: list[str] = []
    started = time.time()
    result = engine.run_in_image(docker_client, fixture_tag("7.0", fixture_prefix),
                                 ["sh", "-c", "echo first; echo second; sleep 60"], timeout=3, stream=seen.append)
    assert result.timed_out and not result.ok and time.time() - started < 30
    assert seen[:2] == ["first", "second"] and result.output.startswith("first\nsecond\n")
    # the recorded toolchain answers --version only, and says it is a fixture otherwise
    result = engine.run_in_image(docker_client, fixture_tag("7.0", fixture_prefix), ["hipcc", "-c", "x.cpp"],
                                 timeout=60)
    assert result.exit_code == 2 and "recorded toolchain fixture" in result.output
