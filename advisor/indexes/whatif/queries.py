"""What the what-if engine works out once per query: how to explain it, and whose indexes can change its plan.

The query is only ever EXPLAINed (no ANALYZE), through advisor.db.explain's rules:
``classify`` first (refused statements raise ``QueryNotCosted``), logged parameters
bound through the extended protocol, a generic plan for ``$n`` without values.

A query's plan can only change with indexes on the tables it touches: these are
found here (sqlglot's tables resolved by the server through ``search_path``, then
closed over views' dependencies and partitions/inheritance), and the cost cache
keys on them (advisor.indexes.whatif.costs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlglot
from sqlglot import exp

from advisor.db.explain import analyse, parse_parameters
from advisor.indexes.model import AdvisedQuery
from advisor.indexes.whatif.errors import QueryNotCosted

__all__ = ["Lookup", "PreparedQuery", "QueryKey", "prepare", "query_key"]

QueryKey = tuple[str, str, str | None]  # fingerprint, SQL, logged parameters
Lookup = Callable[[str, list[Any]], list[tuple[Any, ...]]]  # a catalog query on the engine's session


@dataclass(slots=True)
class PreparedQuery:
    """What we work out once per query."""

    key: QueryKey
    fingerprint: str
    sql: str
    kind: str  # classify(): read or write
    mode: str  # how explain.py explains it: "plain" (values bound, or none needed) or "generic"
    values: list[str | None] | None
    tables: frozenset[int] | None  # oids whose indexes can change the plan; None: any table
    relnames: frozenset[str]  # their names, to check the first plan against
    single: frozenset[int] = frozenset()  # tables the statement names once: one scan, one index (costs.py)
    conditions: frozenset[str] = frozenset()  # column names in its WHERE, ON and HAVING clauses (lower case)
    checked: bool = False  # the first plan confirmed ``tables``
    combines: bool = False  # a plan of it combined indexes (BitmapAnd/BitmapOr): derive nothing for it


def query_key(query: AdvisedQuery) -> QueryKey:
    return query.fingerprint, query.sql, query.parameters


def prepare(query: AdvisedQuery, lookup: Lookup) -> PreparedQuery:
    """The query as the engine explains it; QueryNotCosted when it cannot be."""
    analysis = analyse(query.sql)
    kind = analysis.classification.kind
    if kind == "refused":
        raise QueryNotCosted(query.fingerprint, analysis.classification.reason or "refused")
    values = None
    if query.parameters is not None:
        try:
            values = parse_parameters(query.parameters)
        except ValueError as err:
            raise QueryNotCosted(query.fingerprint, f"could not read the logged parameters: {err}") from None
    mode = "generic" if values is None and analysis.has_parameters else "plain"
    try:
        tree = sqlglot.parse_one(query.sql, read="postgres")  # classify() has parsed it already
    except Exception:  # a trailing comment, …: key on whole configurations, always right
        return PreparedQuery(query_key(query), query.fingerprint, query.sql, kind, mode, values, None, frozenset())
    tables, relnames, single = _tables(tree, lookup)
    return PreparedQuery(query_key(query), query.fingerprint, query.sql, kind, mode, values, tables, relnames, single,
                         _condition_columns(tree))


# Views (through their rewrite rules), partitions and inheritance children, and parents.
_CLOSURE = """
WITH RECURSIVE rels(oid) AS (
    SELECT to_regclass(n)::oid FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL
  UNION
    SELECT x.oid FROM rels, LATERAL (
        SELECT d.refobjid FROM pg_rewrite r
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         WHERE r.ev_class = rels.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rels.oid
        UNION ALL SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = rels.oid
        UNION ALL SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = rels.oid
    ) AS x(oid)
)
SELECT c.oid::int8, c.relname FROM rels JOIN pg_class c ON c.oid = rels.oid
 WHERE c.relkind IN ('r', 'p', 'm', 'f')
"""


_NAMED = "SELECT n, to_regclass(n)::oid::int8 FROM unnest($1::text[]) AS n"

_Tables = tuple[frozenset[int] | None, frozenset[str], frozenset[int]]


def _tables(tree: exp.Expr, lookup: Lookup) -> _Tables:
    """The oids (and names) of the tables a statement can read, or None when we cannot tell; and the
    tables it names exactly once, when nothing else (a view, a partition, a child) comes with them."""
    names: Counter[str] = Counter()
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Anonymous):  # a user's set-returning function may be inlined
            return None, frozenset(), frozenset()
        if not isinstance(table.this, exp.Identifier):  # generate_series(…) and other built-ins
            continue
        parts = {k: table.args[k].copy() for k in ("this", "db", "catalog") if table.args.get(k)}
        names[exp.Table(**parts).sql(dialect="postgres")] += 1
    try:
        rows = lookup(_CLOSURE, [_pg_array(sorted(names))])
        named = {n: oid for n, oid in lookup(_NAMED, [_pg_array(sorted(names))]) if oid is not None}
    except psycopg.Error:  # a name the server cannot take (a cross-database reference, …)
        return None, frozenset(), frozenset()
    oids = frozenset(int(oid) for oid, _ in rows)
    by_oid: Counter[int] = Counter()
    for name, oid in named.items():
        by_oid[int(oid)] += names[name]
    single = frozenset(oid for oid, n in by_oid.items() if n == 1) if oids == set(by_oid) else frozenset()
    return oids, frozenset(name for _, name in rows), single


def _condition_columns(tree: exp.Expr) -> frozenset[str]:
    """The names of the columns compared in the statement's conditions: where a bitmap scan could
    combine indexes (costs.py derives no answer for two indexes that both have one)."""
    clauses = [*tree.find_all(exp.Where), *tree.find_all(exp.Having), *(j.args["on"] for j in tree.find_all(exp.Join) if j.args.get("on"))]
    return frozenset(col.name.lower() for clause in clauses for col in clause.find_all(exp.Column))


def _pg_array(items: list[str]) -> str:
    """A text[] literal (bound as a parameter, never spliced into SQL)."""
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"
