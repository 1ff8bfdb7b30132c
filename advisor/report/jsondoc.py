"""The versioned JSON documents the CLI writes (documented in README.md, "JSON output")."""

from __future__ import annotations

import dataclasses

from advisor import __version__
from advisor.findings import ScanResult
from advisor.report.words import round_floats, workload_notes
from advisor.workload.events import LogEvents, Statement
from advisor.workload.fingerprint import mask_conditions, mask_literals
from advisor.workload.model import Query, Workload
from advisor.workload.timeline import Bucket, Timeline

WORKLOAD_SCHEMA_VERSION = 2  # 2: the logs' server events (`events`)


def workload_document(workload: Workload, *, top: int | None = None, show_values: bool = False) -> dict:
    queries = workload.queries if top is None else workload.queries[:top]
    return {
        "schema_version": WORKLOAD_SCHEMA_VERSION,
        "kind": "workload",
        "tool": {"name": "advisor", "version": __version__},
        "source": list(workload.sources),
        "lines": workload.lines,
        "statements": workload.statements,
        "other_events": workload.other_events,
        "plans": workload.plans,
        "skipped_count": workload.skipped_count,
        "skipped": [
            {"file": s.file, "line": s.line, "reason": s.reason, "text": _mask(s.text, show_values)}
            for s in workload.skipped
        ],
        "notes": workload_notes(workload),
        "queries": [query_document(q, show_values=show_values) for q in queries],
        "events": events_document(workload.events or LogEvents()),
    }


