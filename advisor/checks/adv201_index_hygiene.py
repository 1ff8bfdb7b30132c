"""ADV201 Index hygiene: invalid, duplicate, redundant and unused indexes; foreign keys without one.

Problem: every index costs writes, vacuum and cache; an invalid one costs
them and serves nothing. A foreign key without an index on the referencing
side makes joins on it, and deletes on the referenced table, scan.
Signal: the catalog (indexes/existing.py: same shape, a leading-prefix
cover, ``idx_scan = 0`` since statistics were reset, ``indisvalid``); an
unindexed foreign key is reported only when the workload reads the
referencing table by those columns.
Impact: not estimated in time (its cost is on writes); size and scan counts
are the evidence. Severity: low, as ``Thresholds.severity`` gives a finding
without an impact in time.
Fix: ``DROP INDEX CONCURRENTLY`` or ``CREATE INDEX CONCURRENTLY``, never run
by the advisor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.indexes.existing import IndexIssue, index_issues

CODE = "ADV201"
NAME = "index_hygiene"

def run(ctx: Context) -> Iterable[Finding]:
    if ctx.catalog is None:
        return
    for issue in index_issues(ctx.catalog):
        if issue.kind == "unindexed_foreign_key" and not _workload_uses(ctx, issue):
            continue
        yield Finding(
            code=CODE,
            check=NAME,
            severity=ctx.severity(None),
            title=f"{issue.kind.replace('_', ' ').capitalize()}: {_subject(issue)}",
            suggestion=issue.suggestion,
            tables=(issue.table,),
            evidence=_evidence(issue),
        )


def _subject(issue: IndexIssue) -> str:
    if issue.index is not None:
        return f"{issue.index.qualified} on {issue.table}"
    fk = issue.foreign_key
    assert fk is not None  # an issue without an index is an unindexed foreign key (indexes.existing)
    return f"{issue.table} ({', '.join(fk.columns)}) → {fk.ref_table}"


def _evidence(issue: IndexIssue) -> dict:
    evidence: dict = {"reason": issue.reason}
    if issue.index is not None:
        evidence |= {"size_bytes": issue.index.size_bytes, "idx_scan": issue.index.idx_scan, "definition": issue.index.definition}
    if issue.covered_by is not None:
        evidence["covered_by"] = issue.covered_by.definition
    return evidence


def _workload_uses(ctx: Context, issue: IndexIssue) -> bool:
    """Whether some query names the referencing table and every foreign-key column."""
    fk = issue.foreign_key
    assert fk is not None  # asked of unindexed foreign keys only
    table = issue.table.rsplit(".", 1)[-1]
    words = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in (table, *fk.columns)]
    return any(all(w.search(q.normalized) for w in words) for q in ctx.workload.queries)
