"""What the order of statements tells: N+1 runs and cacheable repeats, found while the log streams by.

Units of work. Applications behind a pool send many requests over one
backend, so a session is not a request: a session's stream is cut into
units at transaction boundaries (BEGIN/COMMIT, or a change of virtual
transaction id where the log has one), at pauses longer than
``n1_max_gap_ms``, and after ``n1_max_unit_ms`` (a busy autocommit backend
never pauses, and no request lasts that long). Within a unit, a fingerprint executed at least
``n1_min_repeats`` times with differing parameters is an N+1 run; its parent
is the statement the unit ran just before the first child. The same
statement with the same parameters is not an N+1 but a cache candidate.

Cache replay. Every read is replayed through LRU caches with a TTL, for a
few TTLs and sizes, in log order: the hit counts are what such a cache would
have served on this very workload (invalidation by writes is not modelled,
so they are an upper bound).

Memory is bounded: open units are capped per session and in number, cache
simulations by their size. Parts of a log parsed apart are merged by adding;
a unit cut by a part boundary is counted as two.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

from advisor.checks.config import DEFAULT, Thresholds
from advisor.workload.fingerprint import Fingerprint
from advisor.workload.model import CacheSimulation, Execution, RepeatPattern

CACHE_CONFIGS = ((1.0, 1_000), (10.0, 1_000), (60.0, 1_000), (60.0, 10_000), (300.0, 10_000))  # (TTL s, entries)
MAX_OPEN_UNITS = 10_000
MAX_RUNS_PER_UNIT = 1_000  # distinct fingerprints tracked in one unit of work
KEYS_KEPT = 64  # distinct parameter sets remembered per run: enough to tell "differing" from "same"
SESSIONS_KEPT = 5

_TS = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?")
_BEGIN = frozenset({"begin", "start transaction", "begin work", "begin transaction"})
_END = frozenset({"commit", "rollback", "end", "commit work", "rollback work", "abort"})


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
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=timezone.utc).timestamp()


class _Run:
    """One fingerprint's executions within one unit of work."""

    __slots__ = ("count", "keys", "ms", "parent")

    def __init__(self, parent: str | None) -> None:
        self.count = 0
        self.keys: set[int] = set()
        self.ms = 0.0
        self.parent = parent


class _Unit:
    __slots__ = ("session", "first_ms", "last_ms", "vxid", "runs", "previous", "application", "started")

    def __init__(self, session: str, e: Execution, now: float | None) -> None:
        self.session = session
        self.first_ms = self.last_ms = now
        self.vxid = e.vxid
        self.runs: dict[str, _Run] = {}
        self.previous: str | None = None
        self.application = e.application
        self.started = e.timestamp


@dataclass(slots=True)
class _Pattern:
    occurrences: int = 0
    statements: int = 0
    most: int = 0
    child_ms: float = 0.0
    sessions: list[str] = field(default_factory=list)
    applications: dict[str, None] = field(default_factory=dict)
    first_seen: str | None = None


