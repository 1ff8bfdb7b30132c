"""What the walk records: one :class:`Occurrence` per reference to a catalog table, and the
:class:`TableUse` that several references to one table merge into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from advisor.db.catalog import Table

T = TypeVar("T")


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


@dataclass(eq=False)
class Occurrence:
    """One reference to a catalog table in the statement, and what the statement does with it.

    It is also a FROM source (``has``, ``lookup``, ``all_columns``, as
    :class:`advisor.indexes.usage.sources.DerivedSource`): its columns stand for themselves."""

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

    def lookup(self, name: str) -> Refs:
        return ((self, name),)

    def all_columns(self) -> list[tuple[str, Refs]]:
        return [(c, ((self, c),)) for c in self.table.columns]

    def use(self) -> TableUse:
        return TableUse(self.table.qualified, tuple(self.equality), tuple(self.range), tuple(self.join),
                        tuple(self.order), tuple(self.group), tuple(self.read), tuple(self.expressions),
                        tuple(self.constants), self.has_limit, self.written, self.write, tuple(self.assigned))


# The table columns a reference stands for: () for a computed column, several through a UNION.
Refs = tuple[tuple[Occurrence, str], ...]


def add_new(items: list[T], item: T) -> None:
    """Append ``item`` unless it is there: the uses keep their order of first appearance."""
    if item not in items:
        items.append(item)


def merged_by_table(occurrences: list[Occurrence]) -> dict[str, TableUse]:
    """One TableUse per table: every reference to it in the statement, merged."""
    merged: dict[str, TableUse] = {}
    for occ in occurrences:
        use = occ.use()
        merged[use.table] = _merge(merged[use.table], use) if use.table in merged else use
    return merged


def _union(x: tuple[T, ...], y: tuple[T, ...]) -> tuple[T, ...]:
    return tuple(dict.fromkeys((*x, *y)))


def _merge(a: TableUse, b: TableUse) -> TableUse:
    return TableUse(a.table, _union(a.equality, b.equality), _union(a.range, b.range), _union(a.join, b.join),
                    a.order or b.order, _union(a.group, b.group), _union(a.read, b.read),
                    _union(a.expressions, b.expressions), _union(a.constant_predicates, b.constant_predicates),
                    a.has_limit or b.has_limit, a.written or b.written, a.write or b.write,
                    _union(a.assigned, b.assigned))
