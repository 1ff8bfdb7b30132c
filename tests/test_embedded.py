"""The throwaway cluster and the connection helpers, against a real server."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from conftest import PROJECT_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from advisor.db.connect import AdvisorConnectionError, connect, redact_dsn
from advisor.db.embedded import PostgresNotFoundError, free_port


def _wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(step)
    return predicate()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (reparented to a PID 1 that does not reap) holds nothing: it counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z"


# --- the cluster ------------------------------------------------------------------


def test_find_binaries_has_server_programs(pg_binaries):
    bin_dir = pg_binaries
    assert (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file()


def test_not_found_error_names_the_fix():
    err = PostgresNotFoundError("no PostgreSQL server binaries found", "run scripts/setup.sh")
    assert str(err).splitlines() == [err.cause, err.fix]


def test_server_runs_unprivileged(embedded_cluster):
    owner = Path(f"/proc/{embedded_cluster.pid}").stat().st_uid
    assert owner == os.geteuid() if os.geteuid() != 0 else owner != 0
    assert embedded_cluster.data_dir.stat().st_uid == owner
    assert str(embedded_cluster.base_dir).startswith("/tmp/")


def test_preloaded_libraries_and_facts(embedded_cluster, pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        libs = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        assert {"pg_stat_statements", "auto_explain"} <= {s.strip() for s in libs.split(",")}
        conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        assert conn.execute("SHOW compute_query_id").fetchone()[0] == "on"
        assert conn.execute("SHOW log_line_prefix").fetchone()[0] == embedded_cluster.log_line_prefix
    assert embedded_cluster.server_version_num >= 130000
    assert embedded_cluster.port != 5432 or free_port() != 5432


def test_hypopg_in_module_database_when_available(pg_cluster, pg_dsn):
    if not pg_cluster.has_hypopg:
        pytest.skip("HypoPG is not installed on this server (apt-get install postgresql-15-hypopg)")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'").fetchone()


def test_three_log_files_are_written(embedded_cluster, pg_dsn):
    if embedded_cluster.server_version_num < 150000:
        pytest.skip("jsonlog needs PostgreSQL 15")
    marker = f"marker_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True, application_name="logtest") as conn:
        conn.execute("SET log_min_duration_statement = 0")
        conn.execute(f"SELECT 1 AS {marker}")
    has_marker = lambda path: path.exists() and marker in path.read_text(errors="replace")  # noqa: E731
    for path in (embedded_cluster.stderr_log, embedded_cluster.csv_log, embedded_cluster.json_log):
        assert _wait_for(lambda: has_marker(path), timeout=5)  # noqa: B023 - called within this iteration, f"{marker} never reached {path.name}"

    dbname = pg_dsn.rsplit("/", 1)[1]
    line = next(ln for ln in embedded_cluster.stderr_log.read_text().splitlines() if marker in ln)
    assert f"postgres@{dbname} app=logtest LOG:  duration:" in line
    rows = list(csv.reader(embedded_cluster.csv_log.open(newline="")))
    row = next(r for r in rows if any(marker in field for field in r))
    assert row[1:3] == ["postgres", dbname]
    records = [json.loads(ln) for ln in embedded_cluster.json_log.read_text().splitlines() if marker in ln]
    assert records[0]["dbname"] == dbname and records[0]["application_name"] == "logtest"


def test_settings_override_defaults(pg_binaries):
    from advisor.db.embedded import EmbeddedCluster

    with EmbeddedCluster({"log_min_duration_statement": 0, "work_mem": "8MB"}) as c:
        with psycopg.connect(c.dsn()) as conn:
            assert conn.execute("SHOW log_min_duration_statement").fetchone()[0] == "0"
            assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        base = c.base_dir
    assert not base.exists()


_CHILD = textwrap.dedent("""
    import sys, time
    from advisor.db.embedded import EmbeddedCluster
    c = EmbeddedCluster().start()
    print(c.pid, c.base_dir, flush=True)
    time.sleep(600)
