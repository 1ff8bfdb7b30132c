"""What every log format is framed into, and the tally of what could not be read."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from advisor.workload.model import Skipped

SKIPPED_KEPT = 100  # skipped lines kept in full; the rest are only counted


@dataclass(slots=True)
class LogRecord:
    """One log message with its prefix fields, continuation lines joined."""

    line: int
    severity: str
    message: str
    timestamp: str | None = None
    pid: str | None = None
    session: str | None = None
    user: str | None = None
    database: str | None = None
    application: str | None = None
    vxid: str | None = None
    query_id: str | None = None
    detail: str | None = None  # csvlog and jsonlog carry DETAIL in the same record
    statement: str | None = None  # ... and an error's STATEMENT too
    sqlstate: str | None = None  # csvlog, jsonlog, and stderr with %e in its prefix


# LogRecord's fields after ``line``, in order: a format may build records by position.
FIELDS = tuple(f.name for f in fields(LogRecord))[1:]


@dataclass(slots=True)
class Tally:
    """Counts for one file (or one chunk of it), mergeable in file order."""

    file: str
    lines: int = 0
    other_events: int = 0
    plans: int = 0
    own: int = 0  # executions the advisor itself sent, left out (see workload/own_traffic.py)
    skipped_count: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    continues: bool = False  # counts a later part of the file of the tally before it: lines numbered on from there

    def extend(self, later: Tally) -> None:
        """Add the counts of the next part of the same file, whose lines were numbered from 1."""
        offset = self.lines
        self.lines += later.lines
        self.other_events += later.other_events
        self.plans += later.plans
        self.own += later.own
        self.skipped_count += later.skipped_count
        room = SKIPPED_KEPT - len(self.skipped)
        self.skipped.extend(replace(s, line=s.line + offset) for s in later.skipped[:room])

    def skip(self, line: int, reason: str, text: str = "") -> None:
        self.skipped_count += 1
        if len(self.skipped) < SKIPPED_KEPT:
            self.skipped.append(Skipped(self.file, line, reason, text[:200]))
