"""`invoke build --aiter SPEC`: where the image's aiter comes from, and the commit it records.

The unit tests resolve specs on this machine (git for real). The image test builds one flavour over
the stand-in base with aiter from a local source tree: a tiny STAND-IN for aiter's source (a package
named amd-aiter with one module, in a git repository with one commit), not aiter itself. It checks that
the labels and `rocm-fp8 explain` inside the image name that commit (dated 2026-06-01, before the
fix), and that the ledger's
bpreshuffle-on-ROCm-7.2 verdict stays conservative for a commit not known to contain the fix.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import AITER_REQUIREMENT, parse_aiter_spec

ROOT = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_AUTHOR_DATE": "2026-06-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-06-01T00:00:00Z", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def standin_aiter_tree(root: Path, commits: int = 1) -> tuple[Path, list[str]]:
    """A stand-in for aiter's source tree: installable as amd-aiter, in git. Returns (tree, commits)."""
    tree = root / "aiter-standin-src"
    (tree / "aiter").mkdir(parents=True)
    (tree / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "amd-aiter"\nversion = "0.0.0+standin"\n'
        'description = "rocm-fp8 test stand-in for aiter source (not aiter)"\n\n'
        '[tool.setuptools]\npackages = ["aiter"]\n')
    (tree / "aiter" / "__init__.py").write_text('"""rocm-fp8 test stand-in: not aiter."""\n')
    _git(tree, "init", "-q")
    shas = []
    for i in range(commits):
        (tree / "CHANGES").write_text(f"change {i}\n")
        _git(tree, "add", "-A")
        _git(tree, "commit", "-q", "-m", f"stand-in commit {i}")
        shas.append(_git(tree, "rev-parse", "HEAD"))
    return tree, shas


# ------------------------------------------------------------------------------------------------
# Resolving specs (no Docker)
# ------------------------------------------------------------------------------------------------


def test_default_is_the_pypi_pin():
    src = parse_aiter_spec(None)
    assert (src.kind, src.requirement, src.commit) == ("pypi", AITER_REQUIREMENT, None)
    assert "PyPI" in src.describe()


def test_git_url_needs_a_commit():
    sha = "d9e5ef7ce0123456789abcdef0123456789abcde"
    src = parse_aiter_spec(f"git+https://github.com/ROCm/aiter@{sha}", ("d9e5ef7ce",))
    assert src.kind == "git" and src.commit == sha and src.requirement.startswith("amd-aiter @ git+")
    assert src.includes == ("d9e5ef7ce",)  # the fix commit itself
    with pytest.raises(DeployError, match="--aiter .*expected a git URL at a commit.*got 'main'"):
        parse_aiter_spec("git+https://github.com/ROCm/aiter@main")
    with pytest.raises(DeployError, match="--aiter .*expected a git URL at a commit"):
        parse_aiter_spec("git+https://github.com/ROCm/aiter")


def test_other_requirement_wheel_and_bad_paths(tmp_path):
    src = parse_aiter_spec("amd-aiter==0.1.6")
    assert (src.kind, src.requirement, src.commit) == ("requirement", "amd-aiter==0.1.6", None)
    wheel = tmp_path / "amd_aiter-0.1.8.dev3+g1a2b3c4d-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    src = parse_aiter_spec(str(wheel))
    assert src.kind == "wheel" and src.commit == "1a2b3c4d" and src.requirement.endswith(wheel.name)
    with pytest.raises(DeployError, match="--aiter .*expected a wheel file"):
        parse_aiter_spec(str(tmp_path / "missing.whl"))
    with pytest.raises(DeployError, match="--aiter .*expected an aiter source tree"):
        parse_aiter_spec(str(tmp_path))
    with pytest.raises(DeployError, match="--aiter .*no such file or directory"):
        parse_aiter_spec(str(tmp_path / "nope"))


def test_source_tree_records_head_date_and_which_fix_commits_it_contains(tmp_path):
    tree, shas = standin_aiter_tree(tmp_path, commits=2)
    # the first commit stands for a fix: the tree's HEAD contains it; an unrelated one it does not
    src = parse_aiter_spec(str(tree), (shas[0][:9], "0123456789"))
    assert src.kind == "source" and src.commit == shas[1] and src.commit_date == "2026-06-01"
    assert src.includes == (shas[0][:9],)
    assert "source tree" in src.describe() and shas[1][:12] in src.describe()


def test_build_context_carries_the_tree_without_git(tmp_path):
    from rocm_fp8_deploy.build import write_context

    tree, _ = standin_aiter_tree(tmp_path)
    buf = io.BytesIO()
    write_context(buf, source_dir=ROOT, wheelhouse=None, aiter=parse_aiter_spec(str(tree)))
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert "aiter/src/pyproject.toml" in names and "aiter/src/aiter/__init__.py" in names
    assert not any("/.git/" in n for n in names)


