"""csvlog: one CSV row per message; statements may span lines inside quotes."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from advisor.workload.logs.records import LogRecord, Tally

# Column positions, stable since PostgreSQL 9.0; application_name from 9.0,
# backend_type from 13, query_id from 14.
TIME, USER, DB, PID, SESSION, VXID, SEVERITY, SQLSTATE, MESSAGE, DETAIL, QUERY, APP, QUERY_ID = (
    0, 1, 2, 3, 5, 9, 11, 12, 13, 14, 19, 22, 25)
MIN_COLUMNS = 14

_HEAD = re.compile(r'"?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d')


def frame(lines: Iterable[str], tally: Tally) -> Iterator[LogRecord]:
    reader = csv.reader(line + "\n" for line in lines)
    line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            tally.skip(reader.line_num, f"malformed CSV: {e}")
            continue
        start, line = line + 1, reader.line_num
        if not row or row == [""]:
            continue
        if len(row) < MIN_COLUMNS or not _HEAD.match(row[TIME]):
            tally.skip(start, "not a csvlog row", ",".join(row))
            continue
        yield _record(row, start)
    tally.lines += reader.line_num


def _record(row: list[str], line: int) -> LogRecord:
    def col(i: int) -> str | None:
        return row[i] or None if i < len(row) else None

    return LogRecord(
        line,
        severity=row[SEVERITY],
        message=row[MESSAGE],
        timestamp=row[TIME],
        pid=col(PID),
        session=col(SESSION),
        user=col(USER),
        database=col(DB),
        application=col(APP),
        vxid=col(VXID),
        query_id=col(QUERY_ID),
        detail=col(DETAIL),
        statement=col(QUERY),
        sqlstate=col(SQLSTATE),
    )


def is_unit_start(text: str) -> bool:
    return _HEAD.match(text) is not None and ",LOG," in text
