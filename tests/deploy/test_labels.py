"""Labels from a baked configuration (pure)."""

import json

from rocm_fp8_deploy.flavours import flavour
from rocm_fp8_deploy.labels import FIXTURE_VALUE, MAX_LABEL_CHARS, PREFIX, build_labels, summarise_verdicts

CONFIG = {
    "format": "rocm-fp8-config", "version": 1,
    "toolchain": {"arch": "gfx950", "rocm_version": "7.0.2", "hip_version_str": "7.0.51831-7c9236b16",
                  "torch_hip": None, "torch_version": "2.13.0+cpu", "aiter_version": "0.1.7.post2.dev18"},
    "static_verdicts": [
        {"backend": "aiter-bpreshuffle", "n": 3072, "k": 1536, "status": "unsafe", "max_safe_m": None,
         "source": "ledger:bpreshuffle-rocm70-miscompile"},
        {"backend": "aiter-ck", "n": 3072, "k": 1536, "status": "limited", "max_safe_m": 512,
         "source": "ledger:ck-blockscale-rocm70-nan"},
        {"backend": "aiter-ck", "n": 5120, "k": 4096, "status": "no-known-issue", "max_safe_m": None, "source": None},
        {"backend": "aiter-ck", "n": 4096, "k": 1024, "status": "limited", "max_safe_m": 4096,
         "source": "ledger:ck-blockscale-rocm70-nan"},
        {"backend": "aiter-triton", "n": 3072, "k": 1536, "status": "no-known-issue", "source": None},
    ],
}


def test_labels_carry_the_baked_facts():
    f = flavour("7.0", "gfx950")
    labels = build_labels(f, CONFIG, {"rocm_fp8_version": "0.1.0"}, base_image="m/rocm/pytorch:x",
                          prebuilt=False, fixture=True)
    assert all(isinstance(v, str) for v in labels.values())
    assert labels[PREFIX + "rocm-version"] == "7.0.2"
    assert labels[PREFIX + "hipcc-version"] == "7.0.51831-7c9236b16"
    assert labels[PREFIX + "arch"] == "gfx950"
    assert labels[PREFIX + "aiter-version"] == "0.1.7.post2.dev18"
    assert labels[PREFIX + "version"] == "0.1.0"
    assert labels[PREFIX + "aiter-prebuilt"] == "0"
    assert labels[PREFIX + "built-on-fixture"] == FIXTURE_VALUE
    assert labels[PREFIX + "base-image"] == "m/rocm/pytorch:x"
    assert labels[PREFIX + "verdicts"] == (
        "aiter-bpreshuffle=unsafe(bpreshuffle-rocm70-miscompile); "
        "aiter-ck=limited M<=512(ck-blockscale-rocm70-nan); aiter-triton=no-known-issue")
    agg = json.loads(labels[PREFIX + "verdicts-json"])
    assert agg["aiter-ck"] == {"status": "limited", "sources": ["ck-blockscale-rocm70-nan"], "max_safe_m": 512}
    assert PREFIX + "warning" not in labels


def test_missing_facts_read_unknown_and_an_arch_mismatch_is_flagged():
    f = flavour("7.2", "gfx942")
    labels = build_labels(f, {"toolchain": {"arch": "gfx950"}}, {}, base_image="b", prebuilt=True, fixture=False)
    assert labels[PREFIX + "hipcc-version"] == "unknown"
    assert labels[PREFIX + "verdicts"] == "none"
    assert PREFIX + "built-on-fixture" not in labels
    assert "gfx950" in labels[PREFIX + "warning"]


def test_verdict_summary_accepts_a_mapping_and_truncates_huge_json():
    assert summarise_verdicts({"verdicts": {"aiter-ck": "ok"}}) == "aiter-ck=ok"
    huge = {"toolchain": {}, "static_verdicts": [{"backend": f"b{i}", "status": "ok"} for i in range(1000)]}
    labels = build_labels(flavour("7.2", "gfx950"), huge, {}, base_image="b", prebuilt=True, fixture=False)
    assert len(labels[PREFIX + "verdicts-json"]) <= MAX_LABEL_CHARS
