"""What each statement uses on each table, read from its sqlglot AST: which columns it filters, joins,
sorts, groups and reads, for :mod:`advisor.indexes.candidates` to turn into index candidates.

A pure function over the parsed statement and the Catalog: :func:`query_columns` walks the
statement scope by scope (FROM sources, joins, subqueries in FROM, CTEs, correlated subqueries,
UNION branches, the target and sources of UPDATE/DELETE/INSERT/MERGE) and qualifies every column
reference against the catalog. A qualified reference goes to the source of that name in the
nearest scope that has one; an unqualified one to the one source of the nearest scope that has
such a column (two, or a table the catalog does not know, make it ambiguous: skipped). A column
of a subquery or CTE in FROM stands for the table column it projects (PostgreSQL pushes such
predicates down) unless the subquery has LIMIT/OFFSET or window functions or the CTE is
MATERIALIZED or recursive. Conditions are split at AND; the branches of an OR name indexable
columns too (a BitmapOr uses one index per branch).

:func:`query_columns` merges the references to one table into a :class:`TableUse`;
:func:`occurrences` gives them one by one (:class:`Occurrence`), as candidate generation needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from advisor.db.catalog import Catalog, Table
from advisor.indexes.existing import quote_ident

__all__ = ["ConstantPredicate", "Occurrence", "TableUse", "merged_by_table", "occurrences", "query_columns", "stored_name",
           "unparen"]


@dataclass(frozen=True, slots=True)
class ConstantPredicate:
    """A comparison of one column with literals: what a partial index's WHERE can be."""

    column: str
    values: tuple[str | None, ...]  # as pg_stats prints them ('t' for true); None for IS NULL
    sql: str  # the predicate as SQL on the bare column: "status = 'pending'"


@dataclass(frozen=True, slots=True)
class TableUse:
    """How one statement uses one table. Columns in order of first appearance."""

    table: str  # "schema.name"
    equality: tuple[str, ...] = ()  # = constant/parameter, IN (…), = ANY(…), IS NULL
    range: tuple[str, ...] = ()  # <, >, <=, >=, BETWEEN, LIKE 'prefix%'
    join: tuple[str, ...] = ()  # = a column of another table (or of an outer query)
    order: tuple[tuple[str, str], ...] = ()  # (column, "ASC" | "DESC"), only when all of the ORDER BY is here
    group: tuple[str, ...] = ()
    read: tuple[str, ...] = ()  # every column read, for covering indexes
    expressions: tuple[str, ...] = ()  # "lower(email)" compared with a constant
    constant_predicates: tuple[ConstantPredicate, ...] = ()
    has_limit: bool = False
    written: bool = False  # the target of INSERT/UPDATE/DELETE/MERGE: every index costs it
    write: str = ""  # which of them: "insert", "update", "delete", "merge"
    assigned: tuple[str, ...] = ()  # the columns an UPDATE (or MERGE … UPDATE) sets


# --- scopes and sources -----------------------------------------------------------------


@dataclass(eq=False)
class Occurrence:
    """One reference to a catalog table in the statement, and what the statement does with it."""

    table: Table
    written: bool = False
    write: str = ""
    assigned: list[str] = field(default_factory=list)
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order: list[tuple[str, str]] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    group_complete: bool = False  # the whole GROUP BY is on this table: an index can feed it sorted
    read: list[str] = field(default_factory=list)
    expressions: list[str] = field(default_factory=list)
    eq_expressions: dict[str, str] = field(default_factory=dict)  # expression text -> its column
    range_expressions: dict[str, str] = field(default_factory=dict)
    constants: list[ConstantPredicate] = field(default_factory=list)
    literal_values: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    has_limit: bool = False

    def has(self, name: str) -> bool | None:
        return name in self.table.columns

    def lookup(self, name: str) -> tuple[tuple[Occurrence, str], ...]:
        return ((self, name),)

    def all_columns(self) -> list[tuple[str, tuple[tuple[Occurrence, str], ...]]]:
        return [(c, ((self, c),)) for c in self.table.columns]

    def use(self) -> TableUse:
        return TableUse(self.table.qualified, tuple(self.equality), tuple(self.range), tuple(self.join),
                        tuple(self.order), tuple(self.group), tuple(self.read), tuple(self.expressions),
                        tuple(self.constants), self.has_limit, self.written, self.write, tuple(self.assigned))


