"""The one safe way in to a target database: everything the advisor sends goes through a ``Session``.

What a session guarantees, whoever uses it (DESIGN.md, Safety rules):

- Its connection carries the limits in the startup packet (advisor.db.connect):
  statement, lock and idle-in-transaction timeouts, ``application_name`` advisor.
  They hold from the first statement and survive any ROLLBACK.
- Autocommit: no transaction of ours unless we open it, so a bare catalog read
  leaves no BEGIN in the server's statistics, and every BEGIN is our tagged one.
- Every statement starts with ``TAG``, so logs and pg_stat_statements tell ours apart.
- ``run`` uses the extended protocol: the server then refuses a string that
  holds more than one command, whatever a parser upstream thought.
- ``explain`` runs inside ``BEGIN READ ONLY`` … ``ROLLBACK``.
- A lost connection is replaced once (``recover``); lost twice, the work stops.

A session connects on first use, so a command opens one connection only when it
reaches the server, and a bad log is reported before a bad DSN, as before. One
session serves a whole command (pg_stat_statements, the catalog, the round trip,
the explains); only suggest-indexes' parallel what-if sessions open more.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from advisor.db.connect import TAG, AdvisorConnectionError, connect
from advisor.db.rows import one_row

__all__ = ["MIN_SERVER_VERSION", "Extension", "ServerTooOld", "Session", "read_extension", "session_for"]

# EXPLAIN (SETTINGS), which every explain asks for, arrived in PostgreSQL 12.
MIN_SERVER_VERSION = 120000
_PREPARED = "advisor_q"  # the prepared statement of the generic-plan path before PG 16


class ServerTooOld(AdvisorConnectionError):
    """The server is older than the advisor can read."""


@dataclass(frozen=True, slots=True)
class Extension:
    name: str
    database: str
    schema: str | None  # where it was created; None: not created in this database
    schema_sql: str | None  # the same, quoted for SQL by the server (quote_ident)
    version: str | None
    available: bool  # the server has its files (pg_available_extensions)


def read_extension(conn: psycopg.Connection, name: str) -> Extension:
    """Whether ``name`` is created in the connection's database, where, and whether the server has it."""
    schema, schema_sql, version, available, database = one_row(conn.execute(
        TAG + "SELECT n.nspname, quote_ident(n.nspname), e.extversion,"
        "       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = %(name)s), current_database()"
        "  FROM (SELECT 1) AS one"
        "  LEFT JOIN pg_extension e ON e.extname = %(name)s"
        "  LEFT JOIN pg_namespace n ON n.oid = e.extnamespace", {"name": name}))
    return Extension(name, database, schema, schema_sql, version, bool(available))


