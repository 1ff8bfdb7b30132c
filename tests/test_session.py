"""The one safe session (advisor.db.session), against real servers.

Its guarantees: a write is stopped by the read-only transaction and rolled back;
the statement and lock timeouts hold; every statement carries the tag and runs
under application_name advisor; a server too old or a missing extension gives
one line of cause and one of fix. And the commands open the connections we say:
counted by the server itself (log_connections) on a throwaway cluster of this
module's own, where log_statement = all also shows every statement we send.
"""

from __future__ import annotations

import csv
import subprocess
import uuid

import psycopg
import pytest
from helpers import advisor
from psycopg import conninfo, errors

from advisor.db.connect import TAG
from advisor.db.embedded import EmbeddedCluster
from advisor.db.session import MIN_SERVER_VERSION, ServerTooOld, Session, session_for

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, kind int NOT NULL, note text);
INSERT INTO items SELECT g, g % 100, g % 7, 'n' || g FROM generate_series(1, 20000) g;
ANALYZE items
"""
# What an application ran: pg_stat_statements keeps it as the workload of scan and suggest-indexes.
WORKLOAD = ("SELECT * FROM items WHERE grp = 3 AND kind = 2", "SELECT note FROM items WHERE kind = 5 ORDER BY grp",
            "SELECT count(*) FROM items WHERE grp = 42")


def _load(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in filter(str.strip, SCHEMA.split(";")):
            conn.execute(statement)


def _count(dsn: str, table: str = "items") -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture(scope="module")
def db(schema_conn, pg_dsn) -> str:
    return pg_dsn


@pytest.fixture(scope="module")
def logged():
    """A cluster of our own that logs every connection and statement, and a database with a workload."""
    with EmbeddedCluster({"log_connections": "on", "log_statement": "all"}) as cluster:
        dsn = cluster.create_database("session_counted")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("CREATE EXTENSION hypopg")
        _load(dsn)
        with psycopg.connect(dsn, autocommit=True, application_name="app") as conn:
            for _ in range(3):
                for query in WORKLOAD:
                    conn.execute(query).fetchall()
        yield cluster, dsn


# --- the guarantees ------------------------------------------------------------------------


def test_a_write_is_stopped_by_the_read_only_transaction_and_rolled_back(db):
    before = _count(db)
    with Session(db) as session:
        with pytest.raises(errors.ReadOnlySqlTransaction) as caught:
            session.explain("WITH gone AS (DELETE FROM items RETURNING id) SELECT count(*) FROM gone", "analyze", None,
                            5_000)
        assert session.describe(caught.value, 5_000).startswith("it tried to write and the read-only transaction")
        # the transaction was ended, not left open: the session goes on
        assert session.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert session.run("SELECT count(*) FROM items").fetchone()[0] == before
    assert _count(db) == before


def test_the_statement_timeout_holds_for_the_session_and_lower_for_one_explain(db):
    with Session(db, statement_timeout_ms=300) as session:
        assert session.run("SHOW statement_timeout").fetchone()[0] == "300ms"
        with pytest.raises(errors.QueryCanceled) as caught:
            session.run("SELECT pg_sleep(3)")
        assert session.describe(caught.value, 300) == "timed out: ran longer than the statement timeout (300 ms)"
    with Session(db) as session:
        with pytest.raises(errors.QueryCanceled, match="statement timeout"):
            session.explain("SELECT pg_sleep(3)", "analyze", None, 200)  # the budget's lower timeout, SET LOCAL
        assert session.run("SHOW statement_timeout").fetchone()[0] == "30s"  # … for that transaction only


def test_a_plain_explain_compiles_nothing_and_an_analyze_runs_as_the_server_would(db):
    """Plain EXPLAIN starts the executor, which JIT-compiles any plan over jit_above_cost: that was
    most of a what-if call's time on TPC-H. The plain plan is made with jit off; EXPLAIN ANALYZE
    keeps the server's setting, since JIT is part of what the statement really costs."""
    query = "SELECT grp, count(*) FROM items a JOIN items b USING (grp) GROUP BY grp"
    with Session(db) as session:
        session.run("SET jit_above_cost = 0")  # every plan is costed over it: JIT would compile
        session.run("SET jit = on")
        plain = session.explain(query, "plain", None, 5_000)
        assert plain["Settings"].get("jit") == "off" and "JIT" not in plain
        analyzed = session.explain("SELECT count(*) FROM items", "analyze", None, 5_000)
        assert analyzed["Settings"].get("jit") != "off"
        assert session.run("SHOW jit").fetchone()[0] == "on"  # SET LOCAL: the session's own setting is back