def events_document(e: LogEvents) -> dict:
    """The logs' server events (README: "advisor parse", JSON): per query, most events first."""
    def ranked(by_query: dict, key) -> list:
        return sorted(by_query.items(), key=lambda item: (*key(item[1]), item[0].fingerprint))

    span, applications = e.span_seconds(), e.applications()
    return {
        "temp_files": {"count": e.temp_files.count, "bytes": e.temp_files.bytes, "by_query": [
            {**_statement(q), "count": t.count, "bytes": t.bytes}
            for q, t in ranked(e.temp_by_query, lambda t: (-t.bytes, -t.count))]},
        "lock_waits": {"count": e.lock_waits, "by_query": [
            {**_statement(q), "count": w.count, "max_wait_ms": round(w.max_wait_ms, 3),
             "blocking": [{"normalized": sql, "application": app} for sql, app in w.blocking]}
            for q, w in ranked(e.waits_by_query, lambda w: (-w.count, -w.max_wait_ms))]},
        "deadlocks": {"count": e.deadlocks, "by_query": [
            {**_statement(q), "count": d.count, "cycle": list(d.cycle)}
            for q, d in ranked(e.deadlocks_by_query, lambda d: (-d.count,))]},
        "errors": {
            "count": e.errors,
            "by_sqlstate": dict(sorted(e.errors_by_sqlstate.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_query": [
                {**_statement(q), "sqlstate": state, "message": err.message, "count": err.count}
                for (q, state), err in sorted(e.errors_by_query.items(),
                                              key=lambda kv: (-kv[1].count, kv[0][0].fingerprint, kv[0][1]))]},
        "sessions": {"count": sum(s.count for s in applications.values()), "by_application": {
            app: {"sessions": s.count,
                  "per_second": round(s.count / span, 3) if span else None,
                  "median_ms": _ms(s.times.quantile(0.5)), "p95_ms": _ms(s.times.quantile(0.95))}
            for app, s in sorted(applications.items(), key=lambda kv: (-kv[1].count, kv[0]))}},
        "checkpoints": {"count": e.checkpoints.count, "timed": e.checkpoints.timed,
                        "requested": e.checkpoints.requested, "write_ms": round(e.checkpoints.write_ms, 3),
                        "sync_ms": round(e.checkpoints.sync_ms, 3)},
        "autovacuum": {"by_table": {
            table: {"vacuums": v.vacuums, "analyzes": v.analyzes, "removed_tuples": v.removed_tuples}
            for table, v in sorted(e.autovacuum.items())}},
        "timeline": timeline_document(e.timeline),
    }


def timeline_document(t: Timeline) -> dict:
    """The events per minute (a log spanning under two hours) or per hour, oldest first; ``outside``
    holds what no bucket does (an unreadable timestamp, hours older than a month of them), so that
    each column adds up to its total. Sessions are counted at their start, or at their end in a
    log that shows no connection lines."""
    unit, series = t.series()
    starts = t.outside.connections + sum(b.connections for _, b in series)

    def counts(b: Bucket) -> dict:
        return {"temp_files": b.temp_files, "temp_bytes": b.temp_bytes, "lock_waits": b.lock_waits, "errors": b.errors,
                "sessions": b.connections if starts else b.disconnections}

    return {"unit": unit, "buckets": [{"start": start, **counts(b)} for start, b in series], "outside": counts(t.outside)}


def _statement(q: Statement) -> dict:
    return {"fingerprint": q.fingerprint, "normalized": q.normalized}


def query_document(q: Query, *, show_values: bool = False) -> dict:
    return {
        "fingerprint": q.fingerprint,
        "normalized": q.normalized,
        "parsed": q.parsed,
        "statement_type": q.statement_type,
        "calls": q.calls,
        "timed_calls": q.timed_calls,
        "total_ms": round(q.total_ms, 3),
        "mean_ms": _ms(q.mean_ms),
        "min_ms": _ms(q.min_ms),
        "max_ms": _ms(q.max_ms),
        "p50_ms": _ms(q.p50_ms),
        "p95_ms": _ms(q.p95_ms),
        "p99_ms": _ms(q.p99_ms),
        "rows": q.rows,
        "first_seen": q.first_seen,
        "last_seen": q.last_seen,
        "users": list(q.users),
        "databases": list(q.databases),
        "applications": list(q.applications),
        "query_ids": [str(i) for i in q.query_ids],  # 64-bit: strings survive JavaScript
        "sources": list(q.sources),
        "sample": _mask(q.sample, show_values),
        "sample_parameters": None if q.sample_parameters is None or not show_values else q.sample_parameters,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mask(text: str, show_values: bool) -> str:
    return text if show_values else mask_literals(text)


SCAN_SCHEMA_VERSION = 1


def scan_document(result: ScanResult, *, show_values: bool = False) -> dict:
    """The `advisor scan` JSON (README: "advisor scan", JSON)."""
    w = result.workload
    return {
        "schema_version": SCAN_SCHEMA_VERSION,
        "kind": "scan",
        "tool": {"name": "advisor", "version": __version__},
        "server": None if result.server_version_num is None else {
            "version_num": result.server_version_num,
            "superuser": result.superuser,
            "round_trip_ms": result.round_trip_ms,
        },
        "workload": {
            "source": list(w.sources),
            "statements": w.statements,
            "queries": len(w.queries),
            "total_ms": round(sum(q.total_ms for q in w.queries), 3),
            "skipped_count": w.skipped_count,
        },
        "explained": result.explained,
        "findings": [finding_document(f, show_values=show_values) for f in result.findings],
        "not_explained": [{"fingerprint": n.fingerprint, "normalized": n.normalized, "reason": n.reason} for n in result.not_explained],
        "skipped_checks": [{"check": check, "reason": why} for check, why in result.skipped_checks],
        "notes": scan_notes(result),
    }


def scan_notes(result) -> list[str]:
    """What the reader must know about the numbers: the workload's notes (hidden rows, an empty log), then the scan's."""
    return list(dict.fromkeys([*workload_notes(result.workload), *result.notes]))


def finding_document(f, *, show_values: bool = False) -> dict:
    return {
        "code": f.code,
        "check": f.check,
        "severity": str(f.severity),
        "title": f.title,
        "fingerprint": f.fingerprint,
        "normalized": f.normalized,
        "tables": list(f.tables),
        "evidence": _masked(f.evidence, show_values),
        "impact_ms": None if f.impact_ms is None else round(f.impact_ms, 3),
        "suggestion": f.suggestion,
        "application": f.application,
    }


# Evidence keys whose text carries literal values: plan excerpts (literals only in their
# conditions; their rows, loops and times are the evidence) and SQL or conditions (all of it).
_PLAN_ENDINGS = ("plan", "excerpt")
_SQL_ENDINGS = ("sql", "filter", "cond", "condition", "parent", "query")


def _masked(evidence: dict, show_values: bool) -> dict:
    """Evidence with the literal values in its SQL and plan text masked, unless asked not to; floats rounded."""
    def value(key: str, v):
        if show_values:
            return round_floats(v)
        if key.endswith(_PLAN_ENDINGS):
            return _mask_each(v, mask_conditions)
        return _mask_each(v, mask_literals) if key.endswith(_SQL_ENDINGS) else round_floats(v)

    return {k: value(k, v) for k, v in evidence.items()}


def _mask_each(value, mask):
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, (list, tuple)):
        return [_mask_each(v, mask) for v in value]
    return value


INDEXES_SCHEMA_VERSION = 1


def advice_document(advice) -> dict:
    """The `advisor suggest-indexes` JSON (README: "advisor suggest-indexes")."""
    return {
        "schema_version": INDEXES_SCHEMA_VERSION,
        "kind": "index_advice",
        "tool": {"name": "advisor", "version": __version__},
        "validation": advice.validation,
        "workload_cost_before": round(advice.workload_cost_before, 2),
        "workload_cost_after": round(advice.workload_cost_after, 2),
        "whatif_calls": advice.whatif_calls,
        "seconds": round(advice.seconds, 3),
        "search": dataclasses.asdict(advice.search) if advice.search else None,
        "recommendations": [
            {
                "table": r.candidate.table,
                "columns": list(r.candidate.columns),
                "include": list(r.candidate.include),
                "where": r.candidate.where,
                "fillfactor": r.candidate.fillfactor,
                "ddl": r.candidate.ddl(),
                "estimated_size_bytes": r.estimated_size_bytes,
                "size_estimate": r.size_estimate,  # "built", "btree-model" or "hypopg": how the size is known
                "write_cost": round(r.write_cost, 2),
                "validated": r.validated,
                "queries": [
                    {"fingerprint": q.fingerprint, "normalized": q.normalized, "weight": q.weight,
                     "cost_before": round(q.cost_before, 2), "cost_after": round(q.cost_after, 2),
                     **r.measured.get(q.fingerprint, {})}
                    for q in r.queries
                ],
            }
            for r in advice.recommendations
        ],
        "moot_candidates": [{"ddl": c.ddl(), "served_by": name} for c, name in advice.moot],
        "existing_index_findings": [
            {"kind": i.kind, "table": i.table, "reason": i.reason, "suggestion": i.suggestion}
            for i in advice.existing_index_findings
        ],
        "notes": list(advice.notes),
    }
