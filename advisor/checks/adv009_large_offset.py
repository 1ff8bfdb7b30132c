"""ADV009 large_offset: deep pagination with OFFSET reads and throws away every skipped row.

Problem: ``OFFSET n`` does not skip rows for free: the server produces the
first n rows (sorting, joining, fetching them) and discards them; page 1,000
costs a thousand pages. The cost grows with the page number.

Signal, any of:
- in the plan: a Limit whose child produced at least ``large_offset`` rows
  more than the Limit passed on (``rows_total`` of both, so loops count);
- in the query text (the logged sample, else the normalized text with the
  sample's parameters): ``OFFSET n`` with n ≥ ``large_offset``, read with
  sqlglot. Works without EXPLAIN;
- in the log: a paging loop, the same query run with a growing OFFSET at
  least ``paging_min_pages`` times in one unit of work (workload/sessions.py),
  whatever the offsets. Works without EXPLAIN and without a catalog.

Impact: the query's total workload time × the Limit's inclusive share of the
plan × the discarded share of the rows it read; without a plan, for a loop,
its pages' time × the share of the rows read that the offsets skipped (the
page size is the step between offsets), else the query's total time ×
offset / (offset + limit). Severity: from that impact (``Thresholds.severity``).

Fix: keyset pagination, derived from the query with sqlglot: the same query
with ``AND (sort columns) > (:last_values)`` (``<`` for DESC; an expanded
OR chain when directions are mixed), the same ORDER BY and LIMIT, and no
OFFSET; the application passes the last row of the previous page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from advisor.checks import _plan
from advisor.checks.context import Context, ExplainedQuery
from advisor.findings import Finding
from advisor.plans import Plan, PlanNode
from advisor.words import plural
from advisor.workload.model import Query, RepeatPattern

CODE = "ADV009"
NAME = "large_offset"
_SENTINEL = "__advisor_last_"


@dataclass(frozen=True, slots=True)
class Paging:
    """What the query text says: the statement, which of its SELECTs pages, its offset and limit."""

    tree: exp.Expr
    position: int  # of the paging SELECT among the tree's SELECTs (find_all order)
    offset: int | None
    limit: int | None

    @property
    def select(self) -> exp.Select:
        return list(self.tree.find_all(exp.Select))[self.position]


def run(ctx: Context) -> Iterable[Finding]:
    loops = paging_loops(ctx.workload.repeats)
    seen: set[str] = set()
    for eq in ctx.explained:
        seen.add(eq.query.fingerprint)
        if finding := _check(ctx, eq.query, eq, loops.get(eq.query.fingerprint)):
            yield finding
    for query in ctx.workload.queries:  # the text alone suffices for queries that were not explained
        if query.fingerprint not in seen and (finding := _check(ctx, query, None, loops.get(query.fingerprint))):
            yield finding


@dataclass(frozen=True, slots=True)
class Loop:
    """One query's paging loops in the log (workload/sessions.py), whatever ran before them."""

    loops: int
    pages: int
    most_pages: int
    deepest_offset: int
    ms: float  # server time of the loops' pages
    wasted_ms: float  # the share of it spent on rows the OFFSETs discarded
    sessions: tuple[str, ...]


def paging_loops(repeats: Iterable[RepeatPattern]) -> dict[str, Loop]:
    found: dict[str, Loop] = {}
    for r in repeats:
        if r.kind != "pagination":
            continue
        before = found.get(r.child_fingerprint, Loop(0, 0, 0, 0, 0.0, 0.0, ()))
        found[r.child_fingerprint] = Loop(
            before.loops + r.occurrences, before.pages + r.statements, max(before.most_pages, r.most_per_occurrence),
            max(before.deepest_offset, r.deepest_offset or 0), before.ms + r.child_ms,
            before.wasted_ms + r.child_ms * (r.discarded_share or 0.0),
            tuple(dict.fromkeys(before.sessions + r.sessions)))
    return found