def test_a_plain_explain_that_fails_in_its_pipeline_leaves_the_session_as_it_found_it(db):
    """Plain EXPLAINs go in one pipelined round trip; the server skips what follows a failure, so the
    rollback is sent again: the session goes on, in a transaction of its own or in a savepoint."""
    with Session(db) as session:
        with pytest.raises(errors.UndefinedTable):
            session.explain("SELECT * FROM no_such_table", "plain", None, 5_000)
        assert session.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert session.explain("SELECT * FROM items WHERE grp = $1", "plain", ["3"], 5_000)["Plan"]
        session.run("BEGIN READ ONLY")
        savepoint = {"begin": "SAVEPOINT s", "end": "ROLLBACK TO SAVEPOINT s"}
        with pytest.raises(errors.UndefinedColumn):
            session.explain("SELECT nope FROM items", "plain", None, 5_000, **savepoint)
        assert session.explain("SELECT count(*) FROM items", "plain", None, 5_000, **savepoint)["Plan"]
        assert session.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        session.run("ROLLBACK")


def test_the_lock_timeout_holds(db):
    with psycopg.connect(db) as holder, Session(db) as session:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        assert session.run("SHOW lock_timeout").fetchone()[0] == "1s"
        with pytest.raises(errors.LockNotAvailable) as caught:
            session.explain("SELECT count(*) FROM items", "analyze", None, 5_000)
        assert session.describe(caught.value, 5_000).startswith("waited longer than the lock timeout")
        holder.rollback()


def test_the_server_refuses_a_second_command_in_one_string(db):
    with Session(db) as session, pytest.raises(errors.SyntaxError, match="multiple commands"):
        session.run("SELECT 1; DROP TABLE items")
    assert _count(db) == 20000


def test_a_session_connects_on_first_use_only_and_a_given_one_is_left_open(db):
    session = Session(db)
    assert not session.opened
    with session_for(session) as borrowed:
        assert borrowed is session
        borrowed.read("SELECT 1")
    assert session.opened and not session.conn.closed  # the owner closes it
    session.close()
    assert session.lost and session.conn.closed  # closed by its owner, it is not opened again


def test_a_server_too_old_gives_one_line_of_cause_and_one_of_fix(db, pg_cluster):
    password_dsn = conninfo.make_conninfo(db, password="s3cret-pw")
    with pytest.raises(ServerTooOld) as caught:
        Session(password_dsn, min_server_version=990000).conn  # noqa: B018 - the property connects, which raises
    with psycopg.connect(db) as conn:
        version = conn.info.server_version
    major, minor = divmod(version, 10000)
    assert caught.value.cause == f"PostgreSQL {major}.{minor} is older than the advisor can read"
    assert caught.value.fix == "run it against PostgreSQL 99.0 or newer"
    assert "\n" not in caught.value.cause + caught.value.fix and "s3cret" not in str(caught.value)
    assert version >= MIN_SERVER_VERSION  # the harness server itself is new enough


def test_extension_facts_come_from_the_server(db, pg_cluster):
    bare = pg_cluster.create_database(f"session_bare_{uuid.uuid4().hex[:8]}")
    with Session(db) as session:
        pss = session.extension("pg_stat_statements")
        assert pss.schema == "public" and pss.version and pss.available
    with Session(bare) as session:
        missing = session.extension("pg_stat_statements")
        assert (missing.schema, missing.version, missing.available) == (None, None, True)
        assert missing.database == conninfo.conninfo_to_dict(bare)["dbname"]
        assert session.extension("no_such_extension").available is False


