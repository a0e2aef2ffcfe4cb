"""The matrix report: Markdown, one self-contained HTML page, and JSON, from a MatrixResult.

    DIR/report.md     the flavour x suite table, failures with log tails, per-flavour facts
    DIR/report.html   the same, styled, with no external resource (opens from a CI artifact)
    DIR/report.json   everything, for machines
    DIR/cells/<flavour>__<suite>/{log.txt,junit.xml,preflight.json}   linked from both pages

Pure functions of the result dict (no Docker), so they are tested on made-up results too.
"""

from __future__ import annotations

import html
import json
import time
from collections import defaultdict
from pathlib import Path

MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def _data(result) -> dict:
    return result if isinstance(result, dict) else result.to_dict()


def _grid(data: dict) -> tuple[list[str], list[str], dict]:
    flavours = list(dict.fromkeys(c["flavour"] for c in data["cells"]))
    suites = list(dict.fromkeys(c["suite"] for c in data["cells"]))
    by = {(c["flavour"], c["suite"]): c for c in data["cells"]}
    return flavours, suites, by


def cell_summary(c: dict) -> str:
    if c["status"] == "skipped":
        return f"SKIP ({c['reason']})"
    counts = f"{c['passed']} passed, {c['failed'] + c['errors']} failed, {c['skipped']} skipped"
    return f"{MARK[c['status']]} {counts}, {c['seconds']:.0f} s"


def headline(data: dict) -> str:
    cells = data["cells"]
    failed = sum(c["status"] == "failed" for c in cells)
    skipped = sum(c["status"] == "skipped" for c in cells)
    passed = len(cells) - failed - skipped
    verdict = "FAILED" if failed else "PASSED"
    return (f"{verdict}: {passed} passed, {failed} failed, {skipped} skipped of {len(cells)} cells "
            f"in {data['seconds']:.0f} s")


def verdict_rows(config: dict | None) -> list[dict]:
    """The baked per-backend verdicts, grouped: one row per (backend, verdict) with its shapes."""
    if not config:
        return []
    groups: dict = defaultdict(list)
    reasons: dict = {}
    for v in config.get("static_verdicts") or []:
        key = (v.get("backend"), v.get("status"), v.get("max_safe_m"), v.get("source"))
        groups[key].append(f"{v.get('n')}x{v.get('k')}")
        reasons.setdefault(key, v.get("reason"))   # the first shape's words stand for the group
    rows = []
    for key, shapes in groups.items():
        backend, status, max_m, source = key
        reason = reasons[key]
        verdict = status + (f" (M <= {max_m})" if max_m else "")
        rows.append({"backend": backend, "verdict": verdict, "source": source or "", "reason": reason or "",
                     "shapes": shapes})
    return rows


def dispatch_table(facts: dict) -> tuple[list[int], list[dict]]:
    """(Ms, rows): one row per (preset, N, K) with the backend chosen at each M."""
    rows: dict = {}
    ms: list[int] = []
    for e in facts.get("explain") or []:
        key = (e["preset"], e["n"], e["k"])
        row = rows.setdefault(key, {"preset": e["preset"], "n": e["n"], "k": e["k"], "by_m": {}, "why": {}})
        row["by_m"][e["m"]] = e.get("backend") or "none"
        row["why"][e["m"]] = e.get("reason") or ""
        if e["m"] not in ms:
            ms.append(e["m"])
    return sorted(ms), list(rows.values())


