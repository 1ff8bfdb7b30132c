"""The what-if backend of scratch databases (``--scratch``): real indexes in a transaction always rolled back.

One transaction, opened at start, in which each candidate is built for real
(``CREATE INDEX``, not concurrently) the first time it is needed. A configuration
drops the unwanted ones inside a savepoint that is rolled back after the EXPLAIN,
so no index is ever built twice and none survives us. While the engine is open
that transaction holds SHARE locks on the tables it indexed (writers on the
scratch database wait), and the connection's idle-in-transaction timeout (60 s)
bounds the pause between two calls. Each EXPLAIN runs in a read-only savepoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from advisor.db.session import Session
from advisor.indexes.existing import quote_ident
from advisor.indexes.model import IndexCandidate, SizeEstimate
from advisor.indexes.whatif.backend import Config, Index, IndexBackend, first
from advisor.indexes.whatif.errors import candidate_error
from advisor.indexes.whatif.queries import PreparedQuery

__all__ = ["Scratch", "build_index"]


class Scratch(IndexBackend):
    """Real indexes, built once each in our one transaction; sizes as built."""

    name = "real"
    parallel = False  # the indexes exist in this session's transaction only
    writes = True

    def __init__(self, session: Session, timeout_ms: int) -> None:
        super().__init__(session, timeout_ms)
        self._built = 0  # names advisor_whatif_<n>

    def open(self) -> None:
        self.run("BEGIN")  # read-write: the indexes are built here; rolled back on close

    def close(self) -> None:
        self.run("ROLLBACK")

    def _forget_all(self) -> None:
        self.run("ROLLBACK")
        self.run("BEGIN")

    def _create(self, candidate: IndexCandidate) -> Index:
        self._built += 1
        return build_index(self.session, candidate, f"advisor_whatif_{self._built}", self.table_oid, self.timeout_ms)

    def _explain(self, query: PreparedQuery, want: Config, unwanted: list[IndexCandidate]) -> dict[str, Any]:
        for c in want:
            self.make(c)  # built at the top of the scratch transaction, once
        self.run("SAVEPOINT advisor_config")
        try:
            if unwanted:
                self.run("DROP INDEX " + ", ".join(self._qualified(c) for c in unwanted))
            self.run("SET LOCAL transaction_read_only = on")
            return self.explain_statement(query, in_savepoint=True)
        finally:
            if not self.session.lost:
                self.run("ROLLBACK TO SAVEPOINT advisor_config")
                self.run("RELEASE SAVEPOINT advisor_config")

    def _measure_size(self, candidate: IndexCandidate, index: Index) -> tuple[int, SizeEstimate]:
        return int(first(self.run(f"SELECT pg_relation_size({index.oid})"))), "built"

    def lookup(self, text: str, params: list[Any]) -> list[tuple[Any, ...]]:
        self.run("SAVEPOINT advisor_lookup")
        try:
            rows = self.run(text, params).fetchall()
        except psycopg.Error:
            self.run("ROLLBACK TO SAVEPOINT advisor_lookup")
            self.run("RELEASE SAVEPOINT advisor_lookup")
            raise
        self.run("RELEASE SAVEPOINT advisor_lookup")
        return rows

    @contextmanager
    def bare_transaction(self) -> Iterator[Session]:
        """A savepoint of our own transaction (another session would wait on the locks it holds)
        that first drops the indexes built for costing."""
        session = self.session
        try:
            session.run("SAVEPOINT advisor_verify")
            if self.present:
                session.run("DROP INDEX " + ", ".join(self._qualified(c) for c in self.present))
            yield session
        finally:
            if not session.lost:
                session.run("ROLLBACK TO SAVEPOINT advisor_verify")
                session.run("RELEASE SAVEPOINT advisor_verify")

    def _qualified(self, candidate: IndexCandidate) -> str:
        """A built index's name, in its table's schema."""
        schema = candidate.table.rpartition(".")[0]
        name = quote_ident(self.present[candidate].name)
        return f"{quote_ident(schema)}.{name}" if schema else name


def build_index(session: Session, candidate: IndexCandidate, name: str,
                table_oid: Callable[[IndexCandidate], int], timeout_ms: int) -> Index:
    """CREATE INDEX in ``session``'s open transaction; a failure leaves the transaction usable."""
    session.run("SAVEPOINT advisor_build")
    try:
        # The extended protocol runs one command only, whatever the candidate's text holds.
        session.run(f"CREATE INDEX {quote_ident(name)} {candidate.definition()}")
        oid = first(session.run("SELECT c.oid::int8 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                "WHERE i.indrelid = $1 AND c.relname = $2",
                                [str(table_oid(candidate)), name]))
    except psycopg.Error as err:
        if not session.lost:
            session.run("ROLLBACK TO SAVEPOINT advisor_build")
            session.run("RELEASE SAVEPOINT advisor_build")
        raise candidate_error(candidate, err, session, timeout_ms) from None
    session.run("RELEASE SAVEPOINT advisor_build")
    return Index(int(oid), name)
