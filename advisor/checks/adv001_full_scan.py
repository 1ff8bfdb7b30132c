"""ADV001 full_scan: a big table is read whole to keep a few of its rows.

Problem: a Seq Scan (or Parallel Seq Scan) reads every row of a large table and
its Filter throws almost all of them away; the cost grows with the table, not
with the result.

Signal, all three:
- the table has at least ``big_table_rows`` rows: rows scanned per execution
  (returned + Rows Removed by Filter, divided by the executions), or the
  catalog's row count when it knows the table;
- the Filter removes at least ``full_scan_removed_share`` of the rows scanned;
- the scan's exclusive time is at least ``full_scan_time_share`` of the plan's
  time (a cheap scan inside an expensive query is not the problem).
On plain EXPLAIN (no actual rows) the table size must come from the catalog,
the rows kept are the estimate and the share is the scan's share of the cost.

Impact: the query's total workload time × the scan's exclusive share of its
plan. Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: an index on the Filter's columns (equality columns first, then a range
column), named in the suggestion; ``advisor suggest-indexes`` validates it on
the whole workload with hypothetical indexes and proposes the exact one.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode

CODE = "ADV001"
NAME = "full_scan"


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx, analyzed=False):
        for node in plan.nodes():
            if node.node_type == "Seq Scan" and node.relation and node.filter:
                if finding := _check(ctx, eq, plan, node):
                    yield finding


def _scan_numbers(ctx: Context, plan: Plan, node: PlanNode) -> tuple[float, float, float] | None:
    """(table rows, rows scanned per execution, rows kept per execution) from actuals or estimates."""
    catalog_rows = _plan.table_rows(ctx, node)
    if plan.analyzed and node.executed:
        # One execution of a parallel scan is shared by its participants: loops count processes.
        executions = max(1.0, node.loops / node.participants) if node.in_parallel else float(node.loops)
        scanned = (node.rows_fetched or 0.0) / executions
        return max(scanned, catalog_rows or 0.0), scanned, (node.rows_total or 0.0) / executions
    if not plan.analyzed and catalog_rows:
        return catalog_rows, catalog_rows, min(catalog_rows, node.plan_rows or 0.0)
    return None


def _check(ctx: Context, eq: ExplainedQuery, plan: Plan, node: PlanNode) -> Finding | None:
    cfg = ctx.config
    numbers = _scan_numbers(ctx, plan, node)
    if numbers is None:
        return None
    table_rows, scanned, kept = numbers
    removed_share = 1.0 - kept / scanned if scanned else 0.0
    share = plan.time_share(node)
    if table_rows < cfg.big_table_rows or removed_share < cfg.full_scan_removed_share \
            or share < cfg.full_scan_time_share:
        return None
    table = node.qualified_relation or node.relation or "?"
    keys = _plan.condition_columns(node.filter, alias=node.alias, relation=node.relation)
    evidence = {
        "table": table, "table_rows": round(table_rows), "rows_scanned": round(scanned), "rows_returned": round(kept),
        "removed_share": round(removed_share, 4), "filter": node.filter, "filter_columns": list(keys.all),
        "node_ms": node.exclusive_ms, "plan_ms": plan.total_ms, "loops": node.loops or None,
        "estimated": not plan.analyzed, "plan": _plan.excerpt(node),
    }
    return _plan.make_finding(
        ctx, CODE, NAME, eq,
        title=f"Full scan of {table} ({_plan.fmt(table_rows)} rows) keeps {_percent(1 - removed_share)} of them",
        suggestion=_suggestion(table, keys, node.filter), evidence=evidence, share=share, tables=(table,))


def _percent(share: float) -> str:
    return f"{share:.2%}" if share < 0.01 else f"{share:.0%}"


def _suggestion(table: str, keys: _plan.KeyColumns, filter_text: str | None) -> str:
    advisor = ("`advisor suggest-indexes` tests candidate indexes against the whole workload "
               "(hypothetical indexes) and proposes the exact one.")
    if not keys.all:
        return (f"The filter {filter_text} has no column a b-tree index can serve as written "
                f"(OR, NOT, functions of several columns); rewrite it or index an expression. {advisor}")
    # Equality columns lead; after the first range column an index stops narrowing, so keep just one.
    columns = keys.equality + keys.range[:1]
    roles = [f"{c} (equality)" for c in keys.equality] + [f"{c} (range)" for c in keys.range]
    return (f"{_plan.index_ddl(table, columns)}\n"
            f"-- filter columns: {', '.join(roles)}. {advisor}")
