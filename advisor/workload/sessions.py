"""What the order of statements tells: N+1 runs, paging loops and cacheable repeats, found while the log streams by.

Units of work. Applications behind a pool send many requests over one
backend, so a session is not a request: a session's stream is cut into
units at transaction boundaries. A transaction (BEGIN … COMMIT/ROLLBACK, or
statements sharing one virtual transaction id where the log has ``%v``) is
one unit whatever its length and its pauses. An autocommit stream is cut at
pauses longer than ``n1_max_gap_ms`` (from the end of one statement to the
start of the next) and after ``n1_max_unit_ms`` (a busy autocommit backend
never pauses, and no request lasts that long); a run the cap cuts keeps its
parent in the next unit, so it stays one finding. Within a unit, a
fingerprint executed at least ``n1_min_repeats`` times with differing
parameters is an N+1 run; its parent is the statement the unit ran just
before the first child. The same read with an OFFSET that grows at every
execution, at least ``paging_min_pages`` times, is a paging loop (ADV009),
not an N+1. The same statement with the same parameters is not an N+1 but a
cache candidate.

Cache replay. Every read is replayed through LRU caches with a TTL, for a
few TTLs and sizes, in log order: the hit counts are what such a cache would
have served on this very workload. A write seen in the log (INSERT, UPDATE,
DELETE, MERGE, TRUNCATE, COPY … FROM, a data-modifying WITH) to a table a
read depends on invalidates that read's cached entries, as an application
cache invalidated on writes would be; writes the log did not record (below
``log_min_duration_statement``) are not seen, so the counts stay upper
bounds (the cache check also reads the tables' write counters when it has a
catalog).

Memory is bounded: open units are capped per session and in number, cache
simulations by their size. A session quiet for ``n1_max_unit_ms`` is closed
even inside a transaction (so a BEGIN whose COMMIT was not logged cannot
hold its session's statements together for ever). Parts of a log parsed
apart are merged by adding; a unit cut by a part boundary is counted as
two, and each part replays its own cache.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from advisor.thresholds import DEFAULT, Thresholds
from advisor.workload.fingerprint import Fingerprint
from advisor.workload.model import CacheSimulation, Execution, RepeatPattern
from advisor.workload.parameters import parse_parameters
from advisor.workload.tables import tables_of, written_tables

CACHE_CONFIGS = ((1.0, 1_000), (10.0, 1_000), (60.0, 1_000), (60.0, 10_000), (300.0, 10_000))  # (TTL s, entries)
MAX_OPEN_UNITS = 10_000
MAX_RUNS_PER_UNIT = 1_000  # distinct fingerprints tracked in one unit of work
KEYS_KEPT = 64  # distinct parameter sets remembered per run: enough to tell "differing" from "same"
SESSIONS_KEPT = 5

_TS = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?")
_BEGIN = frozenset({"begin", "start transaction", "begin work", "begin transaction"})
_END = frozenset({"commit", "rollback", "end", "commit work", "rollback work", "abort"})
# The OFFSET of a statement as sent: a number, or a parameter (psycopg sends `$2::INTEGER`).
_OFFSET = re.compile(r"\bOFFSET\s+\(?\s*(?:(\d+)|\$(\d+))", re.IGNORECASE)


def timestamp_ms(text: str | None) -> float | None:
    """Milliseconds since the epoch of a log timestamp; the zone is ignored (only gaps matter)."""
    if not text:
        return None
    if len(text) >= 23 and text[19] == "." and text[10] in " T" and text[20:23].isdigit():
        return _epoch(text[:10], text[11:19]) * 1000 + int(text[20:23])  # the usual %m: milliseconds
    m = _TS.match(text)
    if m is None:
        try:
            return float(text) * 1000  # %n: epoch seconds
        except ValueError:
            return None
    seconds = _epoch(m.group(1), m.group(2))
    return seconds * 1000 + (float(m.group(3)) * 1000 if m.group(3) else 0.0)


@lru_cache(maxsize=4096)
def _epoch(day: str, clock: str) -> float:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class _Pages:
    """The OFFSETs of a run while each went further than the one before."""

    first: int
    last: int
    total: int = 0  # their sum: the rows skipped
    count: int = 0

    def add(self, offset: int | None) -> bool:
        """Take the next offset; False when it does not go further (so the run is no paging loop)."""
        if offset is None or (self.count and offset <= self.last):
            return False
        self.last, self.total, self.count = offset, self.total + offset, self.count + 1
        return True


class _Run:
    """One fingerprint's executions within one unit of work."""

    __slots__ = ("count", "keys", "ms", "parent", "pages")

    def __init__(self, parent: str | None) -> None:
        self.count = 0
        self.keys: set[int] = set()
        self.ms = 0.0
        self.parent = parent
        self.pages: _Pages | None = None

    def page(self, offset: int | None) -> None:
        if self.count == 1:  # the first execution
            self.pages = _Pages(offset, offset) if offset is not None else None
        if self.pages is not None and not self.pages.add(offset):
            self.pages = None


