"""The known-issues ledger: the shipped entries, its matching rules, user ledgers, and how the
dispatcher's decisions (``rocm_fp8.explain``) follow it and cite it."""

from __future__ import annotations

import pytest

import rocm_fp8
from rocm_fp8 import ledger
from rocm_fp8.backends.base import Problem
from rocm_fp8.toolchain import Toolchain

GFX950_70 = Toolchain.hypothetical("gfx950", hip="7.0.51831", rocm="7.0.2")
GFX950_72 = Toolchain.hypothetical("gfx950", hip="7.2.26015", rocm="7.2.0")
GFX942_70 = Toolchain.hypothetical("gfx942", hip="7.0.51831")


@pytest.fixture(autouse=True)
def _fresh_ledger():
    ledger.reset()
    yield
    ledger.reset()


def verdict(backend, n, k, m, tc):
    return ledger.default_ledger().verdict(backend, Problem(m, n, k, tc.fp8_flavour), tc)


def test_shipped_ledger_has_the_three_known_defects():
    ids = {e.id for e in ledger.default_ledger().entries}
    assert ids == {"bpreshuffle-rocm70-miscompile", "ck-blockscale-rocm70-nan",
                   "bpreshuffle-rocm72-coerce-illegal-types"}
    for e in ledger.default_ledger().entries:
        assert e.sources and e.symptom in ledger.SYMPTOMS and e.arch == ("gfx950",)


def test_bpreshuffle_built_by_rocm70_hipcc_is_unsafe_at_every_m():
    for m in (1, 16, 17, 4096, 16384):
        v = verdict("aiter-bpreshuffle", 3072, 1536, m, GFX950_70)
        assert v is not None and not v.safe and v.max_safe_m is None
    assert v.source == "ledger:bpreshuffle-rocm70-miscompile"
    assert v.reason.startswith("aiter-bpreshuffle: built by hipcc 7.0.51831, which miscompiles this kernel on gfx950")
    assert "sglang #23671" in v.reason and "needs hipcc >= 7.2" in v.reason


@pytest.mark.parametrize("n, k, limit", [(2560, 4096, 2048), (4096, 1024, 4096), (4096, 2048, 2048), (4608, 4096, 512)])
def test_plain_ck_on_rocm70_has_the_listed_per_shape_limits(n, k, limit):
    ok = verdict("aiter-ck", n, k, limit, GFX950_70)
    bad = verdict("aiter-ck", n, k, limit + 1, GFX950_70)
    assert ok.safe and ok.max_safe_m == limit
    assert not bad.safe and bad.max_safe_m == limit and bad.source == "ledger:ck-blockscale-rocm70-nan"
    assert f"above M={limit}" in bad.reason and "sglang #29918" in bad.reason


def test_plain_ck_shape_verified_at_every_m_and_unlisted_shapes_are_conservative():
    v = verdict("aiter-ck", 5120, 4096, 1 << 20, GFX950_70)
    assert v.safe and v.max_safe_m is None
    unlisted = verdict("aiter-ck", 3072, 1536, 513, GFX950_70)
    assert not unlisted.safe and unlisted.max_safe_m == 512
    assert "unverified for this shape" in unlisted.reason and "rocm-fp8 probe --n 3072 --k 1536" in unlisted.reason
    assert verdict("aiter-ck", 3072, 1536, 512, GFX950_70).safe


def test_nothing_applies_on_rocm72_plain_ck_gfx942_or_other_backends():
    assert verdict("aiter-ck", 2560, 4096, 16384, GFX950_72) is None
    assert verdict("aiter-bpreshuffle", 2560, 4096, 16384, GFX942_70) is None
    assert verdict("aiter-triton", 2560, 4096, 16384, GFX950_70) is None
    assert verdict("triton", 2560, 4096, 16384, GFX950_70) is None


def test_unknown_hipcc_counts_as_matching_and_says_so():
    tc = Toolchain.hypothetical("gfx950")  # no HIP version known at all
    v = verdict("aiter-bpreshuffle", 3072, 1536, 16, tc)
    assert not v.safe and "hipcc version is unknown" in v.reason


def test_bpreshuffle_on_rocm72_follows_the_aiter_fix():
    # aiter commit unknown: treated as predating the fix, and the reason says how to lift it
    v = verdict("aiter-bpreshuffle", 3072, 1536, 16, GFX950_72)
    assert not v.safe and v.source == "ledger:bpreshuffle-rocm72-coerce-illegal-types"
    assert "aiter commit unknown; fix landed in d9e5ef7ce (2026-07-29)" in v.reason and "--aiter-commit" in v.reason
    # a commit known, but not known to contain the fix
    old = GFX950_72.with_(aiter_commit="0123456789ab", aiter_commit_date="2026-06-30")
    v = verdict("aiter-bpreshuffle", 3072, 1536, 16, old)
    assert not v.safe and "not known to include the fix" in v.reason
    # the fix commit itself, a later commit by date, or one git verified: no objection, but a note
    for tc, how in ((GFX950_72.with_(aiter_commit="d9e5ef7ce1"), "is the fix"),
                    (GFX950_72.with_(aiter_commit="fedcba987654", aiter_commit_date="2026-08-02"), "judged by date"),
                    (GFX950_72.with_(aiter_commit="fedcba987654", aiter_includes=("d9e5ef7ce",)), "git history")):
        v = verdict("aiter-bpreshuffle", 3072, 1536, 16384, tc)
        assert v.safe and v.max_safe_m is None, v
        assert how in v.reason and "fix unverified: probe recommended" in v.reason


