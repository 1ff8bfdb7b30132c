"""The nightly report's document and its renderings: report.json, summary.md and the line the CLI
prints (report.html: ``html.py``). The job that gathers it is ``advisor/commands/report.py``.

report.json (``schema_version`` 1, ``kind: "report"``)::

    run          started_at, tool {name, version}, database (a label: host:port/dbname, never a password),
                 server_version_num, sources, window {first_seen, last_seen}, log_reads [{path, start, end, reason}]
    workload     the workload document (README: advisor parse)
    scan         the scan document (README: advisor scan), or null
    indexes      the index advice document (README: advisor suggest-indexes), or null; indexes_reason says why
    bench        the pool benchmark document (advisor/bench/pool.py), or null
    history      new_findings, resolved_findings, regressions (each with changes {metric: {before, after,
                 change_pct, spread_pct}} for the metrics that regressed), trend (per top query, oldest
                 first), previous_run (started_at or null), threshold_pct, rule (RegressionRule's values),
                 new_error_kinds [{fingerprint, normalized, sqlstate, count}]: a (query, SQLSTATE), or a
                 SQLSTATE (fingerprint null), the logs showed tonight and not in the previous run (empty
                 when either run read no log, or the previous one was stored before error kinds were)
    summary      warnings (what hides part of the workload, e.g. pg_stat_statements rows the role may
                 not read, with the GRANT; shown first in report.html and summary.md), top findings,
                 regressions, estimated savings (also in summary.md)
    unanalysed   [{what, reason}]: what could not be analysed and why
    exit         {code, reasons}

Everything comes from the masked documents: literal values never reach the report, and
the database is named by ``database_label`` (no user, no password).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from advisor import __version__
from advisor.db.connect import redact_dsn
from advisor.findings import ScanResult, Severity
from advisor.history import Comparison, RegressionRule
from advisor.indexes.selection import Advice
from advisor.report.jsondoc import advice_document, scan_document, workload_document
from advisor.report.words import regression_text, warnings
from advisor.words import plural
from advisor.workload.model import Query, Workload

SCHEMA_VERSION = 1
TREND_QUERIES = 10
TREND_RUNS = 10


def report_document(*, started: str, database: str, workload: Workload, scanned: ScanResult | None, indexes: Advice | None,
                    indexes_reason: str | None, bench: dict | None, history: dict, unanalysed: list[dict],
                    log_reads: list[dict]) -> dict:
    """report.json without its ``exit``, which the job adds (see the module's docstring)."""
    firsts = [q.first_seen for q in workload.queries if q.first_seen]
    lasts = [q.last_seen for q in workload.queries if q.last_seen]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "report",
        "run": {
            "started_at": started,
            "tool": {"name": "advisor", "version": __version__},
            "database": database,
            "server_version_num": scanned.server_version_num if scanned is not None else None,
            "sources": [redact_dsn(s) for s in workload.sources],
            "window": {"first_seen": min(firsts) if firsts else None, "last_seen": max(lasts) if lasts else None},
            "log_reads": log_reads,
        },
        "workload": workload_document(workload),
        "scan": scan_document(scanned) if scanned is not None else None,
        "indexes": advice_document(indexes) if indexes is not None else None,
        "indexes_reason": indexes_reason,
        "bench": bench,
        "history": history,
        "unanalysed": unanalysed,
    }
    doc["summary"] = _summary(doc)
    return doc


def empty_history(threshold_pct: float) -> dict:
    """The history section of a night that recorded nothing (no scan, or a store that failed)."""
    return {"previous_run": None, "threshold_pct": threshold_pct, "new_findings": [], "resolved_findings": [],
            "regressions": [], "trend": [], "recorded": False, "rule": None, "new_error_kinds": []}


def history_document(change: Comparison, trends: list[tuple[Query, list]], threshold_pct: float) -> dict:
    """What changed since the last run, and each top query's trend (oldest first)."""
    return {
        "previous_run": change.before.started_at if change.before else None,
        "threshold_pct": threshold_pct,
        "new_findings": [_stored(f) for f in change.new_findings] if change.before else [],
        "resolved_findings": [_stored(f) for f in change.resolved_findings],
        "regressions": [regression_document(g) for g in change.regressions],
        "trend": [{"fingerprint": q.fingerprint, "normalized": q.normalized,
                   "points": [{"started_at": p.started_at, "calls": p.calls, "total_ms": round(p.total_ms, 3),
                               "p95_ms": None if p.p95_ms is None else round(p.p95_ms, 3)} for p in points]}
                  for q, points in trends],
        "recorded": True,
        "rule": asdict(replace(RegressionRule(), threshold_pct=threshold_pct)),
        "new_error_kinds": [asdict(k) for k in change.new_error_kinds],
    }


def _stored(f) -> dict:
    return {"code": f.code, "fingerprint": f.fingerprint, "severity": Severity(f.severity).name, "title": f.title,
            "impact_ms": None if f.impact_ms is None else round(f.impact_ms, 3)}


def regression_document(g) -> dict:
    """One regressed query, with the change of each metric that regressed (never another metric's)."""
    sides = {"p95_ms": (g.p95_ms_before, g.p95_ms_after), "total_ms": (g.total_ms_before, g.total_ms_after)}
    return {
        "fingerprint": g.fingerprint, "normalized": g.normalized, "metrics": list(g.metrics),
        "calls_before": g.calls_before, "calls_after": g.calls_after,
        "total_ms_before": round(g.total_ms_before, 3), "total_ms_after": round(g.total_ms_after, 3),
        "p95_ms_before": _r3(g.p95_ms_before), "p95_ms_after": _r3(g.p95_ms_after),
        "total_change_pct": _r(g.total_change_pct), "p95_change_pct": _r(g.p95_change_pct),
        "changes": {m: {"before": _r3(sides[m][0]), "after": _r3(sides[m][1]), "change_pct": _r(g.change_pct(m)),
                        "spread_pct": _r(g.spread_pct.get(m))} for m in g.metrics},
    }