class _Unit:
    __slots__ = ("session", "first_ms", "last_ms", "vxid", "transaction", "runs", "previous", "application",
                 "started", "parents")

    def __init__(self, session: str, e: Execution, now: float | None, transaction: bool,
                 parents: dict[str, str | None]) -> None:
        self.session = session
        self.first_ms = self.last_ms = now
        self.vxid = e.vxid
        self.transaction = transaction  # inside BEGIN … COMMIT, or seen to share a virtual transaction id
        self.runs: dict[str, _Run] = {}
        self.previous: str | None = None
        self.application = e.application
        self.started = e.timestamp
        self.parents = parents  # of the runs of the unit this one continues, when the cap cut it


@dataclass(slots=True)
class _Pattern:
    occurrences: int = 0
    statements: int = 0
    most: int = 0
    child_us: int = 0  # whole microseconds: partials merged in any order add up to the same total
    sessions: list[str] = field(default_factory=list)
    applications: dict[str, None] = field(default_factory=dict)
    first_seen: str | None = None
    deepest_offset: int | None = None
    skipped_rows: float = 0.0  # paging loops: rows the OFFSETs skipped, and all rows read (page size = the step)
    read_rows: float = 0.0

    def add(self, other: _Pattern) -> None:
        self.occurrences += other.occurrences
        self.statements += other.statements
        self.most = max(self.most, other.most)
        self.child_us += other.child_us
        for session in other.sessions:
            if session not in self.sessions and len(self.sessions) < SESSIONS_KEPT:
                self.sessions.append(session)
        for app in other.applications:
            if len(self.applications) < SESSIONS_KEPT:
                self.applications[app] = None
        if other.deepest_offset is not None:
            self.deepest_offset = max(self.deepest_offset or 0, other.deepest_offset)
        self.skipped_rows += other.skipped_rows
        self.read_rows += other.read_rows


