"""The versioned JSON documents the CLI writes (documented in README.md, "JSON output")."""

from __future__ import annotations

from advisor import __version__
from advisor.workload.fingerprint import mask_literals
from advisor.workload.model import Query, Workload

WORKLOAD_SCHEMA_VERSION = 1


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
        "notes": list(workload.notes),
        "queries": [query_document(q, show_values=show_values) for q in queries],
    }


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
