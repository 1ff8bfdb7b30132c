"""What a new index costs the workload's writes, in the planner's cost units.

PostgreSQL's planner prices an INSERT, UPDATE or DELETE without the work of keeping
indexes up to date, so an advisor that only compares plan costs would add indexes for
free. Here every index entry written is charged as one page dirtied (``seq_page_cost``)
plus the comparisons that find its place (``cpu_operator_cost`` per level of a binary
search over the table's rows) and the entry itself (``cpu_index_tuple_cost``):

- each row an INSERT (or MERGE … INSERT) writes adds an entry to every index;
- an UPDATE that is already not HOT (it sets a column some index of the table covers)
  adds an entry to every index, the new one too;
- an UPDATE that is HOT today stays HOT unless the new index covers a column it sets;
  then the update writes an entry to every index of the table, the old ones too, and
  the whole of that is charged to the new index — and said, since HOT updates are lost;
- a DELETE leaves its entries to VACUUM: not charged.

Rows are the planner's estimate for the statement (its ModifyTable's input) times the
statement's weight in the workload, as read costs are weighted.

A log of slow statements rarely holds the quick INSERTs and UPDATEs that keep a table
busy. For a table the workload reads but never writes, the table's own counters stand in
(``counted_writes``): the rows changed since its last ANALYZE over the time since give a
rate, of which the share of its changes that are inserts and non-HOT updates write an
entry to every index; that rate times the time the workload spans is charged like the
rows of an INSERT. The counters cannot tell which columns HOT updates set, so a lost HOT
update is only mentioned. Without a time span (statements from a file, or queries
weighted by time rather than calls) nothing is charged, and a note says so.

Upkeep works the other way too: the planner prices an index-only scan with a heap visit
for every page the visibility map does not mark all-visible, so on a table VACUUM has not
caught up with, covering indexes look worth less than they will be. ``visibility_notes``
says so for the tables the advice touches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from advisor.db.catalog import Catalog, Table
from advisor.indexes.candidates import CandidateSet
from advisor.indexes.model import AdvisedQuery, IndexCandidate
from advisor.words import plural

MIN_WINDOW_S = 60.0  # a write rate measured over less than a minute says little
VISIBLE_ENOUGH = 0.9  # below this share of all-visible pages, index-only scans are priced noticeably higher
MIN_PAGES = 1000  # 8 MB: a smaller heap is cheap to visit, whatever the visibility map says

_DEFAULTS = {"seq_page_cost": 1.0, "cpu_operator_cost": 0.0025, "cpu_index_tuple_cost": 0.005}


@dataclass(frozen=True, slots=True)
class Write:
    """One data-changing statement of the workload on one table."""

    fingerprint: str  # "" for rows from a table's counters
    table: str  # "schema.name"
    kind: str  # "insert", "update", "delete", "merge"; "counted" for rows from a table's counters
    rows: float  # rows written per execution (planner estimate) × the statement's weight
    assigned: frozenset[str]  # columns an UPDATE sets


class WriteLoad:
    """The workload's writes, and what each candidate index would add to them."""

    def __init__(self, writes: Iterable[Write], catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_table: dict[str, list[Write]] = {}
        for w in writes:
            self.by_table.setdefault(w.table, []).append(w)

    def cost(self, candidate: IndexCandidate) -> float:
        """The maintenance the index adds to the workload's writes (0 for a table it does not write)."""
        writes = self.by_table.get(candidate.table)
        table = self.catalog.tables.get(candidate.table)
        if not writes or table is None:
            return 0.0
        return sum(_entries(w, candidate, table) for w in writes) * _entry_cost(table, self.catalog.settings)

    def ends_hot(self, candidate: IndexCandidate) -> list[Write]:
        """The updates that are HOT today and would not be with ``candidate``."""
        table = self.catalog.tables.get(candidate.table)
        if table is None:
            return []
        return [w for w in self.by_table.get(candidate.table, ()) if _ends_hot(w, candidate, table)]

    def notes(self, chosen: Iterable[IndexCandidate]) -> list[str]:
        """What the recommendations do to writes, in words."""
        notes = []
        for c in chosen:
            lost = self.ends_hot(c)
            table = self.catalog.tables.get(c.table)
            if lost and table is not None:
                columns = ", ".join(sorted(set().union(*(w.assigned & _columns(c, table) for w in lost))))
                notes.append(f"{c.name}: covers {columns}, which {plural(len(lost), 'UPDATE statement')} of the workload set, "
                             "so those updates can no longer be HOT; its write cost includes every index entry they will write")
            if table is not None:
                notes += self._counter_notes(c, table)
        return notes

    def _counter_notes(self, c: IndexCandidate, table: Table) -> list[str]:
        rate = entry_rate(table)
        counted = [w for w in self.by_table.get(c.table, ()) if w.kind == "counted"]
        if counted:
            notes = [f"{c.name}: {c.table}'s writes are not in the workload; its counters show {rate:,.1f} rows a second "
                     f"that write index entries since its last ANALYZE, about {counted[0].rows:,.0f} over the time the "
                     "workload spans, charged in its write cost"]
            if table.n_tup_hot_upd:
                notes.append(f"{c.name}: {c.table} has had {table.n_tup_hot_upd:,} HOT updates; the counters do not say "
                             "which columns they set, and any that sets a column this index covers will no longer be HOT")
            return notes
        if rate > 0 and c.table not in self.by_table:
            return [f"{c.name}: {c.table}'s counters show {rate:,.1f} rows a second that write index entries, which the "
                    "workload does not hold; with no time span to scale them by (statements from a file, --weight time, "
                    "or calls counted by pg_stat_statements) they are not counted in its write cost"]
        return []


def visibility_notes(chosen: Iterable[IndexCandidate], catalog: Catalog) -> list[str]:
    """A note per table of the advice whose visibility map is far from complete (see the module's docstring)."""
    names: dict[str, list[str]] = {}
    for c in chosen:
        names.setdefault(c.table, []).append(c.name)
    notes = []
    for qualified, indexes in names.items():
        table = catalog.tables.get(qualified)
        if table is not None and table.pages >= MIN_PAGES and table.all_visible < VISIBLE_ENOUGH:
            notes.append(f"{qualified}: only {table.all_visible:.0%} of its pages are all-visible, so the planner prices "
                         f"index-only scans with a heap visit for the rest and {', '.join(indexes)} may save more than "
                         f"estimated; run VACUUM {qualified} and advise again for the full picture")
    return notes


def counted_writes(queries: Iterable[AdvisedQuery], found: CandidateSet, catalog: Catalog,
                   workload_seconds: float | None) -> list[Write]:
    """For each table the workload reads and never writes, the writes its counters show over
    ``workload_seconds`` (see the module's docstring); none without a span."""
    if not workload_seconds:
        return []
    read: set[str] = set()
    written: set[str] = set()
    for q in queries:
        for table, use in found.uses.get(q.fingerprint, {}).items():
            (written if use.write else read).add(table)
    writes = []
    for name in sorted(read - written):
        known = catalog.tables.get(name)
        rate = entry_rate(known) if known is not None else 0.0
        if rate > 0:
            writes.append(Write("", name, "counted", rate * workload_seconds, frozenset()))
    return writes


def entry_rate(table: Table) -> float:
    """Rows a second that write an entry to every index, by the table's counters: the rows
    changed since its last ANALYZE over the time since, times the share of all its changes
    that are inserts and non-HOT updates (deletes and HOT updates write no entry)."""
    if table.seconds_since_analyze is None or table.n_mod_since_analyze <= 0:
        return 0.0
    changes = table.n_tup_ins + table.n_tup_upd + table.n_tup_del
    entries = table.n_tup_ins + table.n_tup_upd - table.n_tup_hot_upd
    share = entries / changes if changes > 0 else 1.0
    return table.n_mod_since_analyze / max(table.seconds_since_analyze, MIN_WINDOW_S) * share


def workload_writes(queries: Iterable[AdvisedQuery], found: CandidateSet,
                    rows_changed: Callable[[AdvisedQuery], float]) -> list[Write]:
    """Every (statement, table it writes) of the workload, with its weighted rows."""
    writes = []
    for q in queries:
        for table, use in found.uses.get(q.fingerprint, {}).items():
            if use.write:
                writes.append(Write(q.fingerprint, table, use.write, q.weight * rows_changed(q), frozenset(use.assigned)))
    return writes


def _entries(w: Write, c: IndexCandidate, table: Table) -> float:
    """The entries of ``c`` (and, when it ends HOT, of every index of the table) that ``w`` writes."""
    if w.kind == "delete":
        return 0.0
    if not w.assigned or not _hot(w, table):  # an insert, or an update that already writes every index
        return w.rows
    return w.rows * (1 + len(table.indexes)) if _ends_hot(w, c, table) else 0.0


def _ends_hot(w: Write, c: IndexCandidate, table: Table) -> bool:
    """An UPDATE that is HOT today and sets a column ``c`` would cover."""
    return bool(w.assigned) and _hot(w, table) and bool(w.assigned & _columns(c, table))


def _hot(w: Write, table: Table) -> bool:
    """An UPDATE that can be HOT today: it sets no column an existing index covers."""
    covered: set[str] = set()
    for index in table.indexes:
        covered |= _index_columns(index.columns, index.include, index.predicate, table)
    return not (w.assigned & covered)


def _columns(c: IndexCandidate, table: Table) -> frozenset[str]:
    return _index_columns(c.columns, c.include, c.where, table)


def _index_columns(keys, include, predicate, table: Table) -> frozenset[str]:
    """The table columns an index reads: keys (columns inside expressions too), INCLUDE, predicate."""
    words = re.findall(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)', " ".join([*keys, *include, predicate or ""]))
    names = {quoted.replace('""', '"') or bare for quoted, bare in words}
    return frozenset(names & set(table.columns))


def _entry_cost(table: Table, settings: dict[str, str]) -> float:
    def setting(name: str) -> float:
        try:
            return float(settings.get(name, _DEFAULTS[name]))
        except ValueError:
            return _DEFAULTS[name]

    levels = math.log2(max(table.rows, 2.0))
    return setting("seq_page_cost") + setting("cpu_index_tuple_cost") + setting("cpu_operator_cost") * levels
