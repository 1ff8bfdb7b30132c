"""Shared by the N+1 checks (ADV101 selects, ADV102 writes): not a check itself.

Both weigh a repeated statement the same way, so one builder makes their
findings: the time the pattern spends is its children's server time plus a
round trip each (``round_trip_ms``), and batching keeps one round trip per
parent (``batched_ms``).
"""

from __future__ import annotations

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.words import plural
from advisor.workload.model import RepeatPattern
from advisor.workload.tables import tables_of


def n_plus_one_finding(r: RepeatPattern, ctx: Context, code: str, name: str, what: str, suggestion: str,
                       **evidence) -> Finding:
    rtt = ctx.config.round_trip_ms
    spent = r.child_ms + r.statements * rtt
    per = r.statements / r.occurrences
    return Finding(
        code=code,
        check=name,
        severity=ctx.severity(spent),
        title=(f"{what}: {plural(r.occurrences, 'time')}, {per:,.0f} statements each on average "
               f"(up to {r.most_per_occurrence:,})"),
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
            "spent_ms": round(spent, 3),
            "batched_ms": round(r.child_ms + r.occurrences * rtt, 3),
            "sessions": list(r.sessions),
            "first_seen": r.first_seen,
            **evidence,
        },
        impact_ms=round(spent, 3),
        application=", ".join(r.applications) or None,
    )
