"""Query rewrites the checks suggest, built with sqlglot from the normalized SQL.

The batched form of an N+1 child must return, for every key, exactly the rows
the child returned for that key, or it is not printed:

- plain row lookups: ``… WHERE col = ANY($1)``, selecting ``col`` too so the
  rows tell their keys apart;
- an aggregate over one table (no GROUP BY): one row per key, keys without
  rows included, from ``unnest($1) LEFT JOIN table … GROUP BY key`` with each
  aggregate FILTERed to the joined rows (``count(*)`` of no rows stays 0);
- ``LIMIT``/``OFFSET`` (top n per parent): the child itself in a ``LATERAL``
  subquery over ``unnest($1)``, so the limit applies per key;
- anything else (DISTINCT, window functions, GROUP BY, HAVING, set operations,
  locking clauses, functions sqlglot does not know, the key in an OR or a
  subquery): no rewrite, and the finding says none is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

KINDS = ("rows", "aggregate", "top_n")
_ARRAY = "__advisor_key_array__"  # stands for the keys' array until the SQL is text


@dataclass(frozen=True, slots=True)
class Batched:
    """One statement for all keys: ``sql`` takes the keys as an array in ``parameter``."""

    kind: str  # one of KINDS
    sql: str
    column: str  # the key column, as the child names it
    parameter: str  # "$1": the child's key parameter, now an array of keys
    key_position: int  # 0-based output column holding the key
    key_added: bool  # that column is the batched form's own (else it is one of the child's)
    table: str | None  # the key column's table, as the child names it (schema-qualified if it is)
    others: tuple[str, ...] = ()  # the child's other parameters: it holds when they are the same for every key


def _is_parameter(node: exp.Expr) -> bool:
    return isinstance(_uncast(node), (exp.Parameter, exp.Placeholder))


def _uncast(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Cast):
        node = node.this
    return node


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    node = node.unnest()
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def _key_predicate(select: exp.Select) -> tuple[exp.EQ, exp.Column, exp.Expr] | str:
    """The first ``column = $n`` ANDed into the top WHERE whose $n appears nowhere else, or why none."""
    where = select.args.get("where")
    reason = "it has no `column = parameter` condition ANDed into its WHERE to batch on"
    for pred in _conjuncts(where.this if where else None):
        if not isinstance(pred, exp.EQ):
            continue
        column, other = (pred.left, pred.right) if isinstance(pred.left, exp.Column) else (pred.right, pred.left)
        if not isinstance(column, exp.Column) or not _is_parameter(other):
            continue
        param = _uncast(other)
        if sum(p == param for p in select.find_all(type(param))) == 1:
            return pred, column, other
        reason = f"its key parameter {param.sql(dialect='postgres')} is used elsewhere in it too"
    return reason


def _own_aggregates(tree: exp.Select) -> list[exp.AggFunc]:
    """The aggregates of this SELECT, not of its subqueries."""
    return [a for a in tree.find_all(exp.AggFunc) if a.find_ancestor(exp.Select) is tree]


def _refusal(select: exp.Select) -> str | None:
    """Why no batched form of this SELECT is provably equivalent, or None."""
    for arg, what in (("distinct", "DISTINCT"), ("group", "GROUP BY"), ("having", "HAVING"), ("with_", "WITH"),
                      ("locks", "a locking clause")):
        if select.args.get(arg):
            return f"it uses {what}"
    if select.find(exp.Window):
        return "it uses a window function"
    if select.find(exp.WithinGroup):
        return "it uses an ordered-set aggregate (WITHIN GROUP)"
    if select.find(exp.Anonymous):
        return "it calls a function the advisor cannot classify (it may be an aggregate)"
    return None


def batched_lookup(sql: str, key_type: str | None = None) -> Batched | str:
    """The child as one statement for many keys, or the reason none is known to be equivalent.

    ``key_type`` (the key column's type, from the catalog) types the array where
    ``unnest`` needs it; the child's own cast of its parameter serves too.
    """
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return "the advisor could not parse it"
    if not isinstance(tree, exp.Select):
        return "it is not a plain SELECT"
    if reason := _refusal(tree):
        return reason
    found = _key_predicate(tree)
    if isinstance(found, str):
        return found
    pred, column, param = found
    number = _uncast(param)
    if not isinstance(number, exp.Parameter) or not number.name.isdigit():
        return "its key parameter is not numbered"
    name, table = column.sql(dialect="postgres"), _table_of(tree, column)
    numbers = {int(p.name) for p in tree.find_all(exp.Parameter) if p.name.isdigit()} - {int(number.name)}
    others = tuple(f"${n}" for n in sorted(numbers))
    key = _Key(pred, column, number.copy(),
               key_type or (param.to.sql(dialect="postgres") if isinstance(param, exp.Cast) else None))
    built: tuple[str, exp.Expr, int, bool] | str
    if tree.args.get("limit") or tree.args.get("offset"):
        built = _top_n(tree, key)
    elif _own_aggregates(tree):
        built = _aggregate(tree, key)
    else:
        built = _rows(tree, key)
    if isinstance(built, str):
        return built
    kind, batched, position, added = built
    return Batched(kind, batched.sql(dialect="postgres").replace(_ARRAY, key.array()), name,
                   key.parameter.sql(dialect="postgres"), position, added, table, others)


@dataclass(frozen=True, slots=True)
class _Key:
    predicate: exp.EQ  # `column = $n` in the child's tree
    column: exp.Column
    parameter: exp.Expr  # $n
    type: str | None

    def unnest(self, tree: exp.Expr) -> tuple[exp.Expr, exp.Column]:
        """``unnest($n[::type[]]) AS keys(col)`` under an alias the child does not use, and ``keys.col``."""
        taken = {t.alias_or_name for t in tree.find_all(exp.Table)}
        alias = next(a for a in ("keys", "batch_keys", "batch_keys_") if a not in taken)
        source = sqlglot.parse_one(f"SELECT 1 FROM unnest(x) AS {alias}({self.column.name})",
                                   read="postgres").args["from_"].this
        source.set("expressions", [exp.column(_ARRAY)])  # the array's text goes in last (see array())
        return source, exp.column(self.column.name, table=alias)

    def array(self) -> str:
        """``$n::type[]`` as the catalog spells the type (sqlglot would rewrite some types wrongly)."""
        return f"{self.parameter.sql(dialect='postgres')}::{self.type}[]" if self.type else \
            self.parameter.sql(dialect="postgres")


def _table_of(tree: exp.Select, column: exp.Column) -> str | None:
    tables = [t for t in tree.find_all(exp.Table) if not column.table or t.alias_or_name == column.table]
    return ".".join(p.name for p in tables[0].parts) if len(tables) == 1 else None


def _rows(tree: exp.Select, key: _Key) -> tuple[str, exp.Expr, int, bool]:
    """``col = ANY($n)``, selecting ``col`` first unless the child does; an ORDER BY still orders each key's
    rows as the child did."""
    key.predicate.replace(exp.EQ(this=key.column.copy(), expression=exp.Any(this=exp.Paren(this=key.parameter.copy()))))
    outputs = tree.expressions
    if not any(e.is_star for e in outputs):  # past a *, positions are the table's
        for i, e in enumerate(outputs):
            e = e.unalias()  # `books.author_id AS books_author_id`, as ORMs select it, is the key too
            if isinstance(e, exp.Column) and e.name == key.column.name and e.table in ("", key.column.table):
                return "rows", tree, i, False
    tree.set("expressions", [key.column.copy(), *outputs])
    return "rows", tree, 0, True


def _top_n(tree: exp.Select, key: _Key) -> tuple[str, exp.Expr, int, bool]:
    """The child per key in a LATERAL subquery: its LIMIT and OFFSET apply to each key."""
    keys, value = key.unnest(tree)
    key.predicate.replace(exp.EQ(this=key.column.copy(), expression=value.copy()))
    lateral = exp.Lateral(this=exp.Subquery(this=tree), alias=exp.TableAlias(this=exp.to_identifier("s")))
    batched = exp.select(value.copy(), exp.column(exp.Star(), table="s")).from_(keys).join(lateral, join_type="cross")
    return "top_n", batched, 0, True


def _aggregate(tree: exp.Select, key: _Key) -> tuple[str, exp.Expr, int, bool] | str:
    """Every key LEFT JOINed to its rows and grouped; each aggregate sees only joined rows."""
    source = tree.args["from_"].this
    if tree.args.get("joins") or not isinstance(source, exp.Table) or len(list(tree.find_all(exp.Select))) > 1:
        return "it aggregates over a join or has a subquery"
    if any(not e.find(exp.AggFunc) and e.find(exp.Column) for e in tree.expressions):
        return "it mixes aggregates with plain columns"
    owner = exp.to_identifier(source.alias_or_name)
    for c in tree.find_all(exp.Column):  # qualified, so that the keys' column cannot capture the table's
        if not c.table:
            c.set("table", owner.copy())
    keys, value = key.unnest(tree)
    joined = exp.column(key.column.name, table=owner.copy())
    key.predicate.replace(exp.EQ(this=joined.copy(), expression=value.copy()))
    matched = exp.Not(this=exp.Is(this=joined.copy(), expression=exp.Null()))
    for agg in _own_aggregates(tree):  # a key without rows: count 0, other aggregates NULL
        if isinstance(agg.parent, exp.Filter):
            agg.parent.set("expression", exp.Where(this=exp.and_(agg.parent.expression.this, matched.copy())))
        else:
            agg.replace(exp.Filter(this=agg.copy(), expression=exp.Where(this=matched.copy())))
    batched = (exp.select(value.copy(), *(e.copy() for e in tree.expressions)).from_(keys)
               .join(source.copy(), on=tree.args["where"].this, join_type="left").group_by(value.copy()))
    return "aggregate", batched, 0, True