def _r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def estimated_savings(doc: dict) -> dict:
    """What the index recommendations would save, in ms over the workload's window: each helped query's
    total time scaled by its planner-cost reduction (best recommendation per query); plus the sum of
    the findings' impact estimates (an upper bound: findings can overlap)."""
    totals = {q["fingerprint"]: q["total_ms"] for q in doc["workload"]["queries"]}
    best: dict[str, float] = {}
    for rec in (doc.get("indexes") or {}).get("recommendations", []):
        for q in rec["queries"]:
            if q["cost_before"] > 0:
                best[q["fingerprint"]] = max(best.get(q["fingerprint"], 0.0), 1 - q["cost_after"] / q["cost_before"])
    index_ms = sum(totals.get(fp, 0.0) * share for fp, share in best.items())
    findings_ms = sum(f["impact_ms"] or 0.0 for f in (doc.get("scan") or {}).get("findings", []))
    return {"index_ms": round(index_ms, 1), "findings_impact_ms": round(findings_ms, 1),
            "workload_total_ms": round(sum(totals.values()), 1)}


def _summary(doc: dict) -> dict:
    findings = (doc.get("scan") or {}).get("findings", [])
    notes = [*doc["workload"]["notes"], *(doc.get("scan") or {}).get("notes", [])]
    return {
        "warnings": warnings(notes),
        "statements": doc["workload"]["statements"],
        "queries": len(doc["workload"]["queries"]),
        "findings": len(findings),
        "top_findings": [{k: f[k] for k in ("code", "severity", "title", "impact_ms")} for f in findings[:5]],
        "regressions": len(doc["history"]["regressions"]),
        "new_findings": len(doc["history"]["new_findings"]),
        "resolved_findings": len(doc["history"]["resolved_findings"]),
        "estimated_savings": estimated_savings(doc),
    }


def history_line(doc: dict) -> str:
    """Since the last run, in words; a first run says there is nothing to compare yet."""
    h = doc["history"]
    if not h["previous_run"]:
        return "first run: nothing to compare with yet"
    kinds = h.get("new_error_kinds") or []  # said only when there are some: the line is unchanged otherwise
    return (f"{plural(len(h['new_findings']), 'new finding')}, {len(h['resolved_findings'])} resolved, "
            f"{plural(len(h['regressions']), 'regression')}" + (f", {plural(len(kinds), 'new error kind')}" if kinds else ""))


def error_kind_text(k: dict) -> str:
    """A new error kind in words: its SQLSTATE, how often, and the query (masked) if known."""
    where = f"in `{k['normalized'][:120]}`" if k["fingerprint"] else "(all queries)"
    return f"SQLSTATE {k['sqlstate']} ×{k['count']:,} {where}"


def report_line(doc: dict, report: Path) -> str:
    s = doc["summary"]
    return (f"{plural(s['statements'], 'statement')}, {plural(s['queries'], 'query')}, "
            f"{plural(s['findings'], 'finding')}; {history_line(doc)}; report: {report}")


def summary_markdown(doc: dict) -> str:
    s, run = doc["summary"], doc["run"]
    w = run["window"]
    lines = [f"# advisor report: {run['database']}", "",
             f"{run['started_at']} · {plural(s['statements'], 'statement')} in {plural(s['queries'], 'query')}"
             f" · window {w['first_seen'] or '?'} → {w['last_seen'] or '?'}", ""]
    for u in doc["unanalysed"]:
        if u["what"] == "database":
            lines += [f"**{u['reason']}**", ""]
    lines += [f"> **Warning:** {note}" for note in s.get("warnings", [])] + ([""] if s.get("warnings") else [])
    sav = s["estimated_savings"]
    lines += [f"Estimated savings: {sav['index_ms']:,.1f} ms from the recommended indexes "
              f"(of {sav['workload_total_ms']:,.1f} ms in all); findings' impact up to {sav['findings_impact_ms']:,.1f} ms.", ""]
    if s["top_findings"]:
        lines += ["## Top findings", ""]
        for f in s["top_findings"]:
            impact = "" if f["impact_ms"] is None else f" ({f['impact_ms']:,.1f} ms)"
            lines.append(f"- **{f['severity']}** {f['code']} {f['title']}{impact}")
        lines.append("")
    h = doc["history"]
    over = f" (over {h['threshold_pct']:g} %)" if h["previous_run"] else ""
    lines += ["## Since the last run", "", history_line(doc).capitalize() + over + ".", ""]
    for g in h["regressions"][:10]:
        lines.append(f"- `{g['fingerprint']}` {regression_text(g)}: `{g['normalized'][:120]}`")
    for k in (h.get("new_error_kinds") or [])[:10]:
        lines.append(f"- new error kind: {error_kind_text(k)}")
    return "\n".join(lines).rstrip() + "\n"


def write_report(out: Path, doc: dict) -> None:
    """report.json, report.html and summary.md of one night, into ``out``."""
    from advisor.report.html import report_html

    (out / "report.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.html").write_text(report_html(doc))
    (out / "summary.md").write_text(summary_markdown(doc))


__all__ = ["SCHEMA_VERSION", "empty_history", "error_kind_text", "estimated_savings", "history_document", "history_line",
           "regression_document", "report_document", "report_line", "summary_markdown", "write_report"]