_Refs = tuple[tuple[Occurrence, str], ...]


@dataclass(eq=False)
class _Derived:
    """A subquery, CTE, VALUES list or function in FROM: output columns -> the table columns they are."""

    columns: dict[str, _Refs]  # () for a computed column
    opaque: bool = False  # a relation the catalog does not know: any name may be one of its columns

    def has(self, name: str) -> bool | None:
        return True if name in self.columns else (None if self.opaque else False)

    def lookup(self, name: str) -> _Refs:
        return self.columns.get(name, ())

    def all_columns(self) -> list[tuple[str, _Refs]]:
        return list(self.columns.items())


_Source = Occurrence | _Derived


@dataclass(eq=False)
class _Scope:
    parent: _Scope | None
    ctes: dict[str, _Derived]
    sources: dict[str, _Source] = field(default_factory=dict)
    occurrences: list[Occurrence] = field(default_factory=list)  # the tables in this scope's own FROM


def _add(items: list, item) -> None:
    if item not in items:
        items.append(item)


def stored_name(node: exp.Expr | None) -> str:
    """An identifier as PostgreSQL stores it: unquoted folds to lower case."""
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    if node is None:
        return ""
    return node.name.lower() if isinstance(node, exp.Var) else node.name


def _alias_columns(node: exp.Expr) -> list[str]:
    alias = node.args.get("alias")
    return [stored_name(c) for c in alias.args.get("columns") or ()] if isinstance(alias, exp.TableAlias) else []


def unparen(node: exp.Expr) -> exp.Expr:
    """The expression inside any parentheses."""
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _local_nodes(node: exp.Expr):
    """The nodes of one clause, depth first in text order, not entering subqueries (they are yielded)."""
    return node.dfs(prune=lambda n: isinstance(n, exp.Query) and n is not node)


# --- the walk -----------------------------------------------------------------------------


