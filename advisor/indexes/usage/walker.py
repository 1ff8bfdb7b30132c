"""What each statement uses on each table, read from its sqlglot AST: which columns it filters, joins,
sorts, groups and reads, for :mod:`advisor.indexes.candidates` to turn into index candidates.

:class:`UsageWalker` walks the statement scope by scope (FROM sources, joins, subqueries in FROM,
CTEs, correlated subqueries, UNION branches, the target and sources of UPDATE/DELETE/INSERT/MERGE),
registering each scope's sources (:mod:`~advisor.indexes.usage.sources` resolves names against
them) and handing its clauses to :class:`~advisor.indexes.usage.clauses.ClauseReader`. A column
of a subquery or CTE in FROM stands for the table column it projects (PostgreSQL pushes such
predicates down) unless the subquery has LIMIT/OFFSET or window functions or the CTE is
MATERIALIZED or recursive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlglot
from sqlglot import exp

from advisor.db.catalog import Catalog
from advisor.indexes.usage.clauses import ClauseReader, PredicateHook
from advisor.indexes.usage.model import Occurrence, Refs, TableUse, add_new, merged_by_table
from advisor.indexes.usage.sources import (
    DerivedSource,
    Scope,
    alias_columns,
    local_nodes,
    name_of_projection,
    renamed,
    resolve,
    star,
    stored_name,
    unparen,
)


class UsageWalker:
    """One statement's walk: ``occurrences`` are filled in as :meth:`statement` reads it."""

    def __init__(self, catalog: Catalog, on_predicate: PredicateHook | None = None) -> None:
        self.catalog = catalog
        self.occurrences: list[Occurrence] = []
        self.subqueries: dict[int, DerivedSource] = {}  # id(query node) -> its output, for IN (SELECT …)
        self.clauses = ClauseReader(self.subqueries, on_predicate)

    # statements

    def statement(self, node: exp.Expr) -> None:
        if isinstance(node, (exp.Select, exp.SetOperation, exp.Subquery)):
            self.query(node, None, {})
        elif isinstance(node, (exp.Update, exp.Delete, exp.Merge)):
            self.modify(node)
        elif isinstance(node, exp.Insert):
            self.insert(node)

    def query(self, node: exp.Expr, parent: Scope | None, ctes: dict[str, DerivedSource]) -> DerivedSource:
        """Any query expression; returns what it outputs."""
        if isinstance(node, exp.Subquery):
            return self.query(node.this, parent, ctes)
        if isinstance(node, exp.Select):
            return self.select(node, parent, ctes)
        if isinstance(node, exp.SetOperation):
            ctes = self.with_(node, parent, ctes)
            left = self.query(node.this, parent, ctes)
            right = self.query(node.expression, parent, ctes)
            # Output names are the left branch's; a predicate on a column is pushed into every branch.
            columns = {}
            for (name, lrefs), (_, rrefs) in zip(left.columns.items(), right.columns.items()):
                columns[name] = lrefs + rrefs if lrefs and rrefs else ()
            return DerivedSource(columns)
        if isinstance(node, exp.Values):
            width = len(node.expressions[0].expressions) if node.expressions and isinstance(
                node.expressions[0], exp.Tuple) else 1
            names = alias_columns(node) or [f"column{i + 1}" for i in range(width)]
            return DerivedSource(dict.fromkeys(names, ()))
        return DerivedSource({}, opaque=True)

    def with_(self, node: exp.Expr, parent: Scope | None, ctes: dict[str, DerivedSource]) -> dict[str, DerivedSource]:
        with_ = node.args.get("with_")
        if not isinstance(with_, exp.With):
            return ctes
        ctes = dict(ctes)
        for cte in with_.expressions:
            name = stored_name(cte.args["alias"].this)
            body = cte.this
            if with_.args.get("recursive"):
                # The body refers to itself: known by its column names, standing for no table column.
                first = body.this if isinstance(body, exp.SetOperation) else body
                names = alias_columns(cte) or [name_of_projection(p) for p in getattr(first, "expressions", [])]
                ctes[name] = DerivedSource(dict.fromkeys(names, ()))
            derived = self.query(body, parent, ctes)
            names = alias_columns(cte)
            columns = dict(zip(names, derived.columns.values())) if names else dict(derived.columns)
            if with_.args.get("recursive") or cte.args.get("materialized"):
                columns = dict.fromkeys(columns, ())  # materialized: predicates are not pushed into it
            ctes[name] = DerivedSource(columns, derived.opaque)
        return ctes

    def select(self, sel: exp.Select, parent: Scope | None, ctes: dict[str, DerivedSource]) -> DerivedSource:
        ctes = self.with_(sel, parent, ctes)
        scope = Scope(parent, ctes)
        conditions: list[exp.Expr] = []
        from_ = sel.args.get("from_")
        if from_:
            self.source(from_.this, scope, conditions)
        for join in sel.args.get("joins") or ():
            self.join(join, scope, conditions)
        has_limit = bool(sel.args.get("limit"))
        for occ in scope.occurrences:
            occ.has_limit = occ.has_limit or has_limit

        projections = sel.expressions
        where = sel.args.get("where")
        clauses = [*projections, *conditions, where, sel.args.get("group"), sel.args.get("having"),
                   sel.args.get("order"), sel.args.get("distinct"), sel.args.get("qualify")]
        self.reads([c for c in clauses if c is not None], scope)
        for condition in [*conditions, where.this if where else None]:
            if condition is not None:
                self.clauses.predicates(condition, scope)
        self.clauses.group_by(sel, scope, projections)
        self.clauses.order_by(sel, scope, projections, has_limit)

        # What the select outputs, for a query around it.
        pushable = not (sel.args.get("limit") or sel.args.get("offset") or any(
            p.find(exp.Window) for p in projections))
        columns: dict[str, Refs] = {}
        for p in projections:
            target = unparen(p.this if isinstance(p, exp.Alias) else p)
            if isinstance(target, exp.Star) or (isinstance(target, exp.Column) and isinstance(target.this, exp.Star)):
                for name, refs in star(target, scope):
                    columns.setdefault(name, refs if pushable else ())
                continue
            resolved = resolve(target, scope) if isinstance(target, exp.Column) else None
            columns[name_of_projection(p)] = (resolved or ()) if pushable else ()
        return DerivedSource(columns)

    def join(self, join: exp.Join, scope: Scope, conditions: list[exp.Expr]) -> None:
        before = dict(scope.sources)
        self.source(join.this, scope, conditions)
        if join.args.get("on") is not None:
            conditions.append(join.args["on"])
        for ident in join.args.get("using") or ():
            name = stored_name(ident)
            left = [s for s in before.values() if s.has(name)]
            right = [s for a, s in scope.sources.items() if a not in before and s.has(name)]
            if len(left) == 1 and len(right) == 1:
                for source in (left[0], right[0]):
                    for occ, column in source.lookup(name):
                        add_new(occ.join, column)
                        add_new(occ.read, column)

    def source(self, node: exp.Expr, scope: Scope, conditions: list[exp.Expr]) -> None:
        """Register one FROM item (and the joins nested in it) in ``scope``."""
        if isinstance(node, exp.Table):
            self.table_source(node, scope)
            for join in node.args.get("joins") or ():
                self.join(join, scope, conditions)
            return
        if isinstance(node, exp.Subquery) and not node.alias and isinstance(node.this, exp.Table):
            self.source(node.this, scope, conditions)  # a parenthesised join: (a JOIN b ON …)
            for join in node.args.get("joins") or ():
                self.join(join, scope, conditions)
            return
        if isinstance(node, exp.Lateral):
            derived = (self.query(node.this, scope, scope.ctes) if isinstance(node.this, (exp.Query, exp.Subquery))
                       else self.function_source(node.this, node, scope))
            scope.sources[stored_name(node.args["alias"].this) if node.args.get("alias") else "lateral"] = \
                renamed(derived, alias_columns(node))
            return
        if isinstance(node, exp.Subquery):
            derived = self.query(node.this, scope.parent, scope.ctes)
            scope.sources[stored_name(node.args["alias"].this) if node.args.get("alias") else ""] = \
                renamed(derived, alias_columns(node))
            return
        if isinstance(node, exp.Values):
            alias = node.args.get("alias")
            scope.sources[stored_name(alias.this) if alias else "values"] = self.query(node, scope.parent, scope.ctes)
            return
        alias = node.args.get("alias")
        scope.sources[stored_name(alias.this) if isinstance(alias, exp.TableAlias) else node.sql()] = \
            self.function_source(node, node, scope)

    def table_source(self, node: exp.Table, scope: Scope) -> None:
        alias = node.args.get("alias")
        alias_name = stored_name(alias.this) if isinstance(alias, exp.TableAlias) and alias.this else ""
        if not isinstance(node.this, exp.Identifier):  # a function in FROM: generate_series(…) g(n)
            derived = self.function_source(node.this, node, scope)
            scope.sources[alias_name or name_of_projection(node.this)] = derived
            return
        name, schema = stored_name(node.this), stored_name(node.args.get("db")) or None
        cte = scope.ctes.get(name) if schema is None else None
        if cte is not None:
            scope.sources[alias_name or name] = renamed(cte, alias_columns(node))
            return
        table = self.catalog.table(name, schema)
        if table is None:
            scope.sources[alias_name or name] = DerivedSource({}, opaque=True)
            return
        occ = Occurrence(table)
        self.occurrences.append(occ)
        scope.occurrences.append(occ)
        scope.sources[alias_name or name] = renamed(occ, alias_columns(node))

    def function_source(self, func: exp.Expr, node: exp.Expr, scope: Scope) -> DerivedSource:
        self.reads([func], scope)  # its arguments may read earlier FROM items (implicitly LATERAL)
        names = alias_columns(node)
        alias = node.args.get("alias")
        if not names:
            names = [stored_name(alias.this) if isinstance(alias, exp.TableAlias) and alias.this
                     else name_of_projection(func)]
        return DerivedSource(dict.fromkeys(names, ()))

    def modify(self, node: exp.Update | exp.Delete | exp.Merge) -> None:
        """UPDATE … FROM, DELETE … USING, MERGE … USING: the target plus sources, in one scope."""
        ctes = self.with_(node, None, {})
        scope = Scope(None, ctes)
        conditions: list[exp.Expr] = []
        target = node.this
        if isinstance(target, exp.Table):
            self.table_source(target, scope)
            for occ in scope.occurrences:
                occ.written, occ.write = True, type(node).__name__.lower()
                occ.assigned = _assigned_columns(node)
        from_ = node.args.get("from_")
        if from_:
            self.source(from_.this, scope, conditions)
        for join in node.args.get("joins") or ():
            self.join(join, scope, conditions)
        using = node.args.get("using")
        for item in (using if isinstance(using, list) else [using]):
            if isinstance(item, exp.Expr):
                self.source(item, scope, conditions)
        if isinstance(node, exp.Merge) and node.args.get("on") is not None:
            conditions.append(node.args["on"])
        where = node.args.get("where")
        clauses: list[exp.Expr] = [*conditions, *([where] if where else [])]
        for assignment in node.expressions if isinstance(node, exp.Update) else ():
            clauses.append(assignment.expression if isinstance(assignment, exp.EQ) else assignment)
        self.reads(clauses, scope)
        for condition in [*conditions, where.this if where else None]:
            if condition is not None:
                self.clauses.predicates(condition, scope)

    def insert(self, node: exp.Insert) -> None:
        ctes = self.with_(node, None, {})
        target = node.this.this if isinstance(node.this, exp.Schema) else node.this
        if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
            table = self.catalog.table(stored_name(target.this), stored_name(target.args.get("db")) or None)
            if table is not None:
                occ = Occurrence(table, written=True, write="insert")
                self.occurrences.append(occ)
        if isinstance(node.expression, (exp.Query, exp.Subquery)):
            self.query(node.expression, None, ctes)

    def reads(self, clauses: Sequence[exp.Expr], scope: Scope) -> None:
        """Every column the clauses read; subqueries in them become scopes of their own."""
        for clause in clauses:
            for node in local_nodes(clause):
                if isinstance(node, exp.Query) and node is not clause:
                    self.subqueries[id(node)] = self.query(node, scope, scope.ctes)
                elif isinstance(node, exp.Column):
                    if isinstance(node.this, exp.Star):
                        refs_list = [refs for _, refs in star(node, scope)]
                    else:
                        refs_list = [resolve(node, scope) or ()]
                    for refs in refs_list:
                        for occ, column in refs:
                            add_new(occ.read, column)
                elif isinstance(node, exp.Star) and isinstance(node.parent, exp.Select):
                    for _, refs in star(node, scope):
                        for occ, column in refs:
                            add_new(occ.read, column)


