"""Markdown for a ticket or a chat message."""

from __future__ import annotations

from advisor.findings import ScanResult
from advisor.report.jsondoc import scan_notes
from advisor.words import plural


def scan_markdown(result: ScanResult, *, top: int = 20) -> str:
    w = result.workload
    lines = [
        "# advisor scan",
        "",
        f"{plural(len(w.queries), 'query')}, {plural(w.statements, 'logged statement')}, {result.explained} explained, "
        f"{plural(len(result.findings), 'finding')}.",
        "",
        *[f"> **Note:** {n}\n" for n in scan_notes(result)],
        "| # | severity | code | impact ms | finding |",
        "|---|---|---|---:|---|",
    ]
    for rank, f in enumerate(result.findings[:top], 1):
        impact = "-" if f.impact_ms is None else f"{f.impact_ms:,.1f}"
        lines.append(f"| {rank} | {f.severity} | {f.code} | {impact} | {_cell(f.title)} |")
    for rank, f in enumerate(result.findings[:top], 1):
        lines += ["", f"## {rank}. {f.code} {f.title}", ""]
        if f.normalized:
            lines += ["```sql", f.normalized, "```", ""]
        lines += ["**Fix:** " + f.suggestion.split("\n", 1)[0]]
        if "\n" in f.suggestion:
            lines += ["", "```", f.suggestion.split("\n", 1)[1].strip(), "```"]
    if result.not_explained:
        lines += ["", "## Not explained", ""] + [f"- `{n.fingerprint}`: {n.reason}" for n in result.not_explained]
    if result.skipped_checks:
        lines += ["", "## Checks skipped", ""] + [f"- {check}: {why}" for check, why in result.skipped_checks]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
