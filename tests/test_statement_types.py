"""The statement types that have a plan (workload.model.PLANNED: what scan explains and
suggest-indexes costs), held to the server: a statement's type is in PLANNED exactly when
PostgreSQL will EXPLAIN it."""

from __future__ import annotations

import psycopg
import pytest

from advisor.workload.fingerprint import fingerprint
from advisor.workload.model import PLANNED

SCHEMA = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)"

# EXPLAIN also takes EXECUTE, DECLARE and CREATE TABLE AS, which only wrap a query:
# a workload's plans are those of the queries themselves, so they are left out here.
STATEMENTS = (
    "SELECT name FROM items WHERE id = 1",
    "VALUES (1), (2)",
    "TABLE items",
    "SELECT 1 UNION ALL SELECT 2",
    "INSERT INTO items VALUES (1, 'a')",
    "UPDATE items SET name = 'b' WHERE id = 1",
    "DELETE FROM items WHERE id = 1",
    "MERGE INTO items USING (VALUES (1)) AS s (id) ON items.id = s.id WHEN MATCHED THEN DELETE",
    "WITH gone AS (DELETE FROM items RETURNING id) SELECT count(*) FROM gone",
    "BEGIN",
    "COMMIT",
    "SET work_mem = '8MB'",
    "SHOW work_mem",
    "VACUUM items",
    "ANALYZE items",
    "CREATE INDEX ON items (name)",
    "TRUNCATE items",
    "LOCK TABLE items",
    "COPY items TO STDOUT",
)


def _explains(conn: psycopg.Connection, sql: str) -> bool:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"EXPLAIN {sql}")
        return True
    except psycopg.errors.SyntaxError:
        return False


@pytest.mark.parametrize("sql", STATEMENTS)
def test_planned_types_are_what_the_server_explains(schema_conn, sql):
    assert (fingerprint(sql).statement_type in PLANNED) == _explains(schema_conn, sql)


def test_every_planned_type_is_one_the_workload_gives():
    types = {fingerprint(sql).statement_type for sql in STATEMENTS}
    assert PLANNED - types == {"with"}
    # "with" is a WITH whose main statement could not be read: still a candidate, its refusal reported.
    assert fingerprint("WITH x AS (SELECT 1) ???").statement_type == "with"