def test_a_missing_extension_is_one_line_of_cause_and_one_of_fix(pg_cluster, tmp_path):
    bare = pg_cluster.create_database(f"session_bare_{uuid.uuid4().hex[:8]}")
    name = conninfo.conninfo_to_dict(bare)["dbname"]
    run = advisor("scan", "--dsn", bare)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"error: pg_stat_statements is not installed in database '{name}'",
        f"fix: run CREATE EXTENSION pg_stat_statements; in database '{name}' (as its owner or a superuser)"]
    statements = tmp_path / "workload.sql"
    statements.write_text("SELECT 1;\n")
    run = advisor("suggest-indexes", "--dsn", bare, "--sql", str(statements))
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f'error: the hypopg extension is installed on the server but not created in database "{name}"',
        f'fix: run CREATE EXTENSION hypopg; in database "{name}" (as its owner or a superuser); or, on a scratch '
        "copy of the database, run with --scratch (real indexes in a rolled-back transaction)"]


# --- what the commands open, counted by the server ----------------------------------------


def _log_rows(cluster: EmbeddedCluster, start: int) -> list[list[str]]:
    with open(cluster.csv_log, newline="", errors="replace") as f:
        f.seek(start)
        return list(csv.reader(f))


def _run_logged(cluster: EmbeddedCluster, dsn: str, *args: str) -> list[list[str]]:
    """Run the advisor; the csvlog rows it caused, once a marker connection after it is logged too."""
    start = cluster.csv_log.stat().st_size
    run = advisor(*args, "--dsn", dsn, "--format", "json")
    assert run.returncode == 0, run.stderr
    marker = f"marker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, application_name=marker):
        pass
    for _ in range(100):
        rows = _log_rows(cluster, start)
        if any(f"application_name={marker}" in row[13] for row in rows if len(row) > 13):
            return rows
        subprocess.run(["sleep", "0.1"])
    raise AssertionError("the marker connection never reached the log")


def _connections(rows: list[list[str]], database: str) -> int:
    return sum(1 for row in rows if len(row) > 13 and row[13].startswith("connection authorized")
               and f"database={database} application_name=advisor" in row[13])


def test_scan_opens_one_connection(logged):
    cluster, dsn = logged
    rows = _run_logged(cluster, dsn, "scan")
    assert _connections(rows, "session_counted") == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_suggest_indexes_opens_one_connection_and_its_parallel_sessions(logged, jobs):
    cluster, dsn = logged
    rows = _run_logged(cluster, dsn, "suggest-indexes", "--jobs", str(jobs))
    # The command's session, and jobs - 1 what-if sessions that cost configurations in parallel.
    assert _connections(rows, "session_counted") == jobs


def test_every_statement_carries_the_tag_and_application_name(logged):
    cluster, dsn = logged
    rows = _run_logged(cluster, dsn, "suggest-indexes")
    statements = [(row[22], row[13].split(": ", 1)[1]) for row in rows
                  if len(row) > 22 and row[2] == "session_counted"
                  and (row[13].startswith("statement: ") or row[13].startswith("execute "))]
    ours = [text for app, text in statements if app.startswith("advisor")]
    theirs = [text for app, text in statements if not app.startswith("advisor")]
    assert any("hypopg_create_index" in s for s in ours) and any("BEGIN READ ONLY" in s for s in ours)
    assert any("pg_stat_statements" in s for s in ours) and any("EXPLAIN" in s for s in ours)
    assert all(s.startswith(TAG) for s in ours), [s for s in ours if not s.startswith(TAG)]
    assert not any(s.startswith(TAG) for s in theirs)  # nothing of ours under another name


def test_a_lost_connection_stays_lost_within_a_step_and_the_next_step_opens_a_new_one(db):
    with Session(db) as session:
        first = session.read("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(db, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (first,))
        with pytest.raises(psycopg.OperationalError):
            session.run("SELECT 1")
        assert session.lost
        with pytest.raises(psycopg.OperationalError):  # not silently replaced: its backend's state is gone
            session.run("SELECT 1")
        with session_for(session) as step:
            second = step.read("SELECT pg_backend_pid()").fetchone()[0]
        assert second != first and not session.lost
