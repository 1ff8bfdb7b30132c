"""`advisor report`: the nightly job. Ingest (incrementally), scan, advise, optionally benchmark,
compare with the run history, and write report.json, report.html and summary.md into one folder.

report.json (``schema_version`` 1, ``kind: "report"``)::

    run          started_at, tool {name, version}, database (a label: host:port/dbname, never a password),
                 server_version_num, sources, window {first_seen, last_seen}, log_reads [{path, start, end, reason}]
    workload     the workload document (README: advisor parse)
    scan         the scan document (README: advisor scan), or null
    indexes      the index advice document (README: advisor suggest-indexes), or null; indexes_reason says why
    bench        the pool benchmark document (advisor/bench/pool.py), or null
    history      new_findings, resolved_findings, regressions (each with changes {metric: {before, after,
                 change_pct, spread_pct}} for the metrics that regressed), trend (per top query, oldest
                 first), previous_run (started_at or null), threshold_pct, rule (RegressionRule's values)
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
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from advisor import __version__
from advisor.db.connect import AdvisorConnectionError, redact_dsn
from advisor.db.session import Session
from advisor.errors import AdvisorError
from advisor.findings import Severity
from advisor.progress import Progress, Step
from advisor.report.history import Comparison, History, RegressionRule, database_label
from advisor.report.jsondoc import advice_document, scan_document, workload_document
from advisor.report.words import regression_text, warnings
from advisor.thresholds import DEFAULT
from advisor.words import plural
from advisor.workload.logs import offsets
from advisor.workload.logs.formats import sniff
from advisor.workload.logs.reader import expand
from advisor.workload.sources import LogFiles, Reading, Source, StatStatements, load_workload

SCHEMA_VERSION = 1
TREND_QUERIES = 10
TREND_RUNS = 10


@dataclass(frozen=True, slots=True)
class ReportOptions:
    dsn: str
    out: Path
    logs: tuple[str, ...] = ()
    pg_stat_statements: bool = False
    bench: bool = False
    history: str | None = None  # default: <out>/history.sqlite
    state: str | None = None  # default: <out>/.log-state.json
    fail_on: Severity | None = None
    fail_on_regression: float | None = None
    keep_runs: int = 30
    log_format: str = "auto"
    log_line_prefix: str | None = None
    time_budget_s: float = 60.0
    max_queries: int = 20


@dataclass(slots=True)
class _Run:
    unanalysed: list[dict] = field(default_factory=list)
    unreachable: str | None = None
    logs_unread: bool = False

    def skip(self, what: str, reason: str) -> None:
        self.unanalysed.append({"what": what, "reason": reason})

    def failed(self, source: Source, error: AdvisorError) -> None:
        """A source that could not be read: the database unreachable ends the night's analysis, anything else is noted."""
        if isinstance(error, AdvisorConnectionError):
            self.unreachable = error.cause
        elif isinstance(source, StatStatements):
            self.skip("pg_stat_statements", error.cause)
        else:  # the logs: read again next night, so their offsets stay
            self.logs_unread = True
            self.skip("logs", error.cause)


