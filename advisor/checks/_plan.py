"""Shared helpers of the plan checks (adv0NN_*): not a check itself.

Impact (severity follows from it: Thresholds.severity), plan excerpts, the
columns of a plan condition and index DDL, so that every plan check words and
weighs its findings the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from advisor.findings import Finding

if TYPE_CHECKING:
    from advisor.checks.context import Context, ExplainedQuery
    from advisor.plans import Plan, PlanNode


def explained(ctx: Context, *, analyzed: bool = True) -> Iterator[tuple[ExplainedQuery, Plan]]:
    """The context's plans; with ``analyzed`` only those with actual rows and times."""
    for eq in ctx.explained:
        if eq.plan is not None and (eq.plan.analyzed or not analyzed):
            yield eq, eq.plan


def impact_ms(eq: ExplainedQuery, share: float) -> float | None:
    """The workload time this problem costs: the query's total time × the problem's share of its plan.

    The plan is one execution; assuming every call spends its time in the same
    proportions is the best a single sample allows.
    """
    total = eq.query.total_ms
    return None if total is None else round(total * max(0.0, min(1.0, share)), 3)


def fmt(value: float | None) -> str:
    """1,000,000; 12.5 for fractions; ? when unknown."""
    if value is None:
        return "?"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.1f}"


def excerpt(node: PlanNode, *extra: str) -> str:
    """'Seq Scan on t (rows 1,000,000 scanned, 12 returned, filter: (…), 40.1 ms)': one line of the plan.

    Conditions come as `label: condition` and nothing else has a colon: reports mask the literals
    of the conditions only (fingerprint.mask_conditions), never the plan's rows, loops or times.
    """
    parts: list[str] = []
    if node.rows_total is not None:
        if node.rows_removed_total:
            parts.append(f"rows {fmt(node.rows_fetched)} scanned, {fmt(node.rows_total)} returned")
        else:
            parts.append(f"rows {fmt(node.rows_total)}")
        if node.plan_rows_total is not None:
            parts.append(f"estimated {fmt(node.plan_rows_total)}")
        if node.loops > 1:
            parts.append(f"loops {fmt(node.loops)}")
    elif node.plan_rows is not None:
        parts.append(f"estimated rows {fmt(node.plan_rows)}")
    for name, text in (("index cond", node.index_cond), ("recheck", node.recheck_cond), ("filter", node.filter),
                       ("join filter", node.join_filter), ("hash cond", node.hash_cond)):
        if text:
            parts.append(f"{name}: {text}")
    parts.extend(extra)
    if node.exclusive_ms is not None:
        parts.append(f"{node.exclusive_ms:,.1f} ms self, {node.inclusive_ms:,.1f} ms total")
    return f"{node.label()} ({', '.join(parts)})" if parts else node.label()


def make_finding(ctx: Context, code: str, name: str, eq: ExplainedQuery, *, title: str, suggestion: str,
                 evidence: dict[str, Any], share: float, tables: tuple[str, ...] = ()) -> Finding:
    """A plan check's finding: impact from the plan share, severity from that impact (Thresholds.severity)."""
    query = eq.query
    impact = impact_ms(eq, share)
    return Finding(code=code, check=name, severity=ctx.severity(impact), title=title, suggestion=suggestion,
                   fingerprint=query.fingerprint, normalized=query.normalized,
                   tables=tables or eq.plan.relations(),
                   evidence={**evidence, "plan_share": round(share, 4)},
                   impact_ms=impact,
                   application=", ".join(query.applications) or None)


# --- conditions and indexes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyColumns:
    """Columns of one table a condition constrains: equality ones lead an index, range ones follow."""

    equality: tuple[str, ...] = ()
    range: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.equality + self.range))

    def then(self, other: KeyColumns) -> KeyColumns:
        return KeyColumns(tuple(dict.fromkeys(self.equality + other.equality)),
                          tuple(dict.fromkeys(self.range + other.range)))


# What EXPLAIN prints that is not SQL: subplan and parameter references become a constant.
_NOT_SQL = re.compile(r"\((?:hashed )?SubPlan \d+\)|\(InitPlan \d+\)\.col\d+|\$\d+")
_EQUALITY = (exp.EQ, exp.In, exp.Is, exp.NullSafeEQ)
_RANGE = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.Like, exp.ILike)


