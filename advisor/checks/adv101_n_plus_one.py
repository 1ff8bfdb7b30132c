"""ADV101 N+1 selects: one lookup per row of a parent query, in a loop.

Problem: the application reads a list, then runs one query per item for its
related rows. Each costs a round trip and the server's per-statement overhead,
which for cheap primary-key lookups is most of their cost.
Signal: in a unit of work (see workload/sessions.py), one read fingerprint run
at least ``n1_min_repeats`` times with differing parameters.
Impact: the time the pattern spends, its children's server time plus a
round trip each (``round_trip_ms``, measured against the target when a DSN is
given); batching saves the round trips and the per-statement work, and for
children that scan, all scans but one. ``batched_ms`` in the evidence is the
batched form's time if only the round trips were saved (so ``spent_ms −
batched_ms`` is the least batching saves). Severity: from that impact
(``Thresholds.severity``). A paging loop (growing OFFSET) is ADV009, not this.
Fix: one statement for all keys, proven equivalent per key (checks/rewrite.py):
``col = ANY($1)`` for row lookups, ``unnest($1) LEFT JOIN … GROUP BY`` for
aggregates, a ``LATERAL`` subquery for ``ORDER BY … LIMIT``; where no
equivalent form is known the finding says so. In ORMs, eager loading.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks._n_plus_one import n_plus_one_finding
from advisor.checks.context import Context
from advisor.checks.rewrite import Batched, batched_lookup
from advisor.findings import Finding
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
            batched = _batched(r, ctx)
            rewrite = {"kind": batched.kind, "sql": batched.sql, "parameter": batched.parameter,
                       "key_column": batched.column, "key_position": batched.key_position,
                       "key_added": batched.key_added} if isinstance(batched, Batched) else {"none_known": batched}
            yield n_plus_one_finding(r, ctx, CODE, NAME, "N+1 selects", _suggestion(batched), batched=rewrite)


def _batched(r: RepeatPattern, ctx: Context) -> Batched | str:
    batched = batched_lookup(r.child_normalized)
    if isinstance(batched, Batched) and batched.kind != "rows" and (typed := _key_type(ctx, batched)):
        batched = batched_lookup(r.child_normalized, typed)  # unnest needs the array's type
    return batched


def _suggestion(batched: Batched | str) -> str:
    if isinstance(batched, str):
        return (f"No equivalent batched form of this query is known ({batched}): load the children of all parent "
                f"rows in one query (a JOIN with the parent) and check it returns the same rows per parent. "
                f"{ORM_HINTS}.")
    how = {
        "rows": f"each row carries its key ({batched.column}) to hand it to its parent",
        "aggregate": "one row per key, keys without rows included (count 0), as the separate queries returned them",
        "top_n": "the query runs per key in a LATERAL subquery, so its ORDER BY … LIMIT applies to each key",
    }[batched.kind]
    same = (f" It holds when {', '.join(batched.others)} {'is' if len(batched.others) == 1 else 'are'} the same "
            "for every parent, as the log's constants are." if batched.others else "")
    return (f"Fetch all children in one statement, passing the parent keys as an array in {batched.parameter} "
            f"({how}):\n  {batched.sql};\n{same}{' ' if same else ''}{ORM_HINTS}.")


def _key_type(ctx: Context, batched: Batched) -> str | None:
    table = ctx.catalog.table(batched.table) if ctx.catalog is not None and batched.table else None
    column = table.columns.get(batched.column.rsplit(".", 1)[-1]) if table is not None else None
    return column.type if column is not None else None
