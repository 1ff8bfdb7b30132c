"""Which format a log is in, and the record stream of one log (or one byte range of it)."""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from advisor.workload.events import LogEvents
from advisor.workload.logs import csvlog, jsonlog, messages, stderr, syslog
from advisor.workload.logs.prefix import detect_prefix, prefix_regex
from advisor.workload.logs.reader import iter_lines, open_log
from advisor.workload.logs.records import LogRecord, Tally
from advisor.workload.model import Execution

FORMATS = ("auto", "stderr", "csvlog", "jsonlog", "syslog", "logplex")
SNIFF_LINES = 500

_CSV_HEAD = re.compile(r'"?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [A-Za-z0-9+\-:]+)?"?,"?[^,]*"?,"?[^,]*"?,\d+,')


@dataclass(frozen=True, slots=True)
class LogFormat:
    name: str  # stderr, csvlog, jsonlog, syslog, logplex, pgbouncer, unknown
    prefix: str | None = None  # the server's log_line_prefix, for stderr, syslog and logplex

    @property
    def splittable(self) -> bool:
        """Whether a file can be cut into byte ranges parsed apart (see reader.split_points).

        Not a stderr log whose prefix is unknown: read_executions skips its lines, and
        cutting it would need the prefix to find where a statement starts."""
        return self.name in ("csvlog", "jsonlog") or (self.name == "stderr" and self.prefix is not None)

    def is_unit_start(self) -> Callable[[str], bool]:
        """Where a part of a splittable log may begin."""
        if self.name == "stderr":
            if self.prefix is None:
                raise ValueError("a stderr log without a log_line_prefix is not split")
            return stderr.unit_start(prefix_regex(self.prefix))
        return {"csvlog": csvlog.is_unit_start, "jsonlog": jsonlog.is_unit_start}[self.name]


def sniff(path: str, requested: str = "auto", prefix: str | None = None) -> LogFormat:
    """The file's format: as requested, or guessed from its first lines."""
    if requested == "stderr" or (prefix is not None and requested == "auto"):
        return LogFormat("stderr", prefix or _detect(path))
    with open_log(path) as stream:
        head = [line for line in itertools.islice(iter_lines(stream), SNIFF_LINES) if line.strip()]
    if requested in ("syslog", "logplex"):
        found = syslog.sniff(head)
        return LogFormat(requested, found[1] if found else None)
    if requested != "auto":
        return LogFormat(requested)
    if not head:
        return LogFormat("stderr", "%m [%p] ")  # empty: any format reads it as nothing
    if sum(line.lstrip().startswith("{") for line in head) * 2 > len(head):
        return LogFormat("jsonlog")
    if _mostly_csvlog(head):
        return LogFormat("csvlog")
    detected = detect_prefix(head)
    if detected:
        return LogFormat("stderr", detected)
    carried = syslog.sniff(head)
    if carried:
        return LogFormat(*carried)
    if sum(bool(_PGBOUNCER.match(line)) for line in head) * 2 > len(head):
        return LogFormat("pgbouncer")
    return LogFormat("unknown")


# PgBouncer writes "LOG C-0x…: …" where the server writes "LOG:  …".
_PGBOUNCER = re.compile(r"\S+ \S+ \S+ (?:\[\d+\] )?(?:LOG|WARNING|ERROR|NOISE|DEBUG|FATAL) (?!:)")


def _mostly_csvlog(head: list[str]) -> bool:
    """Whether most records (not lines: a statement may span many) are csvlog rows."""
    heads = sum(bool(_CSV_HEAD.match(line)) for line in head)
    if not heads:
        return False
    try:
        records = sum(1 for _ in csv.reader(head))
    except csv.Error:  # not CSV after all, or a field past the csv module's limit
        records = len(head)
    return heads * 2 > records


def _detect(path: str) -> str | None:
    with open_log(path) as stream:
        return detect_prefix(list(itertools.islice(iter_lines(stream), SNIFF_LINES)))


def read_executions(path: str, fmt: LogFormat, tally: Tally, start: int = 0, end: int | None = None,
                    events: LogEvents | None = None, *, before: bool = False, after: bool = False) -> Iterator[Execution]:
    """Every execution logged in ``path`` (between byte offsets ``start`` and ``end``); its server events to ``events``.

    A part of a file cut by ``split_points`` also reads its neighbours' records around the cuts: with
    ``before`` those before ``start``, with ``after`` those from ``end`` on, for what a cut separates
    from its executions; those records are their own part's to count (see messages.py)."""
    with open_log(path) as stream:
        lines = iter_lines(stream, start, end)
        records = _records(lines, fmt, tally)
        if records is None:
            return
        earlier = _records_before(path, fmt, start) if before and start and fmt.splittable else ()
        later = _records_after(path, fmt, end) if after and end is not None else ()
        yield from messages.executions(records, path, tally, events, earlier, later)


def _records(lines: Iterator[str], fmt: LogFormat, tally: Tally) -> Iterator[LogRecord] | None:
    """The log's records, or None for a log that holds none (its lines are counted or skipped)."""
    if fmt.name == "stderr" and fmt.prefix is not None:
        return stderr.frame(lines, fmt.prefix, tally)
    if fmt.name == "csvlog":
        return csvlog.frame(lines, tally)
    if fmt.name == "jsonlog":
        return jsonlog.frame(lines, tally)
    if fmt.name in syslog.CARRIERS and fmt.prefix is not None:
        return syslog.frame(lines, fmt.name, fmt.prefix, tally)
    if fmt.name == "pgbouncer":
        _count_all(lines, tally)
    else:
        _skip_all(lines, tally)
    return None


def _records_before(path: str, fmt: LogFormat, start: int) -> Iterator[LogRecord]:
    """The records of the last ``CONTEXT_BYTES`` before ``start``, from the first line a part may begin at."""
    begin = max(0, start - messages.CONTEXT_BYTES)
    is_start = fmt.is_unit_start()
    with open_log(path) as stream:
        lines: Iterator[str] = iter_lines(stream, begin, start)
        if begin:  # it may fall inside a record
            lines = itertools.dropwhile(lambda text: not is_start(text), lines)
        yield from _records(lines, fmt, Tally(path)) or ()


def _records_after(path: str, fmt: LogFormat, end: int) -> Iterator[LogRecord]:
    """The records from ``end`` on, as many as the reader takes."""
    with open_log(path) as stream:
        yield from _records(iter_lines(stream, end), fmt, Tally(path)) or ()


def _count_all(lines, tally: Tally) -> None:
    """A PgBouncer log holds no statements: its lines are events we do not analyse."""
    for text in lines:
        tally.lines += 1
        tally.other_events += bool(text.strip())


def _skip_all(lines, tally: Tally) -> None:
    reason = "no known log format: pass --log-format, or --log-line-prefix for stderr logs"
    lineno = 0
    for lineno, text in enumerate(lines, 1):
        if text.strip():
            tally.skip(lineno, reason, text)
    tally.lines += lineno