def _parse_condition(text: str) -> exp.Expr | None:
    try:
        tree = sqlglot.parse_one(f"SELECT 1 WHERE {_NOT_SQL.sub('NULL', text)}", read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    where = tree.args.get("where")
    return where.this if where is not None else None


def _conjuncts(node: exp.Expr) -> Iterator[exp.Expr]:
    node = node.unnest()
    if isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _key_of(side: exp.Expr, owners: set[str]) -> str | None:
    """The indexable key of one side of a comparison, if it is on our table: a column or an expression."""
    columns = list(side.find_all(exp.Column))
    if not columns or any(c.table and c.table not in owners for c in columns):
        return None
    bare = side.unnest()
    while isinstance(bare, exp.Cast):  # (status)::text is the column status
        bare = bare.this.unnest()
    if isinstance(bare, exp.Column):
        return bare.name
    for column in bare.find_all(exp.Column):
        column.set("table", None)
    return f"({bare.sql(dialect='postgres')})"


def _leading_wildcard(pred: exp.Expr) -> bool:
    pattern = pred.expression if isinstance(pred, (exp.Like, exp.ILike)) else None
    literal = next(pattern.find_all(exp.Literal), None) if pattern is not None else None
    return literal is not None and literal.is_string and literal.this[:1] in ("%", "_")


def _comparison_key(pred: exp.Expr, owners: set[str]) -> str | None:
    if isinstance(pred, (exp.Between, exp.In)):
        return _key_of(pred.this, owners)
    if isinstance(pred, exp.Binary):  # the other comparisons kept (=, <, LIKE, IS …) all are
        return _key_of(pred.left, owners) or _key_of(pred.right, owners)
    return None


def condition_columns(text: str | None, *, alias: str | None = None, relation: str | None = None) -> KeyColumns:
    """Columns of ``relation`` (known as ``alias``) that ``text`` (a Filter, Index Cond…) constrains.

    ANDed comparisons only: an OR or a NOT needs another kind of index and is
    left to the index advisor. ``= ANY (array)`` counts as equality.
    """
    tree = _parse_condition(text) if text else None
    if tree is None:
        return KeyColumns()
    owners = {n for n in (alias, relation) if n}
    equality: list[str] = []
    ranges: list[str] = []
    for pred in _conjuncts(tree):
        if not isinstance(pred, _EQUALITY + _RANGE) or _leading_wildcard(pred):  # <>, ~, @>, '%x': no btree help
            continue
        if (key := _comparison_key(pred, owners)) is not None:
            (equality if isinstance(pred, _EQUALITY) else ranges).append(key)
    return KeyColumns(tuple(dict.fromkeys(equality)), tuple(c for c in dict.fromkeys(ranges) if c not in equality))


def quote_ident(name: str) -> str:
    """An identifier as SQL: bare when lower-case and plain, else double-quoted; expressions as they are."""
    if name.startswith("(") or re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str) -> str:
    return ".".join(quote_ident(part) for part in table.split("."))


def index_ddl(table: str, columns: tuple[str, ...]) -> str:
    """CONCURRENTLY: building it must not block the writes of a live table."""
    return f"CREATE INDEX CONCURRENTLY ON {qualified(table)} ({', '.join(quote_ident(c) for c in columns)});"


def work_mem_for_kb(kb: float) -> str:
    """A work_mem setting of at least ``kb``: whole MB, rounded up to 1, 2, 4, 8 … MB."""
    mb = max(1, math.ceil(kb / 1024))
    return f"{2 ** math.ceil(math.log2(mb))}MB"


def alias_map(plan: Plan) -> dict[str, str]:
    """alias → table, for conditions that name columns by alias (join conditions, group keys)."""
    found: dict[str, str] = {}
    for node in plan.nodes():
        if node.relation:
            found.setdefault(node.alias or node.relation, node.qualified_relation or node.relation)
    return found


def catalog_table(ctx: Context, relation: str | None, schema: str | None = None) -> Any | None:
    """The catalog's Table for a relation, when a catalog was read (duck-typed: rows, n_mod_since_analyze)."""
    if ctx.catalog is None or not relation:
        return None
    try:
        return ctx.catalog.table(relation, schema)
    except (KeyError, LookupError):
        return None


def table_rows(ctx: Context, node: PlanNode) -> float | None:
    table = catalog_table(ctx, node.relation, node.schema)
    rows = getattr(table, "rows", None)
    return float(rows) if isinstance(rows, (int, float)) and rows >= 0 else None


def qualified_columns(text: str | None) -> list[tuple[str, str]]:
    """(alias, column) of every qualified column in a condition or key: 'r.lot_id' → ('r', 'lot_id')."""
    tree = _parse_condition(text) if text else None
    if tree is None:
        return []
    return [(c.table, c.name) for c in tree.find_all(exp.Column) if c.table]


def server_settings(ctx: Context, *names: str) -> dict[str, str]:
    """The server's current values of ``names``, as the catalog read them (empty without a catalog)."""
    settings = getattr(ctx.catalog, "settings", None) or {}
    return {name: settings[name] for name in names if name in settings}
