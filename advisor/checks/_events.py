"""What the server-event checks (ADV104–ADV108) share: the tables a statement names, as a reader
names them (schema.table, without aliases or the statement's own CTE names)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def tables_named(sql: str) -> tuple[str, ...]:
    """The tables a statement reads or writes, in order of appearance; () when sqlglot cannot read it."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return ()
    if tree is None:
        return ()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    names = (f"{t.db}.{t.name}" if t.db else t.name for t in tree.find_all(exp.Table)
             if t.name and not (t.name in ctes and not t.db))
    return tuple(dict.fromkeys(names))
