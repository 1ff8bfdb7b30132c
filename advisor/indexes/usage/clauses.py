"""What a statement's clauses make of a column, for an index: the predicate shapes an index
serves (equality, range, join, expression, partial-index constants) and the sort orders it can
give (ORDER BY, GROUP BY). The rules are the advisor's own; names are resolved by
:mod:`advisor.indexes.usage.sources`.

Conditions are split at AND; the branches of an OR name indexable columns too (a BitmapOr uses
one index per branch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlglot import exp

from advisor.indexes.existing import quote_ident
from advisor.indexes.usage.model import ConstantPredicate, Occurrence, Refs, add_new
from advisor.indexes.usage.sources import DerivedSource, Scope, local_nodes, resolve, stored_name, unparen

# The (table "schema.name", column) a column reference stands for, when it is exactly one.
ColumnOf = Callable[[exp.Expr], tuple[str, str] | None]
# Called with every predicate the walk reads (each AND and OR branch), and how to resolve its columns.
PredicateHook = Callable[[exp.Expr, ColumnOf], None]

# Immutable functions and operators an expression index is commonly built on.
INDEXABLE_FUNCTIONS = (exp.Lower, exp.Upper, exp.Trim, exp.MD5, exp.Abs, exp.Left, exp.Right, exp.Substring,
                       exp.Reverse, exp.Coalesce, exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract,
                       exp.JSONBExtractScalar)


@dataclass(frozen=True, slots=True)
class _Target:
    """One side of a comparison an index can serve: table columns, or an expression on one column."""

    refs: Refs
    expression: str | None = None  # "lower(email)": then ``refs`` is that one column


class ClauseReader:
    """Reads predicates and sort orders into the occurrences their columns resolve to."""

    def __init__(self, subqueries: dict[int, DerivedSource], on_predicate: PredicateHook | None = None) -> None:
        self.subqueries = subqueries  # id(query node) -> its output, for IN (SELECT …)
        self.on_predicate = on_predicate

    # predicates

    def predicates(self, condition: exp.Expr, scope: Scope) -> None:
        for pred in conjuncts(condition):
            if self.on_predicate is not None:
                self.on_predicate(pred, lambda column: _one_column(column, scope))
            self.predicate(pred, scope)

    def predicate(self, pred: exp.Expr, scope: Scope) -> None:
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
            self.boolean(pred, scope)

    def boolean(self, pred: exp.Expr, scope: Scope) -> None:
        """WHERE flag / WHERE NOT flag on a boolean column: an equality PostgreSQL indexes as such."""
        negated = isinstance(pred, exp.Not)
        column = unparen(pred.this) if negated else pred
        refs = resolve(column, scope)
        if refs and len(refs) == 1 and _type(refs[0]).startswith("boolean"):
            occ, name = refs[0]
            add_new(occ.equality, name)
            sql = f"NOT {quote_ident(name)}" if negated else quote_ident(name)
            add_new(occ.constants, ConstantPredicate(name, ("f" if negated else "t",), sql))
            occ.literal_values.setdefault(name, ("f" if negated else "t",))

    def compare(self, left: exp.Expr, right: exp.Expr | list[exp.Expr], scope: Scope, kind: str, *,
                in_list: bool = False, constant_only: bool = False) -> None:
        """``left`` (a column or an indexable expression) compared with ``right``."""
        target = self.target(left, scope)
        if target is None:
            return
        rights = right if isinstance(right, list) else [right]
        sides = [self.side(r, scope, {occ for occ, _ in target.refs}) for r in rights]
        if any(s is None for s in sides):
            return
        if "other" in sides:
            if kind == "eq" and not in_list and not constant_only and target.expression is None:
                for occ, column in target.refs:
                    add_new(occ.join, column)
            return
        if target.expression is not None:
            occ, column = target.refs[0]
            add_new(occ.expressions, target.expression)
            (occ.eq_expressions if kind == "eq" else occ.range_expressions).setdefault(target.expression, column)
            return
        for occ, column in target.refs:
            add_new(occ.equality if kind == "eq" else occ.range, column)
        if kind == "eq" and len(target.refs) == 1 and all(s == "literal" for s in sides):
            _constant(*target.refs[0], rights, in_list)

    def semi_join(self, left: exp.Expr, query: exp.Expr, scope: Scope) -> None:
        """``left IN (SELECT x …)``: both ``left`` and ``x`` are join columns."""
        target = self.target(left, scope)
        if target is not None and target.expression is None:
            for occ, column in target.refs:
                add_new(occ.join, column)
        derived = self.subqueries.get(id(query)) or self.subqueries.get(id(unparen(query)))
        if derived is None and isinstance(query, exp.Subquery):
            derived = self.subqueries.get(id(query.this))
        if derived is not None and len(derived.columns) == 1:
            for occ, column in next(iter(derived.columns.values())):
                add_new(occ.join, column)

    def target(self, node: exp.Expr, scope: Scope) -> _Target | None:
        """The column(s) or the indexable expression ``node`` is, or None."""
        node = unparen(node)
        if isinstance(node, exp.Cast) and isinstance(unparen(node.this), exp.Column):
            refs = resolve(unparen(node.this), scope)
            # a cast that changes nothing a btree sees: varchar/char/text to text or varchar
            if (refs and node.to.this in (exp.DType.TEXT, exp.DType.VARCHAR)
                    and all(re.match(r"text|character varying", _type(r)) for r in refs)):
                return _Target(refs)
            return None
        if isinstance(node, exp.Column):
            refs = resolve(node, scope)
            return _Target(refs) if refs else None
        if isinstance(node, INDEXABLE_FUNCTIONS):
            # one column, no subquery, no cast (timestamptz::date and the like are not immutable)
            columns = [n for n in local_nodes(node) if isinstance(n, (exp.Column, exp.Query, exp.Cast))]
            if len(columns) != 1 or not isinstance(columns[0], exp.Column):
                return None
            refs = resolve(columns[0], scope)
            if not refs or len(refs) != 1:
                return None
            return _Target(refs, expression_text(node, refs[0][1]))
        return None

    def side(self, node: exp.Expr, scope: Scope, targets: set[Occurrence]) -> str | None:
        """The other side of a comparison: "literal", "constant" (parameters, now(), a subquery),
        "other" (columns of other tables or of an outer query), None (this table's own columns, or unknown)."""
        node = unparen(node)
        if is_literal(node):
            return "literal"
        kind = "constant"
        for n in local_nodes(node):
            if isinstance(n, exp.Column):
                refs = resolve(n, scope)
                if refs is None or any(occ in targets for occ, _ in refs):
                    return None
                kind = "other"
        return kind

    # sorting and grouping

    def group_by(self, sel: exp.Select, scope: Scope, projections: list[exp.Expr]) -> None:
        group = sel.args.get("group")
        if not group:
            return
        refs = [sort_refs(item, scope, projections, output_first=False) for item in group.expressions]
        occs = {r[0][0] for r in refs if r}
        for r in refs:
            if r:
                add_new(r[0][0].group, r[0][1])
        if len(occs) == 1 and all(refs):
            next(iter(occs)).group_complete = True

    def order_by(self, sel: exp.Select, scope: Scope, projections: list[exp.Expr], has_limit: bool) -> None:
        order = sel.args.get("order")
        if not order:
            return
        items = []
        for ordered in order.expressions:
            desc = bool(ordered.args.get("desc"))
            if bool(ordered.args.get("nulls_first")) != desc:
                return  # NULLS FIRST on ASC or NULLS LAST on DESC: a default index cannot give that order
            refs = sort_refs(ordered.this, scope, projections, output_first=True)
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


def sort_refs(item: exp.Expr, scope: Scope, projections: list[exp.Expr], output_first: bool) -> Refs:
    """The one table column a GROUP BY / ORDER BY item is, or ()."""
    item = unparen(item)
    if isinstance(item, exp.Literal) and not item.is_string and item.this.isdigit():
        position = int(item.this) - 1
        if not 0 <= position < len(projections):
            return ()
        item = unparen(projections[position].this if isinstance(projections[position], exp.Alias)
                       else projections[position])
    elif isinstance(item, exp.Column) and item.args.get("table") is None and output_first:
        output = _output(stored_name(item.this), projections)
        item = item if output is None else output
    if not isinstance(item, exp.Column):
        return ()
    refs = resolve(item, scope)
    if refs is None and not output_first:  # GROUP BY an output name
        for p in projections:
            if isinstance(p, exp.Alias) and stored_name(p.args["alias"]) == stored_name(item.this) \
                    and isinstance(unparen(p.this), exp.Column):
                refs = resolve(unparen(p.this), scope)
    return refs if refs and len(refs) == 1 else ()


def _output(name: str, projections: list[exp.Expr]) -> exp.Expr | None:
    """What the first SELECT item named ``name`` computes (ORDER BY prefers output names)."""
    for p in projections:
        if isinstance(p, exp.Alias) and stored_name(p.args["alias"]) == name:
            return unparen(p.this)
    return None


def _one_column(column: exp.Expr, scope: Scope) -> tuple[str, str] | None:
    refs = resolve(column, scope)
    if not refs or len(refs) != 1:
        return None
    occ, name = refs[0]
    return occ.table.qualified, name


def _constant(occ: Occurrence, column: str, rights: list[exp.Expr], in_list: bool) -> None:
    """``column = literal`` (or IN, IS NULL): a partial index's possible WHERE, and the literal's value."""
    values = tuple(literal_value(unparen(r)) for r in rights)
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
    add_new(occ.constants, ConstantPredicate(column, values, sql))
    occ.literal_values.setdefault(column, values)


def conjuncts(condition: exp.Expr) -> Iterator[exp.Expr]:
    """The predicates of a condition: its AND and OR branches."""
    condition = unparen(condition)
    if isinstance(condition, (exp.And, exp.Or)):
        yield from conjuncts(condition.this)
        yield from conjuncts(condition.expression)
    else:
        yield condition


def _type(ref: tuple[Occurrence, str]) -> str:
    occ, column = ref
    col = occ.table.columns.get(column)
    return col.type if col else ""


def is_literal(node: exp.Expr) -> bool:
    """A literal, NULL or boolean, possibly negated or cast."""
    node = unparen(node)
    if isinstance(node, exp.Cast):
        return is_literal(node.this)
    if isinstance(node, exp.Neg):
        inner = unparen(node.this)
        return isinstance(inner, exp.Literal) and not inner.is_string
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null))


def literal_value(node: exp.Expr) -> str | None:
    """A literal's value as pg_stats prints it (None for NULL)."""
    node = unparen(node)
    if isinstance(node, exp.Cast):
        return literal_value(node.this)
    if isinstance(node, exp.Neg) and isinstance(unparen(node.this), exp.Literal) and not unparen(node.this).is_string:
        return "-" + unparen(node.this).this
    if isinstance(node, exp.Literal):
        return node.this
    if isinstance(node, exp.Boolean):
        return "t" if node.this else "f"
    return None


def _like_prefix(pattern: str) -> bool:
    """A LIKE pattern that starts with at least one literal character (backslash escapes it)."""
    return bool(pattern) and pattern[0] not in "%_"


def expression_text(node: exp.Expr, column: str) -> str:
    """``lower(email)``, ``(data ->> 'k')``: the expression on the bare column, as an index key."""
    copy = node.copy()
    for n in list(copy.find_all(exp.Column)):
        n.replace(exp.column(exp.to_identifier(column, quoted=quote_ident(column) != column)))
    text = copy.sql(dialect="postgres", normalize_functions="lower")
    return text if re.fullmatch(r"[a-z_][a-z0-9_]*\(.*\)", text, re.S) else f"({text})"
