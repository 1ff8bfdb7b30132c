"""Logs that went through syslog (rsyslog, journald) or Heroku's logplex.

The carrier adds its own head (time, host, ``postgres[pid]:``) and splits each
message into numbered pieces ``[line-piece]``; the text after the piece number
is the server's own ``log_line_prefix`` and message. Pieces of one message
share the pid, but other backends' lines may come between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from advisor.workload.logs.prefix import detect_prefix, prefix_regex
from advisor.workload.logs.records import LogRecord, Tally

CARRIERS = {
    "syslog": re.compile(r"(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) \S+ [^\s\[]+\[(?P<pid>\d+)\]: \[(?P<piece>\d+-\d+)\] ?(?P<rest>.*)"),
    "logplex": re.compile(r"(?P<ts>\S+) (?:\S+ )?app\[\w+\.(?P<pid>\d+)\]:? \[\w+\] \[(?P<piece>\d+-\d+)\] ?(?P<rest>.*)"),
}


def sniff(lines: list[str]) -> tuple[str, str] | None:
    """(carrier, log_line_prefix) when most lines came through a known carrier."""
    for name, carrier in CARRIERS.items():
        rests = [m.group("rest") for line in lines if (m := carrier.match(line)) and m.group("piece").endswith("-1")]
        if rests and len(rests) * 4 >= len(lines):
            prefix = detect_prefix(rests)
            if prefix is not None:
                return name, prefix
    return None


def frame(lines: Iterable[str], carrier_name: str, prefix: str, tally: Tally) -> Iterator[LogRecord]:
    carrier, regex = CARRIERS[carrier_name], prefix_regex(prefix)
    open_records: dict[str, tuple[LogRecord, list[str]]] = {}  # pid -> record being assembled
    lineno = 0
    for lineno, text in enumerate(lines, 1):
        m = carrier.match(text)
        if m is None:
            if text.strip():
                tally.skip(lineno, f"not a {carrier_name} line", text)
            continue
        pid, rest = m.group("pid"), m.group("rest")
        head = regex.match(rest)
        if head is not None:
            previous = open_records.pop(pid, None)
            if previous is not None:
                yield _finish(*previous)
            fields = head.groupdict()
            fields["timestamp"] = fields.get("timestamp") or m.group("ts")
            fields["pid"] = fields.get("pid") or pid
            open_records[pid] = (LogRecord(lineno, **fields), [])
        elif pid in open_records:
            # syslog escapes the TAB that starts a continuation line as #011
            open_records[pid][1].append(rest[4:] if rest.startswith("#011") else rest)
        else:
            tally.skip(lineno, "continuation without its first line", text)
    for record, tail in open_records.values():
        yield _finish(record, tail)
    tally.lines += lineno


def _finish(record: LogRecord, tail: list[str]) -> LogRecord:
    if tail:
        record.message = "\n".join([record.message, *tail])
    return record
