"""ADV002 index_filter: an index finds rows that a Filter then throws away.

Problem: an Index Scan, Index Only Scan or Bitmap Heap Scan uses an index for
part of the WHERE clause only; every row the index returns is fetched from the
heap and the rest of the clause, applied as a Filter, discards most of them.

Signal: the node's Rows Removed by Filter (× loops) is at least
``index_filter_removed_share`` of the rows it fetched (returned + removed) and
at least ``index_filter_min_removed`` rows. Needs EXPLAIN ANALYZE.

Impact: the query's total workload time × the node's exclusive share of its
plan × the share of fetched rows wasted. Severity: from that impact
(``Thresholds.severity``, the same rule for every check).

Fix: a composite index whose columns are the index condition's columns plus
the filter's (equality columns first, then one range column), so the index
returns only the rows the query keeps.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode

CODE = "ADV002"
NAME = "index_filter"
_TYPES = frozenset({"Index Scan", "Index Only Scan", "Bitmap Heap Scan"})


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        for node in plan.nodes():
            if node.node_type in _TYPES and node.filter and node.executed:
                if finding := _check(ctx, eq, plan, node):
                    yield finding


def _index_condition(plan: Plan, node: PlanNode) -> tuple[str | None, str | None]:
    """(condition, index name): a bitmap heap scan's index is on its Bitmap Index Scan children."""
    if node.node_type != "Bitmap Heap Scan":
        return node.index_cond, node.index_name
    indexes = [n.index_name for n in plan.nodes() if n.parent_id == node.id and n.index_name]
    return node.recheck_cond, ", ".join(filter(None, indexes)) or None


def _check(ctx: Context, eq: ExplainedQuery, plan: Plan, node: PlanNode) -> Finding | None:
    cfg = ctx.config
    removed, fetched = node.rows_removed_total or 0.0, node.rows_fetched or 0.0
    wasted = removed / fetched if fetched else 0.0
    if wasted < cfg.index_filter_removed_share or removed < cfg.index_filter_min_removed:
        return None
    table = node.qualified_relation or node.relation or "?"
    cond, index = _index_condition(plan, node)
    used = _plan.condition_columns(cond, alias=node.alias, relation=node.relation)
    filtered = _plan.condition_columns(node.filter, alias=node.alias, relation=node.relation)
    keys = used.then(filtered)
    share = plan.time_share(node) * wasted
    evidence = {
        "table": table, "index": index, "index_cond": cond, "filter": node.filter,
        "rows_fetched": round(fetched), "rows_removed": round(removed), "rows_returned": round(node.rows_total or 0),
        "removed_share": round(wasted, 4), "loops": node.loops, "node_ms": node.exclusive_ms,
        "plan_ms": plan.total_ms, "plan": _plan.excerpt(node),
    }
    return _plan.make_finding(
        ctx, CODE, NAME, eq,
        title=f"Index on {table} returns {_plan.fmt(fetched)} rows, the filter drops {wasted:.0%} of them",
        suggestion=_suggestion(table, index, keys, filtered), evidence=evidence, share=share, tables=(table,))


def _suggestion(table: str, index: str | None, keys: _plan.KeyColumns, filtered: _plan.KeyColumns) -> str:
    if not filtered.all:
        return (f"The filter left after {index or 'the index'} cannot be served by a b-tree index as written; "
                "see `advisor suggest-indexes` for the workload's best index on this table.")
    columns = keys.equality + keys.range[:1]
    return (f"{_plan.index_ddl(table, columns)}\n"
            f"-- adds the filter's columns ({', '.join(filtered.all)}) to what {index or 'the index'} covers, "
            "so the index returns only the rows kept; drop the old index if nothing else needs it.")