def _assigned_columns(node: exp.Expr) -> list[str]:
    """The columns ``UPDATE … SET`` or ``MERGE … WHEN MATCHED THEN UPDATE SET`` assigns."""
    assignments = node.expressions if isinstance(node, exp.Update) else [
        a for when in node.find_all(exp.When) for update in when.find_all(exp.Update) for a in update.expressions]
    columns = [a.this for a in assignments if isinstance(a, exp.EQ)]
    return list(dict.fromkeys(stored_name(c.this) for c in columns if isinstance(c, exp.Column)))


_DML = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/|\()*(select|with|insert|update|delete|merge|values|table)\b",
                  re.I | re.S)


def occurrences(sql: str, catalog: Catalog) -> list[Occurrence]:
    """Each reference to a catalog table in the statement, not merged; [] where :func:`query_columns` gives ``{}``."""
    if not _DML.match(sql):  # SET, VACUUM, BEGIN…: nothing to index, and no parse
        return []
    try:
        statements = sqlglot.parse(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return []
    parsed = [s for s in statements if s is not None]
    if len(parsed) != 1:
        return []
    try:
        return walk(parsed[0], catalog)
    except RecursionError:
        return []


def walk(statement: exp.Expr, catalog: Catalog, on_predicate: PredicateHook | None = None) -> list[Occurrence]:
    """The references to catalog tables in one parsed statement, with what it does with each;
    ``on_predicate`` sees every predicate read on the way. A statement nested too deeply raises RecursionError."""
    walker = UsageWalker(catalog, on_predicate)
    walker.statement(statement)
    return walker.occurrences


def query_columns(sql: str, catalog: Catalog) -> dict[str, TableUse]:
    """Per table the statement touches, how it uses it (several references to one table merged).

    Unparsable text, several statements, or statements that touch no table give ``{}``.
    """
    return merged_by_table(occurrences(sql, catalog))