class Session:
    """The advisor's connection to one target, opened on first use and replaced once if lost."""

    def __init__(self, dsn: str, *, statement_timeout_ms: int = 30_000, lock_timeout_ms: int = 1_000,
                 min_server_version: int = MIN_SERVER_VERSION) -> None:
        self.dsn = dsn
        self.statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms
        self._min_server_version = min_server_version
        self._conn: psycopg.Connection | None = None
        self._facts: tuple[int, bool] | None = None
        self.reconnected = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, opened now if it is not yet (AdvisorConnectionError if that fails).

        A lost one stays lost (its backend's state, HypoPG's indexes or a scratch
        transaction, went with it) until ``recover`` or the next step (``session_for``).
        """
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> psycopg.Connection:
        conn = connect(self.dsn, statement_timeout_ms=self.statement_timeout_ms, lock_timeout_ms=self._lock_timeout_ms)
        if (version := conn.info.server_version) < self._min_server_version:  # known from the startup, no query
            conn.close()
            raise ServerTooOld(f"PostgreSQL {_version_text(version)} is older than the advisor can read",
                               f"run it against PostgreSQL {_version_text(self._min_server_version)} or newer")
        conn.autocommit = True  # our own BEGIN READ ONLY … ROLLBACK, tagged like every other statement
        return conn

    def connect_ms(self, samples: int = 5) -> float:
        """The median ms to open a new connection like this one (each closed at once): what a session costs."""
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            self._open().close()
            times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 3)

    @property
    def opened(self) -> bool:
        return self._conn is not None

    @property
    def lost(self) -> bool:
        return self._conn is not None and (self._conn.closed or self._conn.broken)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # --- what the server is -----------------------------------------------------------

    @property
    def server_version_num(self) -> int:
        return self._server_facts()[0]

    @property
    def superuser(self) -> bool:
        """More privilege than the advisor needs: worth a warning."""
        return self._server_facts()[1]

    def _server_facts(self) -> tuple[int, bool]:
        if self._facts is None:
            version, superuser = one_row(self.run("SELECT current_setting('server_version_num')::int, "
                                                  "current_setting('is_superuser') = 'on'"))
            self._facts = int(version), bool(superuser)
        return self._facts

    def extension(self, name: str) -> Extension:
        return read_extension(self.conn, name)

    # --- statements -------------------------------------------------------------------

    def run(self, text: str, params: Sequence[str | None] | None = None) -> psycopg.RawCursor:
        """One tagged statement, ``$n`` parameters bound as text, through the extended protocol."""
        # binary=True makes psycopg use the extended protocol even without parameters:
        # the server then rejects a string that holds more than one command.
        cur = psycopg.RawCursor(self.conn)
        return cur.execute(TAG + text, params, binary=True)

    def read(self, text: str, params: Sequence | dict | None = None) -> psycopg.Cursor:
        """A bare catalog read (autocommit, tagged), with psycopg's ``%s`` parameters."""
        return self.conn.execute(TAG + text, params)

    def explain(self, sql: str, mode: str, values: list[str | None] | None, timeout_ms: int, *,
                begin: str = "BEGIN READ ONLY", end: str = "ROLLBACK", custom: bool = False) -> dict:
        """The EXPLAIN (FORMAT JSON) document of ``sql`` in a read-only transaction that is rolled back.

        mode: "analyze" (runs it: reads only), "plain", or "generic" (the generic plan of a
        statement with ``$n`` and no values). ``timeout_ms`` below the session's limit holds
        for this statement only. begin/end: advisor.indexes.whatif explains inside its own
        (scratch) transaction, with a SAVEPOINT … ROLLBACK TO SAVEPOINT pair it has made
        read-only. custom: plan for the values bound, even where psycopg has prepared the
        text server-side (after prepare_threshold runs) and the plan cache would go generic.
        """
        sql = sql.strip().rstrip(";")
        settings = []
        if timeout_ms < self.statement_timeout_ms:  # the budget ends first: stop with it
            settings.append(f"SET LOCAL statement_timeout = {timeout_ms}")
        if custom:
            settings.append("SET LOCAL plan_cache_mode = force_custom_plan")
        if mode != "analyze":
            # A plain EXPLAIN still starts the executor, and with jit on (the default) that compiles
            # the expressions of any plan costed over jit_above_cost: 5 of the 5.6 ms that TPC-H's
            # Q1 takes to explain. The plan and its costs do not depend on it.
            settings.append("SET LOCAL jit = off")
        if mode == "generic" and self.server_version_num < 160000:
            return self._explain_generic(sql, begin, end, settings)
        # SETTINGS: the work_mem and planner switches the statement really ran with.
        options = {"analyze": "ANALYZE, BUFFERS, SETTINGS, FORMAT JSON", "plain": "SETTINGS, FORMAT JSON",
                   "generic": "GENERIC_PLAN, FORMAT JSON"}[mode]
        if mode == "analyze":  # it runs the statement: a round trip is nothing beside it
            self.run(begin)
            try:
                for text in settings:
                    self.run(text)
                return _plan(self.run(f"EXPLAIN ({options}) {sql}", values))
            finally:
                if not self.lost:
                    self.run(end)
        # One round trip instead of three to five: the what-if search explains thousands of times. In
        # a pipeline the server skips what follows a failure, so the end is sent again after one.
        try:
            with self.conn.pipeline():
                for text in (begin, *settings):
                    self.run(text)
                cursor = self.run(f"EXPLAIN ({options}) {sql}", values)
                self.run(end)
        except psycopg.Error:
            if not self.lost and self.conn.info.transaction_status == TransactionStatus.INERROR:
                self.run(end)
            raise
        return _plan(cursor)

    def _explain_generic(self, sql: str, begin: str, end: str, settings: list[str]) -> dict:
        """The generic plan before PostgreSQL 16's EXPLAIN (GENERIC_PLAN): PREPARE, then EXECUTE with NULLs."""
        prepared = False
        self.run(begin)
        try:
            for text in (*settings, "SET LOCAL plan_cache_mode = force_generic_plan"):
                self.run(text)
            self.run(f"PREPARE {_PREPARED} AS {sql}")
            prepared = True
            count = one_row(self.run("SELECT cardinality(parameter_types) FROM pg_prepared_statements "
                                     f"WHERE name = '{_PREPARED}'"))[0]  # the row of the PREPARE just made
            nulls = ", ".join(["NULL"] * count)
            return _plan(self.run(f"EXPLAIN (FORMAT JSON) EXECUTE {_PREPARED}({nulls})"))
        finally:
            if not self.lost:
                self.run(end)
                if prepared:  # a prepared statement outlives the transaction
                    self.run(f"DEALLOCATE {_PREPARED}")

    # --- failures ---------------------------------------------------------------------

    def describe(self, err: psycopg.Error, timeout_ms: int) -> str:
        """What went wrong with a statement, in one line (the limits it hit by name)."""
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if self.lost:
            return f"connection lost: {first}"
        if isinstance(err, errors.QueryCanceled):
            if "statement timeout" in first:
                return f"timed out: ran longer than the statement timeout ({timeout_ms} ms)"
            return f"cancelled: {first}"
        if isinstance(err, errors.LockNotAvailable):
            return f"waited longer than the lock timeout: {first}"
        if isinstance(err, errors.ReadOnlySqlTransaction):
            return f"it tried to write and the read-only transaction stopped it: {first}"
        return f"SQL error ({err.sqlstate}): {first}" if err.sqlstate else f"SQL error: {first}"

    def reopen(self) -> None:
        """A new connection in place of a lost one (AdvisorConnectionError if that fails)."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._conn = self._open()

    def recover(self, cause: str) -> str | None:
        """Reconnect after a loss; None on success, else why the rest cannot run (``cause`` first)."""
        if self._conn is not None:
            self._conn.close()
        if self.reconnected:  # lost twice: someone wants us gone, or the server is going away
            return f"{cause}, for the second time: not reconnecting"
        try:
            self._conn = self._open()
        except AdvisorConnectionError as err:
            return f"{cause}; reconnecting failed: {err.cause}"
        self.reconnected = True
        return None


@contextmanager
def session_for(target: str | Session, **limits: int) -> Iterator[Session]:
    """The session given (left open for its owner), or one opened for a DSN and closed after.

    A step of a command starts here: a session the last step lost is opened anew, as
    each step used to connect on its own (the work that lost it has stopped already).
    """
    if isinstance(target, Session):
        if target.lost:
            target.reopen()
        yield target
        return
    with Session(target, **limits) as session:
        yield session


def _plan(cur: psycopg.RawCursor) -> dict:
    return one_row(cur)[0][0]  # EXPLAIN's one row holds a JSON list of one document


def _version_text(version_num: int) -> str:
    major, minor = divmod(version_num, 10000)
    return f"{major}.{minor}" if major >= 10 else f"{major}.{minor // 100}.{minor % 100}"
