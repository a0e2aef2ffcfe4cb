"""Image labels, computed from the configuration baked into the image (pure functions).

The values (hipcc version, verdicts, ...) are only known after `rocm-fp8 configure` ran inside the
build, so the build reads the baked file back and adds a thin labelling layer on top.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from rocm_fp8_deploy.flavours import Flavour

PREFIX = "rocm-fp8."
#: Set by the stand-in toolchain fixture images (tests); never on a real base.
FIXTURE_LABEL = "rocm-fp8.fixture"
FIXTURE_VALUE = "recorded-toolchain"
MAX_LABEL_CHARS = 4000


def _get(d: Any, *paths: str) -> Any:
    """The first present value among dotted ``paths`` in nested dicts."""
    for path in paths:
        node = d
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                node = None
                break
        if node not in (None, ""):
            return node
    return None


def _version_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ".".join(str(p) for p in value)
    return str(value)


#: worst first; statuses not listed rank after these
_STATUS_ORDER = ("unsafe", "blocked", "limited", "unverified", "ok", "no-known-issue")


def _verdict_list(config: dict) -> list:
    verdicts = _get(config, "static_verdicts", "verdicts", "probe.verdicts")
    if isinstance(verdicts, dict):
        verdicts = [dict(v, backend=k) if isinstance(v, dict) else {"backend": k, "status": v}
                    for k, v in verdicts.items()]
    return [v for v in (verdicts or []) if isinstance(v, dict)]


def aggregate_verdicts(config: dict) -> dict[str, dict]:
    """Per backend, over all shapes: the worst status, the evidence ids, the smallest safe M."""
    out: dict[str, dict] = {}
    for v in _verdict_list(config):
        name = v.get("backend") or v.get("kernel") or "?"
        status = str(v.get("status") or v.get("verdict") or ("ok" if v.get("ok") else "unknown"))
        entry = out.setdefault(name, {"status": status, "sources": [], "max_safe_m": None})
        rank = lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else len(_STATUS_ORDER)  # noqa: E731
        if rank(status) < rank(entry["status"]):
            entry["status"] = status
        source = v.get("source") or v.get("ledger_id")
        for src in (source if isinstance(source, (list, tuple)) else [source]):
            if src and str(src).split(":", 1)[-1] not in entry["sources"]:
                entry["sources"].append(str(src).split(":", 1)[-1])
        m = v.get("max_safe_m")
        if isinstance(m, int) and (entry["max_safe_m"] is None or m < entry["max_safe_m"]):
            entry["max_safe_m"] = m
    return dict(sorted(out.items()))


def summarise_verdicts(config: dict) -> str:
    """``"aiter-bpreshuffle=unsafe(bpreshuffle-rocm70-miscompile); aiter-ck=limited M<=512(...)"``."""
    agg = aggregate_verdicts(config)
    if not agg:
        return "none"
    items = []
    for name, e in agg.items():
        text = f"{name}={e['status']}"
        if e["status"] == "limited" and e["max_safe_m"] is not None:
            text += f" M<={e['max_safe_m']}"
        if e["sources"]:
            text += f"({','.join(e['sources'])})"
        items.append(text)
    return "; ".join(items)


def baked_facts(config: dict, runtime: dict) -> dict[str, Optional[str]]:
    """The facts the labels carry, from the baked config and what the image's Python reported."""
    tc = _get(config, "toolchain") or {}
    return {
        "rocm_version": _version_text(_get(tc, "rocm_version") or _get(config, "rocm_version")),
        "hipcc_version": _version_text(_get(tc, "hip_version_str", "hip_version") or _get(config, "hip_version")),
        "torch_hip": _version_text(_get(tc, "torch_hip") or runtime.get("torch_hip")),
        "arch": _version_text(_get(tc, "arch") or _get(config, "arch")),
        "aiter_version": _version_text(_get(tc, "aiter_version") or runtime.get("aiter_version")),
        "aiter_commit": _version_text(_get(tc, "aiter_commit")),
        "rocm_fp8_version": _version_text(runtime.get("rocm_fp8_version") or _get(config, "rocm_fp8_version", "version")),
        "torch_version": _version_text(_get(tc, "torch_version") or runtime.get("torch_version")),
    }


def build_labels(flavour: Flavour, config: dict, runtime: dict, *, base_image: str,
                 prebuilt: bool, fixture: bool, aiter_source: Optional[str] = None) -> dict[str, str]:
    """All labels of a built image.  Every value is a string; absent facts read "unknown"."""
    facts = baked_facts(config, runtime)
    verdicts_json = json.dumps(aggregate_verdicts(config), sort_keys=True, separators=(",", ":"))
    if len(verdicts_json) > MAX_LABEL_CHARS:
        verdicts_json = verdicts_json[:MAX_LABEL_CHARS - 20] + "...(truncated)"
    labels = {
        PREFIX + "flavour": flavour.name,
        PREFIX + "rocm": flavour.rocm,
        PREFIX + "rocm-version": facts["rocm_version"] or "unknown",
        PREFIX + "hipcc-version": facts["hipcc_version"] or "unknown",
        PREFIX + "torch-hip": facts["torch_hip"] or "none",
        PREFIX + "torch-version": facts["torch_version"] or "unknown",
        PREFIX + "arch": flavour.arch,
        PREFIX + "gpu-archs": flavour.gpu_archs,
        PREFIX + "aiter-version": facts["aiter_version"] or "unknown",
        PREFIX + "aiter-requirement": flavour.aiter_requirement,
        PREFIX + "aiter-prebuilt": "1" if prebuilt else "0",
        PREFIX + "aiter-prebuild-modules": " ".join(flavour.prebuild_modules) or "none",
        PREFIX + "version": facts["rocm_fp8_version"] or "unknown",
        PREFIX + "verdicts": summarise_verdicts(config),
        PREFIX + "verdicts-json": verdicts_json,
        PREFIX + "base-image": base_image,
        PREFIX + "config-path": "/etc/rocm-fp8/config.json",
        "org.opencontainers.image.title": f"rocm-fp8 {flavour.name}",
        "org.opencontainers.image.base.name": base_image,
        "org.opencontainers.image.version": facts["rocm_fp8_version"] or "unknown",
    }
    if facts["aiter_commit"]:
        labels[PREFIX + "aiter-commit"] = facts["aiter_commit"]
    if aiter_source:
        labels[PREFIX + "aiter-source"] = aiter_source
    if fixture:
        labels[PREFIX + "built-on-fixture"] = FIXTURE_VALUE
    if facts["arch"] and facts["arch"] != flavour.arch:
        # The configure step was told the arch; a mismatch means the Dockerfile and table disagree.
        labels[PREFIX + "warning"] = f"baked arch {facts['arch']} differs from the flavour's {flavour.arch}"
    return labels