class _Walker:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.occurrences: list[Occurrence] = []
        self.subqueries: dict[int, _Derived] = {}  # id(query node) -> its output, for IN (SELECT …)

    # statements

    def statement(self, node: exp.Expr) -> None:
        if isinstance(node, (exp.Select, exp.SetOperation, exp.Subquery)):
            self.query(node, None, {})
        elif isinstance(node, (exp.Update, exp.Delete, exp.Merge)):
            self.modify(node)
        elif isinstance(node, exp.Insert):
            self.insert(node)

    def query(self, node: exp.Expr, parent: _Scope | None, ctes: dict[str, _Derived]) -> _Derived:
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
            return _Derived(columns)
        if isinstance(node, exp.Values):
            width = len(node.expressions[0].expressions) if node.expressions and isinstance(
                node.expressions[0], exp.Tuple) else 1
            names = _alias_columns(node) or [f"column{i + 1}" for i in range(width)]
            return _Derived(dict.fromkeys(names, ()))
        return _Derived({}, opaque=True)

    def with_(self, node: exp.Expr, parent: _Scope | None, ctes: dict[str, _Derived]) -> dict[str, _Derived]:
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
                names = _alias_columns(cte) or [_name_of_projection(p) for p in getattr(first, "expressions", [])]
                ctes[name] = _Derived(dict.fromkeys(names, ()))
            derived = self.query(body, parent, ctes)
            names = _alias_columns(cte)
            columns = dict(zip(names, derived.columns.values())) if names else dict(derived.columns)
            if with_.args.get("recursive") or cte.args.get("materialized"):
                columns = dict.fromkeys(columns, ())  # materialized: predicates are not pushed into it
            ctes[name] = _Derived(columns, derived.opaque)
        return ctes

    def select(self, sel: exp.Select, parent: _Scope | None, ctes: dict[str, _Derived]) -> _Derived:
        ctes = self.with_(sel, parent, ctes)
        scope = _Scope(parent, ctes)
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
                self.predicates(condition, scope)
        self.group_by(sel, scope, projections)
        self.order_by(sel, scope, projections, has_limit)

        # What the select outputs, for a query around it.
        pushable = not (sel.args.get("limit") or sel.args.get("offset") or any(
            p.find(exp.Window) for p in projections))
        columns: dict[str, _Refs] = {}
        for p in projections:
            target = unparen(p.this if isinstance(p, exp.Alias) else p)
            if isinstance(target, exp.Star) or (isinstance(target, exp.Column) and isinstance(target.this, exp.Star)):
                for name, refs in self.star(target, scope):
                    columns.setdefault(name, refs if pushable else ())
                continue
            refs = self.resolve(target, scope) if isinstance(target, exp.Column) else None
            columns[_name_of_projection(p)] = (refs or ()) if pushable else ()
        return _Derived(columns)

    def join(self, join: exp.Join, scope: _Scope, conditions: list[exp.Expr]) -> None:
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
                        _add(occ.join, column)
                        _add(occ.read, column)

    def source(self, node: exp.Expr, scope: _Scope, conditions: list[exp.Expr]) -> None:
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
                _renamed(derived, _alias_columns(node))
            return
        if isinstance(node, exp.Subquery):
            derived = self.query(node.this, scope.parent, scope.ctes)
            scope.sources[stored_name(node.args["alias"].this) if node.args.get("alias") else ""] = \
                _renamed(derived, _alias_columns(node))
            return
        if isinstance(node, exp.Values):
            alias = node.args.get("alias")
            scope.sources[stored_name(alias.this) if alias else "values"] = self.query(node, scope.parent, scope.ctes)
            return
        alias = node.args.get("alias")
        scope.sources[stored_name(alias.this) if isinstance(alias, exp.TableAlias) else node.sql()] = \
            self.function_source(node, node, scope)

    def table_source(self, node: exp.Table, scope: _Scope) -> None:
        alias = node.args.get("alias")
        alias_name = stored_name(alias.this) if isinstance(alias, exp.TableAlias) and alias.this else ""
        if not isinstance(node.this, exp.Identifier):  # a function in FROM: generate_series(…) g(n)
            derived = self.function_source(node.this, node, scope)
            scope.sources[alias_name or _name_of_projection(node.this)] = derived
            return
        name, schema = stored_name(node.this), stored_name(node.args.get("db")) or None
        cte = scope.ctes.get(name) if schema is None else None
        if cte is not None:
            scope.sources[alias_name or name] = _renamed(cte, _alias_columns(node))
            return
        table = self.catalog.table(name, schema)
        if table is None:
            scope.sources[alias_name or name] = _Derived({}, opaque=True)
            return
        occ = Occurrence(table)
        self.occurrences.append(occ)
        scope.occurrences.append(occ)
        scope.sources[alias_name or name] = _renamed(occ, _alias_columns(node))

    def function_source(self, func: exp.Expr, node: exp.Expr, scope: _Scope) -> _Derived:
        self.reads([func], scope)  # its arguments may read earlier FROM items (implicitly LATERAL)
        names = _alias_columns(node)
        alias = node.args.get("alias")
        if not names:
            names = [stored_name(alias.this) if isinstance(alias, exp.TableAlias) and alias.this
                     else _name_of_projection(func)]
        return _Derived(dict.fromkeys(names, ()))

    def modify(self, node: exp.Update | exp.Delete | exp.Merge) -> None:
        """UPDATE … FROM, DELETE … USING, MERGE … USING: the target plus sources, in one scope."""
        ctes = self.with_(node, None, {})
        scope = _Scope(None, ctes)
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
                self.predicates(condition, scope)

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

    # columns

    def resolve(self, column: exp.Column, scope: _Scope) -> _Refs | None:
        """The table columns a reference stands for; () for a computed one; None when unknown or ambiguous."""
        if not isinstance(column.this, exp.Identifier):
            return None
        name = stored_name(column.this)
        qualifier = column.args.get("table")
        s: _Scope | None = scope
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

    def star(self, star: exp.Expr, scope: _Scope) -> list[tuple[str, _Refs]]:
        if isinstance(star, exp.Column):  # t.*
            source = scope.sources.get(stored_name(star.args.get("table")))
            return source.all_columns() if source is not None else []
        return [item for source in scope.sources.values() for item in source.all_columns()]

    def reads(self, clauses: Sequence[exp.Expr], scope: _Scope) -> None:
        """Every column the clauses read; subqueries in them become scopes of their own."""
        for clause in clauses:
            for node in _local_nodes(clause):
                if isinstance(node, exp.Query) and node is not clause:
                    self.subqueries[id(node)] = self.query(node, scope, scope.ctes)
                elif isinstance(node, exp.Column):
                    if isinstance(node.this, exp.Star):
                        refs_list = [refs for _, refs in self.star(node, scope)]
                    else:
                        refs_list = [self.resolve(node, scope) or ()]
                    for refs in refs_list:
                        for occ, column in refs:
                            _add(occ.read, column)
                elif isinstance(node, exp.Star) and isinstance(node.parent, exp.Select):
                    for _, refs in self.star(node, scope):
                        for occ, column in refs:
                            _add(occ.read, column)

    # predicates

    def predicates(self, condition: exp.Expr, scope: _Scope) -> None:
        for pred in _conjuncts(condition):
            self.predicate(pred, scope)

    def predicate(self, pred: exp.Expr, scope: _Scope) -> None:
        if isinstance(pred, exp.EQ):  # not IS NOT DISTINCT FROM: no index serves that
            for left, right in ((pred.this, pred.expression), (pred.expression, pred.this)):
                if isinstance(right, exp.Any):
                    inner = unparen(right.this)
                    if isinstance(inner, exp.Query):  # = ANY (SELECT …): a semi-join
                        self.semi_join(left, inner, scope)
                    else:
                        self.compare(left, inner, scope, "eq", in_list=True)
                elif not isinstance(left, exp.Any):
                    self.compare(left, right, scope, "eq")
        elif isinstance(pred, exp.In):
            query = pred.args.get("query")
            if query is not None:
                self.semi_join(pred.this, query, scope)
            elif pred.expressions:
                self.compare(pred.this, pred.expressions, scope, "eq", in_list=True)
        elif isinstance(pred, exp.Is) and not pred.args.get("negate") and isinstance(pred.expression, exp.Null):
            self.compare(pred.this, pred.expression, scope, "eq")
        elif isinstance(pred, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            for left, right in ((pred.this, pred.expression), (pred.expression, pred.this)):
                self.compare(left, right, scope, "range")
        elif isinstance(pred, exp.Between):
            self.compare(pred.this, [pred.args["low"], pred.args["high"]], scope, "range")
        elif isinstance(pred, exp.Like):
            pattern = unparen(pred.expression)
            if isinstance(pattern, exp.Literal) and pattern.is_string and _like_prefix(pattern.this):
                self.compare(pred.this, pattern, scope, "range", constant_only=True)
        elif isinstance(pred, exp.Column) or (isinstance(pred, exp.Not) and isinstance(unparen(pred.this),
                                                                                         exp.Column)):
            # WHERE flag / WHERE NOT flag on a boolean column: an equality PostgreSQL indexes as such
            negated = isinstance(pred, exp.Not)
            column = unparen(pred.this) if negated else pred
            refs = self.resolve(column, scope)
            if refs and len(refs) == 1 and _type(refs[0]).startswith("boolean"):
                occ, name = refs[0]
                _add(occ.equality, name)
                sql = f"NOT {quote_ident(name)}" if negated else quote_ident(name)
                _add(occ.constants, ConstantPredicate(name, ("f" if negated else "t",), sql))
                occ.literal_values.setdefault(name, ("f" if negated else "t",))

    def compare(self, left: exp.Expr, right: exp.Expr | list[exp.Expr], scope: _Scope, kind: str, *,
                in_list: bool = False, constant_only: bool = False) -> None:
        """``left`` (a column or an indexable expression) compared with ``right``."""
        target = self.target(left, scope)
        if target is None:
            return
        rights = right if isinstance(right, list) else [right]
        occs = {occ for occ, _ in target[1]} if target[0] == "column" else {target[1]}
        sides = [self.side(r, scope, occs) for r in rights]
        if any(s is None for s in sides):
            return
        if "other" in sides:
            if kind == "eq" and not in_list and not constant_only and target[0] == "column":
                for occ, column in target[1]:
                    _add(occ.join, column)
            return
        if target[0] == "expression":
            _, occ, text, column = target
            _add(occ.expressions, text)
            (occ.eq_expressions if kind == "eq" else occ.range_expressions).setdefault(text, column)
            return
        for occ, column in target[1]:
            _add(occ.equality if kind == "eq" else occ.range, column)
        if kind == "eq" and len(target[1]) == 1 and all(s == "literal" for s in sides):
            occ, column = target[1][0]
            values = tuple(_literal_value(unparen(r)) for r in rights)
            literal_sql = [unparen(r).sql(dialect="postgres") for r in rights]
            ident = quote_ident(column)
            if values == (None,):
                sql = f"{ident} IS NULL"
            elif in_list and len(values) > 1:
                sql = f"{ident} IN ({', '.join(literal_sql)})"
            else:
                sql = f"{ident} = {literal_sql[0]}"
            if None in values and len(values) > 1:
                return
            _add(occ.constants, ConstantPredicate(column, values, sql))
            occ.literal_values.setdefault(column, values)

    def semi_join(self, left: exp.Expr, query: exp.Expr, scope: _Scope) -> None:
        """``left IN (SELECT x …)``: both ``left`` and ``x`` are join columns."""
        target = self.target(left, scope)
        if target is not None and target[0] == "column":
            for occ, column in target[1]:
                _add(occ.join, column)
        derived = self.subqueries.get(id(query)) or self.subqueries.get(id(unparen(query)))
        if derived is None and isinstance(query, exp.Subquery):
            derived = self.subqueries.get(id(query.this))
        if derived is not None and len(derived.columns) == 1:
            for occ, column in next(iter(derived.columns.values())):
                _add(occ.join, column)

    def target(self, node: exp.Expr, scope: _Scope):
        """("column", refs) or ("expression", occ, text, column) or None."""
        node = unparen(node)
        if isinstance(node, exp.Cast) and isinstance(unparen(node.this), exp.Column):
            refs = self.resolve(unparen(node.this), scope)
            # a cast that changes nothing a btree sees: varchar/char/text to text or varchar
            if (refs and node.to.this in (exp.DType.TEXT, exp.DType.VARCHAR)
                    and all(re.match(r"text|character varying", _type(r)) for r in refs)):
                return "column", refs
            return None
        if isinstance(node, exp.Column):
            refs = self.resolve(node, scope)
            return ("column", refs) if refs else None
        if isinstance(node, _INDEXABLE_FUNCTIONS):
            # one column, no subquery, no cast (timestamptz::date and the like are not immutable)
            columns = [n for n in _local_nodes(node) if isinstance(n, (exp.Column, exp.Query, exp.Cast))]
            if len(columns) != 1 or not isinstance(columns[0], exp.Column):
                return None
            refs = self.resolve(columns[0], scope)
            if not refs or len(refs) != 1:
                return None
            occ, column = refs[0]
            return "expression", occ, _expression_text(node, column), column
        return None

    def side(self, node: exp.Expr, scope: _Scope, targets: set[Occurrence]) -> str | None:
        """The other side of a comparison: "literal", "constant" (parameters, now(), a subquery),
        "other" (columns of other tables or of an outer query), None (this table's own columns, or unknown)."""
        node = unparen(node)
        if _literal_value(node, check=True):
            return "literal"
        kind = "constant"
        for n in _local_nodes(node):
            if isinstance(n, exp.Column):
                refs = self.resolve(n, scope)
                if refs is None or any(occ in targets for occ, _ in refs):
                    return None
                kind = "other"
        return kind

    # sorting and grouping

    def sort_refs(self, item: exp.Expr, scope: _Scope, projections: list[exp.Expr], output_first: bool) -> _Refs:
        """The one table column a GROUP BY / ORDER BY item is, or ()."""
        item = unparen(item)
        if isinstance(item, exp.Literal) and not item.is_string and item.this.isdigit():
            position = int(item.this) - 1
            if not 0 <= position < len(projections):
                return ()
            item = unparen(projections[position].this if isinstance(projections[position], exp.Alias)
                            else projections[position])
        elif isinstance(item, exp.Column) and item.args.get("table") is None and output_first:
            name = stored_name(item.this)
            for p in projections:
                if isinstance(p, exp.Alias) and stored_name(p.args["alias"]) == name:
                    item = unparen(p.this)
                    break
        if not isinstance(item, exp.Column):
            return ()
        refs = self.resolve(item, scope)
        if refs is None and not output_first:  # GROUP BY an output name
            name = stored_name(item.this)
            for p in projections:
                if isinstance(p, exp.Alias) and stored_name(p.args["alias"]) == name and isinstance(unparen(p.this),
                                                                                              exp.Column):
                    refs = self.resolve(unparen(p.this), scope)
        return refs if refs and len(refs) == 1 else ()

    def group_by(self, sel: exp.Select, scope: _Scope, projections: list[exp.Expr]) -> None:
        group = sel.args.get("group")
        if not group:
            return
        refs = [self.sort_refs(item, scope, projections, output_first=False) for item in group.expressions]
        occs = {r[0][0] for r in refs if r}
        for r in refs:
            if r:
                _add(r[0][0].group, r[0][1])
        if len(occs) == 1 and all(refs):
            next(iter(occs)).group_complete = True

    def order_by(self, sel: exp.Select, scope: _Scope, projections: list[exp.Expr], has_limit: bool) -> None:
        order = sel.args.get("order")
        if not order:
            return
        items = []
        for ordered in order.expressions:
            desc = bool(ordered.args.get("desc"))
            if bool(ordered.args.get("nulls_first")) != desc:
                return  # NULLS FIRST on ASC or NULLS LAST on DESC: a default index cannot give that order
            refs = self.sort_refs(ordered.this, scope, projections, output_first=True)
            if not refs:
                return
            items.append((refs[0][0], refs[0][1], "DESC" if desc else "ASC"))
        occs = {occ for occ, _, _ in items}
        if len(occs) != 1:
            return
        occ = occs.pop()
        if not occ.order:
            occ.order = [(column, direction) for _, column, direction in items]
        occ.has_limit = occ.has_limit or has_limit


def _assigned_columns(node: exp.Expr) -> list[str]:
    """The columns ``UPDATE … SET`` or ``MERGE … WHEN MATCHED THEN UPDATE SET`` assigns."""
    assignments = node.expressions if isinstance(node, exp.Update) else [
        a for when in node.find_all(exp.When) for update in when.find_all(exp.Update) for a in update.expressions]
    columns = [a.this for a in assignments if isinstance(a, exp.EQ)]
    return list(dict.fromkeys(stored_name(c.this) for c in columns if isinstance(c, exp.Column)))


def _renamed(source: _Source, names: list[str]) -> _Source:
    """A FROM item with a column alias list: t AS x(a, b) renames t's first columns."""
    if not names:
        return source
    columns = source.all_columns()
    renamed = {new: refs for new, (_, refs) in zip(names, columns)}
    renamed.update(dict(columns[len(names):]))
    return _Derived(renamed, getattr(source, "opaque", False))


def _name_of_projection(node: exp.Expr) -> str:
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


def _conjuncts(condition: exp.Expr):
    condition = unparen(condition)
    if isinstance(condition, (exp.And, exp.Or)):
        yield from _conjuncts(condition.this)
        yield from _conjuncts(condition.expression)
    else:
        yield condition


def _type(ref: tuple[Occurrence, str]) -> str:
    occ, column = ref
    col = occ.table.columns.get(column)
    return col.type if col else ""


def _literal_value(node: exp.Expr, check: bool = False):
    """A literal's value as pg_stats prints it (None for NULL); with ``check``, whether it is a literal."""
    node = unparen(node)
    if isinstance(node, exp.Cast):
        return _literal_value(node.this, check)
    if isinstance(node, exp.Neg) and isinstance(unparen(node.this), exp.Literal) and not unparen(node.this).is_string:
        return True if check else "-" + unparen(node.this).this
    if isinstance(node, exp.Literal):
        return True if check else node.this
    if isinstance(node, exp.Boolean):
        return True if check else ("t" if node.this else "f")
    if isinstance(node, exp.Null):
        return True if check else None
    return False if check else None


def _like_prefix(pattern: str) -> bool:
    """A LIKE pattern that starts with at least one literal character (backslash escapes it)."""
    return bool(pattern) and pattern[0] not in "%_"


# Immutable functions and operators an expression index is commonly built on.
_INDEXABLE_FUNCTIONS = (exp.Lower, exp.Upper, exp.Trim, exp.MD5, exp.Abs, exp.Left, exp.Right, exp.Substring,
                        exp.Reverse, exp.Coalesce, exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract,
                        exp.JSONBExtractScalar)


def _expression_text(node: exp.Expr, column: str) -> str:
    """``lower(email)``, ``(data ->> 'k')``: the expression on the bare column, as an index key."""
    copy = node.copy()
    for n in list(copy.find_all(exp.Column)):
        n.replace(exp.column(exp.to_identifier(column, quoted=quote_ident(column) != column)))
    text = copy.sql(dialect="postgres", normalize_functions="lower")
    return text if re.fullmatch(r"[a-z_][a-z0-9_]*\(.*\)", text, re.S) else f"({text})"


# --- the public functions -------------------------------------------------------------


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
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        return []
    walker = _Walker(catalog)
    try:
        walker.statement(statements[0])
    except RecursionError:
        return []
    return walker.occurrences


def query_columns(sql: str, catalog: Catalog) -> dict[str, TableUse]:
    """Per table the statement touches, how it uses it (several references to one table merged).

    Unparsable text, several statements, or statements that touch no table give ``{}``.
    """
    return merged_by_table(occurrences(sql, catalog))


def merged_by_table(occurrences: list[Occurrence]) -> dict[str, TableUse]:
    """One TableUse per table: every reference to it in the statement, merged."""
    merged: dict[str, TableUse] = {}
    for occ in occurrences:
        use = occ.use()
        merged[use.table] = _merge(merged[use.table], use) if use.table in merged else use
    return merged


def _merge(a: TableUse, b: TableUse) -> TableUse:
    def union(x, y):
        return tuple(dict.fromkeys((*x, *y)))

    return TableUse(a.table, union(a.equality, b.equality), union(a.range, b.range), union(a.join, b.join),
                    a.order or b.order, union(a.group, b.group), union(a.read, b.read),
                    union(a.expressions, b.expressions), union(a.constant_predicates, b.constant_predicates),
                    a.has_limit or b.has_limit, a.written or b.written, a.write or b.write,
                    union(a.assigned, b.assigned))
