"""The contracts of index advice: candidates, the queries they are judged on, recommendations."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from advisor.indexes.existing import quote_ident

# How an index's size is known: pg_relation_size of the index built for real (scratch databases),
# PostgreSQL's B-tree build modelled from the table's statistics (size.py), or HypoPG's estimate.
SizeEstimate = Literal["built", "btree-model", "hypopg"]

MIN_IMPROVEMENT = 0.5  # the % of the workload's cost (before a pick) a pick must save, by default


@dataclass(frozen=True, slots=True)
class IndexCandidate:
    """An index that could exist: what the what-if engine creates and the selection picks."""

    table: str  # "schema.name"
    columns: tuple[str, ...]  # key columns in order: names, or expressions such as "lower(email)"
    include: tuple[str, ...] = ()
    where: str | None = None  # a partial index's predicate
    method: str = "btree"
    fillfactor: int | None = None  # 100 on a static table (see candidates.static_table); None: the default

    @property
    def name(self) -> str:
        """idx_<table>_<columns>, within PostgreSQL's 63 bytes; an INCLUDE list, a predicate or another
        method adds a word and a short hash of the definition, so two picks never share a name
        (orders (created_at) WHERE status = 'paid' beside orders (created_at) INCLUDE (id))."""
        words = [self.table.rsplit(".", 1)[-1], *self.columns]
        name = "idx_" + "_".join(re.sub(r"\W+", "_", w).strip("_") for w in words)
        variant = [word for word, present in (("incl", self.include), ("partial", self.where),
                                              (self.method, self.method != "btree")) if present]
        if not variant:
            return name[:63]
        suffix = "_".join(["", *variant, hashlib.sha1(self.definition().encode()).hexdigest()[:6]])
        return name[:63 - len(suffix)] + suffix

    @property
    def target(self) -> str:
        """The table, quoted for SQL."""
        schema, _, table = self.table.rpartition(".")
        return f"{quote_ident(schema)}.{quote_ident(table)}" if schema else quote_ident(table)

    def label(self) -> str:
        """``table (columns) INCLUDE (…) WHERE …``: the index as a person reads it in a table or a progress line."""
        return (f"{self.table} ({', '.join(self.columns)})" + (f" INCLUDE ({', '.join(self.include)})" if self.include else "")
                + (f" WHERE {self.where}" if self.where else ""))

    def definition(self) -> str:
        """``ON table USING method (columns) INCLUDE (…) WHERE …``, the part after the index name."""
        keys = ", ".join(_key(c) for c in self.columns)
        text = f"ON {self.target} USING {self.method} ({keys})"
        if self.include:
            text += f" INCLUDE ({', '.join(quote_ident(c) for c in self.include)})"
        if self.fillfactor is not None:
            text += f" WITH (fillfactor = {self.fillfactor})"
        if self.where:
            text += f" WHERE {self.where}"
        return text

    def ddl(self) -> str:
        return f"CREATE INDEX CONCURRENTLY {quote_ident(self.name)} {self.definition()};"

    def extended(self, column: str) -> IndexCandidate:
        return replace(self, columns=(*self.columns, column))


_ORDER = re.compile(r"^(?P<name>.+?)(?P<order>(?: (?:ASC|DESC))?(?: NULLS (?:FIRST|LAST))?)$")


def key_column(key: str) -> str | None:
    """A key's column name, without its sort order or quotes; None for an expression."""
    if "(" in key:
        return None
    name = _name_and_order(key)[0]
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _key(column: str) -> str:
    """An index key: an expression as written, a column name quoted as needed, its sort order kept."""
    if "(" in column:
        return column
    name, order = _name_and_order(column)
    return quote_ident(name) + order


def _name_and_order(key: str) -> tuple[str, str]:
    if (m := _ORDER.match(key)) is None:  # only an empty key
        raise ValueError(f"not an index key: {key!r}")
    return m["name"], m["order"]


@dataclass(frozen=True, slots=True)
class AdvisedQuery:
    """A workload query as the advisor costs it."""

    fingerprint: str
    sql: str  # a statement with literals, or with $n and ``parameters``
    parameters: str | None  # the logged "$1 = '…'" text, if any
    weight: float  # how much it counts: calls (or total time) in the workload
    normalized: str = ""
    mean_ms: float | None = None  # measured: representative values for $n should match it (selection.py)
    rows_per_call: float | None = None  # measured: what a LIMIT $n without a value is given


@dataclass(frozen=True, slots=True)
class QueryCost:
    fingerprint: str
    normalized: str
    weight: float
    cost_before: float
    cost_after: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    candidate: IndexCandidate
    estimated_size_bytes: int
    queries: tuple[QueryCost, ...]  # the queries whose cost it lowers, before → after
    validated: str  # "hypothetical" (HypoPG), "real index, rolled back" (scratch), "measured" (--verify)
    measured: dict = field(default_factory=dict)  # --verify: fingerprint -> {"before_ms", "after_ms"}
    write_cost: float = 0.0  # what it adds to the workload's writes, in weighted planner cost (maintenance.py)
    size_estimate: SizeEstimate = "hypopg"  # how estimated_size_bytes is known
