"""jsonlog (PostgreSQL 15+), and the JSON envelopes of hosted services around it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from advisor.workload.logs.prefix import detect_prefix, prefix_regex
from advisor.workload.logs.records import LogRecord, Tally

# field -> the names it goes by: native jsonlog first, then csvlog-style names
# (CloudNativePG wraps a csvlog record in {"record": {...}}).
FIELDS = {
    "timestamp": ("timestamp", "log_time"),
    "user": ("user", "user_name"),
    "database": ("dbname", "database_name"),
    "pid": ("pid", "process_id"),
    "session": ("session_id",),
    "vxid": ("vxid", "virtual_transaction_id"),
    "severity": ("error_severity",),
    "message": ("message",),
    "detail": ("detail",),
    "application": ("application_name",),
    "query_id": ("query_id",),
    "statement": ("statement", "query"),
    "sqlstate": ("state_code", "sql_state_code"),
}


def frame(lines: Iterable[str], tally: Tally) -> Iterator[LogRecord]:
    payload = _TextPayload()
    lineno = 0
    for lineno, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            tally.skip(lineno, "not a JSON object", text)
            continue
        record = payload.record(obj, lineno) if isinstance(obj, dict) and "textPayload" in obj else _record(obj, lineno)
        if record is None:
            tally.other_events += 1  # valid JSON, but not a PostgreSQL message (operator logs)
        else:
            yield record
    tally.lines += lineno


def _record(obj: object, line: int) -> LogRecord | None:
    if not isinstance(obj, dict):
        return None
    fields = obj["record"] if isinstance(obj.get("record"), dict) else obj
    values = {field: _first(fields, names) for field, names in FIELDS.items()}
    severity, message = values.pop("severity"), values.pop("message")
    if severity is None or message is None:
        return None
    return LogRecord(line, severity, message, **values)


class _TextPayload:
    """Google Cloud Logging wraps each stderr line in {"textPayload": …, "timestamp": …}."""

    def __init__(self) -> None:
        self.regex: re.Pattern[str] | None = None  # from the first payload's prefix

    def record(self, obj: dict, line: int) -> LogRecord | None:
        text = str(obj["textPayload"])
        if self.regex is None:
            prefix = detect_prefix([text])
            if prefix is None:
                return None
            self.regex = prefix_regex(prefix)
        m = self.regex.match(text)
        if m is None:
            return None
        fields = m.groupdict()
        fields["timestamp"] = fields.get("timestamp") or obj.get("timestamp")
        return LogRecord(line, **fields)


def _first(obj: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = obj.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def is_unit_start(text: str) -> bool:
    return text.startswith("{") and '"LOG"' in text
