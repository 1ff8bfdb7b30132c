"""Which tables a statement reads or writes, by sqlglot: what session rules (cache invalidation, N+1
parents) and checks ask of a statement's text."""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def tables_of(sql: str) -> tuple[str, ...]:
    """The tables a statement reads or writes, in order of appearance, as a reader names them:
    ``schema.table`` or ``table``, without aliases or the statement's own CTE names."""
    tree = _parsed(sql)
    if tree is None:
        return ()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    names = (f"{t.db}.{t.name}" if t.db else t.name for t in tree.find_all(exp.Table)
             if t.name and not (t.name in ctes and not t.db))
    return tuple(dict.fromkeys(names))


def written_tables(sql: str) -> tuple[str, ...]:
    """The tables a statement changes (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY … FROM), by bare
    lower-case name; () for reads and for what sqlglot cannot parse."""
    tree = _parsed(sql)
    if tree is None:
        return ()
    targets: list[exp.Expression] = []
    for node in tree.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.TruncateTable, exp.Copy):
        if isinstance(node, exp.TruncateTable):
            targets.extend(node.expressions)
        elif not isinstance(node, exp.Copy) or node.args.get("kind"):  # COPY … TO reads
            targets.append(node.this)
    tables = [t if isinstance(t, exp.Table) else t.find(exp.Table) for t in targets]
    return tuple(dict.fromkeys(t.name.lower() for t in tables if t is not None and t.name))


def _parsed(sql: str) -> exp.Expr | None:
    """The statement's tree, None when sqlglot cannot read it."""
    try:
        return sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
