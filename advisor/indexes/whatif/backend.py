"""Where a configuration's indexes are made: the interface of the what-if engine's two backends.

A backend keeps the indexes it made for the current configuration (``present``) and
answers four questions: is it usable here (``open``), make an index (``make``),
EXPLAIN with exactly these of ours (``explain``, which drops or hides the others),
and how big an index is (``size``); ``reset`` forgets every index made. HypoPG
(advisor.indexes.whatif.hypopg) makes hypothetical indexes; the scratch backend
(advisor.indexes.whatif.scratch) builds real ones in a transaction it rolls back.
``bare_transaction`` is where --verify builds the picks for real (verify.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg

from advisor.db.session import Session
from advisor.indexes.existing import quote_ident
from advisor.indexes.model import IndexCandidate, SizeEstimate
from advisor.indexes.whatif.errors import CandidateRejected, QueryNotCosted, WhatIfUnavailable, candidate_error
from advisor.indexes.whatif.queries import PreparedQuery

__all__ = ["Config", "Index", "IndexBackend", "explain_in_savepoint", "first"]

Config = frozenset[IndexCandidate]


@dataclass(frozen=True, slots=True)
class Index:
    oid: int
    name: str  # as the plan's "Index Name" shows it


class IndexBackend(ABC):
    """The indexes of one session's configurations; a strategy of WhatIf."""

    name: ClassVar[str]  # as WhatIf's ``backend`` argument names it
    parallel: ClassVar[bool]  # another session can make the same indexes (prefetch's helper sessions)
    writes: ClassVar[bool]  # it builds indexes for real: scratch databases only

    def __init__(self, session: Session, timeout_ms: int) -> None:
        self.session = session
        self.timeout_ms = timeout_ms
        self.present: dict[IndexCandidate, Index] = {}  # hypothetical now, or built in our transaction
        self.by_name: dict[str, IndexCandidate] = {}
        self._table_oids: dict[str, int] = {}
        self._sizes: dict[IndexCandidate, tuple[int, SizeEstimate]] = {}

    # --- the strategy -----------------------------------------------------------------

    @abstractmethod
    def open(self) -> None:
        """Check that the backend can run here and get it ready; WhatIfUnavailable saying what to do."""

    @abstractmethod
    def close(self) -> None:
        """Leave nothing behind on the server (the session stays open)."""

    @abstractmethod
    def _create(self, candidate: IndexCandidate) -> Index:
        """Make the candidate's index on the server."""

    @abstractmethod
    def _explain(self, query: PreparedQuery, want: Config, unwanted: list[IndexCandidate]) -> dict[str, Any]:
        """EXPLAIN with every member of ``want`` made and none of ``unwanted`` visible."""

    @abstractmethod
    def _measure_size(self, candidate: IndexCandidate, index: Index) -> tuple[int, SizeEstimate]:
        """The bytes of a made index, and how we know."""

    @abstractmethod
    def _forget_all(self) -> None:
        """Drop every index made, on the server."""

    @abstractmethod
    def bare_transaction(self) -> AbstractContextManager[Session]:
        """A writable transaction, rolled back after, where none of our what-if indexes exists."""

    # --- shared -----------------------------------------------------------------------

    def make(self, candidate: IndexCandidate) -> Index:
        """The candidate's index, created if it is not there now."""
        if (index := self.present.get(candidate)) is not None:
            return index
        self.table_oid(candidate)  # an unknown table is rejected here, in words
        index = self._create(candidate)
        self.present[candidate] = index
        self.by_name[index.name] = candidate
        return index

    def explain(self, query: PreparedQuery, want: Config) -> dict[str, Any]:
        """EXPLAIN (FORMAT JSON) with exactly ``want`` among our indexes on the query's tables."""
        tables = query.tables
        unwanted = [c for c in self.present if c not in want and (tables is None or self.table_oid(c) in tables)]
        return self._explain(query, want, unwanted)

    def size(self, candidate: IndexCandidate) -> tuple[int, SizeEstimate]:
        if candidate not in self._sizes:
            index = self.make(candidate)  # the server's word on the candidate first
            self._sizes[candidate] = self._measure_size(candidate, index)
        return self._sizes[candidate]

    def reset(self) -> None:
        """Forget every index we made; sizes stay known."""
        self._forget_all()
        self.present.clear()
        self.by_name.clear()

    def _forget(self, candidates: list[IndexCandidate]) -> None:
        for c in candidates:
            del self.by_name[self.present.pop(c).name]

    def table_oid(self, candidate: IndexCandidate) -> int:
        if (oid := self._table_oids.get(candidate.table)) is None:
            schema, _, name = candidate.table.rpartition(".")
            text = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
            try:
                found = self.lookup("SELECT to_regclass($1)::oid::int8", [text])[0][0]
            except psycopg.Error as err:
                raise candidate_error(candidate, err, self.session, self.timeout_ms) from None
            if found is None:
                raise CandidateRejected(candidate, f"table {candidate.table} does not exist")
            self._table_oids[candidate.table] = oid = int(found)
        return oid

    def explain_statement(self, query: PreparedQuery, *, in_savepoint: bool = False) -> dict[str, Any]:
        """The query's plan; QueryNotCosted when the server will not plan it."""
        try:
            if in_savepoint:
                return explain_in_savepoint(self.session, query, query.mode, self.timeout_ms)
            return self.session.explain(query.sql, query.mode, query.values, self.timeout_ms)
        except psycopg.Error as err:
            reason = self.session.describe(err, self.timeout_ms)
            if self.session.lost:
                raise WhatIfUnavailable(reason, "check the server; then run again") from None
            raise QueryNotCosted(query.fingerprint, reason) from None

    def run(self, text: str, params: Sequence[str | None] | None = None) -> psycopg.RawCursor:
        try:
            return self.session.run(text, params)
        except psycopg.Error as err:
            if self.session.lost:
                raise WhatIfUnavailable(f"connection lost: {self.session.describe(err, self.timeout_ms)}",
                                        "check the server; then run again") from None
            raise

    def lookup(self, text: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """A catalog query (whose failure must not abort a transaction of ours)."""
        return self.run(text, params).fetchall()


def explain_in_savepoint(session: Session, query: PreparedQuery, mode: str, timeout_ms: int) -> dict[str, Any]:
    """EXPLAIN inside a savepoint of the session's open transaction (which the caller made read-only)."""
    return session.explain(query.sql, mode, query.values, timeout_ms,
                           begin="SAVEPOINT advisor_explain", end="ROLLBACK TO SAVEPOINT advisor_explain")


def first(cursor: psycopg.RawCursor) -> Any:
    """The one value of a query that returns one row."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row[0]
