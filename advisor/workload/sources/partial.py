"""The contract every workload source keeps: it reads into a ``Partial``, and partials merge.

A partial is what one source, or one part of one source, read: per-fingerprint statistics,
session patterns, a tally per log file of what was read and skipped, and the logs' server
events (``workload/events.py``). Merging two
partials in the order their inputs came gives what one pass over both would have given
(sums, merged sketches, ordered sets, skipped lines numbered in the whole file), so log
parts parsed in parallel, on other processes or other machines, combine to the single-pass
statistics: a tree reduction works as long as each merge keeps left before right. A part of a
log reads its neighbours' records around its cuts, so a statement whose bare ``duration:``
line, ``execute fetch from``, auto_explain plan or ERROR lands in the next part keeps its time,
plan and fate, each record counted once (messages.py's boundary rule; tests/test_part_boundaries.py
cuts a real server's log everywhere). What a part boundary still cuts: a unit of work (an N+1
run, a cache replay) is seen as two. ``collect`` turns the merged partial into the
``Workload`` every later stage reads; ``load_workload`` reads the sources and collects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from advisor.errors import AdvisorError
from advisor.progress import Progress, Step
from advisor.thresholds import DEFAULT, Thresholds
from advisor.workload.events import LogEvents
from advisor.workload.logs.formats import LogFormat
from advisor.workload.logs.records import SKIPPED_KEPT, Tally
from advisor.workload.model import Workload
from advisor.workload.own_traffic import left_out_note
from advisor.workload.sessions import SessionPatterns
from advisor.workload.stats import WorkloadStats


@dataclass(frozen=True, slots=True)
class Reading:
    """How sources read, the same for all of one command's sources."""

    config: Thresholds = DEFAULT  # the session rules' thresholds (N+1, paging, cache)
    sessions: bool = True  # also look for N+1 runs and cache repeats (parse shows neither)
    progress: Progress | None = None  # bytes read of all the logs, for a progress line

    def patterns(self) -> SessionPatterns:
        return SessionPatterns(self.config)


@dataclass(slots=True)
class Partial:
    """What sources read so far: mergeable in input order (see the module's docstring)."""

    stats: WorkloadStats
    patterns: SessionPatterns
    tallies: list[Tally] = field(default_factory=list)  # one per log file read, in order
    formats: dict[str, LogFormat] = field(default_factory=dict)  # log file → its format
    other_sources: list[str] = field(default_factory=list)  # sources that are not log files (a database, a SQL file), named
    notes: list[str] = field(default_factory=list)
    events: LogEvents = field(default_factory=LogEvents)  # the logs' server events (temp files, lock waits, …)

    @classmethod
    def empty(cls, reading: Reading = Reading()) -> Partial:
        return cls(WorkloadStats(), reading.patterns())

    def merge(self, later: Partial) -> Partial:
        """Add what ``later`` read (its inputs come after this one's); returns self."""
        self.stats.merge(later.stats)
        self.patterns.merge(later.patterns)
        for tally in later.tallies:
            if tally.continues and self.tallies and self.tallies[-1].file == tally.file:
                self.tallies[-1].extend(tally)
            else:
                self.tallies.append(tally)
        self.formats.update(later.formats)
        self.other_sources.extend(later.other_sources)
        self.notes.extend(later.notes)
        self.events.merge(later.events)
        return self


class Source(Protocol):
    """A place a workload is read from (logs, pg_stat_statements, a file of SQL)."""

    @property
    def label(self) -> str:
        """What a progress line says while it is read."""
        ...

    def read(self, reading: Reading) -> Partial: ...


Failed = Callable[[Source, AdvisorError], None]


def load_workload(sources: Iterable[Source], reading: Reading = Reading(), *, step: Step | None = None,
                  failed: Failed | None = None) -> Workload:
    """Read every source in order, merge, collect. A source that fails raises, unless ``failed`` is
    given: then it is told (the nightly job notes it and goes on with the other sources)."""
    whole = Partial.empty(reading)
    for source in sources:
        if step:
            step(source.label)
        try:
            whole.merge(source.read(reading))
        except AdvisorError as error:
            if failed is None:
                raise
            failed(source, error)
    return collect(whole)


_NOTES = {
    "unknown": "format not recognised; every line was skipped (pass --log-format or --log-line-prefix)",
    "pgbouncer": "a PgBouncer log: it holds no statements; its lines are counted as other events",
}


def collect(partial: Partial) -> Workload:
    """The Workload of everything the partial holds: queries by total time, what was read and skipped."""
    tallies = partial.tallies
    skipped = tuple(s for t in tallies for s in t.skipped)[:SKIPPED_KEPT]
    notes = tuple(f"{path}: {_NOTES[fmt.name]}" for path, fmt in partial.formats.items() if fmt.name in _NOTES)
    own = sum(t.own for t in tallies)
    if own:
        notes += (left_out_note(own),)
    return Workload(
        queries=partial.stats.queries_by_total_time(),
        sources=(*partial.formats, *partial.other_sources),
        lines=sum(t.lines for t in tallies),
        statements=partial.stats.statements,
        other_events=sum(t.other_events for t in tallies),
        skipped_count=sum(t.skipped_count for t in tallies),
        skipped=skipped,
        plans=sum(t.plans for t in tallies),
        advisor_statements=own,
        notes=(*notes, *partial.notes),
        repeats=partial.patterns.repeat_patterns(),
        cache=partial.patterns.cache_simulations(),
        events=partial.events if tallies else None,  # only logs have server events
    )
