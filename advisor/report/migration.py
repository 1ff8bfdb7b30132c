"""`suggest-indexes --format sql`: a migration file a person reviews, then runs."""

from __future__ import annotations

from advisor import __version__
from advisor.words import plural


def advice_migration(advice) -> str:
    lines = [
        f"-- Index advice from advisor {__version__} ({advice.validation}).",
        f"-- Workload planner cost {advice.workload_cost_before:,.0f} -> {advice.workload_cost_after:,.0f}.",
        "-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block: run this file with autocommit",
        "-- (psql runs each statement on its own unless told otherwise).",
        "",
    ]
    for r in advice.recommendations:
        lines.append(f"-- estimated size {r.estimated_size_bytes:,} bytes; helps {plural(len(r.queries), 'query')}:")
        for q in r.queries[:5]:
            lines.append(f"--   {q.fingerprint}: cost {q.cost_before:,.0f} -> {q.cost_after:,.0f}  {q.normalized[:100]}")
        lines += [r.candidate.ddl(), ""]
    for issue in advice.existing_index_findings:
        if issue.kind != "unindexed_foreign_key":
            lines += [f"-- {issue.kind}: {issue.reason}", f"-- {issue.suggestion}", ""]
    return "\n".join(lines)
