"""Which table column a column reference stands for: the FROM sources of each scope, by name.

A qualified reference goes to the source of that name in the nearest scope that has one; an
unqualified one to the one source of the nearest scope that has such a column (two, or a table
the catalog does not know, make it ambiguous: None). A column of a subquery or CTE in FROM
(a :class:`DerivedSource`) stands for the table columns it projects.

Why our own resolution and not sqlglot's ``optimizer.qualify`` / ``optimizer.scope`` (checked on
sqlglot 30.31): ``build_scope`` gives no scope for UPDATE, DELETE or MERGE (qualify leaves their
WHERE unqualified), yet their WHERE is what their indexes serve; qualify gives an unqualified column
to the one known table beside a table the catalog does not know, where PostgreSQL may find it in
either (a use we must not claim: ``test_a_table_the_catalog_does_not_know_may_hold_any_column``);
and it rewrites ``JOIN … USING (c)`` into ``ON`` with every bare ``c`` as ``COALESCE(a.c, b.c)``.
What a derived column stands for (pushed down or not) is ours either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlglot import exp

from advisor.indexes.usage.model import Occurrence, Refs


@dataclass(eq=False)
class DerivedSource:
    """A subquery, CTE, VALUES list or function in FROM: output columns -> the table columns they are."""

    columns: dict[str, Refs]  # () for a computed column
    opaque: bool = False  # a relation the catalog does not know: any name may be one of its columns

    def has(self, name: str) -> bool | None:
        return True if name in self.columns else (None if self.opaque else False)

    def lookup(self, name: str) -> Refs:
        return self.columns.get(name, ())

    def all_columns(self) -> list[tuple[str, Refs]]:
        return list(self.columns.items())


Source = Occurrence | DerivedSource


@dataclass(eq=False)
class Scope:
    """One SELECT (or UPDATE/DELETE/MERGE): its FROM sources by name, inside its parent's."""

    parent: Scope | None
    ctes: dict[str, DerivedSource]
    sources: dict[str, Source] = field(default_factory=dict)
    occurrences: list[Occurrence] = field(default_factory=list)  # the tables in this scope's own FROM


def stored_name(node: exp.Expr | None) -> str:
    """An identifier as PostgreSQL stores it: unquoted folds to lower case."""
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    if node is None:
        return ""
    return node.name.lower() if isinstance(node, exp.Var) else node.name


def alias_columns(node: exp.Expr) -> list[str]:
    """The column alias list of ``AS t(a, b)``."""
    alias = node.args.get("alias")
    return [stored_name(c) for c in alias.args.get("columns") or ()] if isinstance(alias, exp.TableAlias) else []


def unparen(node: exp.Expr) -> exp.Expr:
    """The expression inside any parentheses."""
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def local_nodes(node: exp.Expr) -> Iterator[exp.Expr]:
    """The nodes of one clause, depth first in text order, not entering subqueries (they are yielded)."""
    return node.dfs(prune=lambda n: isinstance(n, exp.Query) and n is not node)


def renamed(source: Source, names: list[str]) -> Source:
    """A FROM item with a column alias list: t AS x(a, b) renames t's first columns."""
    if not names:
        return source
    columns = source.all_columns()
    columns_by_name = {new: refs for new, (_, refs) in zip(names, columns)}
    columns_by_name.update(dict(columns[len(names):]))
    return DerivedSource(columns_by_name, getattr(source, "opaque", False))


def name_of_projection(node: exp.Expr) -> str:
    """The output name PostgreSQL gives a SELECT item."""
    if isinstance(node, exp.Alias):
        return stored_name(node.args["alias"])
    node = unparen(node)
    if isinstance(node, exp.Column):
        return stored_name(node.this)
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower() if hasattr(node, "sql_name") else "?column?"
    return "?column?"


def resolve(column: exp.Expr, scope: Scope) -> Refs | None:
    """The table columns a reference stands for; () for a computed one; None when unknown or ambiguous."""
    if not isinstance(column, exp.Column) or not isinstance(column.this, exp.Identifier):
        return None
    name = stored_name(column.this)
    qualifier = column.args.get("table")
    s: Scope | None = scope
    if qualifier is not None:
        wanted = stored_name(qualifier)
        while s is not None:
            source = s.sources.get(wanted)
            if source is not None:
                return source.lookup(name) if source.has(name) else None
            s = s.parent
        return None
    while s is not None:
        having = [source for source in s.sources.values() if source.has(name)]
        maybe = any(source.has(name) is None for source in s.sources.values())
        if len(having) == 1 and not maybe:
            return having[0].lookup(name)
        if having or maybe:
            return None  # two sources have it, or one the catalog does not know might
        s = s.parent
    return None


def star(node: exp.Expr, scope: Scope) -> list[tuple[str, Refs]]:
    """The columns ``*`` or ``t.*`` stands for, by output name."""
    if isinstance(node, exp.Column):  # t.*
        source = scope.sources.get(stored_name(node.args.get("table")))
        return source.all_columns() if source is not None else []
    return [item for source in scope.sources.values() for item in source.all_columns()]