def test_recorded_fix_commits_lift_the_ledger_and_unknown_ones_do_not(monkeypatch, tmp_path):
    """What the image's ENV says (ROCM_FP8_AITER_COMMIT/_INCLUDES) is what the ledger judges."""
    from rocm_fp8.backends.base import Problem
    from rocm_fp8.ledger import default_ledger
    from rocm_fp8.toolchain import Toolchain

    tc = Toolchain.hypothetical("gfx950", hip="7.2.26015", aiter_commit="abcdef1234567")
    problem = Problem(m=4096, n=3072, k=1536)
    before = default_ledger().verdict("aiter-bpreshuffle", problem, tc)
    assert not before.safe and "abcdef123456" in before.reason and "not known to include" in before.reason
    # an installed stand-in aiter (package + metadata on sys.path), and the ENV an image build sets
    site = tmp_path / "site"
    (site / "aiter").mkdir(parents=True)
    (site / "aiter" / "__init__.py").write_text("")
    (site / "amd_aiter-0.0.0.dist-info").mkdir()
    (site / "amd_aiter-0.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: amd-aiter\nVersion: 0.0.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ROCM_FP8_AITER_COMMIT", "abcdef1234567")
    monkeypatch.setenv("ROCM_FP8_AITER_INCLUDES", "d9e5ef7ce")
    from rocm_fp8.toolchain.detection import _detect_aiter

    facts = _detect_aiter({"_hipconfig": "/opt/rocm/bin/hipconfig", "_hipcc": "/opt/rocm/bin/hipcc"})
    assert facts["aiter_installed"] and facts["aiter_version"] == "0.0.0"
    assert facts["aiter_commit"] == "abcdef1234567" and tuple(facts["aiter_includes"]) == ("d9e5ef7ce",)
    lifted = tc.__class__(**{**tc.__dict__, "aiter_includes": ("d9e5ef7ce",)})
    after = default_ledger().verdict("aiter-bpreshuffle", problem, lifted)
    assert after is None or after.safe, after


# ------------------------------------------------------------------------------------------------
# The image (real Docker, stand-in base)
# ------------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_image_built_from_a_local_aiter_source_records_its_commit(docker_client, fixture_prefix, product_wheelhouse,
                                                                  run_id, tmp_path, timings):
    from rocm_fp8_deploy import engine
    from rocm_fp8_deploy.labels import PREFIX

    tree, [sha] = standin_aiter_tree(tmp_path)
    repository = f"rocm-fp8-test-aiter-{run_id}"
    cmd = [sys.executable, "-m", "invoke", "build", "--rocm", "7.2", "--arch", "gfx950", "--registry", fixture_prefix,
           "--wheelhouse", str(product_wheelhouse), "--repo", repository, "--allow-fixture", "--no-prebuild",
           "--aiter", str(tree)]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    timings["invoke build --aiter SOURCE 7.2-gfx950"] = time.time() - started
    try:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert f"aiter: source tree {tree} at {sha[:12]}" in proc.stdout
        tag = f"{repository}:7.2-gfx950"
        labels = docker_client.api.inspect_image(tag)["Config"]["Labels"]
        assert labels[PREFIX + "aiter-commit"] == sha
        assert labels[PREFIX + "aiter-version"] == "0.0.0+standin"
        assert labels[PREFIX + "aiter-source"].startswith("source tree ") and sha[:12] in labels[PREFIX + "aiter-source"]
        result = engine.run_in_image(docker_client, tag, ["rocm-fp8", "explain", "--n", "3072", "--k", "1536",
                                                          "--m", "4096", "--json"], timeout=300)
        assert result.ok, result.output
        decision = json.loads(result.output[result.output.index("{"):])
        assert decision["toolchain"]["aiter_commit"] == sha
        bpre = next(c for c in decision["considered"] if c["backend"] == "aiter-bpreshuffle")
        text = json.dumps(bpre)
        # a commit not known to contain d9e5ef7ce (and dated before it: the ledger also takes a commit
        # dated after a fix as a sign of it): the ROCm 7.2 verdict stays conservative and says why
        assert bpre["ok"] is False and sha[:12] in text and "not known to include the fix" in text, text
        print(f"\n[aiter stand-in] labels: aiter-commit={labels[PREFIX + 'aiter-commit']} "
              f"aiter-source={labels[PREFIX + 'aiter-source']!r}\n[aiter stand-in] explain: {bpre.get('reason')}")
    finally:
        engine.remove_repository(docker_client, repository)
