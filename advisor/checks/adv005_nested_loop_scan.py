"""ADV005 nested_loop_scan: a nested loop re-reads its inner side without an index, once per outer row.

Problem: a Nested Loop runs its inner side once per outer row. With an index
on the join column each run is a lookup; without one, each run reads the whole
inner input (a Seq Scan again and again, or a Materialize re-scanning its
stored rows and testing the join filter on every pair): rows × rows work.

Signal: a Nested Loop whose inner side runs at least ``nested_loop_min_loops``
times and whose inner path is not an index: a Seq Scan (or another
non-index scan) directly, behind a Materialize, or behind a Memoize that
misses (the scan below it then runs once per miss: its loops count).
Memoize (PG 14+) hits and misses are reported when present. Needs
EXPLAIN ANALYZE.

Impact: the query's total workload time × (the inner side's inclusive share
of the plan + the join's own share, where the join filter runs).
Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: an index on the inner table's join columns (taken from the Join Filter
or the inner scan's Filter), which turns each inner run into an index lookup;
when the outer side was underestimated (see ADV003), better statistics let
the planner pick a hash join instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode

CODE = "ADV005"
NAME = "nested_loop_scan"
_WRAPPERS = frozenset({"Materialize", "Memoize", "Result", "Subquery Scan"})
_INDEX_PATHS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan", "Tid Scan",
                          "Tid Range Scan"})


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        for node in plan.nodes():
            if node.node_type == "Nested Loop" and node.executed:
                if finding := _check(ctx, eq, plan, node):
                    yield finding


def _inner_path(inner: PlanNode) -> list[PlanNode]:
    """The inner side from its top down through single-child wrappers to the node doing the work."""
    path = [inner]
    while path[-1].node_type in _WRAPPERS and len(_plan_children(path[-1])) == 1:
        path.append(_plan_children(path[-1])[0])
    return path


def _plan_children(node: PlanNode) -> list[PlanNode]:
    return [c for c in node.children if c.parent_relationship not in ("InitPlan", "SubPlan")]


def _check(ctx: Context, eq: ExplainedQuery, plan: Plan, join: PlanNode) -> Finding | None:
    cfg = ctx.config
    inner = next((c for c in join.children if c.parent_relationship == "Inner"), None)
    if inner is None or inner.loops < cfg.nested_loop_min_loops:
        return None
    path = _inner_path(inner)
    work = path[-1]
    if work.node_type in _INDEX_PATHS or not work.relation:  # only table reads that an index can replace
        return None
    materialized = any(n.node_type == "Materialize" for n in path)
    # Behind a Memoize the scan runs once per miss; behind a Materialize once, then its rows are re-read.
    if not materialized and work.loops < cfg.nested_loop_min_loops:
        return None
    share = min(1.0, plan.time_share(inner, inclusive=True) + plan.time_share(join))
    outer = next((c for c in join.children if c.parent_relationship == "Outer"), None)
    return _plan.make_finding(
        ctx, CODE, NAME, eq,
        title=f"Nested loop runs {work.label()} {_plan.fmt(inner.loops)} times without an index",
        suggestion=_suggestion(plan, join, inner, work, outer), evidence=_evidence(plan, join, path, outer),
        share=share, tables=tuple(filter(None, (work.qualified_relation,))))


def _evidence(plan: Plan, join: PlanNode, path: list[PlanNode], outer: PlanNode | None) -> dict:
    work, inner = path[-1], path[0]
    evidence: dict = {
        "inner_loops": inner.loops, "scan_executions": work.loops,
        "rows_per_inner_run": round((work.rows_fetched or 0) / max(work.loops, 1)),
        "rows_removed_by_join_filter": join.rows_removed_join_total, "join_filter": join.join_filter,
        "plan": [_plan.excerpt(join)] + [_plan.excerpt(n) for n in path],
    }
    if memo := next((n for n in path if n.node_type == "Memoize"), None):
        evidence.update(memoize_hits=memo.cache_hits, memoize_misses=memo.cache_misses,
                        memoize_evictions=memo.cache_evictions)
    if outer is not None and outer.rows_total is not None:
        evidence.update(outer_rows=outer.rows_total, outer_estimated_rows=outer.plan_rows_total)
    if plan.settings:
        evidence["settings"] = dict(plan.settings)
    return evidence


def _suggestion(plan: Plan, join: PlanNode, inner: PlanNode, work: PlanNode, outer: PlanNode | None) -> str:
    table = work.qualified_relation or work.relation
    texts = " AND ".join(filter(None, (join.join_filter, work.filter)))
    keys = _plan.condition_columns(texts, alias=work.alias, relation=work.relation)
    columns = keys.equality + keys.range[:1]
    lines = []
    if table and columns:
        lines.append(_plan.index_ddl(table, columns))
        lines.append(f"-- each of the {_plan.fmt(inner.loops)} inner runs becomes an index lookup on "
                     f"{', '.join(columns)} instead of reading {table}.")
    else:
        lines.append(f"-- index the join columns of {work.label()} ({texts or 'no join condition found'}), "
                     "or run `advisor suggest-indexes` for the workload's best index.")
    if outer is not None and outer.rows_total and outer.plan_rows_total and \
            outer.rows_total >= 10 * max(outer.plan_rows_total, 1):
        lines.append(f"-- the planner expected {_plan.fmt(outer.plan_rows_total)} outer rows and got "
                     f"{_plan.fmt(outer.rows_total)}: fix that estimate (ADV003) and it may choose a hash join.")
    disabled = [k for k, v in plan.settings.items() if k.startswith("enable_") and v == "off"]
    if disabled:
        lines.append(f"-- planner methods disabled in this session: {', '.join(disabled)}.")
    return "\n".join(lines)