def _check(ctx: Context, query: Query, eq: ExplainedQuery | None, loop: Loop | None) -> Finding | None:
    cfg = ctx.config
    paging = read_paging(query)
    limit_node = _plan_limit(eq.plan, cfg.large_offset) if eq is not None and eq.plan.analyzed else None
    text_offset = paging.offset if paging else None
    if limit_node is None and loop is None and (text_offset is None or text_offset < cfg.large_offset):
        return None
    evidence: dict = {"offset": text_offset, "limit": paging.limit if paging else None}
    if loop is not None:
        evidence.update(paging_loops=loop.loops, pages=loop.pages, most_pages_per_loop=loop.most_pages,
                        deepest_offset=loop.deepest_offset, loop_ms=round(loop.ms, 3), sessions=list(loop.sessions))
    impact = None
    if limit_node is not None:
        assert eq is not None  # the Limit node is from eq's plan
        node, child = limit_node
        discarded = (child.rows_total or 0) - (node.rows_total or 0)
        share = eq.plan.time_share(node, inclusive=True) * discarded / max(child.rows_total or 1, 1)
        evidence.update(rows_read=child.rows_total, rows_returned=node.rows_total, rows_discarded=discarded,
                        plan=[_plan.excerpt(node), _plan.excerpt(child)])
        title = f"Deep pagination: {_plan.fmt(discarded)} rows read and discarded before the page"
    elif loop is not None:  # the log's own account: the rows before each page, read again by every page
        impact = round(loop.wasted_ms, 3)
        share = loop.wasted_ms / query.total_ms if query.total_ms else 0.0
        title = (f"Paging loop: {_plan.fmt(loop.pages)} pages with a growing OFFSET (up to "
                 f"{_plan.fmt(loop.deepest_offset)}) in {plural(loop.loops, 'unit')} of work; every page "
                 "reads and discards the rows before it")
    else:
        assert paging is not None and text_offset is not None  # the text's large OFFSET: else returned above
        share = text_offset / (text_offset + (paging.limit or 1))
        title = f"Deep pagination: {_plan.fmt(text_offset)} rows read and discarded before the page"
    return _finding(ctx, query, eq, title, _suggestion(paging), evidence, share, impact)


def _finding(ctx: Context, query: Query, eq: ExplainedQuery | None, title: str, suggestion: str,
             evidence: dict, share: float, impact: float | None) -> Finding:
    if eq is not None:
        return _plan.make_finding(ctx, CODE, NAME, eq, title=title, suggestion=suggestion, evidence=evidence,
                                  share=share)
    if impact is None and query.total_ms is not None:
        impact = round(query.total_ms * share, 3)
    return Finding(code=CODE, check=NAME, severity=ctx.severity(impact), title=title, suggestion=suggestion,
                   fingerprint=query.fingerprint, normalized=query.normalized,
                   evidence={**evidence, "plan_share": round(share, 4)}, impact_ms=impact,
                   application=", ".join(query.applications) or None)


def _plan_limit(plan: Plan, large: int) -> tuple[PlanNode, PlanNode] | None:
    """The Limit that discards the most rows, if at least ``large``."""
    best = None
    for node in plan.nodes():
        child = next((c for c in node.children if c.parent_relationship == "Outer"), None)
        if node.node_type != "Limit" or child is None or child.rows_total is None:
            continue
        discarded = child.rows_total - (node.rows_total or 0)
        if discarded >= large and (best is None or discarded > best[0]):
            best = (discarded, node, child)
    return best[1:] if best else None


# --- reading the query ---------------------------------------------------------


def _parameters(text: str | None) -> dict[str, str]:
    """'$1 = '5000', $2 = NULL' → {'$1': '5000', '$2': 'NULL'} (the log's parameter line)."""
    return {m[1]: (m[2] if m[2] is not None else m[3]).replace("''", "'")
            for m in re.finditer(r"(\$\d+)\s*=\s*(?:'((?:[^']|'')*)'|([^,\s]+))", text or "")}


def _number(node: exp.Expr | None, params: dict[str, str]) -> int | None:
    value = node.args.get("expression") if node is not None else None
    if isinstance(value, exp.Parameter):
        value = params.get(f"${value.this.name}")
    elif isinstance(value, exp.Literal) and not value.is_string:
        value = value.this
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def read_paging(query: Query) -> Paging | None:
    """The paging SELECT (largest OFFSET) of the query's sample, else of its normalized text."""
    params = _parameters(query.sample_parameters)
    for text in (query.sample, query.normalized):
        try:
            tree = sqlglot.parse_one(text, read="postgres") if text else None
        except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
            continue
        if tree is None:
            continue
        pages = [Paging(tree, i, _number(s.args.get("offset"), params), _number(s.args.get("limit"), params))
                 for i, s in enumerate(tree.find_all(exp.Select)) if s.args.get("offset") is not None]
        known = [p for p in pages if p.offset is not None]
        if known or pages:
            return max(known, key=lambda p: p.offset or 0) if known else pages[0]
    return None


