"""EXPLAIN under the safety rules, against the real server: classification, modes, timeouts,
the time budget, lost connections, and a hostile log that must leave the database untouched."""

from __future__ import annotations

import fnmatch
import re
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from advisor.db.connect import TAG, AdvisorConnectionError
from advisor.db.embedded import free_port
from advisor.db.explain import (
    BUDGET_EXHAUSTED,
    DENIED_FUNCTIONS,
    ExplainRequest,
    classify,
    explain_all,
)
from advisor.db.session import Session
from advisor.workload.logs.formats import read_executions, sniff
from advisor.workload.logs.records import Tally
from advisor.workload.parameters import parse_parameters
from advisor.workload.sources import collect, read_logs

SLOW = "SELECT count(*) FROM big a, big b, big c"  # 8e9 rows: minutes, and no memory or disk


@pytest.fixture(scope="module")
def db(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE items (id int PRIMARY KEY, category int NOT NULL, note text);
            INSERT INTO items SELECT g, g % 50, 'note ' || g FROM generate_series(1, 5000) g;
            CREATE INDEX items_category ON items (category);
            CREATE TABLE big (x int);
            INSERT INTO big SELECT generate_series(1, 2000);
            ANALYZE items; ANALYZE big;
        """)
    return pg_dsn


def request(sql_text: str, parameters: str | None = None, fp: str | None = None) -> ExplainRequest:
    return ExplainRequest(fp or sql_text[:40], sql_text, parameters)


def checksum(dsn: str, table: str) -> str:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t")
        return str(conn.execute(query.format(sql.Identifier(table))).fetchone())


# --- classify ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("statement, kind, reason", [
    ("SELECT * FROM items WHERE id = 1", "read", None),
    ("  -- leading comment\nSELECT 1;", "read", None),
    ("SELECT 1; -- trailing comment", "read", None),
    ("(SELECT 1) UNION ALL (SELECT 2)", "read", None),
    ("SELECT 1 EXCEPT SELECT 2", "read", None),
    ("VALUES (1), (2)", "read", None),
    ("TABLE items", "read", None),
    ("WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b", "read", None),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", "read", None),
    ("SELECT current_setting('work_mem'), lower(note), now() FROM items", "read", None),
    ("SELECT '$1', $$ pg_sleep(1) $$ FROM items", "read", None),
    ("INSERT INTO items VALUES (1, 2, 'x') ON CONFLICT DO NOTHING", "write", "INSERT changes data"),
    ("UPDATE items SET note = 'x' WHERE id = 1", "write", "UPDATE changes data"),
    ("DELETE FROM items", "write", "DELETE changes data"),
    ("MERGE INTO items i USING big b ON i.id = b.x WHEN MATCHED THEN DELETE", "write", "MERGE changes data"),
    ("WITH d AS (UPDATE items SET note = 'x' RETURNING *) SELECT * FROM d", "write", "data-modifying WITH"),
    ("WITH d AS (DELETE FROM items RETURNING *) SELECT 1 UNION SELECT 2", "write", "data-modifying WITH"),
    ("SELECT * FROM items FOR UPDATE", "write", "FOR UPDATE/SHARE"),
    ("SELECT * FROM items FOR SHARE SKIP LOCKED", "write", "FOR UPDATE/SHARE"),
    ("SELECT * FROM items WHERE id IN (SELECT x FROM big FOR NO KEY UPDATE)", "write", "FOR UPDATE/SHARE"),
    ("SELECT 1; DROP TABLE items", "refused", "several statements"),
    ("SELECT 'a\\'; DROP TABLE items; --'", "refused", "several statements"),  # PG's reading of the quote
    ("", "refused", "empty statement"),
    ("SELECT FROM WHERE (", "refused", "could not parse"),
    ("DROP TABLE items", "refused", "DROP"),
    ("CREATE INDEX i ON items (note)", "refused", "CREATE"),
    ("ALTER TABLE items ADD COLUMN x int", "refused", "ALTER"),
    ("TRUNCATE items", "refused", "TRUNCATE"),
    ("COPY items FROM PROGRAM 'touch /tmp/x'", "refused", "COPY"),
    ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'", "refused", "COPY"),
    ("SELECT * INTO TEMP t FROM items", "refused", "SELECT INTO"),
    ("CALL p()", "refused", "CALL"),
    ("DO $$ BEGIN END $$", "refused", "DO"),
    ("SET work_mem = '1GB'", "refused", "SET"),
    ("BEGIN", "refused", "BEGIN"),
    ("COMMIT", "refused", "COMMIT"),
    ("VACUUM items", "refused", "VACUUM"),
    ("ANALYZE items", "refused", "ANALYZE"),
    ("EXPLAIN ANALYZE DELETE FROM items", "refused", "EXPLAIN"),
    ("CHECKPOINT", "refused", "CHECKPOINT"),  # sqlglot reads it as a column name: roots are allow-listed
    ("CLUSTER items", "refused", "CLUSTER"),
    ("LOCK TABLE items", "refused", "LOCK"),
    ("PREPARE q AS SELECT 1", "refused", "PREPARE"),
    ("GRANT SELECT ON items TO public", "refused", "GRANT"),
])  # fmt: skip
def test_classify(statement, kind, reason):
    got = classify(statement)
    assert got.kind == kind, got
    assert (got.reason is None) if reason is None else reason in got.reason


# Every denylisted function, called the ways a query can call it.
DENIED_CALLS = [
    "SELECT pg_terminate_backend(42)", "SELECT pg_cancel_backend(42)", "SELECT pg_reload_conf()",
    "SELECT pg_rotate_logfile()", "SELECT pg_promote()", "SELECT pg_switch_wal()",
    "SELECT pg_create_restore_point('x')", "SELECT pg_create_logical_replication_slot('s', 'test_decoding')",
    "SELECT pg_drop_replication_slot('s')", "SELECT pg_replication_slot_advance('s', '0/0')",
    "SELECT pg_copy_physical_replication_slot('a', 'b')", "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)",
    "SELECT pg_replication_origin_create('o')", "SELECT pg_wal_replay_pause()", "SELECT pg_backup_start('x')",
    "SELECT pg_backup_stop()", "SELECT pg_start_backup('x')", "SELECT pg_stop_backup()",
    "SELECT pg_logical_emit_message(true, 'p', 'm')", "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock_shared(1)", "SELECT pg_try_advisory_lock(1)",
    "SELECT set_config('default_transaction_read_only', 'off', false)", "SELECT pg_notify('c', 'm')",
    "SELECT * FROM dblink('host=x', 'SELECT 1') AS t(x int)", "SELECT dblink_exec('host=x', 'DROP TABLE items')",
    "SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_binary_file('/etc/passwd')", "SELECT pg_ls_dir('.')",
    "SELECT * FROM pg_ls_waldir()", "SELECT pg_stat_file('x')", "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/x')", "SELECT loread(lo_open(1, 262144), 10)", "SELECT lowrite(0, 'x')",
    "SELECT pg_file_write('x', 'y', false)", "SELECT pg_file_unlink('x')", "SELECT * FROM pg_logdir_ls()",
    "SELECT pg_sleep(3600)", "SELECT pg_sleep_for('1 hour')", "SELECT pg_sleep_until(now() + interval '1 hour')",
    "SELECT pg_stat_reset()", "SELECT pg_stat_reset_shared('bgwriter')", "SELECT pg_stat_statements_reset()",
    "SELECT nextval('s')", "SELECT setval('s', 1)", "SELECT txid_current()", "SELECT pg_current_xact_id()",
    "SELECT query_to_xml('SELECT pg_terminate_backend(42)', true, true, '')",
    "SELECT query_to_xmlschema('x', true, true, '')",
    "SELECT cursor_to_xml('c', 1, true, true, '')", "SELECT schema_to_xml('public', true, true, '')",
    "SELECT database_to_xml(true, true, '')", "SELECT * FROM ts_stat('SELECT to_tsvector(note) FROM items')",
    # hidden in the tree, spelled differently
    "SELECT * FROM items WHERE id = (SELECT pg_sleep(1)::text::int)", "SELECT pg_catalog.pg_sleep(1)",
    'SELECT "pg_sleep"(1)', "SELECT PG_SLEEP(1)", "SELECT 1 FROM items, LATERAL pg_sleep(1)",
    "WITH x AS (SELECT pg_terminate_backend(42)) SELECT * FROM x", "DELETE FROM items WHERE id = nextval('s')",
]  # fmt: skip
ALLOWED_CALLS = ["SELECT current_setting('work_mem')", "SELECT lower(note), length(note) FROM items",
                 "SELECT pg_size_pretty(pg_relation_size('items'))", "SELECT note AS pg_sleep FROM items",
                 "SELECT currval('s')", "SELECT pg_backend_pid()", "SELECT xmlagg(xmlelement(name a)) FROM items"]


def test_denylist_refuses_every_entry_wherever_it_is_called():
    for call in DENIED_CALLS:
        got = classify(call)
        assert got.kind == "refused" and "which the advisor never runs" in got.reason, (call, got)
    for call in ALLOWED_CALLS:
        assert classify(call).kind == "read", call
    called = {m.lower() for call in DENIED_CALLS for m in re.findall(r"(\w+)\(", call)}
    for entry in DENIED_FUNCTIONS:  # the table above exercises the whole denylist
        assert any(fnmatch.fnmatchcase(name, entry) for name in called), entry


# --- parameters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, values", [
    ("$1 = '7'", ["7"]),
    ("$1 = '7', $2 = NULL, $3 = 'it''s'", ["7", None, "it's"]),
    ("$1 = ''''", ["'"]),
    ("$1 = ''", [""]),
    ("$1 = 'a, $2 = ''b''', $2 = 'c'", ["a, $2 = 'b'", "c"]),  # what looks like a parameter inside a value
    ("$1 = 'line one\nline two', $2 = NULL", ["line one\nline two", None]),
    ("$2 = 'b', $1 = 'a'", ["a", "b"]),
    ("$1 = 'NULL'", ["NULL"]),  # the string, not the null
    ("$1 = 'back\\slash'", ["back\\slash"]),
])  # fmt: skip
def test_parse_parameters(text, values):
    assert parse_parameters(text) == values


@pytest.mark.parametrize("text", ["garbage", "$1 = 'unterminated", "$1 = 7", "$1 = 'a', $3 = 'c'", "$1 = 'a' $2 = 'b'"])
def test_parse_parameters_rejects_what_it_cannot_read(text):
    with pytest.raises(ValueError):
        parse_parameters(text)


# --- modes -----------------------------------------------------------------------------------------------

def test_modes_on_a_real_table(db):
    before = checksum(db, "items")
    report = explain_all(db, [
        request("SELECT * FROM items WHERE category = 7", fp="literal-read"),
        request("SELECT * FROM items WHERE id = $1 AND note = $2", "$1 = '7', $2 = 'note 7'", fp="bound-read"),
        request("SELECT * FROM items WHERE id = $1", fp="generic-read"),
        request("DELETE FROM items WHERE category = 3", fp="literal-write"),
        request("UPDATE items SET note = $2 WHERE id = $1", "$1 = '5', $2 = NULL", fp="bound-write"),
        request("INSERT INTO items VALUES ($1, $2, $3)", fp="generic-write"),
        request("SELECT * FROM items WHERE id = 1 FOR UPDATE", fp="locking-read"),
    ])
    by = {o.fingerprint: o for o in report.outcomes}
    assert not report.not_explained and all(o.error is None and o.plan for o in report.outcomes), report

    analyzed = by["literal-read"]
    assert analyzed.mode == "analyze" and analyzed.note is None
    assert "Execution Time" in analyzed.plan and analyzed.plan["Plan"]["Actual Rows"] == 100
    bound = by["bound-read"]
    assert bound.mode == "analyze" and bound.plan["Plan"]["Actual Rows"] == 1  # the values were used
    generic = by["generic-read"]
    assert generic.mode == "generic" and "Execution Time" not in generic.plan
    assert "$1" in generic.plan["Plan"]["Index Cond"]  # a generic plan keeps the parameter
    for fp in ("literal-write", "bound-write", "locking-read"):
        assert by[fp].mode == "plain" and "Execution Time" not in by[fp].plan and by[fp].note, fp
    assert by["generic-write"].mode == "generic" and by["generic-write"].plan["Plan"]["Operation"] == "Insert"
    assert checksum(db, "items") == before
    assert report.superuser is True and report.server_version_num >= 120000
    assert all(o.elapsed_ms > 0 for o in report.outcomes)


def test_the_server_runs_one_command_per_string_whatever_the_parser_thought(db):
    # The layer under classify(): even text that slipped past it cannot carry a second command.
    with Session(db, statement_timeout_ms=1_000) as session, \
            pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
        session.run("SELECT 1; DROP TABLE items")
    assert checksum(db, "items")


def test_every_statement_sent_is_tagged(db, embedded_cluster):
    dbname = conninfo.conninfo_to_dict(db)["dbname"]
    with psycopg.connect(embedded_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET log_min_duration_statement = 0").format(sql.Identifier(dbname)))
    try:
        explain_all(db, [request("SELECT * FROM items WHERE id = $1"),  # PREPARE, SET LOCAL, DEALLOCATE
                         request("SELECT * FROM items WHERE id = $1", "$1 = '3'"),
                         request("SELECT * FROM nope")])
    finally:
        with psycopg.connect(embedded_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} RESET log_min_duration_statement").format(sql.Identifier(dbname)))
    marker = f"tag-test-{uuid.uuid4().hex}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        conn.execute(f"SELECT '{marker}'")
    deadline = time.monotonic() + 15
    while marker not in embedded_cluster.stderr_log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    path = str(embedded_cluster.stderr_log)
    ours = [e.sql for e in read_executions(path, sniff(path), Tally(path))
            if e.application == "advisor" and e.database == dbname]
    assert any("DEALLOCATE" in s for s in ours) and any("BEGIN READ ONLY" in s for s in ours)
    assert ours and all(s.startswith(TAG) for s in ours), [s for s in ours if not s.startswith(TAG)]


# --- timeouts, budget, connections ----------------------------------------------------------------------

def test_a_statement_over_the_timeout_is_an_error_and_the_next_runs(db):
    report = explain_all(db, [request(SLOW, fp="slow"), request("SELECT count(*) FROM items", fp="next")],
                         statement_timeout_ms=300)
    slow, nxt = report.outcomes
    assert slow.plan is None and "timed out" in slow.error and "300 ms" in slow.error
    assert 250 <= slow.elapsed_ms < 3000
    assert nxt.error is None and nxt.plan["Plan"]["Node Type"] == "Aggregate"


def test_the_budget_caps_the_run_and_leaves_the_rest_not_explained(db):
    started, seen = time.monotonic(), []
    report = explain_all(db, [request(SLOW, fp="slow"), request("SELECT 1", fp="later"),
                              request("SELECT 2", fp="later too"), request("DROP TABLE items", fp="refused")],
                         time_budget_s=1.0, statement_timeout_ms=5_000, progress=lambda *p: seen.append(p))
    assert time.monotonic() - started < 3.0
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the statement timeout was cut to what was left of the budget
    assert report.outcomes[0].fingerprint == "slow" and "timed out" in report.outcomes[0].error
    assert [(n.fingerprint, n.reason) for n in report.not_explained] == [
        ("later", BUDGET_EXHAUSTED), ("later too", BUDGET_EXHAUSTED)]
    assert report.outcomes[-1].fingerprint == "refused" and report.outcomes[-1].refused  # refusals cost nothing


class Killer(threading.Thread):
    """Terminates the advisor's backend each time it runs the slow query, ``times`` times;
    optionally closes the database to new connections first."""

    def __init__(self, admin_dsn: str, dbname: str, *, times: int = 1, close_database: bool = False) -> None:
        super().__init__(daemon=True)
        self.admin_dsn, self.dbname, self.times, self.close_database = admin_dsn, dbname, times, close_database
        self.killed: list[int] = []

    def run(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, application_name="advisor-test-killer") as conn:
            deadline = time.monotonic() + 20
            while len(self.killed) < self.times and time.monotonic() < deadline:
                row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'advisor' "
                                   "AND datname = %s AND state = 'active' AND query LIKE %s AND NOT pid = ANY(%s)",
                                   [self.dbname, "%big a, big b%", self.killed]).fetchone()
                if row is None:
                    time.sleep(0.02)
                    continue
                if self.close_database:
                    close = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false")
                    conn.execute(close.format(sql.Identifier(self.dbname)))
                conn.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                self.killed.append(row[0])


def test_a_killed_connection_is_replaced_once_and_the_run_goes_on(db, pg_cluster):
    killer = Killer(pg_cluster.dsn(), conninfo.conninfo_to_dict(db)["dbname"])
    killer.start()
    report = explain_all(db, [request(SLOW, fp="slow"), request("SELECT count(*) FROM items", fp="after")],
                         statement_timeout_ms=20_000)
    killer.join()
    assert len(killer.killed) == 1
    slow, after = report.outcomes
    assert slow.error.startswith("connection lost") and "administrator command" in slow.error
    assert after.error is None and after.plan and not report.not_explained


def test_when_reconnecting_fails_the_report_names_what_is_missing(db, pg_cluster):
    dbname = conninfo.conninfo_to_dict(db)["dbname"]
    killer = Killer(pg_cluster.dsn(), dbname, close_database=True)
    killer.start()
    try:
        report = explain_all(db, [request(SLOW, fp="slow"), request("SELECT 1", fp="one"),
                                  request("SELECT 2", fp="two"), request("TRUNCATE items", fp="refused")],
                             statement_timeout_ms=20_000)
    finally:
        killer.join()
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(dbname)))
    assert report.outcomes[0].error.startswith("connection lost")
    missing = {n.request.fingerprint: n.reason for n in report.not_explained}
    assert set(missing) == {"one", "two"}
    assert all(r.startswith("connection lost") and "reconnecting failed" in r
               and "not currently accepting connections" in r for r in missing.values()), missing
    assert report.outcomes[-1].refused


def test_a_second_loss_ends_the_run(db, pg_cluster):
    killer = Killer(pg_cluster.dsn(), conninfo.conninfo_to_dict(db)["dbname"], times=2)
    killer.start()
    report = explain_all(db, [request(SLOW, fp="slow"), request(SLOW + " WHERE a.x > 0", fp="slow again"),
                              request("SELECT 1", fp="one")], statement_timeout_ms=20_000)
    killer.join()
    assert len(killer.killed) == 2
    assert [o.error.split(":")[0] for o in report.outcomes] == ["connection lost", "connection lost"]
    (missing,) = report.not_explained
    assert missing.request.fingerprint == "one" and "second time" in missing.reason


def test_a_least_privileged_role_is_enough(db, embedded_cluster):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS advisor_reader")
        conn.execute("CREATE ROLE advisor_reader LOGIN IN ROLE pg_monitor")
        conn.execute("GRANT SELECT ON items TO advisor_reader")
    params = conninfo.conninfo_to_dict(db) | {"user": "advisor_reader"}
    report = explain_all(conninfo.make_conninfo(**params), [
        request("SELECT * FROM items WHERE id = $1", "$1 = '4'", fp="read"),
        request("SELECT * FROM items WHERE id = $1", fp="generic"),
        request("DELETE FROM items WHERE id = 4", fp="write"),
    ])
    read, generic, write = report.outcomes
    assert report.superuser is False
    assert read.mode == "analyze" and read.plan and generic.mode == "generic" and generic.plan
    assert write.plan is None and "permission denied" in write.error  # plain EXPLAIN checks DELETE's privilege


def test_the_first_connection_failing_raises():
    with pytest.raises(AdvisorConnectionError):
        explain_all(f"postgresql://advisor@127.0.0.1:{free_port()}/none", [request("SELECT 1")])


# --- the hostile log ----------------------------------------------------------------------------------

def test_a_hostile_log_changes_nothing(db, tmp_path):
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE victims (id serial PRIMARY KEY, v int NOT NULL, note text);
            INSERT INTO victims (v, note) SELECT g, 'n' || g FROM generate_series(1, 100) g;
            CREATE TABLE bystanders (id int PRIMARY KEY, v int);
            INSERT INTO bystanders SELECT g, g FROM generate_series(1, 10) g;
            ANALYZE victims;
        """)
    bystander = psycopg.connect(db, autocommit=True, application_name="advisor-test-bystander")
    bystander_pid = bystander.info.backend_pid
    hostile = [
        "SELECT 1; DROP TABLE victims",
        "DROP TABLE victims",
        "DELETE FROM victims",
        "WITH d AS (UPDATE victims SET v = v + 1 RETURNING *) SELECT * FROM d",
        f"SELECT pg_terminate_backend({bystander_pid})",
        "SELECT pg_sleep(3600)",
        "UPDATE victims SET v = 0 WHERE true",
        "INSERT INTO victims (v, note) VALUES (-1, 'planted')",
        "TRUNCATE victims",
        f"COPY victims FROM PROGRAM 'touch {pwned}'",
        "SELECT set_config('default_transaction_read_only','off',false)",
        "SELECT nextval('victims_id_seq')",
        f"SELECT query_to_xml('SELECT pg_terminate_backend({bystander_pid})', true, true, '')",
    ]
    lines = [f"2024-05-01 10:00:{i:02d}.000 UTC [4{i:03d}] app@shop LOG:  duration: {1000 + i}.000 ms  statement: {s}"
             for i, s in enumerate(hostile)]
    lines += [  # a harmless query with its logged parameters, as the extended protocol logs them
        "2024-05-01 10:01:00.000 UTC [4999] app@shop LOG:  duration: 3.000 ms  execute <unnamed>: "
        "SELECT * FROM victims WHERE id = $1 AND note <> $2",
        "2024-05-01 10:01:00.000 UTC [4999] app@shop DETAIL:  parameters: $1 = '7', $2 = 'it''s\n\ttwo lines'",
    ]
    log = tmp_path / "postgresql.log"
    log.write_text("\n".join(lines) + "\n")

    workload = collect(read_logs([str(log)], jobs=1))
    assert workload.skipped_count == 0
    requests = [ExplainRequest(q.fingerprint, q.sample, q.sample_parameters) for q in workload.queries]
    samples = {q.fingerprint: q.sample for q in workload.queries}
    assert set(samples.values()) == set(hostile) | {"SELECT * FROM victims WHERE id = $1 AND note <> $2"}

    def state():
        with psycopg.connect(db) as conn:
            seq = conn.execute("SELECT last_value, is_called FROM victims_id_seq").fetchone()
        return checksum(db, "victims"), checksum(db, "bystanders"), seq

    before = state()
    started = time.monotonic()
    report = explain_all(db, requests, time_budget_s=30)
    took = time.monotonic() - started

    assert state() == before
    assert not pwned.exists()
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [bystander_pid]).fetchone()
    bystander.close()
    assert took < 10, took
    assert not report.not_explained

    by_sample = {samples[o.fingerprint]: o for o in report.outcomes}
    plain = {"DELETE FROM victims", "WITH d AS (UPDATE victims SET v = v + 1 RETURNING *) SELECT * FROM d",
             "UPDATE victims SET v = 0 WHERE true", "INSERT INTO victims (v, note) VALUES (-1, 'planted')"}
    for statement in hostile:
        outcome = by_sample[statement]
        if statement in plain:
            assert outcome.mode == "plain" and outcome.plan and outcome.note and outcome.error is None, outcome
            assert "Execution Time" not in outcome.plan
        else:
            assert outcome.mode is None and outcome.plan is None and outcome.refused, outcome
    assert "several statements" in by_sample["SELECT 1; DROP TABLE victims"].refused
    assert "pg_sleep" in by_sample["SELECT pg_sleep(3600)"].refused
    harmless = by_sample["SELECT * FROM victims WHERE id = $1 AND note <> $2"]
    assert harmless.mode == "analyze" and harmless.plan["Plan"]["Actual Rows"] == 1
