"""WAL positions: LSN text to integer and back, the primary's commit position, a replica's replay wait."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from advisor.db.connect import TAG

# At or past the end of every commit that returned, also with synchronous_commit=off
# (pg_current_wal_lsn() is the *write* position, which may trail an asynchronous commit).
_COMMIT_LSN = TAG + "SELECT pg_current_wal_insert_lsn()::text"
_REPLAYED = TAG + "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> an integer position (None stays None)."""
    if text is None:
        return None
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def one_row(conn: psycopg.Connection, query: str, params: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """The row of a statement that always returns one (every statement the router runs does)."""
    row = conn.execute(query, params).fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM returns one row
        raise psycopg.ProgrammingError(f"no row from {query!r}")
    return row


def commit_lsn(conn: psycopg.Connection) -> int | None:
    """The primary's WAL insert position: every commit that returned on it is at or before it."""
    return parse_lsn(one_row(conn, _COMMIT_LSN)[0])


def wait_replayed(conn: psycopg.Connection, lsn: int, wait_s: float) -> bool:
    """Poll a replica until it has replayed ``lsn`` (True), or ``wait_s`` passes (False)."""
    deadline = time.monotonic() + wait_s
    pause = 0.001
    text = format_lsn(lsn)
    while True:
        if one_row(conn, _REPLAYED, (text,))[0]:
            return True
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