def run_report(opts: ReportOptions, step: Step = lambda _: None, progress: Progress | None = None) -> tuple[dict, int]:
    """Do the whole job; returns the report document and the exit code (0, 1 or 2). Always writes the files."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    label = database_label(opts.dsn)
    run = _Run()
    state_path = opts.state or str(out / ".log-state.json")

    # --- ingestion (incremental for logs)
    logs, state, reads = _log_source(opts, state_path, run)
    with Session(opts.dsn) as session:  # one connection for the night's reads, opened on first use
        sources: list[Source] = [logs] if logs else []
        if opts.pg_stat_statements or not opts.logs:
            sources.append(StatStatements(session))
        workload = load_workload(sources, Reading(progress=progress), step=step, failed=run.failed)

        # --- scan, index advice, bench
        scanned = None
        if run.unreachable is None:
            from advisor.scan import scan as run_scan

            try:
                scanned = run_scan(workload, session, config=DEFAULT, time_budget_s=opts.time_budget_s,
                                   max_queries=opts.max_queries, step=step)
            except AdvisorConnectionError as e:
                run.unreachable = e.cause
        indexes, indexes_reason = None, None
        if run.unreachable is None:
            indexes, indexes_reason = _advise(session, workload, step)
        else:
            indexes_reason = "database unreachable"
    bench = None
    if opts.bench and run.unreachable is None:
        bench = _bench(opts.dsn, run, step)
    if run.unreachable is not None:
        run.unanalysed.insert(0, {"what": "database", "reason": f"database unreachable: {run.unreachable}"})
    if indexes is None and indexes_reason:
        run.skip("index recommendations", indexes_reason)
    if scanned is not None:
        for n in scanned.not_explained:
            run.skip(f"query {n.fingerprint}: {n.normalized[:200]}", f"not explained: {n.reason}")
        for check, why in scanned.skipped_checks:
            run.skip(f"check {check}", why)

    # --- history
    history_doc = {"previous_run": None, "threshold_pct": opts.fail_on_regression or 20.0, "new_findings": [],
                   "resolved_findings": [], "regressions": [], "trend": [], "recorded": False, "rule": None}
    if scanned is not None:
        try:
            history_doc = _history(opts, label, workload, scanned, started)
        except Exception as e:  # a history store that fails must not lose the night's report
            run.skip("history", f"{type(e).__name__}: {redact_dsn(str(e))[:300]}")

    # --- the document
    scan_doc = scan_document(scanned) if scanned is not None else None
    index_doc = advice_document(indexes) if indexes is not None else None
    firsts = [q.first_seen for q in workload.queries if q.first_seen]
    lasts = [q.last_seen for q in workload.queries if q.last_seen]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "report",
        "run": {
            "started_at": started,
            "tool": {"name": "advisor", "version": __version__},
            "database": label,
            "server_version_num": scanned.server_version_num if scanned is not None else None,
            "sources": [redact_dsn(s) for s in workload.sources],
            "window": {"first_seen": min(firsts) if firsts else None, "last_seen": max(lasts) if lasts else None},
            "log_reads": reads,
        },
        "workload": workload_document(workload),
        "scan": scan_doc,
        "indexes": index_doc,
        "indexes_reason": indexes_reason,
        "bench": bench,
        "history": history_doc,
        "unanalysed": run.unanalysed,
    }
    doc["summary"] = _summary(doc)

    # --- exit code
    code, reasons = 0, []
    if run.unreachable is not None:
        code, reasons = 2, [f"database unreachable: {run.unreachable}"]
    else:
        if opts.fail_on is not None and scanned is not None:
            hits = [f for f in scanned.findings if f.severity >= opts.fail_on]
            if hits:
                code = 1
                reasons.append(f"{plural(len(hits), 'finding')} at or above {opts.fail_on.name}")
        if opts.fail_on_regression is not None and history_doc["regressions"]:
            code = 1
            reasons.append(f"{plural(len(history_doc['regressions']), 'regression')} over {opts.fail_on_regression:g} %")
    doc["exit"] = {"code": code, "reasons": reasons}

    _write(out, doc)
    if run.unreachable is None and not run.logs_unread and state is not None:
        for r in reads:
            offsets.update_state(state, r["path"], r["end"])
        offsets.save_state(state_path, state)
    return doc, code


# --- steps ---------------------------------------------------------------------------


def _log_source(opts: ReportOptions, state_path: str, run: _Run) -> tuple[LogFiles | None, dict | None, list[dict]]:
    """The logs as a source that reads only what was appended since the last run, the offsets state, and the reads planned."""
    if not opts.logs:
        return None, None, []
    try:
        files = [p for p in expand(list(opts.logs)) if p != "-"]
    except OSError as e:
        raise AdvisorError(str(e), "check the paths given to --log") from e
    state = offsets.load_state(state_path)
    formats = {os.path.abspath(p): sniff(p, opts.log_format, opts.log_line_prefix) for p in files}
    plan = offsets.plan_incremental(files, state, formats)
    for path, why in plan.skipped:
        run.skip(f"log {path}", why)
    reads = [{"path": read.path, "start": read.start, "end": read.end, "reason": read.reason} for read in plan.reads]
    # formats: parse in the format the plan's unit boundaries were found with, not a second sniff.
    # jobs=1: ranges are never split, so each is parsed here, in order.
    source = LogFiles(tuple(read.path for read in plan.reads), jobs=1, ranges={r.path: (r.start, r.end) for r in plan.reads},
                      formats=formats, notes=tuple(plan.notes),
                      label="reading the logs (only what was appended since the last run)")  # fmt: skip
    return source, state, reads


def _advise(session: Session, workload, step: Step):
    from advisor.indexes.advice import advise_workload, advised_queries, workload_seconds

    queries = advised_queries(workload)
    if not queries:
        return None, "the workload has no query to advise on"
    try:
        with_step = lambda text: step(f"index advice: {text}")  # noqa: E731
        return advise_workload(session, queries, workload_seconds=workload_seconds(workload), step=with_step), None
    except AdvisorError as e:  # HypoPG missing, connection lost: a note, not a failed night
        return None, f"{e.cause}" + (f" ({e.fix})" if e.fix else "")


def _bench(dsn: str, run: _Run, step: Step) -> dict | None:
    from advisor.bench.pool import PoolBenchConfig, run_pool_bench
    from advisor.report.bench import pool_bench_document

    config = PoolBenchConfig(dsn=dsn, concurrency=(1, 4), duration_s=2.0, warmup_s=0.5,
                             modes=("new_connection", "psycopg_pool"), transports=("tcp",))
    try:
        return pool_bench_document(run_pool_bench(config, step=step))
    except AdvisorError as e:
        run.skip("pool benchmark", e.cause)
        return None


def _stored(f) -> dict:
    return {"code": f.code, "fingerprint": f.fingerprint, "severity": Severity(f.severity).name, "title": f.title,
            "impact_ms": None if f.impact_ms is None else round(f.impact_ms, 3)}


def _history(opts: ReportOptions, label: str, workload, scanned, started: str) -> dict:
    url = opts.history or str(Path(opts.out) / "history.sqlite")
    threshold = opts.fail_on_regression if opts.fail_on_regression is not None else 20.0
    with History(url) as h:
        h.record(label, workload, scanned.findings, started)
        change: Comparison = h.compare(label, threshold_pct=threshold)
        trend = []
        for q in workload.queries[:TREND_QUERIES]:
            points = h.trend(label, q.fingerprint, limit=TREND_RUNS)
            trend.append({"fingerprint": q.fingerprint, "normalized": q.normalized,
                          "points": [{"started_at": p.started_at, "calls": p.calls, "total_ms": round(p.total_ms, 3),
                                      "p95_ms": None if p.p95_ms is None else round(p.p95_ms, 3)} for p in points]})
        h.prune(label, opts.keep_runs)
    return {
        "previous_run": change.before.started_at if change.before else None,
        "threshold_pct": threshold,
        "new_findings": [_stored(f) for f in change.new_findings] if change.before else [],
        "resolved_findings": [_stored(f) for f in change.resolved_findings],
        "regressions": [regression_document(g) for g in change.regressions],
        "trend": trend,
        "recorded": True,
        "rule": asdict(replace(RegressionRule(), threshold_pct=threshold)),
    }


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
    return (f"{plural(len(h['new_findings']), 'new finding')}, {len(h['resolved_findings'])} resolved, "
            f"{plural(len(h['regressions']), 'regression')}")


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
    return "\n".join(lines).rstrip() + "\n"


def _write(out: Path, doc: dict) -> None:
    from advisor.report.html import report_html

    (out / "report.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.html").write_text(report_html(doc))
    (out / "summary.md").write_text(summary_markdown(doc))


__all__ = ["ReportOptions", "SCHEMA_VERSION", "estimated_savings", "history_line", "regression_document", "report_line",
           "run_report", "summary_markdown"]
