"""Query rewrites the checks suggest, built with sqlglot from the normalized SQL."""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def _is_parameter(node: exp.Expression) -> bool:
    while isinstance(node, exp.Cast):
        node = node.this
    return isinstance(node, (exp.Parameter, exp.Placeholder))


def batched_lookup(sql: str) -> tuple[str, str] | None:
    """``… WHERE col = $1`` as one query for many keys: ``… WHERE col = ANY($1)``.

    Returns (the batched SQL, the column), or None when the statement has no
    ``column = parameter`` predicate to batch on.
    """
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError:
        return None
    for eq in tree.find_all(exp.EQ):
        column, other = (eq.left, eq.right) if isinstance(eq.left, exp.Column) else (eq.right, eq.left)
        if isinstance(column, exp.Column) and _is_parameter(other):
            array = exp.Anonymous(this="ANY", expressions=[exp.Parameter(this=exp.Literal.number(1))])
            eq.replace(exp.EQ(this=column.copy(), expression=array))
            return tree.sql(dialect="postgres"), column.sql(dialect="postgres")
    return None


def tables_of(sql: str) -> tuple[str, ...]:
    """The tables a statement reads or writes, in order of appearance."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError:
        return ()
    names = dict.fromkeys(t.sql(dialect="postgres") for t in tree.find_all(exp.Table) if t.name)
    return tuple(names)