# --- the keyset rewrite ----------------------------------------------------------


def _sort_keys(select: exp.Select) -> list[tuple[exp.Expr, bool]]:
    """ORDER BY as (expression usable in WHERE, descending): positions and output aliases resolved."""
    order = select.args.get("order")
    outputs = select.expressions
    aliases = {e.alias: e.this for e in outputs if isinstance(e, exp.Alias)}
    keys = []
    for ordered in order.expressions if order else ():
        key = ordered.this
        if isinstance(key, exp.Literal) and not key.is_string and key.this.isdigit() and int(key.this) <= len(outputs):
            key = outputs[int(key.this) - 1].unalias()
        elif isinstance(key, exp.Column) and not key.table and key.name in aliases:
            key = aliases[key.name]
        keys.append((key.copy(), bool(ordered.args.get("desc"))))
    return keys


def _param_names(keys: list[tuple[exp.Expr, bool]]) -> list[str]:
    names: list[str] = []
    for i, (key, _) in enumerate(keys, 1):
        base = re.sub(r"\W+", "_", key.name if isinstance(key, exp.Column) else f"key{i}").strip("_").lower()
        name = f"last_{base or f'key{i}'}"
        names.append(name if name not in names else f"{name}_{i}")
    return names


def _keyset_predicate(keys: list[tuple[exp.Expr, bool]], params: Sequence[exp.Expr]) -> exp.Expr:
    if len({desc for _, desc in keys}) == 1:  # one direction: a row comparison an index can use
        op = exp.LT if keys[0][1] else exp.GT
        if len(keys) == 1:
            return op(this=keys[0][0], expression=params[0])
        return op(this=exp.Tuple(expressions=[k for k, _ in keys]), expression=exp.Tuple(expressions=params))
    # Mixed directions: (a < :a) OR (a = :a AND b > :b) OR …
    terms = []
    for i, (key, desc) in enumerate(keys):
        ties = [exp.EQ(this=k.copy(), expression=p.copy()) for (k, _), p in zip(keys[:i], params[:i])]
        step = (exp.LT if desc else exp.GT)(this=key.copy(), expression=params[i].copy())
        terms.append(exp.and_(*ties, step) if ties else step)
    return exp.paren(exp.or_(*terms))


def keyset_rewrite(paging: Paging) -> tuple[str, list[str]] | None:
    """The statement with a keyset condition instead of OFFSET, and its bind names; None without ORDER BY."""
    tree = paging.tree.copy()
    select = list(tree.find_all(exp.Select))[paging.position]
    keys = _sort_keys(select)
    if not keys:
        return None
    names = _param_names(keys)
    params = [exp.column(_SENTINEL + n) for n in names]
    predicate = _keyset_predicate(keys, params)
    select.set("offset", None)
    if any(k.find(exp.AggFunc) for k, _ in keys):  # sorted by an aggregate: the condition is on groups
        select.having(predicate, copy=False)
    else:
        select.where(predicate, copy=False)
    sql = tree.sql(dialect="postgres")
    for name in names:
        sql = sql.replace(_SENTINEL + name, ":" + name)
    return sql, names


def _suggestion(paging: Paging | None) -> str:
    if paging is None:
        return ("-- Paginate by key instead of OFFSET: WHERE (sort columns) > (:last_values) ORDER BY sort columns "
                "LIMIT n, passing the last row of the previous page.")
    rewrite = keyset_rewrite(paging)
    if rewrite is None:
        return ("-- The query pages with OFFSET but has no ORDER BY: its pages are not even stable. Order by a "
                "unique key (e.g. the primary key), then paginate with WHERE key > :last_key ORDER BY key LIMIT n.")
    sql, names = rewrite
    return (f"{sql};\n"
            f"-- keyset pagination: bind {', '.join(':' + n for n in names)} to the last row of the previous page "
            "(the first page omits the condition). The ORDER BY must be unique (end it with the primary key) "
            "or rows are skipped or repeated; an index on the ORDER BY columns makes each page an index range read.")
