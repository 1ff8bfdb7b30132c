"""ADV003 row_misestimate: the planner's row estimate is off by an order of magnitude or more.

Problem: every plan choice (join method, join order, index or not, memory)
rests on row estimates; a node whose actual rows differ from its estimate by
10× or more misleads every node above it.

Signal: for each executed node, actual rows over all loops (``rows_total``)
against the estimate over the same loops (``plan_rows × loops``): a factor of
``misestimate_factor`` (10× by default) or more, when either side reaches
``misestimate_min_rows``. A node stopped
early (under a Limit, a Merge Join, a SubPlan, or the inner side of a
semi/anti join) legitimately returns fewer rows than estimated and is not counted for that.
One finding per query: the deepest offending node, because the errors above
it usually follow from it; the others are listed in the evidence.

Impact: the query's total workload time × the inclusive share of the node's
parent, the operator that chose its strategy from the wrong estimate.
Severity: from that impact (``Thresholds.severity``, the same rule for every check).

Fix: statistics look stale when the catalog says the table's
``n_mod_since_analyze / rows`` is at least ``stale_stats_modified_share``:
``ANALYZE table;``. Otherwise, when the node's condition constrains several
columns of one table, extended statistics
(``CREATE STATISTICS … (dependencies, mcv) ON a, b FROM t``); with one column,
a larger statistics target for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode

CODE = "ADV003"
NAME = "row_misestimate"


def run(ctx: Context) -> Iterable[Finding]:
    for eq, plan in _plan.explained(ctx):
        offenders = [(node, factor) for node in plan.nodes() if (factor := _factor(ctx, plan, node))]
        if offenders:
            # Deepest first; among equals, the first in plan order.
            node, factor = max(offenders, key=lambda item: (item[0].depth, -item[0].id))
            yield _finding(ctx, eq, plan, node, factor, len(offenders) - 1)


def _stops_early(plan: Plan, node: PlanNode) -> bool:
    """Whether something above may stop reading the node before its end (so fewer rows are expected)."""
    child = node
    for parent in plan.ancestors(node):
        if parent.node_type in ("Limit", "Merge Join") or child.parent_relationship == "SubPlan":
            return True  # a merge join stops when either side runs out; EXISTS at the first row
        if child.parent_relationship == "Inner" and parent.join_type in ("Semi", "Anti"):
            return True
        child = parent
    return False


def _factor(ctx: Context, plan: Plan, node: PlanNode) -> float | None:
    """How many times off the estimate is (≥ the low factor), else None."""
    actual, estimate = node.rows_total, node.plan_rows_total
    if not node.executed or actual is None or estimate is None:
        return None
    if max(actual, estimate) < ctx.config.misestimate_min_rows:
        return None
    if actual < estimate and _stops_early(plan, node):
        return None
    factor = max(actual, estimate) / max(min(actual, estimate), 1.0)
    return factor if factor >= ctx.config.misestimate_factor else None


def _finding(ctx: Context, eq: ExplainedQuery, plan: Plan, node: PlanNode, factor: float, others: int) -> Finding:
    actual, estimate = node.rows_total or 0.0, node.plan_rows_total or 0.0
    direction = "under" if actual > estimate else "over"
    tables = _tables_below(plan, node)
    stale = _stale_tables(ctx, plan, tables)
    parent = plan.parent(node)
    share = plan.time_share(parent or node, inclusive=True)
    evidence = {
        "estimated_rows": round(estimate), "actual_rows": round(actual), "factor": round(factor, 1),
        "direction": f"{direction}estimate", "loops": node.loops, "other_misestimated_nodes": others,
        "stale_tables": stale, "plan": _plan.excerpt(node),
    }
    if parent is not None:
        evidence["affected"] = parent.label()
    return _plan.make_finding(
        ctx, CODE, NAME, eq,
        title=f"Row {direction}estimate ×{_plan.fmt(round(factor))} on {node.label()} "
              f"({_plan.fmt(estimate)} estimated, {_plan.fmt(actual)} actual)",
        suggestion=_suggestion(plan, node, stale, tables), evidence=evidence, share=share,
        tables=tuple(tables) or plan.relations())


def _tables_below(plan: Plan, node: PlanNode) -> list[str]:
    return list(dict.fromkeys(name for n in plan.subtree(node) if (name := n.qualified_relation)))


def _stale_tables(ctx: Context, plan: Plan, tables: list[str]) -> list[dict]:
    stale = []
    for name in tables:
        schema, _, table = name.rpartition(".")
        info = _plan.catalog_table(ctx, table, schema or None)
        rows, modified = getattr(info, "rows", None), getattr(info, "n_mod_since_analyze", None)
        if isinstance(rows, (int, float)) and isinstance(modified, (int, float)):
            share = modified / max(rows, 1)
            if share >= ctx.config.stale_stats_modified_share:
                stale.append({"table": name, "rows": rows, "n_mod_since_analyze": modified,
                              "modified_share": round(share, 3)})
    return stale


def _suggestion(plan: Plan, node: PlanNode, stale: list[dict], tables: list[str]) -> str:
    if stale:
        names = [s["table"] for s in stale]
        return "\n".join(f"ANALYZE {_plan.qualified(t)};" for t in names) + (
            "\n-- statistics look stale: rows changed since the last ANALYZE"
            f" ({', '.join(_modified(s) for s in stale)}); "
            "if this recurs, lower autovacuum_analyze_scale_factor for the table.")
    if node.relation:
        return _scan_statistics(node)
    return _join_statistics(plan, node, tables)


def _modified(stale: dict) -> str:
    return f"{stale['modified_share']:.0%} of {stale['table']}"


def _scan_statistics(node: PlanNode) -> str:
    table = node.qualified_relation or node.relation or "?"
    text = " AND ".join(node.condition_texts())
    columns = [c for c in _plan.condition_columns(text, alias=node.alias, relation=node.relation).all
               if not c.startswith("(")]
    if len(columns) >= 2:
        name = _plan.quote_ident(f"{node.relation}_{'_'.join(columns)}_stats"[:63])
        cols = ", ".join(_plan.quote_ident(c) for c in columns)
        return (f"CREATE STATISTICS {name} (dependencies, mcv) ON {cols} FROM {_plan.qualified(table)};\n"
                f"ANALYZE {_plan.qualified(table)};\n"
                "-- the condition combines correlated columns; per-column statistics multiply their selectivities.")
    if columns:
        return (f"ALTER TABLE {_plan.qualified(table)} ALTER COLUMN {_plan.quote_ident(columns[0])} "
                f"SET STATISTICS 1000;\nANALYZE {_plan.qualified(table)};\n"
                "-- a finer histogram and longer most-common-values list for this column.")
    return (f"ANALYZE {_plan.qualified(table)};\n"
            "-- then compare the estimate again; raise default_statistics_target if it stays off.")


def _join_statistics(plan: Plan, node: PlanNode, tables: list[str]) -> str:
    aliases = _plan.alias_map(plan)
    texts = node.condition_texts() or node.group_key
    columns = [(aliases[a], c) for text in texts for a, c in _plan.qualified_columns(text) if a in aliases]
    lines = [f"ALTER TABLE {_plan.qualified(t)} ALTER COLUMN {_plan.quote_ident(c)} SET STATISTICS 1000;"
             for t, c in dict.fromkeys(columns)]
    lines += [f"ANALYZE {_plan.qualified(t)};" for t in tables]
    return "\n".join(lines) + (
        f"\n-- the estimate of {node.label()} combines its inputs' statistics; finer statistics on the join "
        "columns help, and correlations across tables cannot be declared: check the inputs' estimates first.")
