"""Representative values for ``$n`` parameters that come without logged values (pg_stat_statements).

A generic plan is priced for an average value and can be far from what really ran:
a primary-key walk costed at 3 that takes 300 ms for a rare value. So for each
``$n`` we find the column it is compared with (the sqlglot walk of
advisor.indexes.usage, qualified against the catalog) and draw values from that
column's ``pg_stats``:

- ``=``, ``IN``, ``= ANY``, ``LIKE``: the most common value, the median
  histogram bound, and the least common value the statistics know;
- a lower bound (``col > $1``, ``BETWEEN $1 …``): the median, then a low value
  (wide range), then a high one (narrow); an upper bound the other way round;
- ``LIMIT $n``: the rows the query returned per call; ``OFFSET $n``: 0, the
  large-OFFSET threshold, and ten and a hundred times it.

Bindings are the i-th choice of every parameter taken together, so a handful of
EXPLAINs covers the common case, the median and the rare case. The caller
(advisor.db.explain) plans each with custom plans and keeps the one whose time
best matches the measured mean. Every value carries a label that names where
it came from without showing it ("most common value of accounts.bid (freq 12 %)").
A parameter that is compared with something we cannot match to a column, or
whose column has no statistics, makes the statement fall back to the generic
plan, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from advisor.db.catalog import Catalog
from advisor.indexes.usage import ColumnOf, PredicateHook, unparen, walk

__all__ = ["Binding", "Choice", "ParameterUse", "StatsRow", "bindings", "parameter_text", "parameter_uses"]

MAX_BINDINGS = 4  # EXPLAINs per statement: the common case, the median, the rare case (and a deeper OFFSET)

# The columns pg_stats holds for one column (None where it has none).
StatsRow = tuple[list[str] | None, list[float] | None, list[str] | None]  # most_common_vals, _freqs, histogram_bounds
StatsLookup = Callable[[str, str, str], StatsRow | None]  # (schema, table, column) -> the row, None without one

_STATS = """SELECT most_common_vals::text::text[], most_common_freqs, histogram_bounds::text::text[]
FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3 ORDER BY inherited LIMIT 1"""


@dataclass(frozen=True, slots=True)
class ParameterUse:
    """What one ``$n`` is: compared with a column (kind eq/lower/upper/like/array), a LIMIT or an OFFSET,
    or free (a value assigned or projected, which no plan depends on)."""

    kind: str
    table: str | None = None  # "schema.name"
    column: str | None = None

    @property
    def target(self) -> str:
        return f"{(self.table or '').rpartition('.')[2]}.{self.column}"


@dataclass(frozen=True, slots=True)
class Choice:
    value: str | None  # as text, bound untyped: the server infers the type as for the application
    label: str  # where it comes from, without the value


@dataclass(frozen=True, slots=True)
class Binding:
    """One value per ``$n``, in order."""

    choices: tuple[Choice, ...]

    @property
    def values(self) -> list[str | None]:
        return [c.value for c in self.choices]

    @property
    def label(self) -> str:
        """``$1 = most common value of t.c (freq 12 %); $2, $3 = NULL (…)``: parameters with one origin together."""
        numbers: dict[str, list[str]] = {}
        for n, c in enumerate(self.choices, 1):
            numbers.setdefault(c.label, []).append(f"${n}")
        return "; ".join(f"{', '.join(ns)} = {label}" for label, ns in numbers.items())


def parameter_text(values: Sequence[str | None]) -> str:
    """``$1 = '7', $2 = NULL``: the form a log gives values in (advisor.db.explain.parse_parameters)."""
    return ", ".join(f"${n} = " + ("NULL" if v is None else "'" + v.replace("'", "''") + "'")
                     for n, v in enumerate(values, 1))


# --- which column each $n meets ---------------------------------------------------------------


def _note_parameters(uses: dict[int, ParameterUse]) -> PredicateHook:
    """A hook for the index advisor's walk that notes what each ``$n`` is compared with."""

    def note(pred: exp.Expr, column_of: ColumnOf) -> None:
        def compared(left: exp.Expr, rights: list[tuple[exp.Expr, str]]) -> None:
            left = unparen(left)
            if isinstance(left, exp.Cast):
                left = unparen(left.this)
            if not isinstance(left, exp.Column) or (found := column_of(left)) is None:
                return
            for right, kind in rights:
                if (n := _number(right)) is not None:
                    uses.setdefault(n, ParameterUse(kind, *found))

        if isinstance(pred, (exp.Like, exp.ILike)) and _number(pred.expression) is not None:
            compared(pred.this, [(pred.expression, "like")])
        elif isinstance(pred, exp.Between):
            compared(pred.this, [(pred.args["low"], "lower"), (pred.args["high"], "upper")])
        elif isinstance(pred, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            low = isinstance(pred, (exp.GT, exp.GTE))  # col > $1: $1 is a lower bound
            compared(pred.this, [(pred.expression, "lower" if low else "upper")])
            compared(pred.expression, [(pred.this, "upper" if low else "lower")])
        elif isinstance(pred, exp.EQ):
            for left, right in ((pred.this, pred.expression), (pred.expression, pred.this)):
                compared(left, [(right.this, "array") if isinstance(right, exp.Any) else (right, "eq")])
        elif isinstance(pred, exp.In) and not pred.args.get("query"):
            compared(pred.this, [(e, "eq") for e in pred.expressions])

    return note


def _number(node: exp.Expr | None) -> int | None:
    """n for ``$n`` or ``$n::type`` (in parentheses or not), else None."""
    node = unparen(node) if node is not None else None
    if isinstance(node, exp.Cast):
        node = unparen(node.this)
    if isinstance(node, exp.Parameter) and node.name.isdigit():
        return int(node.name)
    return None


def _free(node: exp.Expr) -> bool:
    """A value the plan's shape cannot depend on: projected, assigned, or inserted."""
    while node.parent is not None:
        parent, key = node.parent, node.arg_key
        if isinstance(parent, (exp.Where, exp.Having, exp.Join, exp.Limit, exp.Offset)) or key in ("on", "where"):
            return False
        if isinstance(parent, exp.Select) and key == "expressions":
            return True
        if isinstance(parent, exp.Values) or (isinstance(parent, exp.Update) and key == "expressions"):
            return True
        node = parent
    return False


def parameter_uses(sql: str, catalog: Catalog) -> tuple[dict[int, ParameterUse], str | None]:
    """What each ``$n`` of the statement is, or (partial result, why some ``$n`` cannot be given a value)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # the caller has parsed it already; be safe all the same
        return {}, "sqlglot could not read the statement"
    uses: dict[int, ParameterUse] = {}
    try:
        walk(tree, catalog, on_predicate=_note_parameters(uses))
    except RecursionError:
        return {}, "the statement nests too deeply to follow its parameters"
    for select in tree.find_all(exp.Select):
        for key in ("limit", "offset"):
            clause = select.args.get(key)
            if clause is not None and (n := _number(clause.args.get("expression"))) is not None:
                uses.setdefault(n, ParameterUse(key))
    numbers = {int(p.name) for p in tree.find_all(exp.Parameter) if p.name.isdigit()}
    for p in tree.find_all(exp.Parameter):
        if p.name.isdigit() and int(p.name) not in uses and _free(p):
            uses[int(p.name)] = ParameterUse("free")
    unknown = sorted(numbers - set(uses))
    if unknown:
        listed = ", ".join(f"${n}" for n in unknown)
        verb = "is" if len(unknown) == 1 else "are"
        return uses, f"{listed} {verb} compared with something other than a column of a known table"
    return uses, None


# --- values from pg_stats -----------------------------------------------------------------------


def stats_lookup(run: Callable[[str, list[str]], list[tuple]]) -> StatsLookup:
    """A pg_stats reader over ``run(sql, params) -> rows``, asking once per column."""
    cache: dict[tuple[str, str, str], StatsRow | None] = {}

    def lookup(schema: str, table: str, column: str) -> StatsRow | None:
        key = (schema, table, column)
        if key not in cache:
            rows = run(_STATS, [schema, table, column])
            cache[key] = tuple(rows[0]) if rows else None
        return cache[key]

    return lookup


def _percent(freq: float) -> str:
    return f"{freq:.0%}" if freq >= 0.01 else f"{freq:.2%}"


def _column_choices(use: ParameterUse, stats: StatsRow) -> list[Choice]:
    mcv, freqs, hist = list(stats[0] or ()), list(stats[1] or ()), list(stats[2] or ())
    target = use.target
    if use.kind in ("lower", "upper"):
        bounds = hist or sorted(mcv)
        if not bounds:
            return []
        at = lambda q: bounds[min(len(bounds) - 1, int(q * (len(bounds) - 1) + 0.5))]  # noqa: E731
        median = Choice(at(0.5), f"median of {target}")
        low, high = Choice(at(0.1), f"low value of {target} (10th percentile)"), \
            Choice(at(0.9), f"high value of {target} (90th percentile)")
        return [median, low, high] if use.kind == "lower" else [median, high, low]
    choices: list[Choice] = []
    if mcv:
        choices.append(Choice(mcv[0], f"most common value of {target} (freq {_percent(freqs[0])})"))
    if hist:
        choices.append(Choice(hist[len(hist) // 2], f"median histogram value of {target}"))
    if len(mcv) > 1 and not hist:
        choices.append(Choice(mcv[-1], f"least common known value of {target} (freq {_percent(freqs[-1])})"))
    elif hist:
        choices.append(Choice(hist[-1], f"rare value of {target} (top histogram bound)"))
    if use.kind == "like":
        choices = [Choice(_like_literal(c.value), c.label) for c in choices]
    elif use.kind == "array":
        choices = [Choice(_array_literal(c.value), c.label) for c in choices]
    return choices


def _like_literal(value: str | None) -> str | None:
    if value is None:
        return None
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _array_literal(value: str | None) -> str | None:
    if value is None:
        return None
    return '{"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"}'


def bindings(uses: dict[int, ParameterUse], count: int, stats: StatsLookup, *, rows_per_call: float | None,
             large_offset: int) -> tuple[list[Binding], str | None]:
    """Up to MAX_BINDINGS bindings of ``$1..$count``, or ([], why the generic plan stays)."""
    per_parameter: list[list[Choice]] = []
    for n in range(1, count + 1):
        use = uses.get(n)
        if use is None:
            return [], f"${n} is not in the statement's text as the advisor reads it"
        if use.kind == "free":
            per_parameter.append([Choice(None, "NULL (a value no plan depends on)")])
        elif use.kind == "limit":
            rows = max(1, round(rows_per_call)) if rows_per_call else 1
            per_parameter.append([Choice(str(rows), f"LIMIT {rows:,} (rows returned per call)")])
        elif use.kind == "offset":
            deeper = [large_offset * 10, large_offset * 100]  # pages far beyond the threshold are common too
            per_parameter.append([Choice("0", "OFFSET 0"),
                                  Choice(str(large_offset), f"OFFSET {large_offset:,} (the large-OFFSET threshold)"),
                                  *(Choice(str(n), f"OFFSET {n:,}") for n in deeper)])
        else:
            assert use.table is not None and use.column is not None  # a comparison names its column
            schema, _, table = use.table.partition(".")
            row = stats(schema, table, use.column)
            choices = _column_choices(use, row) if row else []
            if not choices:
                return [], (f"${n} is compared with {use.target}, which has no statistics (never ANALYZEd, "
                            "or pg_stats hides it from this role: it shows only columns the role may SELECT)")
            per_parameter.append(choices)
    width = min(MAX_BINDINGS, max((len(c) for c in per_parameter), default=1))
    found: list[Binding] = []
    for i in range(width):
        binding = Binding(tuple(c[i] if i < len(c) else c[0] for c in per_parameter))
        if binding.values not in [b.values for b in found]:
            found.append(binding)
    return found, None