class SessionPatterns:
    """Streaming detector of N+1 runs, paging loops and cache replays; mergeable across parts."""

    def __init__(self, config: Thresholds = DEFAULT) -> None:
        self.config = config
        self.units: dict[str, _Unit] = {}
        self.swept_ms = 0.0
        self.patterns: dict[tuple[str, str, str | None], _Pattern] = {}
        self.fingerprints: dict[str, Fingerprint] = {}
        # per cache configuration: key -> (expires at, writes seen to its tables)
        self.caches: list[OrderedDict[int, tuple[float, int]]] = [OrderedDict() for _ in CACHE_CONFIGS]
        self.cache_hits: dict[str, list[int]] = {}  # fingerprint -> hits per config, then lookups
        self.cache_us: dict[str, int] = {}  # whole microseconds, as _Pattern.child_us: exact in any merge order
        self.tables: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # fingerprint -> (read, written)
        self.writes: dict[str, int] = {}  # table -> writes seen so far

    def add(self, e: Execution, fp: Fingerprint) -> None:
        if fp.id not in self.fingerprints:
            self.fingerprints[fp.id] = fp
            self.tables[fp.id] = _tables(fp)
        now = timestamp_ms(e.timestamp)
        key = hash((e.sql, e.parameters))
        self._add_to_unit(e, fp, now, key)
        read, written = self.tables[fp.id]
        for table in written:
            self.writes[table] = self.writes.get(table, 0) + 1
        if fp.statement_type == "select" and not written and now is not None:
            self._replay(fp.id, key, now, e.duration_ms or 0.0, sum(self.writes.get(t, 0) for t in read))

    # --- units of work ----------------------------------------------------

    def _add_to_unit(self, e: Execution, fp: Fingerprint, now: float | None, key: int) -> None:
        if now is not None and now - self.swept_ms > self.config.n1_max_unit_ms:
            self._sweep(now)  # first: it may close this session's unit, gone quiet
        session = e.session or ""
        unit = self.units.get(session)
        parents: dict[str, str | None] = {}
        if unit is not None and (end := self._ends_before(unit, e, fp, now)):
            self._close(self.units.pop(session))
            if end == "cap":  # the same request, cut for memory's sake: a run the cut splits keeps its parent
                parents = {child: run.parent for child, run in unit.runs.items()}
            unit = None
        if unit is None:
            unit = self.units[session] = _Unit(session, e, now, fp.normalized in _BEGIN, parents)
            if len(self.units) > MAX_OPEN_UNITS:
                self._close(self.units.pop(next(iter(self.units))))
        run = unit.runs.get(fp.id)
        if run is None and len(unit.runs) < MAX_RUNS_PER_UNIT:
            run = unit.runs[fp.id] = _Run(unit.parents.get(fp.id, unit.previous))
        if run is not None:
            run.count += 1
            run.ms += e.duration_ms or 0.0
            if len(run.keys) < KEYS_KEPT:
                run.keys.add(key)
            if fp.statement_type == "select" and "OFFSET" in fp.normalized:
                run.page(_offset(e))
        unit.previous = fp.id
        unit.vxid = e.vxid or unit.vxid
        unit.last_ms = now if now is not None else unit.last_ms
        if fp.normalized in _END:
            self._close(self.units.pop(session))

    def _sweep(self, now: float) -> None:
        """Close the units of sessions that went quiet: a disconnected session never runs again."""
        self.swept_ms = now
        for session, unit in list(self.units.items()):
            if unit.last_ms is not None and now - unit.last_ms > self.config.n1_max_unit_ms:
                self._close(self.units.pop(session))

    def _ends_before(self, unit: _Unit, e: Execution, fp: Fingerprint, now: float | None) -> str | None:
        """Why ``e`` starts a new unit of work in its session ("boundary", or "cap" for an autocommit
        stream that ran too long), or None when it continues the unit."""
        if fp.normalized in _BEGIN:
            return "boundary"
        if _real_vxid(e.vxid) and _real_vxid(unit.vxid):
            if e.vxid == unit.vxid:  # the same transaction, however long it runs
                unit.transaction = True
                return None
            if unit.transaction:  # its transaction ended, though its COMMIT was not logged
                return "boundary"
        if unit.transaction or now is None or unit.last_ms is None or unit.first_ms is None:
            return None  # a transaction is one unit, whatever its length and pauses, until it ends
        started = now - (e.duration_ms or 0.0)  # log lines are written when statements end
        if started - unit.last_ms > self.config.n1_max_gap_ms:
            return "boundary"
        return "cap" if now - unit.first_ms > self.config.n1_max_unit_ms else None

    def _close(self, unit: _Unit) -> None:
        for child, run in unit.runs.items():
            kind = self._kind(child, run)
            if kind is None:
                continue
            p = self.patterns.get((kind, child, run.parent))
            if p is None:
                p = self.patterns[(kind, child, run.parent)] = _Pattern(first_seen=unit.started)
            p.add(_Pattern(occurrences=1, statements=run.count, most=run.count, child_us=round(run.ms * 1000),
                           sessions=[unit.session], applications=dict.fromkeys(filter(None, [unit.application]))))
            if kind == "pagination" and run.pages is not None:
                _add_pages(p, run.pages)

    def _kind(self, child: str, run: _Run) -> str | None:
        if len(run.keys) < 2:  # the same parameters every time: a cache candidate, not an N+1
            return None
        kind = self.fingerprints[child].statement_type
        if kind == "select" and run.pages and run.pages.count >= self.config.paging_min_pages:
            return "pagination"
        if kind == "select" and run.count >= self.config.n1_min_repeats:
            return "n_plus_one"
        if kind in ("insert", "update", "delete") and run.count >= self.config.n1_writes_min_repeats:
            return "n_plus_one_writes"
        return None

    # --- cache replay -------------------------------------------------------

    def _replay(self, fp: str, key: int, now: float, ms: float, writes: int) -> None:
        """``writes``: the writes seen so far to the tables the read depends on; a cached entry
        stored under a smaller number is stale (counts only grow, so equality means none since)."""
        counts = self.cache_hits.get(fp)
        if counts is None:
            counts = self.cache_hits[fp] = [0] * (len(CACHE_CONFIGS) + 1)
        counts[-1] += 1
        for i, ((ttl_s, size), cache) in enumerate(zip(CACHE_CONFIGS, self.caches)):
            entry = cache.get(key)
            if entry is not None and entry[0] > now and entry[1] == writes:
                counts[i] += 1
                cache.move_to_end(key)
                if i == len(CACHE_CONFIGS) - 1:
                    self.cache_us[fp] = self.cache_us.get(fp, 0) + round(ms * 1000)
                continue
            cache[key] = (now + ttl_s * 1000, writes)
            cache.move_to_end(key)
            if len(cache) > size:
                cache.popitem(last=False)

    # --- results ----------------------------------------------------------------

    def finish(self) -> None:
        for unit in self.units.values():
            self._close(unit)
        self.units.clear()

    def merge(self, other: SessionPatterns) -> None:
        other.finish()
        self.fingerprints.update(other.fingerprints)
        for key, theirs in other.patterns.items():
            self.patterns.setdefault(key, _Pattern(first_seen=theirs.first_seen)).add(theirs)
        for fp, counts in other.cache_hits.items():
            mine = self.cache_hits.setdefault(fp, [0] * len(counts))
            self.cache_hits[fp] = [a + b for a, b in zip(mine, counts)]
        for fp, us in other.cache_us.items():
            self.cache_us[fp] = self.cache_us.get(fp, 0) + us

    def repeat_patterns(self) -> tuple[RepeatPattern, ...]:
        self.finish()
        found = []
        for (kind, child, parent), p in self.patterns.items():
            child_fp = self.fingerprints[child]
            parent_fp = self.fingerprints.get(parent) if parent else None
            found.append(
                RepeatPattern(
                    kind=kind,
                    child_fingerprint=child,
                    child_normalized=child_fp.normalized,
                    parent_fingerprint=parent,
                    parent_normalized=parent_fp.normalized if parent_fp else None,
                    occurrences=p.occurrences,
                    statements=p.statements,
                    most_per_occurrence=p.most,
                    child_ms=p.child_us / 1000,
                    sessions=tuple(p.sessions),
                    applications=tuple(p.applications),
                    first_seen=p.first_seen,
                    deepest_offset=p.deepest_offset,
                    discarded_share=p.skipped_rows / p.read_rows if p.read_rows else None,
                )
            )
        found.sort(key=lambda r: (-r.statements, r.child_fingerprint))
        return tuple(found)

    def cache_simulations(self, min_hits: int = 1) -> tuple[CacheSimulation, ...]:
        found = []
        for fp, counts in self.cache_hits.items():
            if max(counts[:-1]) < min_hits:
                continue
            found.append(
                CacheSimulation(
                    fingerprint=fp,
                    normalized=self.fingerprints[fp].normalized,
                    lookups=counts[-1],
                    hits=tuple((ttl, size, hits) for (ttl, size), hits in zip(CACHE_CONFIGS, counts)),
                    served_ms=self.cache_us.get(fp, 0) / 1000,
                )
            )
        found.sort(key=lambda c: (-max(h for _, _, h in c.hits), c.fingerprint))
        return tuple(found)


