"""ADV006 index_only_heap_fetches: an Index Only Scan that still visits the table.

Problem: an Index Only Scan skips the table only for pages the visibility map
marks all-visible; on pages changed since the last VACUUM it fetches every
row from the heap, and the "index-only" scan costs as much as an Index Scan.

Signal: Heap Fetches (a total over all loops, as EXPLAIN prints it) is at
least ``heap_fetches_share`` of the rows the node returned (``rows_total``)
and at least ``heap_fetches_min``. Needs EXPLAIN ANALYZE.

Impact: the query's total workload time × the node's exclusive share of the
plan × the fetched share of its rows (capped at 1): the part of the scan spent
on the heap. Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: ``VACUUM (ANALYZE) table;`` to set the visibility map, and an autovacuum
that keeps it set (a lower ``autovacuum_vacuum_insert_scale_factor`` /
``autovacuum_vacuum_scale_factor`` for the table).
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context
from advisor.findings import Finding

CODE = "ADV006"
NAME = "index_only_heap_fetches"


def run(ctx: Context) -> Iterable[Finding]:
    cfg = ctx.config
    for eq, plan in _plan.explained(ctx):
        for node in plan.nodes():
            if node.node_type != "Index Only Scan" or not node.heap_fetches:
                continue
            rows = node.rows_total or 0.0
            fetched_share = node.heap_fetches / max(rows, 1.0)
            if node.heap_fetches < cfg.heap_fetches_min or fetched_share < cfg.heap_fetches_share:
                continue
            table = node.qualified_relation or node.relation or "?"
            share = plan.time_share(node) * min(1.0, fetched_share)
            yield _plan.make_finding(
                ctx, CODE, NAME, eq,
                title=f"Index Only Scan on {table} fetched {_plan.fmt(node.heap_fetches)} rows from the heap",
                suggestion=(f"VACUUM (ANALYZE) {_plan.qualified(table)};\n"
                            f"ALTER TABLE {_plan.qualified(table)} SET (autovacuum_vacuum_scale_factor = 0.05, "
                            "autovacuum_vacuum_insert_scale_factor = 0.05);\n"
                            "-- VACUUM marks pages all-visible so the index-only scan can skip the table; "
                            "the settings make autovacuum keep up with this table's changes."),
                evidence={"table": table, "index": node.index_name, "heap_fetches": node.heap_fetches,
                          "rows_returned": round(rows), "fetched_share": round(fetched_share, 3),
                          "plan": _plan.excerpt(node, f"heap fetches {_plan.fmt(node.heap_fetches)}")},
                share=share, tables=(table,))
