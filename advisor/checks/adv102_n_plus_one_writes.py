"""ADV102 N+1 writes: rows inserted, updated or deleted one statement at a time.

Problem: a loop sends one INSERT/UPDATE/DELETE per row; each pays a round
trip, a plan and (outside a transaction) a commit.
Signal: in a unit of work, one write fingerprint run at least
``n1_writes_min_repeats`` times with differing parameters.
Impact: as for N+1 selects (ADV101): the round trips batching saves.
Fix: a multi-row INSERT, COPY, or ``UPDATE … FROM (VALUES …)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks._n_plus_one import n_plus_one_finding
from advisor.checks.context import Context
from advisor.findings import Finding

CODE = "ADV102"
NAME = "n_plus_one_writes"

FIXES = {
    "insert": "Insert the rows in one statement (INSERT … VALUES (…), (…), … or INSERT … SELECT * FROM unnest($1::int[], $2::text[])), or COPY … FROM STDIN for large batches (psycopg: cursor.copy()).",
    "update": "Update the rows in one statement: UPDATE t SET col = v.col FROM (VALUES ($1, $2), …) AS v(id, col) WHERE t.id = v.id.",
    "delete": "Delete the rows in one statement: DELETE FROM t WHERE id = ANY($1).",
}


def run(ctx: Context) -> Iterable[Finding]:
    for r in ctx.workload.repeats:
        if r.kind == "n_plus_one_writes":
            verb = r.child_normalized.split(None, 1)[0].lower()
            yield n_plus_one_finding(r, ctx, CODE, NAME, "Row-at-a-time writes", FIXES.get(verb, FIXES["insert"]))
