"""The flavour table, tags and --registry rewriting (pure: no Docker needed)."""

import pytest

from rocm_fp8_deploy.errors import DeployError
from rocm_fp8_deploy.flavours import (AITER_REQUIREMENT, CK_BLOCKSCALE, CK_BLOCKSCALE_BPRESHUFFLE, KNOWN_ARCHS,
                                      ROCM_RELEASES, flavour, normalise_mirror, rewrite_registry,
                                      select_flavours, split_registry, split_tag)


def test_table_covers_both_releases_and_archs_with_pinned_bases():
    for rocm in ("7.0", "7.2"):
        for arch in ("gfx942", "gfx950"):
            f = flavour(rocm, arch)
            assert f.base_image.startswith("rocm/pytorch:rocm" + f.rocm_full)
            assert ":latest" not in f.base_image and f.base_image.count(":") == 1
            assert f.gpu_archs == arch
            assert f.aiter_requirement == AITER_REQUIREMENT and "==" in AITER_REQUIREMENT
            assert f.tag() == f"rocm-fp8:{rocm}-{arch}"


def test_prebuild_modules_follow_the_known_defects():
    # gfx942 runs aiter's Triton kernel: nothing to compile.
    assert flavour("7.0", "gfx942").prebuild_modules == ()
    assert flavour("7.2", "gfx942").prebuild_modules == ()
    # ROCm 7.0's hipcc miscompiles bpreshuffle on gfx950: never built there.
    assert flavour("7.0", "gfx950").prebuild_modules == (CK_BLOCKSCALE,)
    assert set(flavour("7.2", "gfx950").prebuild_modules) == {CK_BLOCKSCALE, CK_BLOCKSCALE_BPRESHUFFLE}


def test_prebuilt_modules_cover_what_the_dispatcher_selects():
    """Every aiter CK kernel the dispatcher picks for a flavour's toolchain is prebuilt in that image."""
    explain = pytest.importorskip("rocm_fp8.explain").explain
    from rocm_fp8.toolchain import Toolchain

    from rocm_fp8_deploy.testing.standin import RECORDED_TOOLCHAINS

    module_of = {"aiter-ck": CK_BLOCKSCALE, "aiter-bpreshuffle": CK_BLOCKSCALE_BPRESHUFFLE}
    shapes = [(3072, 1536), (2048, 3072), (768, 3072), (4096, 7168), (2560, 4096), (4608, 4096), (2112, 7168)]
    for rocm, recorded in RECORDED_TOOLCHAINS.items():
        for arch in KNOWN_ARCHS:
            f = flavour(rocm, arch)
            tc = Toolchain.hypothetical(arch=arch, hip=recorded.hipconfig_version.split("-")[0],
                                        rocm=recorded.rocm_full, aiter=True)
            chosen = {explain(n, k, m, toolchain=tc).backend for n, k in shapes for m in (1, 100, 4096, 16384)}
            needed = {module_of[b] for b in chosen if b in module_of}
            assert needed <= set(f.prebuild_modules), (f.name, chosen)


def test_unknown_rocm_and_arch_are_refused_listing_the_known_ones():
    with pytest.raises(DeployError, match=r"unknown ROCm version '6.4'; known: 7.0, 7.2"):
        flavour("6.4", "gfx950")
    with pytest.raises(DeployError, match=r"unknown GPU arch 'gfx90a'; known: gfx942, gfx950"):
        flavour("7.0", "gfx90a")
    # validated up front: the bad value is found before anything is built
    with pytest.raises(DeployError, match="gfx1100"):
        select_flavours(["7.0", "7.2"], ["gfx950", "gfx1100"])


def test_select_is_the_ordered_product_without_duplicates():
    got = [f.name for f in select_flavours(["7.2", "7.0", "7.2"], ["gfx950"])]
    assert got == ["7.2-gfx950", "7.0-gfx950"]
    assert len(select_flavours(None, None)) == len(ROCM_RELEASES) * len(KNOWN_ARCHS)


@pytest.mark.parametrize("ref, mirror, want", [
    ("rocm/pytorch:rocm7.0.2_x", "mirror.example.com:5000", "mirror.example.com:5000/rocm/pytorch:rocm7.0.2_x"),
    ("rocm/pytorch:t", "mirror.example.com/dockerhub/", "mirror.example.com/dockerhub/rocm/pytorch:t"),
    ("docker.io/rocm/pytorch:t", "m.local", "m.local/rocm/pytorch:t"),
    ("quay.io/org/img@sha256:abc", "m.local", "m.local/org/img@sha256:abc"),
    ("ubuntu:24.04", "m.local", "m.local/library/ubuntu:24.04"),
    ("localhost:5000/rocm/pytorch:t", "m.local", "m.local/rocm/pytorch:t"),
])
def test_registry_rewriting(ref, mirror, want):
    assert rewrite_registry(ref, mirror) == want


def test_flavour_base_for_registry():
    f = flavour("7.2", "gfx950")
    assert f.base_for(None) == f.base_image
    assert f.base_for("fixture.invalid") == "fixture.invalid/" + f.base_image


@pytest.mark.parametrize("bad", ["https://mirror.example.com", "", "  ", "/abs/path", "a b"])
def test_bad_mirrors_are_refused(bad):
    with pytest.raises(DeployError, match="registry"):
        normalise_mirror(bad)


def test_split_helpers():
    assert split_registry("rocm/pytorch:x") == (None, "rocm/pytorch:x")
    assert split_registry("host:5000/a/b:c") == ("host:5000", "a/b:c")
    assert split_tag("host:5000/a/b:c") == ("host:5000/a/b", "c")
    assert split_tag("host:5000/a/b") == ("host:5000/a/b", "latest")
    assert split_tag("a/b@sha256:00") == ("a/b", "@sha256:00")
