"""The one row of a statement that always returns one (an aggregate, a SELECT without FROM, SHOW).

psycopg types ``fetchone()`` as ``row | None``; here None is a bug or a server that
broke the statement's promise, so it stops with the statement's status instead of a
``'NoneType' object is not subscriptable`` further on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psycopg

__all__ = ["one_row"]

Row = TypeVar("Row")


def one_row(cur: psycopg.Cursor[Row]) -> Row:
    """The cursor's next row, which the statement guarantees (RuntimeError if it returned none).

    Any cursor: ``RawCursor`` (``Session.run``) is a ``Cursor`` too."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"the server returned no row for a statement that always returns one ({cur.statusmessage})")
    return row
