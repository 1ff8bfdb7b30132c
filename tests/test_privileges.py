"""A role without pg_read_all_stats, or without SELECT on a table, is told what is hidden and the GRANT
to run, by `scan` and `suggest-indexes`, in text and JSON (issue #11, item 6): never 0 queries and exit 0
with no word."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from helpers import advisor
from psycopg import conninfo

from advisor.db.connect import TAG

ROLE = "advisor_test_reader"


@pytest.fixture(scope="module")
def reader(pg_dsn):
    """The DSN of a plain login role; the workload was run by another role (the harness's superuser)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL)")
        conn.execute("INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 5000) g")
        conn.execute("CREATE TABLE payroll (id int PRIMARY KEY, salary int)")
        conn.execute(f"GRANT SELECT ON orders TO {ROLE}")  # payroll stays out of its reach
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
        for customer in range(12):
            conn.execute("SELECT count(*) FROM orders WHERE customer = %s", (customer,)).fetchone()
    yield conninfo.make_conninfo(pg_dsn, user=ROLE)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


def hidden_rows(dsn: str) -> int:
    """What the server hides from this role: rows of pg_stat_statements without a queryid."""
    with psycopg.connect(dsn, autocommit=True) as conn:  # no BEGIN/COMMIT of ours in its workload
        # tagged as the advisor tags its own statements, so that the scans leave it out of the workload
        return conn.execute(TAG + "SELECT count(*) FROM pg_stat_statements WHERE queryid IS NULL").fetchone()[0]


def test_scan_says_the_workload_is_empty_because_rows_are_hidden(reader):
    hidden = hidden_rows(reader)
    assert hidden > 0
    run = advisor("scan", "--dsn", reader)
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())  # rich folds long lines
    assert "no queries to examine" in text
    assert f"GRANT pg_read_all_stats TO {ROLE};" in text
    assert re.search(rf"\b{hidden} pg_stat_statements rows hidden", text), text
    assert "Findings" not in text  # not an empty table

    doc = json.loads(advisor("scan", "--dsn", reader, "--format", "json").stdout)
    assert doc["workload"]["queries"] == 0
    notes = " ".join(doc["notes"])
    assert f"GRANT pg_read_all_stats TO {ROLE};" in notes and f"{hidden} pg_stat_statements rows hidden" in notes
    # The table it may not SELECT is named, with its GRANT; the one it may is not.
    assert "public.payroll" in notes and f"GRANT SELECT ON <table> TO {ROLE};" in notes
    assert "public.orders" not in notes


def test_suggest_indexes_stops_with_the_cause_and_the_grant(reader):
    run = advisor("suggest-indexes", "--dsn", reader, "--pg-stat-statements")
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "no query to advise on" in err and "hidden" in err
    assert f"GRANT pg_read_all_stats TO {ROLE};" in err
    assert "Traceback" not in run.stderr


def test_with_the_grant_the_other_roles_statements_are_read(reader, pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"GRANT pg_read_all_stats TO {ROLE}")
        calls = conn.execute("SELECT calls FROM pg_stat_statements "
                             "WHERE query = 'SELECT count(*) FROM orders WHERE customer = $1'").fetchone()[0]
    try:
        assert hidden_rows(reader) == 0
        doc = json.loads(advisor("scan", "--dsn", reader, "--format", "json").stdout)
        orders = [q for q in json.loads(advisor("parse", "--dsn", reader, "--format", "json").stdout)["queries"]
                  if q["normalized"].startswith("SELECT COUNT(*) FROM orders")]
        assert [q["calls"] for q in orders] == [calls] == [12]
        assert not any("pg_read_all_stats" in n for n in doc["notes"])
        # advice: the other role's query is costed (with values from pg_stats) and the notes say so
        advice = json.loads(advisor("suggest-indexes", "--dsn", reader, "--pg-stat-statements", "--format", "json").stdout)
        assert any("representative values" in n and "orders.customer" in n for n in advice["notes"])
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"REVOKE pg_read_all_stats FROM {ROLE}")
