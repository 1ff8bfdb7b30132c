"""The server events over time: temp files and bytes, lock waits, errors and sessions per minute of
the log's own clock, for the nightly report's charts (issue #13).

Buckets are keyed by their start as the log wrote it (``YYYY-MM-DDTHH:MM``, the log's time zone;
epoch ``%n`` timestamps read as UTC), so keys sort as text and parts merge by adding buckets of
the same key: parts parsed apart add up to the single pass. Memory is bounded: past
``BUCKETS_KEPT`` minutes the buckets become hours, and past ``BUCKETS_KEPT`` hours (a month) the
oldest hours are dropped; what is dropped, and events whose timestamp cannot be read (syslog's
yearless dates), are added to ``outside`` so that the buckets and ``outside`` add up to the totals.
Both rules depend only on the set of keys seen, which is why merging in any grouping gives the
single pass's buckets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

BUCKETS_KEPT = 24 * 31  # minutes, then hours (a month of them); older hours are dropped into ``outside``
MINUTE_SPAN = 120  # a log spanning fewer minutes than this is charted per minute, else per hour

_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d)")
_EPOCH = re.compile(r"\d{9,}(?:\.\d+)?$")


@dataclass(slots=True)
class Bucket:
    temp_files: int = 0
    temp_bytes: int = 0
    lock_waits: int = 0
    errors: int = 0
    connections: int = 0  # `connection authorized` lines (the advisor's own sessions left out)
    disconnections: int = 0

    def add(self, other: Bucket) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class Timeline:
    buckets: dict[str, Bucket] = field(default_factory=dict)  # start → counts; read ``series()``
    hourly: bool = False  # keys are hours (``YYYY-MM-DDTHH:00``), the minutes having been too many
    outside: Bucket = field(default_factory=Bucket)  # events in no bucket: unreadable timestamp, or dropped

    def __bool__(self) -> bool:
        return bool(self.buckets) or self.outside != Bucket()

    def bucket(self, timestamp: str | None) -> Bucket:
        """The bucket of an event logged at ``timestamp`` (as logged); add the event's numbers to it."""
        key = minute_of(timestamp)
        if key is None:
            return self.outside
        if self.hourly:
            key = _hour(key)
        entry = self.buckets.get(key)
        if entry is None:
            self.buckets[key] = Bucket()
            self._bound()
            if self.hourly:  # the bucket may have become its hour's, or been dropped as the oldest
                key = _hour(key)
            entry = self.buckets.get(key, self.outside)
        return entry

    def merge(self, later: Timeline) -> Timeline:
        """Add a later part's buckets; returns self."""
        if later.hourly and not self.hourly:
            self._to_hours()
        for key, b in later.buckets.items():
            key = _hour(key) if self.hourly else key
            self.buckets.setdefault(key, Bucket()).add(b)
        self.outside.add(later.outside)
        self._bound()
        return self

    def series(self) -> tuple[str, list[tuple[str, Bucket]]]:
        """("minute" or "hour", the buckets oldest first): per minute when the buckets span less
        than ``MINUTE_SPAN`` minutes, else per hour. The minutes or hours without events between
        are empty buckets (unless more than ``BUCKETS_KEPT`` of them), so columns are even in time."""
        keys = sorted(self.buckets)
        if not keys:
            return "minute", []
        unit = "minute"
        if self.hourly or _minutes(keys[-1]) - _minutes(keys[0]) >= MINUTE_SPAN:
            unit = "hour"
        rows: dict[str, Bucket] = {}
        for key in keys:
            rows.setdefault(_hour(key) if unit == "hour" else key, Bucket()).add(self.buckets[key])
        step = 60 if unit == "hour" else 1
        first, last = _minutes(min(rows)), _minutes(max(rows))
        if (last - first) / step < BUCKETS_KEPT:
            start = datetime.strptime(min(rows), "%Y-%m-%dT%H:%M")
            every = (start + timedelta(minutes=i * step) for i in range(round((last - first) / step) + 1))
            rows = {k: rows.get(k) or Bucket() for k in (t.strftime("%Y-%m-%dT%H:%M") for t in every)}
        return unit, list(rows.items())

    def _bound(self) -> None:
        if not self.hourly and len(self.buckets) > BUCKETS_KEPT:
            self._to_hours()
        if self.hourly and len(self.buckets) > BUCKETS_KEPT:
            for key in sorted(self.buckets)[: len(self.buckets) - BUCKETS_KEPT]:
                self.outside.add(self.buckets.pop(key))

    def _to_hours(self) -> None:
        hours: dict[str, Bucket] = {}
        for key, b in self.buckets.items():
            hours.setdefault(_hour(key), Bucket()).add(b)
        self.buckets, self.hourly = hours, True


def minute_of(timestamp: str | None) -> str | None:
    """The minute a logged timestamp falls in, ``YYYY-MM-DDTHH:MM``; None when it names no date."""
    if not timestamp:
        return None
    if m := _DATE.match(timestamp):
        return "{}-{}-{}T{}:{}".format(*m.groups())
    if _EPOCH.match(timestamp):
        return datetime.fromtimestamp(float(timestamp), UTC).strftime("%Y-%m-%dT%H:%M")
    return None


def _hour(key: str) -> str:
    return key[:14] + "00"


def _minutes(key: str) -> float:
    # naive times on a fixed clock (UTC): a DST change in the machine's zone must not shift the count
    return datetime.strptime(key, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp() / 60