""")


def test_sigkilled_parent_leaves_no_server(pg_binaries):
    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid_text, base = child.stdout.readline().split()
        pid = int(pid_text)
        assert not _gone(pid)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
        assert _wait_for(lambda: _gone(pid), timeout=10), f"postmaster {pid} outlived its killed parent"
    finally:
        child.kill()
        if "base" in locals():  # atexit never ran in the killed child; the next start() would sweep it too
            subprocess.run(["rm", "-rf", base], check=False)


def test_replica_streams(embedded_cluster, pg_dsn):
    replica = embedded_cluster.add_replica()
    try:
        dbname = pg_dsn.rsplit("/", 1)[1]
        with psycopg.connect(pg_dsn, autocommit=True) as primary:
            primary.execute("CREATE TABLE replicated (id int PRIMARY KEY, v text)")
            primary.execute("INSERT INTO replicated VALUES (1, 'one'), (2, 'two')")
            # insert_lsn, not pg_current_wal_lsn(): with synchronous_commit=off the commit may not be written yet.
            lsn = primary.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        with psycopg.connect(replica.dsn(dbname), autocommit=True) as standby:
            assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
            replayed = lambda: standby.execute(  # noqa: E731
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s) >= 0", (lsn,)).fetchone()[0]
            assert _wait_for(replayed, timeout=10)
            assert standby.execute("SELECT v FROM replicated ORDER BY id").fetchall() == [("one",), ("two",)]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                standby.execute("INSERT INTO replicated VALUES (3, 'three')")
    finally:
        replica.stop()
    assert replica.base_dir is None


# --- redaction and connections --------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://alice:s3cret@db.example.com:5432/app", "postgresql://alice:***@db.example.com:5432/app"),
        ("postgres://alice@db/app", "postgres://alice@db/app"),
        ("postgresql://alice:p%40ss@h1:5432,h2:5433/app?sslmode=require",
         "postgresql://alice:***@h1:5432,h2:5433/app?sslmode=require"),
        ("postgresql://h/app?user=alice&password=s3cret&sslmode=require",
         "postgresql://h/app?user=alice&password=***&sslmode=require"),
        ("host=db user=alice password=s3cret dbname=app", "host=db user=alice password=*** dbname=app"),
        ("host=db password = 'it\\'s a secret' dbname=app", "host=db password = *** dbname=app"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_redact_dsn_examples(dsn, expected):
    assert redact_dsn(dsn) == expected


_password = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30).map(
    lambda s: "PW" + s)


@settings(max_examples=300, deadline=None)
@given(password=_password)
def test_redact_dsn_never_shows_the_password(password):
    kv_value = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    forms = [
        f"postgresql://alice:{quote(password, safe='')}@db.example.com:5432/app",
        f"postgresql://db.example.com/app?user=alice&password={quote(password, safe='')}&sslmode=require",
        f"host=db.example.com user=alice password={kv_value} dbname=app",
    ]
    for dsn in forms:
        out = redact_dsn(dsn)
        assert password not in out and quote(password, safe="") not in out
        assert "db.example.com" in out and "***" in out


def test_connect_refused_names_cause_and_hides_password():
    port = free_port()  # bound then released: nothing listens there
    for dsn in (f"postgresql://alice:Hunter2secret@127.0.0.1:{port}/app",
                f"host=127.0.0.1 port={port} user=alice password=Hunter2secret dbname=app"):
        with pytest.raises(AdvisorConnectionError) as info:
            connect(dsn, connect_timeout_s=3)
        err = info.value
        assert "Hunter2secret" not in str(err) and "Hunter2secret" not in repr(err)
        assert err.cause.startswith("could not connect") and str(port) in err.cause
        assert err.fix == "check host/port, is the server running?"
        assert len(str(err).splitlines()) == 2


def test_connect_missing_database_and_role(pg_cluster):
    with pytest.raises(AdvisorConnectionError) as info:
        connect(pg_cluster.dsn("no_such_database_xyz"))
    assert info.value.cause.startswith("the database does not exist")
    with pytest.raises(AdvisorConnectionError) as info:
        connect(make_conninfo(pg_cluster.dsn(), user="no_such_role_xyz", password="pw123"))
    assert info.value.cause.startswith("authentication failed") and "pw123" not in str(info.value)


def test_connect_applies_session_settings(pg_dsn):
    conn = connect(pg_dsn, statement_timeout_ms=1500, lock_timeout_ms=250,
                   idle_in_transaction_timeout_ms=45_000, application_name="advisor-test")
    with conn:
        assert conn.autocommit is False
        show = lambda name: conn.execute(f"SHOW {name}").fetchone()[0]  # noqa: E731
        assert show("statement_timeout") == "1500ms"
        assert show("lock_timeout") == "250ms"
        assert show("idle_in_transaction_session_timeout") == "45s"
        assert show("application_name") == "advisor-test"
        conn.rollback()  # the settings are session-level: a rollback keeps them
        assert show("statement_timeout") == "1500ms"
        conn.rollback()
    with connect(pg_dsn, statement_timeout_ms=100) as short, pytest.raises(psycopg.errors.QueryCanceled):
        short.execute("SELECT pg_sleep(3)")
