"""ADV007 lossy_bitmap: a bitmap heap scan ran out of work_mem and went lossy.

Problem: a bitmap of matching rows that does not fit in ``work_mem`` degrades
to one bit per page ("lossy"): every row of those pages is rechecked against
the condition, and rows that do not match are read and thrown away.

Signal: a Bitmap Heap Scan with Lossy Heap Blocks > 0 (no threshold: any
lossy page is avoidable). Needs EXPLAIN ANALYZE.

Memory that would have sufficed: about 64 bytes per heap page in the bitmap
(PostgreSQL's own sizing of a page entry), for exact + lossy pages, doubled
for the hash table's growth, rounded up to a power of two MB.

Impact: the query's total workload time × the node's exclusive share of the
plan × the lossy share of its pages. Severity: from that impact
(``Thresholds.severity``, the same rule for every check).

Fix: ``SET LOCAL work_mem = '…'`` for this query; or a more selective index so
the bitmap holds fewer pages.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context
from advisor.findings import Finding

CODE = "ADV007"
NAME = "lossy_bitmap"
BYTES_PER_PAGE = 64  # sizeof(PagetableEntry) + hash overhead, as tbm_create() budgets it
GROWTH = 2.0  # the page table doubles when it grows: leave room for it


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        for node in plan.nodes():
            if node.node_type != "Bitmap Heap Scan" or not node.lossy_heap_blocks:
                continue
            lossy, exact = node.lossy_heap_blocks, node.exact_heap_blocks or 0
            pages = lossy + exact
            work_mem = _plan.work_mem_for_kb(pages * BYTES_PER_PAGE * GROWTH / 1024)
            table = node.qualified_relation or node.relation or "?"
            share = plan.time_share(node) * lossy / pages
            yield _plan.make_finding(
                ctx, CODE, NAME, eq,
                title=f"Bitmap Heap Scan on {table} went lossy on {_plan.fmt(lossy)} of {_plan.fmt(pages)} pages",
                suggestion=(f"SET LOCAL work_mem = '{work_mem}';  -- in the transaction running this query\n"
                            f"-- the bitmap of {_plan.fmt(pages)} pages needs about "
                            f"{pages * BYTES_PER_PAGE / 1024:,.0f} kB; with less, pages go lossy and every "
                            "row on them is rechecked. A more selective index shrinks the bitmap too."),
                evidence={"table": table, "lossy_heap_blocks": lossy, "exact_heap_blocks": exact,
                          "rows_removed_by_recheck": node.rows_removed_recheck_total,
                          "suggested_work_mem": work_mem,
                          "plan": _plan.excerpt(node, f"heap blocks exact {_plan.fmt(exact)}, "
                                                      f"lossy {_plan.fmt(lossy)}")},
                share=share, tables=(table,))
