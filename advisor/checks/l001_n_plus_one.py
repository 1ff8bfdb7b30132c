"""ADV101 N+1 selects: one lookup per row of a parent query, in a loop.

Problem: the application reads a list, then runs one query per item for its
related rows. Each costs a round trip and the server's per-statement overhead,
which for cheap primary-key lookups is most of their cost.
Signal: in a unit of work (see workload/sessions.py), one read fingerprint run
at least ``n1_min_repeats`` times with differing parameters.
Impact: the round trips batching saves, (child statements − occurrences) ×
``round_trip_ms`` (measured against the target when a DSN is given); the
server time of the children is assumed unchanged, so this is a lower bound.
Fix: one query for all keys (``col = ANY($1)``) or a JOIN with the parent;
in ORMs, eager loading.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.checks.rewrite import batched_lookup, tables_of
from advisor.findings import Finding, Severity
from advisor.workload.model import RepeatPattern

CODE = "ADV101"
NAME = "n_plus_one"

ORM_HINTS = (
    "SQLAlchemy: options(selectinload(Parent.children)) or joinedload(...); "
    "Django: prefetch_related('children') or select_related('parent'); "
    "ActiveRecord: includes(:children)"
)


def run(ctx: Context) -> Iterable[Finding]:
    for r in ctx.workload.repeats:
        if r.kind == "n_plus_one":
            yield finding(r, ctx, CODE, NAME, "N+1 selects", _suggestion(r))


def finding(r: RepeatPattern, ctx: Context, code: str, name: str, what: str, suggestion: str) -> Finding:
    """Shared with the N+1 writes check: same evidence, same impact rule."""
    rtt = ctx.config.round_trip_ms
    saved = (r.statements - r.occurrences) * rtt
    per = r.statements / r.occurrences
    return Finding(
        code=code,
        check=name,
        severity=_severity(r),
        title=f"{what}: {r.occurrences:,} time(s), {per:,.0f} statements each on average (up to {r.most_per_occurrence:,})",
        suggestion=suggestion,
        fingerprint=r.child_fingerprint,
        normalized=r.child_normalized,
        tables=tables_of(r.child_normalized),
        evidence={
            "parent": r.parent_normalized,
            "parent_fingerprint": r.parent_fingerprint,
            "occurrences": r.occurrences,
            "statements": r.statements,
            "most_per_occurrence": r.most_per_occurrence,
            "server_ms": round(r.child_ms, 3),
            "round_trip_ms": rtt,
            "spent_ms": round(r.child_ms + r.statements * rtt, 3),
            "batched_ms": round(r.child_ms + r.occurrences * rtt, 3),
            "sessions": list(r.sessions),
            "first_seen": r.first_seen,
        },
        impact_ms=saved,
        application=", ".join(r.applications) or None,
    )


def _severity(r: RepeatPattern) -> Severity:
    if r.statements >= 1_000 or r.most_per_occurrence >= 100:
        return Severity.high
    if r.statements >= 100 or r.most_per_occurrence >= 20:
        return Severity.medium
    return Severity.low


def _suggestion(r: RepeatPattern) -> str:
    batched = batched_lookup(r.child_normalized)
    if batched is None:
        return f"Load the children of all parent rows in one query instead of one per row. {ORM_HINTS}."
    sql, column = batched
    return (
        f"Fetch all children in one statement, passing the parent keys as an array:\n  {sql};\n"
        f"or JOIN the child table on {column} in the parent query. {ORM_HINTS}."
    )