# ---------------------------------------------------------------------------------------------
# Markdown


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result, links: bool = True) -> str:
    data = _data(result)
    flavours, suites, by = _grid(data)
    out = [f"# rocm-fp8 test matrix: {headline(data)}", ""]
    host = data.get("host") or {}
    gpus = host.get("gpus") or []
    out.append(f"Run `{data['run_id']}` of `{data['matrix']}` on {host.get('hostname', '?')}: "
               f"{len(gpus)} GPU(s){' (' + host['vendor'] + ')' if host.get('vendor') else ''}"
               f"{', --cpu-only' if host.get('cpu_only') else ''}, parallel {host.get('parallel', 1)}. "
               "Verdicts come from each cell's JUnit XML.")
    out += ["", "| flavour | " + " | ".join(suites) + " |", "|---|" + "---|" * len(suites)]
    for f in flavours:
        row = []
        for s in suites:
            c = by.get((f, s))
            if c is None:
                row.append("")
                continue
            text = _md(cell_summary(c))
            if links and c.get("log"):
                text += f" ([log]({c['log']})" + (f", [xml]({c['junit']})" if c.get("junit") else "") + ")"
            row.append(text)
        out.append(f"| {f} | " + " | ".join(row) + " |")
    bad = [c for c in data["cells"] if c["status"] == "failed"]
    if bad:
        out += ["", "## Failed cells", ""]
        for c in bad:
            out.append(f"### {c['cell']}: {c['reason']}")
            out.append("")
            for fl in c.get("failures", [])[:10]:
                out.append(f"- `{fl['test']}` ({fl['kind']}): {_md(fl['message'][:200])}")
            if c.get("log_tail"):
                out += ["", "```", c["log_tail"], "```"]
            out.append("")
    skipped = [c for c in data["cells"] if c["status"] == "skipped"]
    if skipped:
        out += ["", "Skipped cells: " + ", ".join(f"{c['cell']} ({c['reason']})" for c in skipped)]
    for f in flavours:
        facts = (data.get("flavours") or {}).get(f) or {}
        out += ["", f"## {f}: `{facts.get('image', '?')}`", ""]
        labels = facts.get("labels") or {}
        tc = ((facts.get("info") or {}).get("toolchain")) or {}
        out.append(f"ROCm {labels.get('rocm-fp8.rocm-version') or tc.get('rocm_version') or '?'}, "
                   f"hipcc {labels.get('rocm-fp8.hipcc-version') or tc.get('hip_version_str') or '?'}, "
                   f"arch {labels.get('rocm-fp8.arch') or tc.get('arch') or '?'}, "
                   f"aiter {labels.get('rocm-fp8.aiter-version') or tc.get('aiter_version') or '?'}, "
                   f"rocm_fp8 {labels.get('rocm-fp8.version') or '?'}"
                   + (" (built on a recorded-toolchain fixture: no ROCm)" if labels.get("rocm-fp8.built-on-fixture")
                      else ""))
        for err in facts.get("errors") or []:
            out.append(f"\n> error: {_md(err)}")
        rows = verdict_rows(facts.get("config"))
        if rows:
            out += ["", f"Probe verdicts baked into `{facts.get('config_path')}`"
                        f"{' (static: known-issues ledger)' if (facts.get('config') or {}).get('static') else ''}:",
                    "", "| backend | verdict | shapes | why |", "|---|---|---|---|"]
            for r in rows:
                out.append(f"| {r['backend']} | {_md(r['verdict'])} | {len(r['shapes'])} | "
                           f"{_md(r['source'] + ': ' if r['source'] else '')}{_md(_clip(r['reason'], 160))} |")
        ms, drows = dispatch_table(facts)
        if drows:
            out += ["", "Dispatch (`rocm-fp8 explain`, backend=\"auto\"):", "",
                    "| preset | N | K | " + " | ".join(f"M={m}" for m in ms) + " |",
                    "|---|---|---|" + "---|" * len(ms)]
            for r in drows:
                out.append(f"| {r['preset']} | {r['n']} | {r['k']} | "
                           + " | ".join(r["by_m"].get(m, "") for m in ms) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1c2024;max-width:1400px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px} th,td{border:1px solid #ccd;padding:4px 8px;vertical-align:top}
th{background:#f1f3f6;text-align:left} td.num{text-align:right}
.passed{background:#e3f6e6} .failed{background:#fde4e4} .skipped{background:#f2f2f2;color:#555}
.badge{font-weight:700;letter-spacing:.03em} .banner{padding:10px 14px;border-radius:6px;font-weight:600}
.banner.failed{border:1px solid #e0a0a0} .banner.passed{border:1px solid #9fd3a8}
pre{background:#111;color:#e8e8e8;padding:10px;overflow:auto;max-height:420px;font-size:12px}
code{background:#f1f3f6;padding:0 3px} .muted{color:#666} .small{font-size:12px}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def html_page(result) -> str:
    data = _data(result)
    flavours, suites, by = _grid(data)
    failed_any = any(c["status"] == "failed" for c in data["cells"])
    host = data.get("host") or {}
    p = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
         f"<title>rocm-fp8 test matrix: {_e(headline(data))}</title>", f"<style>{_CSS}</style></head><body>",
         "<h1>rocm-fp8 test matrix</h1>",
         f"<p class=\"banner {'failed' if failed_any else 'passed'}\" id=\"verdict\">{_e(headline(data))}</p>",
         f"<p class=\"muted\">run <code>{_e(data['run_id'])}</code> of <code>{_e(data['matrix'])}</code> on "
         f"{_e(host.get('hostname', '?'))}, {len(host.get('gpus') or [])} GPU(s)"
         f"{', --cpu-only' if host.get('cpu_only') else ''}, parallel {_e(host.get('parallel', 1))}, "
         f"{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['started'])))}. "
         "Each verdict comes from the cell's JUnit XML; a GPU suite that saw no GPU, a crash or a timeout "
         "is a failure.</p>",
         "<table id=\"matrix\"><thead><tr><th>flavour</th>"
         + "".join(f"<th>{_e(s)}</th>" for s in suites) + "</tr></thead><tbody>"]
    for f in flavours:
        p.append(f"<tr><th>{_e(f)}</th>")
        for s in suites:
            c = by.get((f, s))
            if c is None:
                p.append("<td></td>")
                continue
            body = [f"<span class=\"badge\">{MARK[c['status']]}</span>"]
            if c["status"] == "skipped":
                body.append(f"<div class=\"small\">{_e(c['reason'])}</div>")
            else:
                body.append(f"<div>{c['passed']} passed, {c['failed'] + c['errors']} failed, "
                            f"{c['skipped']} skipped</div><div class=\"small\">{c['seconds']:.0f} s"
                            f"{' on GPU ' + ','.join(map(str, c['gpus'])) if c.get('gpus') else ''}</div>")
                if c["status"] == "failed":
                    body.append(f"<div class=\"small\">{_e(c['reason'])}</div>")
                links = []
                if c.get("log"):
                    links.append(f"<a href=\"{_e(c['log'])}\">log</a>")
                if c.get("junit"):
                    links.append(f"<a href=\"{_e(c['junit'])}\">xml</a>")
                if links:
                    body.append(f"<div class=\"small\">{' · '.join(links)}</div>")
            p.append(f"<td class=\"{c['status']}\" data-cell=\"{_e(c['cell'])}\" data-status=\"{c['status']}\">"
                     + "".join(body) + "</td>")
        p.append("</tr>")
    p.append("</tbody></table>")

    bad = [c for c in data["cells"] if c["status"] == "failed"]
    if bad:
        p.append("<h2>Failed cells</h2>")
        for c in bad:
            p.append(f"<h3 id=\"{_e(c['cell'])}\">{_e(c['cell'])}</h3><p>{_e(c['reason'])}</p>")
            if c.get("failures"):
                p.append("<table><tr><th>test</th><th>kind</th><th>message</th></tr>")
                for fl in c["failures"][:20]:
                    p.append(f"<tr><td><code>{_e(fl['test'])}</code></td><td>{_e(fl['kind'])}</td>"
                             f"<td class=\"small\">{_e(fl['message'][:400])}</td></tr>")
                p.append("</table>")
            if c.get("log_tail"):
                p.append(f"<pre>{_e(c['log_tail'])}</pre>")

    for f in flavours:
        facts = (data.get("flavours") or {}).get(f) or {}
        labels = facts.get("labels") or {}
        tc = ((facts.get("info") or {}).get("toolchain")) or {}
        p.append(f"<h2>{_e(f)} <span class=\"muted small\"><code>{_e(facts.get('image', '?'))}</code></span></h2>")
        facts_rows = [("ROCm", labels.get("rocm-fp8.rocm-version") or tc.get("rocm_version")),
                      ("hipcc", labels.get("rocm-fp8.hipcc-version") or tc.get("hip_version_str")),
                      ("arch", labels.get("rocm-fp8.arch") or tc.get("arch")),
                      ("aiter", labels.get("rocm-fp8.aiter-version") or tc.get("aiter_version")),
                      ("rocm_fp8", labels.get("rocm-fp8.version")),
                      ("torch", tc.get("torch_version")),
                      ("base", labels.get("rocm-fp8.base-image")),
                      ("fixture", labels.get("rocm-fp8.built-on-fixture"))]
        p.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts_rows if v)
                 + "</table>")
        for err in facts.get("errors") or []:
            p.append(f"<p class=\"failed\">error: {_e(err)}</p>")
        rows = verdict_rows(facts.get("config"))
        if rows:
            static = (facts.get("config") or {}).get("static")
            p.append(f"<h3>Probe verdicts</h3><p class=\"small muted\">baked into <code>{_e(facts.get('config_path'))}"
                     f"</code>{' (static: known-issues ledger)' if static else ''}</p>")
            p.append("<table class=\"verdicts\"><tr><th>backend</th><th>verdict</th><th>shapes</th><th>why</th></tr>")
            for r in rows:
                cls = "passed" if r["verdict"].startswith(("no-known-issue", "ok", "pass")) else "failed"
                p.append(f"<tr><td>{_e(r['backend'])}</td><td class=\"{cls}\">{_e(r['verdict'])}</td>"
                         f"<td class=\"num\" title=\"{_e(', '.join(r['shapes']))}\">{len(r['shapes'])}</td>"
                         f"<td class=\"small\">{_e((r['source'] + ': ') if r['source'] else '')}{_e(r['reason'])}</td></tr>")
            p.append("</table>")
        ms, drows = dispatch_table(facts)
        if drows:
            p.append("<h3>Dispatch decisions</h3><p class=\"small muted\"><code>rocm-fp8 explain --json</code> "
                     "inside the image, backend=\"auto\"; hover a cell for the reason</p>")
            p.append("<table class=\"dispatch\"><tr><th>preset</th><th>N</th><th>K</th>"
                     + "".join(f"<th>M={m}</th>" for m in ms) + "</tr>")
            for r in drows:
                p.append(f"<tr><td>{_e(r['preset'])}</td><td class=\"num\">{r['n']}</td><td class=\"num\">{r['k']}</td>"
                         + "".join(f"<td title=\"{_e(r['why'].get(m, ''))}\">{_e(r['by_m'].get(m, ''))}</td>"
                                   for m in ms) + "</tr>")
            p.append("</table>")
    p.append("<p class=\"small muted\">Machine-readable: <a href=\"report.json\">report.json</a> · "
             "<a href=\"report.md\">report.md</a></p></body></html>")
    return "\n".join(p) + "\n"


def write(result, directory: Path) -> dict[str, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = _data(result)
    paths = {"markdown": directory / "report.md", "html": directory / "report.html", "json": directory / "report.json"}
    paths["markdown"].write_text(markdown(data))
    paths["html"].write_text(html_page(data))
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    return paths
