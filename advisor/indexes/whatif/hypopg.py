"""The default what-if backend: HypoPG's hypothetical indexes.

They exist only in our backend's memory and only for plain EXPLAIN. The extension
must already be created in the database: creating it is the user's decision, so we
say how and stop (``WhatIfUnavailable``). HypoPG 1.3 (Debian bookworm's) has no way
to hide an index (``hypopg_hide_index`` arrived in 1.4.0), so a configuration is made
by diffing: on the tables the query touches, drop the hypothetical indexes it does
not want and create the ones it lacks. A greedy search changes one index at a time,
so that is about one HypoPG call per EXPLAIN, each well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from advisor.db.session import Session
from advisor.indexes.model import IndexCandidate, SizeEstimate
from advisor.indexes.size import BtreeSizes
from advisor.indexes.whatif.backend import Config, Index, IndexBackend, first
from advisor.indexes.whatif.errors import CandidateRejected, WhatIfUnavailable, candidate_error
from advisor.indexes.whatif.queries import PreparedQuery

__all__ = ["SCRATCH_FIX", "HypoPG", "hypopg_missing"]

SCRATCH_FIX = "or, on a scratch copy of the database, run with --scratch (real indexes in a rolled-back transaction)"


class HypoPG(IndexBackend):
    """Hypothetical indexes in our session; sizes by the B-tree model (size.py), else HypoPG's estimate."""

    name = "hypopg"
    parallel = True  # every session makes its own hypothetical indexes
    writes = False  # hypothetical indexes live in our backend's memory

    def __init__(self, session: Session, timeout_ms: int) -> None:
        super().__init__(session, timeout_ms)
        self._schema = ""  # the extension's schema, quoted (open())
        self._btree_sizes = BtreeSizes(self.lookup, session.server_version_num, self._rows_kept)

    def open(self) -> None:
        hypopg = self.session.extension("hypopg")
        created = hypopg.schema_sql
        if created is None:
            raise hypopg_missing(hypopg.available, self.session.server_version_num, hypopg.database)
        try:
            self.run(f"SELECT count(*) FROM {created}.hypopg()")  # the library loads
        except psycopg.Error as err:
            raise WhatIfUnavailable(f"the hypopg extension does not load: {str(err).strip().splitlines()[0]}",
                                    f"reinstall postgresql-{_major(self.session.server_version_num)}-hypopg "
                                    f"on the server; {SCRATCH_FIX}") from None
        self._schema = created

    def close(self) -> None:
        self.reset()

    def _forget_all(self) -> None:
        self.run(f"SELECT {self._schema}.hypopg_reset()")

    def _create(self, candidate: IndexCandidate) -> Index:
        try:
            row = self.run(f"SELECT indexrelid::int8, indexname FROM {self._schema}.hypopg_create_index($1)",
                           [f"CREATE INDEX {candidate.definition()}"]).fetchone()
        except psycopg.Error as err:
            raise candidate_error(candidate, err, self.session, self.timeout_ms) from None
        if row is None:
            raise CandidateRejected(candidate, "HypoPG did not create it")
        return Index(int(row[0]), row[1])

    def _explain(self, query: PreparedQuery, want: Config, unwanted: list[IndexCandidate]) -> dict[str, Any]:
        if unwanted:
            oids = ",".join(str(self.present[c].oid) for c in unwanted)
            self.run(f"SELECT count({self._schema}.hypopg_drop_index(o)) FROM unnest('{{{oids}}}'::oid[]) o")
            self._forget(unwanted)
        for c in want:
            self.make(c)
        return self.explain_statement(query)

    def _measure_size(self, candidate: IndexCandidate, index: Index) -> tuple[int, SizeEstimate]:
        if (modelled := self._btree_sizes.estimate(candidate, self.table_oid(candidate))) is not None:
            return modelled, "btree-model"
        return int(first(self.run(f"SELECT {self._schema}.hypopg_relation_size({index.oid})"))), "hypopg"

    def _rows_kept(self, candidate: IndexCandidate) -> float | None:
        """The rows a partial index's predicate keeps, by the planner's estimate; None if it cannot say."""
        try:
            plan = self.session.explain(f"SELECT FROM {candidate.target} WHERE {candidate.where}",
                                        "plain", None, self.timeout_ms)
        except psycopg.Error as err:
            if self.session.lost:
                raise WhatIfUnavailable(self.session.describe(err, self.timeout_ms), "check the server") from None
            return None
        return float(plan["Plan"]["Plan Rows"])

    @contextmanager
    def bare_transaction(self) -> Iterator[Session]:
        """A connection of its own, where no hypothetical index exists."""
        session = Session(self.session.dsn, statement_timeout_ms=self.timeout_ms)
        session.conn.prepare_threshold = None
        try:
            session.run("BEGIN")
            yield session
        finally:
            if not session.lost:
                session.run("ROLLBACK")
            session.close()


def hypopg_missing(available: bool, server_version_num: int, database: str) -> WhatIfUnavailable:
    """The error for a database without HypoPG: the package is missing, or the extension is not created."""
    major = _major(server_version_num)
    create = f'CREATE EXTENSION hypopg; in database "{database}"'
    if not available:
        return WhatIfUnavailable(
            f"HypoPG is not installed on the database server (PostgreSQL {major})",
            f"install it on the server: apt-get install postgresql-{major}-hypopg, then run {create}; {SCRATCH_FIX}")
    return WhatIfUnavailable(
        f'the hypopg extension is installed on the server but not created in database "{database}"',
        f"run {create} (as its owner or a superuser); {SCRATCH_FIX}")


def _major(server_version_num: int) -> int:
    return server_version_num // 10000
