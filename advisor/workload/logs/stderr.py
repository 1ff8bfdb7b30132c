"""The stderr format: a ``log_line_prefix``, a severity, and TAB-indented continuation lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from operator import itemgetter

from advisor.workload.logs.prefix import begins_visibly, prefix_regex
from advisor.workload.logs.records import FIELDS, LogRecord, Tally


def frame(lines: Iterable[str], prefix: str, tally: Tally) -> Iterator[LogRecord]:
    """Group lines into records; a line that is neither a head nor a continuation is skipped."""
    regex = prefix_regex(prefix)
    match = regex.match
    # A record's fields taken from the match by position (group 0 stands for a field the prefix
    # lacks: None): keyword arguments cost as much as the match itself.
    fields = itemgetter(*(regex.groupindex.get(name, 0) for name in FIELDS))
    none = (None,)
    record: LogRecord | None = None
    tail: list[str] = []  # continuation lines, joined once: a huge statement stays linear
    # A TAB-indented line continues the record, without a match (a third of the lines of logs with
    # plans or multi-line statements), unless the prefix itself may begin with whitespace.
    tab_continues = begins_visibly(prefix)
    lineno = 0
    for lineno, text in enumerate(lines, 1):
        if tab_continues and text[:1] == "\t" and record is not None:
            tail.append(text[1:])
            continue
        m = match(text)
        if m is not None:
            if record is not None:
                yield _finish(record, tail)
            record = LogRecord(lineno, *fields(none + m.groups()))
        elif text[:1] in ("\t", " ") and record is not None:
            # The server indents continuation lines with a TAB; some shippers turn it into spaces.
            tail.append(text[1:] if text[0] == "\t" else text)
        elif text.strip():
            tally.skip(lineno, "does not match the log_line_prefix", text)
    if record is not None:
        yield _finish(record, tail)
    tally.lines += lineno


def _finish(record: LogRecord, tail: list[str]) -> LogRecord:
    if tail:
        record.message = "\n".join([record.message, *tail])
        tail.clear()
    return record


def unit_start(regex: re.Pattern[str]):
    """A predicate for lines where a parallel chunk may begin (see reader.split_points)."""

    def is_unit_start(text: str) -> bool:
        m = regex.match(text)
        return m is not None and m.group("severity") == "LOG" and starts_execution(m.group("message"))

    return is_unit_start


_STARTS = re.compile(r"(?:duration: [\d.]+ ms  )?(?:statement|execute [^:]*):")


def starts_execution(message: str) -> bool:
    """True for messages that open an execution (not plans, parse/bind or bare durations)."""
    return _STARTS.match(message) is not None
