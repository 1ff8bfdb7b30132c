"""ADV106 deadlocks: transactions that took the same locks in opposite orders.

Problem: two (or more) transactions each hold a lock the other waits for; after
``deadlock_timeout`` the server cancels one of them (the victim, SQLSTATE
40P01), whose work is lost and must be retried.
Signal: ``deadlock detected`` errors tied to the victim's query, with the
statements of the cycle from their DETAIL (``Workload.events``): at least
``deadlock_min_count``.
Impact: the deadlocks' count, in the evidence; the log gives no time for the
lost work, so none, and the severity is the one rule's without one (low).
Fix: one order for the locks in every transaction that takes them: the rows of
one table by key (lock them first with ``SELECT … ORDER BY key FOR UPDATE``,
or sort the keys in the application), the tables of the cycle in one fixed
order; and retry the victim (40P01 is safe to retry).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlglot
from sqlglot import exp

from advisor.checks import _plan
from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.words import plural
from advisor.workload.events import Deadlocks, Statement
from advisor.workload.tables import tables_of

CODE = "ADV106"
NAME = "deadlocks"


def run(ctx: Context) -> Iterable[Finding]:
    events = ctx.workload.events
    if events is None:
        return
    for statement, dead in events.deadlocks_by_query.items():
        if dead.count >= ctx.config.deadlock_min_count:
            query = ctx.query(statement.fingerprint)
            yield _finding(ctx, statement, dead, ", ".join(query.applications) if query is not None else "")


def _finding(ctx: Context, statement: Statement, dead: Deadlocks, applications: str) -> Finding:
    cycle = list(dead.cycle or (statement.normalized,))  # as the DETAIL lists them: one statement may be twice
    tables = tuple(dict.fromkeys(t for sql in cycle for t in tables_of(sql)))
    evidence = {"deadlocks": dead.count, "cycle": cycle, "tables": list(tables), "source": "log (deadlock detected)"}
    return Finding(
        code=CODE, check=NAME, severity=ctx.severity(None),
        title=f"Deadlocked {plural(dead.count, 'time')} (the victim) on {', '.join(tables) or 'tables the log does not name'}",
        suggestion=_order(cycle, tables),
        fingerprint=statement.fingerprint, normalized=statement.normalized, tables=tables,
        evidence=evidence, application=applications or None)


def _order(cycle: list[str], tables: tuple[str, ...]) -> str:
    retry = "\nAnd retry the victim's transaction: SQLSTATE 40P01 is safe to retry."
    if len(tables) > 1:
        return (f"The cycle's transactions touch {', '.join(tables)} in different orders: take them in one order in "
                f"every transaction, e.g. {' then '.join(sorted(tables))}." + retry)
    keys = {k for sql in cycle if (k := _key_column(sql))}
    if len(tables) == 1 and len(keys) == 1:
        table, key = _plan.qualified(tables[0]), _plan.quote_ident(keys.pop())
        return (f"The cycle's transactions lock rows of {tables[0]} in different orders: lock them in {key} order "
                "first, in every transaction that updates several:\n"
                f"SELECT {key} FROM {table} WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE;\n"
                f"-- then the updates (or sort the keys in the application before updating)." + retry)
    return ("The cycle's transactions take the same locks in different orders: take them in one order "
            "(by table, then by key) in every transaction." + retry)


def _key_column(sql: str) -> str | None:
    """The column of a ``WHERE col = $n`` write or read: the row key its lock is taken by."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    where = tree.args.get("where") if tree is not None else None
    if where is not None and isinstance(where.this, exp.EQ) and isinstance(where.this.this, exp.Column):
        return where.this.this.name
    return None
