"""pg_stat_statements as a workload source (PostgreSQL 13 and newer).

One row per (user, database, queryid[, toplevel]) as the extension keeps it;
aggregated by fingerprint into a partial workload like every source. Its
counters, where it has them, give calls and totals (see stats.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from advisor.db.connect import TAG, redact_dsn
from advisor.db.session import Extension, Session, read_extension, session_for
from advisor.errors import AdvisorError
from advisor.workload.model import StatementRow
from advisor.workload.own_traffic import run_for_advisor, sent_by_advisor
from advisor.workload.sources.partial import Partial, Reading
from advisor.workload.stats import WorkloadStats

HIDDEN_TEXT = "<insufficient privilege>"


class StatementRows(list):
    """The readable rows, plus how many the role was not allowed to read.

    Without pg_read_all_stats a role sees other roles' statements as
    ``<insufficient privilege>`` with no queryid; those are counted, not returned.
    """

    def __init__(self, rows: list[StatementRow], hidden: int = 0, own: int = 0) -> None:
        super().__init__(rows)
        self.hidden = hidden
        self.own = own  # the advisor's own statements, left out

    @property
    def note(self) -> str | None:
        if not self.hidden:
            return None
        return (f"{self.hidden} pg_stat_statements rows hidden (<insufficient privilege>): "
                "GRANT pg_read_all_stats TO <this role>; to read them")


class StatStatementsError(AdvisorError):
    """pg_stat_statements cannot be read: one line of cause, one line of fix."""


_SELECT = TAG + """
SELECT s.query, s.queryid, s.calls, s.total_exec_time, s.mean_exec_time, s.min_exec_time,
       s.max_exec_time, s.stddev_exec_time, s.rows, r.rolname, d.datname
FROM {view} s
LEFT JOIN pg_roles r ON r.oid = s.userid
LEFT JOIN pg_database d ON d.oid = s.dbid
"""


def _installed(conn: psycopg.Connection) -> tuple[Extension, str]:
    """The extension and the schema it is installed in; an error with the fix when it is not."""
    extension = read_extension(conn, "pg_stat_statements")
    if extension.schema is not None:
        return extension, extension.schema
    db = extension.database
    if not extension.available:
        raise StatStatementsError(
            "pg_stat_statements is not available on this server (contrib modules missing)",
            "install the server's contrib package (e.g. apt-get install postgresql-contrib), "
            f"then run CREATE EXTENSION pg_stat_statements; in database {db!r}")
    raise StatStatementsError(
        f"pg_stat_statements is not installed in database {db!r}",
        f"run CREATE EXTENSION pg_stat_statements; in database {db!r} (as its owner or a superuser)")


def _check_columns(conn: psycopg.Connection, extension: Extension, schema: str) -> None:
    # total_exec_time replaced total_time in PostgreSQL 13 (extension 1.8).
    columns = {r[0] for r in conn.execute(
        TAG + "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'pg_stat_statements' AND a.attnum > 0", (schema,))}
    if "total_exec_time" not in columns:
        raise StatStatementsError(
            f"pg_stat_statements {extension.version} (PostgreSQL 12 or older: total_time) is not supported",
            "use PostgreSQL 13 or newer, or ALTER EXTENSION pg_stat_statements UPDATE; after an upgrade")


def _to_row(r: tuple) -> StatementRow:
    query, queryid, calls, total, mean, mn, mx, stddev, rows, user, database = r
    return StatementRow(query=query, queryid=queryid, calls=calls, total_ms=total, mean_ms=mean,
                        min_ms=mn, max_ms=mx, stddev_ms=stddev, rows=rows, user=user, database=database)


def _read(conn: psycopg.Connection) -> StatementRows:
    extension, schema = _installed(conn)
    _check_columns(conn, extension, schema)
    query = sql.SQL(_SELECT).format(view=sql.Identifier(schema, "pg_stat_statements"))
    try:
        raw = conn.execute(query).fetchall()
    except errors.ObjectNotInPrerequisiteState as err:  # "must be loaded via shared_preload_libraries"
        raise StatStatementsError(
            "pg_stat_statements is installed but not loaded by the server",
            "add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf and restart the server",
        ) from err
    readable = [r for r in raw if r[0] != HIDDEN_TEXT and r[1] is not None]
    theirs = [_to_row(r) for r in readable if not (sent_by_advisor(r[0]) or run_for_advisor(r[0]))]
    return StatementRows(theirs, hidden=len(raw) - len(readable), own=len(readable) - len(theirs))


def read_pg_stat_statements(conn: psycopg.Connection) -> StatementRows:
    """Every statement pg_stat_statements holds that this role may read.

    The result is a list of StatementRow with ``.hidden`` (rows withheld for lack
    of pg_read_all_stats) and ``.note``. The read leaves the connection as it
    found it: a transaction it opened is rolled back.
    """
    opened = not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        return _read(conn)
    finally:
        if opened:
            conn.rollback()


@dataclass(frozen=True, slots=True)
class StatStatements:
    """The source: pg_stat_statements of ``target``, a DSN or the command's open Session (autocommit:
    a bare read, no BEGIN of ours in the server's statistics)."""

    target: str | Session
    label: str = "reading pg_stat_statements"

    def read(self, reading: Reading) -> Partial:
        with session_for(self.target) as session:
            rows = read_pg_stat_statements(session.conn)
        stats = WorkloadStats()
        stats.add_server_rows(rows)
        return Partial(stats, reading.patterns(), other_sources=[f"pg_stat_statements ({redact_dsn(session.dsn)})"],
                       notes=[rows.note] if rows.note else [])
