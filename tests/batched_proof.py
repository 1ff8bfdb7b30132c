"""Runs an N+1 child once per key and its batched form once, on a real server, and returns both by key."""

from __future__ import annotations

import psycopg

from advisor.checks.rewrite import Batched


def run(conn: psycopg.Connection, sql: str, params: list) -> list[tuple]:
    """The rows, with arrays as tuples so rows can be counted as multisets."""
    with psycopg.RawCursor(conn) as cur:  # $n placeholders, as the server receives them
        rows = cur.execute(sql, params).fetchall()
    return [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in rows]


def from_evidence(rewrite: dict) -> Batched:
    """The batched form an N+1 finding printed, from its ``evidence["batched"]``."""
    return Batched(rewrite["kind"], rewrite["sql"], rewrite["key_column"], rewrite["parameter"],
                   rewrite["key_position"], rewrite["key_added"], None)


def rows_by_key(conn: psycopg.Connection, child: str, batched: Batched, keys: list, others: list = (),
                ) -> tuple[dict, dict]:
    """(each key's rows from the child, each key's rows from the batched form without the key column
    it added). The key is the child's ``batched.parameter``; ``others`` fill its other parameters."""
    position = int(batched.parameter.lstrip("$")) - 1

    def params(key) -> list:
        values = list(others)
        values.insert(position, key)
        return values

    expected = {key: run(conn, child, params(key)) for key in keys}
    got: dict = {key: [] for key in keys}
    for row in run(conn, batched.sql.split(";")[0], params(list(keys))):
        rest = row[:batched.key_position] + row[batched.key_position + 1:] if batched.key_added else row
        got.setdefault(row[batched.key_position], []).append(rest)
    return expected, got