class SessionPatterns:
    """Streaming detector of N+1 runs and cache replays; mergeable across parts."""

    def __init__(self, config: Thresholds = DEFAULT) -> None:
        self.config = config
        self.units: dict[str, _Unit] = {}
        self.swept_ms = 0.0
        self.patterns: dict[tuple[str, str, str | None], _Pattern] = {}
        self.fingerprints: dict[str, Fingerprint] = {}
        self.caches = [OrderedDict() for _ in CACHE_CONFIGS]
        self.cache_hits: dict[str, list[int]] = {}  # fingerprint -> hits per config, then lookups, then ms
        self.cache_ms: dict[str, float] = {}

    def add(self, e: Execution, fp: Fingerprint) -> None:
        self.fingerprints.setdefault(fp.id, fp)
        now = timestamp_ms(e.timestamp)
        key = hash((e.sql, e.parameters))
        self._add_to_unit(e, fp, now, key)
        if fp.statement_type == "select" and now is not None:
            self._replay(fp.id, key, now, e.duration_ms or 0.0)

    # --- units of work ----------------------------------------------------

    def _add_to_unit(self, e: Execution, fp: Fingerprint, now: float | None, key: int) -> None:
        session = e.session or ""
        unit = self.units.get(session)
        if unit is not None and self._ends_before(unit, e, fp, now):
            self._close(self.units.pop(session))
            unit = None
        if unit is None:
            unit = self.units[session] = _Unit(session, e, now)
            if len(self.units) > MAX_OPEN_UNITS:
                self._close(self.units.pop(next(iter(self.units))))
        if now is not None and now - self.swept_ms > self.config.n1_max_unit_ms:
            self._sweep(now)
        run = unit.runs.get(fp.id)
        if run is None and len(unit.runs) < MAX_RUNS_PER_UNIT:
            run = unit.runs[fp.id] = _Run(unit.previous)
        if run is not None:
            run.count += 1
            run.ms += e.duration_ms or 0.0
            if len(run.keys) < KEYS_KEPT:
                run.keys.add(key)
        unit.previous = fp.id
        unit.last_ms = now if now is not None else unit.last_ms
        if fp.normalized in _END:
            self._close(self.units.pop(session))

    def _sweep(self, now: float) -> None:
        """Close the units of sessions that went quiet: a disconnected session never runs again."""
        self.swept_ms = now
        for session, unit in list(self.units.items()):
            if unit.last_ms is not None and now - unit.last_ms > self.config.n1_max_unit_ms:
                self._close(self.units.pop(session))

    def _ends_before(self, unit: _Unit, e: Execution, fp: Fingerprint, now: float | None) -> bool:
        """Whether ``e`` starts a new unit of work in its session."""
        if fp.normalized in _BEGIN:
            return True
        if e.vxid and unit.vxid and e.vxid != unit.vxid and not e.vxid.endswith("/0"):
            return True
        if now is None or unit.last_ms is None:
            return False
        return now - unit.last_ms > self.config.n1_max_gap_ms or now - unit.first_ms > self.config.n1_max_unit_ms

    def _close(self, unit: _Unit) -> None:
        for child, run in unit.runs.items():
            kind = self._kind(child, run)
            if kind is None:
                continue
            p = self.patterns.get((kind, child, run.parent))
            if p is None:
                p = self.patterns[(kind, child, run.parent)] = _Pattern(first_seen=unit.started)
            p.occurrences += 1
            p.statements += run.count
            p.most = max(p.most, run.count)
            p.child_ms += run.ms
            if unit.session not in p.sessions and len(p.sessions) < SESSIONS_KEPT:
                p.sessions.append(unit.session)
            if unit.application and len(p.applications) < SESSIONS_KEPT:
                p.applications[unit.application] = None

    def _kind(self, child: str, run: _Run) -> str | None:
        if len(run.keys) < 2:  # the same parameters every time: a cache candidate, not an N+1
            return None
        kind = self.fingerprints[child].statement_type
        if kind == "select" and run.count >= self.config.n1_min_repeats:
            return "n_plus_one"
        if kind in ("insert", "update", "delete") and run.count >= self.config.n1_writes_min_repeats:
            return "n_plus_one_writes"
        return None

    # --- cache replay -------------------------------------------------------

    def _replay(self, fp: str, key: int, now: float, ms: float) -> None:
        counts = self.cache_hits.get(fp)
        if counts is None:
            counts = self.cache_hits[fp] = [0] * (len(CACHE_CONFIGS) + 1)
        counts[-1] += 1
        for i, ((ttl_s, size), cache) in enumerate(zip(CACHE_CONFIGS, self.caches)):
            expires = cache.get(key)
            if expires is not None and expires > now:
                counts[i] += 1
                cache.move_to_end(key)
                if i == len(CACHE_CONFIGS) - 1:
                    self.cache_ms[fp] = self.cache_ms.get(fp, 0.0) + ms
                continue
            cache[key] = now + ttl_s * 1000
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
            mine = self.patterns.setdefault(key, _Pattern(first_seen=theirs.first_seen))
            mine.occurrences += theirs.occurrences
            mine.statements += theirs.statements
            mine.most = max(mine.most, theirs.most)
            mine.child_ms += theirs.child_ms
            for session in theirs.sessions:
                if session not in mine.sessions and len(mine.sessions) < SESSIONS_KEPT:
                    mine.sessions.append(session)
            for app in theirs.applications:
                if len(mine.applications) < SESSIONS_KEPT:
                    mine.applications[app] = None
        for fp, counts in other.cache_hits.items():
            mine = self.cache_hits.setdefault(fp, [0] * len(counts))
            self.cache_hits[fp] = [a + b for a, b in zip(mine, counts)]
        for fp, ms in other.cache_ms.items():
            self.cache_ms[fp] = self.cache_ms.get(fp, 0.0) + ms

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
                    child_ms=p.child_ms,
                    sessions=tuple(p.sessions),
                    applications=tuple(p.applications),
                    first_seen=p.first_seen,
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
                    served_ms=self.cache_ms.get(fp, 0.0),
                )
            )
        found.sort(key=lambda c: (-max(h for _, _, h in c.hits), c.fingerprint))
        return tuple(found)