def test_user_ledger_from_env_adds_and_replaces_entries(tmp_path, monkeypatch):
    user = tmp_path / "site.toml"
    user.write_text('''schema = 1
[[issue]]
id = "triton-hang-big-m"
backends = ["triton"]
arch = ["gfx942"]
hipcc = [">=7.0", "<7.1"]
symptom = "hang"
summary = "hangs on our MI300X nodes above M=1024"
sources = ["internal ticket 42"]
max_safe_m = 1024

[[issue]]
id = "ck-blockscale-rocm70-nan"
backends = ["aiter-ck"]
arch = ["gfx950"]
hipcc = [">=7.0", "<7.2"]
symptom = "nan"
sources = ["our own measurement"]
unlisted_max_safe_m = 2048
shapes = [{ n = 2560, k = 4096, max_safe_m = 2048 }]
''')
    monkeypatch.setenv(ledger.ENV_LEDGER, str(user))
    ledger.reset()
    v = verdict("triton", 4096, 4096, 2048, GFX942_70)
    assert not v.safe and v.max_safe_m == 1024 and v.source == "ledger:triton-hang-big-m" and "ticket 42" in v.reason
    assert verdict("triton", 4096, 4096, 1024, GFX942_70).safe
    # the user's entry replaced the shipped one of the same id
    assert verdict("aiter-ck", 3072, 1536, 2048, GFX950_70).safe


def test_add_ledger_file_api_and_malformed_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\n[[issue]]\nid = "x"\nbackends = ["aiter-ck"]\narch = ["gfx950"]\nsymptom = "slow"\n')
    with pytest.raises(ledger.LedgerError, match=r"issue x: 'symptom' expected one of wrong, nan, crash, hang"):
        ledger.add_ledger_file(bad)
    bad.write_text('schema = 1\n[[issue]]\nid = "x"\nbackends = ["aiter-ck"]\narch = ["gfx950"]\nsymptom = "nan"\n'
                   'hipcc = ["7.0"]\n')
    with pytest.raises(ledger.LedgerError, match=r"'hipcc' expected constraints such as '>=7.0'"):
        ledger.add_ledger_file(bad)
    good = tmp_path / "good.toml"
    good.write_text('schema = 1\n[[issue]]\nid = "ref-crash"\nbackends = ["reference"]\narch = ["cpu"]\n'
                    'symptom = "crash"\nsources = ["test"]\nmax_safe_m = 7\n')
    ledger.add_ledger_file(good)
    tc = Toolchain.hypothetical("cpu")
    assert not ledger.default_ledger().verdict("reference", Problem(8, 256, 256, device_type="cpu"), tc).safe


def test_an_unreadable_user_ledger_fails_closed(tmp_path, monkeypatch):
    broken = tmp_path / "broken.toml"
    broken.write_text("this is [not toml")
    monkeypatch.setenv(ledger.ENV_LEDGER, str(broken))
    ledger.reset()
    src = ledger.default_ledger()
    v = src.verdict("aiter-ck", Problem(16, 5120, 4096), GFX950_72)
    assert v is not None and not v.safe and "cannot be read" in v.reason and "not valid TOML" in v.reason
    assert src.verdict("triton", Problem(16, 5120, 4096), GFX950_72) is None


# -- the dispatcher follows the ledger and says so -----------------------------------------------------

def test_explain_routes_around_known_defects_and_cites_the_entry():
    d = rocm_fp8.explain(3072, 1536, 16, toolchain=GFX950_70)
    assert d.backend != "aiter-bpreshuffle"
    passed = {c.backend: c for c in d.considered}
    assert not passed["aiter-bpreshuffle"].ok and passed["aiter-bpreshuffle"].evidence == "ledger:bpreshuffle-rocm70-miscompile"
    assert "bpreshuffle-rocm70-miscompile" in d.reason

    small = rocm_fp8.explain(3072, 1536, 256, toolchain=GFX950_70, backend="aiter-ck")
    assert small.backend == "aiter-ck"
    big = rocm_fp8.explain(3072, 1536, 4096, toolchain=GFX950_70)
    assert big.backend not in ("aiter-ck", "aiter-bpreshuffle")
    assert "ck-blockscale-rocm70-nan" in big.reason

    fixed = GFX950_72.with_(aiter_commit="d9e5ef7ce1")
    assert rocm_fp8.explain(3072, 3072, 4096, toolchain=fixed).backend == "aiter-bpreshuffle"
    assert rocm_fp8.explain(3072, 3072, 4096, toolchain=GFX950_72).backend != "aiter-bpreshuffle"


def test_static_verdicts_summarise_per_shape():
    rows = ledger.static_verdicts(GFX950_70, ["aiter-ck", "aiter-bpreshuffle", "triton"],
                                  [(2560, 4096), (5120, 4096)], [1, 2048, 4096, 16384])
    by = {(r["backend"], r["n"]): r for r in rows}
    assert by[("aiter-ck", 2560)]["status"] == "limited" and by[("aiter-ck", 2560)]["max_safe_m"] == 2048
    assert by[("aiter-ck", 5120)]["status"] == "no-objection"
    assert by[("aiter-bpreshuffle", 2560)]["status"] == "unsafe"
    assert by[("triton", 2560)]["status"] == "no-known-issue"