def _real_vxid(vxid: str | None) -> bool:
    """A virtual transaction id that names a transaction ("3/0": the line was written outside one)."""
    return vxid is not None and vxid != "" and not vxid.endswith("/0")


def _tables(fp: Fingerprint) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tables a read depends on, tables a write changes), by bare lower-case name: a write to
    ``s.t`` invalidates reads of any ``t``, which errs towards fewer cache hits."""
    words = fp.normalized.split(None, 1)
    first = words[0].lower() if words else ""
    if fp.statement_type == "select":  # a data-modifying WITH is a write: never replayed as a read
        written = written_tables(fp.normalized) if first == "with" else ()
        return tuple(t.rsplit(".", 1)[-1].strip('"').lower() for t in tables_of(fp.normalized)), written
    if fp.statement_type in ("insert", "update", "delete", "merge") or first in ("truncate", "copy"):
        return (), written_tables(fp.normalized)
    return (), ()  # SET, BEGIN, VACUUM…: not parsed again


def _offset(e: Execution) -> int | None:
    """The OFFSET this execution asked for: a literal, or the logged value of its parameter."""
    m = None
    for m in _OFFSET.finditer(e.sql):  # noqa: B007 - m is read after the loop: the last match
        pass  # the last one: an outer query's OFFSET follows its subqueries'
    if m is None:
        return None
    if m[1] is not None:
        return int(m[1])
    try:
        value = parse_parameters(e.parameters or "")[int(m[2]) - 1]
        return int(value) if value is not None else None
    except (ValueError, IndexError):
        return None


def _add_pages(p: _Pattern, pages: _Pages) -> None:
    """Rows a loop skipped and read: each page reads its OFFSET plus a page (the step between offsets)."""
    page = (pages.last - pages.first) / max(pages.count - 1, 1)
    p.deepest_offset = max(p.deepest_offset or 0, pages.last)
    p.skipped_rows += pages.total
    p.read_rows += pages.total + page * pages.count
