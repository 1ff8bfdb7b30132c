"""Which indexes to build: a workload-level search under a size budget, judged by the planner.

The search follows Extend (Schlosser, Kossmann, Boissier, ICDE 2019; the best
of the algorithms compared by Kossmann et al., VLDB 2020): start with no
index and repeat the single best move, where a move either adds an index or
extends one already chosen by one more column, and the best move is the one
that lowers the weighted workload cost most per byte of index it adds. Every
move is costed by the planner itself, with hypothetical indexes, after all
earlier picks, so two indexes that help the same queries are not both taken.

Additions over Extend as published, each for a reason:

- Composite moves: the candidate generator's composite indexes (equality
  columns by selectivity, then a range or the sort columns) are moves too, so a
  good composite need not be grown one column at a time through intermediate
  steps that may not pay on their own.
- Wider moves: a chosen index can also grow by a column its queries only read
  (a covering key: TPC-H Q17's (l_partkey, l_quantity)), turn into a candidate
  that starts with its keys (an INCLUDE variant), or merge another candidate's
  columns with the same leading key into its INCLUDE list (index merging,
  Chaudhuri and Narasayya, ICDE 1999): one index for two queries' index-only scans.
- Write overhead: the cost of a configuration is the weighted planner cost of
  the queries plus what its indexes add to the workload's writes
  (advisor/indexes/maintenance.py), so an index pays for its upkeep.
- Lazy re-costing (CELF): a move's last saving per byte bounds its next one, so
  only moves that reach the top of a heap of bounds are costed again. The bound
  is not a law (an index can start to pay beside a later pick), so before the
  search stops every move is costed afresh once.
- Usable-index filtering (usable.py): a query is costed only with the indexes it
  could use (through the first column, or covering what it reads there; partial
  and expression indexes always count), so the what-if cache answers for every
  configuration that differs only in indexes the query cannot use: same plans,
  half the EXPLAINs on TPC-H.
- Bounds before costing (_savable, _most_saved): each round knows, per query and
  table, the query's cost with every candidate on the table at once, which no
  configuration of them beats. A move whose most possible saving is under the
  floor is never costed; the others are costed in order of that bound; and a
  query all of a table's candidates leave where it is is not explained for a
  move on that table. On TPC-DS the first eight picks take a third of the
  EXPLAINs they took without.
- Representative values: a ``$n`` without a logged value (pg_stat_statements)
  would get a generic plan, priced for an average value, and the index that
  fixes a slow skewed value would not pay. Such queries are first explained by
  advisor.db.explain with values from pg_stats, and costed with the values
  whose time matched their measured mean, as ``advisor scan`` does; a note says
  which (by where they came from, never the literals).
- Prune, fill, swap: after the greedy, any pick whose removal costs the
  workload nothing is dropped (an early single-column index made redundant by
  a later composite) and the freed bytes are filled greedily. Then a bounded
  local search: ratio greedy is myopic (an early cheap pick can block a better
  use of the same bytes), so each pick is tried against the candidates that fit
  in its place, best saving-alone first; a candidate's saving when costed alone
  bounds what it can save beside the others, so the loop stops as soon as no
  remaining candidate can beat the best exchange found, and at most
  SWAP_EVALUATIONS configurations are costed per round. The best exchange is
  made, followed by another fill and prune; SWAP_ROUNDS rounds at most.
  Every step only lowers the workload's cost, so the result is never worse
  than plain Extend's, and the extra what-if work is bounded.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from dataclasses import dataclass, field, replace

from advisor.db.catalog import Catalog, read_catalog
from advisor.db.explain import ExplainRequest, analyse, explain_all
from advisor.db.session import Session, session_for
from advisor.indexes.candidates import CandidateSet, workload_candidates
from advisor.indexes.existing import IndexIssue, index_issues
from advisor.indexes.maintenance import WriteLoad, counted_writes, visibility_notes, workload_writes
from advisor.indexes.model import MIN_IMPROVEMENT, AdvisedQuery, IndexCandidate, QueryCost, Recommendation
from advisor.indexes.moves import Moves
from advisor.indexes.usable import Usable
from advisor.indexes.whatif import CandidateRejected, QueryNotCosted, WhatIf
from advisor.progress import Step

PREFETCH_AHEAD = 3  # moves costed ahead, beside the one on top of the heap (see _prefetch)
SWAP_ROUNDS = 2  # exchanges tried after the greedy (each followed by a greedy fill and a prune)
SWAP_EVALUATIONS = 60  # configurations costed per exchange round, at most


@dataclass(frozen=True, slots=True)
class Advice:
    recommendations: tuple[Recommendation, ...]
    workload_cost_before: float  # weighted planner cost with today's indexes
    workload_cost_after: float  # with the recommended ones added
    whatif_calls: int
    seconds: float
    moot: tuple[tuple[IndexCandidate, str], ...] = ()  # candidates an existing index already serves
    existing_index_findings: tuple[IndexIssue, ...] = ()
    notes: tuple[str, ...] = ()
    validation: str = "hypothetical"
    per_query: tuple[QueryCost, ...] = field(default=())
    search: SearchEffort | None = None


@dataclass(frozen=True, slots=True)
class SearchEffort:
    """What the search asked the planner, and where its time went."""

    cost_requests: int  # costs the search used: what-if calls + cache answers + derived answers
    cache_hits: int
    derived: int  # answered from other answers (advisor.indexes.whatif.costs)
    whatif_seconds: float  # waiting on EXPLAINs and hypothetical indexes, summed over the sessions
    client_seconds: float  # the advisor's own CPU
    candidates: int
    never_costed: int  # candidates whose best possible saving never reached the floor
    stopped_early: bool = False  # search_seconds ran out: the picks so far, not the search's end


def advise(
    target: str | Session,
    queries: list[AdvisedQuery],
    *,
    max_indexes: int | None = None,
    budget_bytes: int | None = None,
    min_improvement: float = MIN_IMPROVEMENT,
    max_width: int = 3,
    backend: str = "hypopg",
    scratch: bool = False,
    sessions: int = 2,
    workload_seconds: float | None = None,
    search_seconds: float | None = None,
    interrupted: threading.Event | None = None,
    step: Step = lambda _: None,
) -> Advice:
    """The set of indexes that lowers the workload's cost most within the limits.

    ``workload_seconds``: the time the queries' weights (calls) were counted over; with it, the
    counters of tables the workload reads but does not write stand in for their writes
    (advisor/indexes/maintenance.py). ``search_seconds``: the search stops picking after that long (from the
    call) and keeps what it has, with a note (``Advice.search.stopped_early``); so does a set ``interrupted`` (Ctrl-C). ``target``: a DSN, or the command's open Session, which
    reads the catalog, explains the representative values and costs (the ``sessions`` - 1
    parallel what-if sessions connect on their own).
    """
    started, cpu = time.perf_counter(), time.process_time()
    with session_for(target) as session:
        catalog = read_catalog(session.conn)
        queries, value_notes = representative_values(session, queries, catalog, step)
        step(f"generating candidates for {len(queries)} queries")
        found = workload_candidates(queries, catalog, max_width=max_width)
        with WhatIf(session, backend=backend, scratch=scratch, sessions=sessions) as whatif:
            costable, left_out = _costable(whatif, queries)
            writes = WriteLoad([*workload_writes(costable, found, whatif.rows_changed),
                                *counted_writes(costable, found, catalog, workload_seconds)], catalog)
            search = _Search(whatif, costable, found, writes, max_indexes, budget_bytes, min_improvement, max_width,
                             deadline=None if search_seconds is None else started + search_seconds,
                             interrupted=interrupted, step=step)
            step(f"searching {len(found.candidates)} candidates with the planner's costs")
            chosen = search.run()
            validation = "hypothetical" if backend == "hypopg" else "real index, rolled back"
            recommendations = _recommendations(whatif, search.queries, chosen, validation, writes)
            before = search.workload_cost(frozenset())
            after = search.workload_cost(frozenset(chosen))
            per_query = tuple(_query_cost(whatif, q, frozenset(), frozenset(chosen)) for q in search.queries)
            calls = whatif.whatif_calls
            effort = SearchEffort(calls + whatif.cache_hits + whatif.derived, whatif.cache_hits, whatif.derived,
                                  round(whatif.whatif_ms / 1000, 3), round(time.process_time() - cpu, 3),
                                  len(found.candidates), search.never_costed(), search.stopped_early)
    return Advice(
        recommendations=recommendations,
        workload_cost_before=before,
        workload_cost_after=after,
        whatif_calls=calls,
        seconds=time.perf_counter() - started,
        moot=tuple(found.moot),
        existing_index_findings=tuple(index_issues(catalog)),
        notes=(*value_notes, *left_out, *search.notes, *writes.notes(chosen), *visibility_notes(chosen, catalog)),
        validation=validation,
        per_query=per_query,
        search=effort,
    )


REPRESENTATIVE_BUDGET_S = 30.0  # for explaining the $n queries that came without values, in all


def representative_values(target: str | Session, queries: list[AdvisedQuery], catalog: Catalog,
                          step: Step = lambda _: None) -> tuple[list[AdvisedQuery], list[str]]:
    """The queries, those with ``$n`` and no values given the values scan would explain them with; notes say which."""
    wanted = [q for q in queries if q.parameters is None and analyse(q.sql).has_parameters]
    if not wanted:
        return queries, []
    step(f"choosing values from pg_stats for {len(wanted)} queries with $n parameters")
    requests = [ExplainRequest(q.fingerprint, q.sql, None, q.mean_ms, q.rows_per_call) for q in wanted]
    report = explain_all(target, requests, time_budget_s=REPRESENTATIVE_BUDGET_S, catalog=catalog)
    chosen = {o.fingerprint: o for o in report.outcomes if o.values is not None}
    notes = []
    for q in wanted:
        if (o := chosen.get(q.fingerprint)) is not None:
            notes.append(f"query {q.fingerprint} costed with representative values: {o.values_label}")
        else:
            notes.append(f"query {q.fingerprint} costed with its generic plan: {_why_generic(report, q.fingerprint)}")
    return [replace(q, parameters=chosen[q.fingerprint].values) if q.fingerprint in chosen else q
            for q in queries], notes


def _why_generic(report, fingerprint: str) -> str:
    for o in report.outcomes:
        if o.fingerprint == fingerprint:
            return o.refused or o.error or o.note or "no representative values"
    return next((n.reason for n in report.not_explained if n.fingerprint == fingerprint), "not explained")


def _costable(whatif: WhatIf, queries: list[AdvisedQuery]) -> tuple[list[AdvisedQuery], list[str]]:
    """The queries the server will plan; the others (refused, bad parameters, timeout) with why."""
    kept, notes = [], []
    for q in queries:
        try:
            whatif.cost(q, frozenset())
        except QueryNotCosted as e:
            notes.append(f"query {q.fingerprint} left out of the index advice: {e.reason}")  # the id once
        else:
            kept.append(q)
    return kept, notes


class _Search:
    """Extend with composite candidates and a pruning pass (see the module docstring)."""

    def __init__(self, whatif: WhatIf, queries, found: CandidateSet, writes: WriteLoad, max_indexes, budget_bytes,
                 min_improvement, max_width, *, deadline: float | None = None, interrupted: threading.Event | None = None,
                 step: Step = lambda _: None):
        self.whatif, self.step = whatif, step  # step: a line per pick, for a person waiting at a terminal
        self.deadline, self.interrupted, self.stopped_early = deadline, interrupted, False
        self.notes: list[str] = []
        self.queries = [q for q in queries if found.by_query.get(q.fingerprint)]
        self.found, self.writes = found, writes
        self.write_costs: dict[IndexCandidate, float] = {}
        self.rejected: set[IndexCandidate] = set()
        self.max_indexes = max_indexes
        self.budget = budget_bytes
        self.min_improvement = min_improvement
        self.max_width = max_width
        self.sizes: dict[IndexCandidate, int] = {}
        self.bounds: dict[tuple, float] = {}  # a move's last saving per byte (see _best_move)
        self.alone: dict[IndexCandidate, float] = {}  # saving when first costed (see _swap)
        self.helps: dict[IndexCandidate, tuple[str, ...]] = {}  # the queries that can use it (see _most_saved)
        self.on_table: dict[str, frozenset[IndexCandidate]] = {}  # the candidates on each table (see _savable)
        self.savable: dict[tuple[str, str], float] = {}  # this round's _savable
        self.loses: set[tuple[str, IndexCandidate]] = set()  # (fingerprint, candidate): see _learn_losses
        self._parts_of: frozenset[IndexCandidate] | None = None  # see _parts
        self._parts_now: dict[str, frozenset[IndexCandidate]] = {}
        for c in found.candidates:
            self.on_table[c.table] = self.on_table.get(c.table, frozenset()) | {c}
        self.usable = Usable(found)
        self.moves = Moves(found, max_width, max_indexes)

    def size(self, c: IndexCandidate) -> int:
        if c not in self.sizes:
            self.sizes[c] = self.whatif.size(c)
        return self.sizes[c]

    def workload_cost(self, config: frozenset[IndexCandidate]) -> float:
        """The weighted planner cost of the queries, plus what the indexes add to the workload's writes."""
        reads = sum(q.weight * self.whatif.cost(q, self.usable.part(q, config)) for q in self.queries)
        return reads + sum(self.write_cost(c) for c in config)

    def write_cost(self, c: IndexCandidate) -> float:
        if c not in self.write_costs:
            self.write_costs[c] = self.writes.cost(c)
        return self.write_costs[c]

    def run(self) -> list[IndexCandidate]:
        self.start = self.workload_cost(frozenset())  # today's, as the progress lines compare
        chosen, cost = self._greedy([], self.start)
        pruned, cost = self._prune(chosen, cost)
        if len(pruned) < len(chosen) and not self._out_of_time():  # bytes freed: fill them
            pruned, cost = self._prune(*self._greedy(pruned, cost))
        chosen = pruned
        for _ in range(SWAP_ROUNDS):
            if self._out_of_time():
                break
            swapped = self._swap(chosen, cost)
            if swapped is None:
                break
            chosen, cost = self._prune(*self._greedy(*swapped))
        return chosen

    def _greedy(self, chosen: list[IndexCandidate], cost: float) -> tuple[list[IndexCandidate], float]:
        """Extend's loop: the best move per byte, until none is left that fits and pays."""
        while self.max_indexes is None or len(chosen) <= self.max_indexes:
            move = self._best_move(chosen, cost)
            if move is None and self.bounds and not self._out_of_time():
                # The bounds assume an index saves less as others are added. Not always: an
                # index can pay only beside a later pick (a supplier index that makes a join
                # index-only once lineitem has an index on l_suppkey). Before stopping, cost
                # every move afresh once.
                self.bounds.clear()
                move = self._best_move(chosen, cost)
            if move is None:
                break
            cost, replaced, added = move
            chosen = [c for c in chosen if c != replaced] + [added]
            latest = added.label() + (f" in place of {replaced.label()}" if replaced is not None else "")
            self.step(f"{len(chosen)} picked, the latest {latest}: workload cost {100 * cost / self.start:.3g}% of "
                      f"today's; {self.whatif.whatif_calls:,} what-if calls so far")
        return chosen, cost

    def _swap(self, chosen: list[IndexCandidate], cost: float) -> tuple[list[IndexCandidate], float] | None:
        """The best exchange of one pick for one candidate that fits in its place, or None.

        Greedy by ratio is myopic: an early pick can block a larger index that would have
        saved more for the same bytes. For each pick, dropping it costs ``loss``; a
        candidate's saving alone (measured in the first round) bounds what it can save
        after the others, so only candidates whose saving alone exceeds ``loss`` plus the
        best gain so far are costed, largest first, and at most SWAP_EVALUATIONS in all.
        """
        if self.budget is None and self.max_indexes is None:
            return None
        best: tuple[float, list[IndexCandidate]] | None = None
        budget_left = SWAP_EVALUATIONS
        used = self._size_of(chosen)
        picks = sorted(chosen, key=lambda c: -self.alone.get(c, 0.0))
        for r in picks:
            rest = [c for c in chosen if c != r]
            loss = self.workload_cost(frozenset(rest)) - cost
            room = math.inf if self.budget is None else self.budget - used + self.size(r)
            options = sorted((a for a in self.alone if a not in chosen and a not in self.rejected
                              and self.alone[a] > loss and self.sizes.get(a, math.inf) <= room),
                             key=lambda a: -self.alone[a])
            for a in options:
                gain_so_far = best[0] if best else 0.0
                if self.alone[a] - loss <= max(gain_so_far, cost * 1e-6) or budget_left <= 0:
                    break
                budget_left -= 1
                try:
                    new_cost = self.workload_cost(frozenset([*rest, a]))
                except CandidateRejected:
                    continue
                if cost - new_cost > max(gain_so_far, cost * 1e-6):
                    best = (cost - new_cost, [*rest, a])
        if best is None:
            return None
        return best[1], cost - best[0]

    def _out_of_time(self) -> bool:
        reason = _stop_reason(self.deadline, self.interrupted)
        if reason is not None and not self.stopped_early:
            self.stopped_early = True
            self.notes.append(f"the search {reason[0]} with {len(self.alone)} of {len(self.found.candidates)} candidates "
                              f"costed: these are its best picks so far; {reason[1]}")
        return reason is not None

    def never_costed(self) -> int:
        """Candidates no round costed: what they could save at most stayed under the floor."""
        return sum(1 for c in self.found.candidates if c not in self.alone and c not in self.rejected)

    def _best_move(self, chosen: list[IndexCandidate], cost: float):
        """The move with the most cost saved per byte, among those that save at least the floor.

        Lazily, as CELF does (Leskovec et al., KDD 2007): a move's saving per byte only
        shrinks as indexes are added (near enough: indexes compete for the same queries),
        so the ratio it had last round bounds the ratio it has now. Moves leave a heap in
        order of that bound and are re-costed only when they reach the top; the first
        that stays on top after re-costing is the best. On TPC-H this cuts the what-if
        calls several times over.
        """
        current = self._size_of(chosen)
        floor = cost * self.min_improvement / 100  # relative to the cost before this pick
        order = itertools.count()
        self.savable = self._savable(chosen)
        heap = []
        for move in self.moves(chosen):
            if move[1] in self.rejected or (most := self._most_saved(move, self.savable)) <= floor:
                continue  # cannot pay: not costed (never_costed() counts the candidates left so)
            try:
                grown = self._growth(move, current)
            except CandidateRejected as e:
                self._reject(e)
                continue
            if grown is None:
                continue
            heap.append((-min(self.bounds.get(move, math.inf), most / max(grown, 8192)), next(order), move))
        heapq.heapify(heap)
        while heap and not self._out_of_time():
            bound, _, move = heapq.heappop(heap)
            if -bound <= 0:
                return None
            self._prefetch([move, *(m for _, _, m in heapq.nsmallest(PREFETCH_AHEAD, heap))], chosen, current)
            found = self._evaluate(move, chosen, cost, current)
            if found is None:  # no room in the budget (until a pick is dropped), or rejected
                continue
            ratio, new_cost = found
            self.bounds[move] = ratio
            if move[0] is None and move[1] not in self.alone:
                self.alone[move[1]] = cost - new_cost
            if cost - new_cost <= floor:
                continue
            if not heap or ratio >= -heap[0][0]:
                return new_cost, move[0], move[1]
            heapq.heappush(heap, (-ratio, next(order), move))
        return None

    def _savable(self, chosen: list[IndexCandidate]) -> dict[tuple[str, str], float]:
        """(fingerprint, table) -> what any candidate on the table can still save on the query, weighted:
        its cost now (known: the search has just costed it) down to its cost with every candidate on
        that table added at once, which no configuration of them plans lower. One EXPLAIN per query
        and table it reads, costed again only when a pick changed the query's indexes (the cache)."""
        config = frozenset(chosen)
        pairs = [(table, q) for table in sorted(self.on_table) for q in self.queries if self.usable.reads(q, table)]
        self.whatif.prefetch((q, config | self.on_table[table]) for table, q in pairs)  # grouped by table
        savable, parts = {}, self._parts(chosen)
        for table, q in pairs:
            now = self.whatif.cost(q, parts[q.fingerprint])
            savable[q.fingerprint, table] = q.weight * max(0.0, now - self._cost_with_all(q, config, table))
        return savable

    def _cost_with_all(self, q: AdvisedQuery, config: frozenset[IndexCandidate], table: str) -> float:
        """``q``'s cost with ``config`` and every candidate on ``table`` the server accepts; 0 (no bound
        below its whole cost) if the server will not plan it so, within the statement timeout."""
        while True:
            try:
                return self.whatif.cost(q, config | self.on_table[table])
            except CandidateRejected as e:
                self._reject(e)
            except QueryNotCosted:
                return 0.0

    def _most_saved(self, move, savable: dict[tuple[str, str], float]) -> float:
        """What a move can save at most: what the queries that can use the index it adds could still
        save with every candidate on its table, and the upkeep of the index it replaces, less its own
        upkeep. Any other query can only lose (the replaced index). A move whose bound is under the
        floor is never costed, and the others are costed in order of it. The bound holds for the
        candidates; a move that extends a pick beyond them (a covering column) may save a little more."""
        replaced, added = move
        if added not in self.helps:
            self.helps[added] = tuple(q.fingerprint for q in self.queries if self.usable.can_help(q, added))
        most = sum(savable.get((fp, added.table), 0.0) for fp in self.helps[added]) - self.write_cost(added)
        return most + (self.write_cost(replaced) if replaced is not None else 0.0)

    def _prefetch(self, moves, chosen: list[IndexCandidate], current: int) -> None:
        """Have the what-if engine cost these moves' configurations ahead, in parallel sessions."""
        try:
            pairs = [pair for m in moves if self._growth(m, current) is not None for pair in self._move_configs(m, chosen)]
        except CandidateRejected:
            return  # met again, and recorded, when the move itself is evaluated
        self.whatif.prefetch(pairs)

    def _move_configs(self, move, chosen: list[IndexCandidate]) -> list[tuple[AdvisedQuery, frozenset[IndexCandidate]]]:
        """Each query with the configuration to cost it under after the move. A query that every
        candidate on the added index's table together leaves where it is (nothing ``savable``) keeps
        its cost now, which the cache holds: the index cannot move it either, so it is not explained."""
        replaced, added = move
        parts = self._parts(chosen)
        if replaced is not None:
            return [(q, (parts[q.fingerprint] - {replaced}) | ({added} if self.usable.can_use(q, added) else set()))
                    for q in self.queries]
        known = added in self.on_table.get(added.table, ())
        return [(q, parts[q.fingerprint] | {added} if self.usable.can_use(q, added) and (q.fingerprint, added) not in self.loses
                 and not (known and self.savable.get((q.fingerprint, added.table), 1.0) <= 0) else parts[q.fingerprint])
                for q in self.queries]

    def _parts(self, chosen: list[IndexCandidate]) -> dict[str, frozenset[IndexCandidate]]:
        """Each query's usable part of ``chosen``, kept while ``chosen`` stays: a move changes one index,
        so its configurations are this plus or minus one (thousands of moves a round on TPC-DS)."""
        config = frozenset(chosen)
        if self._parts_of != config:
            self._parts_of = config
            self._parts_now = {q.fingerprint: self.usable.part(q, config) for q in self.queries}
        return self._parts_now

    def _move_cost(self, move, chosen: list[IndexCandidate]) -> float:
        """workload_cost after the move, without explaining what cannot change (_move_configs)."""
        pairs = self._move_configs(move, chosen)
        reads = sum(q.weight * self.whatif.cost(q, config) for q, config in pairs)
        if move[0] is None:
            self._learn_losses(move[1], pairs)
        return reads + sum(self.write_cost(c) for c in _after(move, chosen))

    def _learn_losses(self, added: IndexCandidate, pairs) -> None:
        """Remember the queries whose plan left ``added`` unused when it was their table's only candidate
        and could only serve a filter there (usable.filter_only): PostgreSQL plans a table's own scans
        before any join, so such an index loses again whatever else is added. Such a query is costed
        without the move from then on."""
        for q, config in pairs:
            if added in config and all(c.table != added.table for c in config - {added}) and self.usable.filter_only(q, added):
                if added not in self.whatif.used(q, config):
                    self.loses.add((q.fingerprint, added))

    def _growth(self, move, current: int) -> int | None:
        """The bytes a move adds, or None when they do not fit the budget."""
        replaced, added = move
        grown = self.size(added) - (self.size(replaced) if replaced else 0)
        return None if self.budget is not None and current + grown > self.budget else grown

    def _evaluate(self, move, chosen: list[IndexCandidate], cost: float, current: int) -> tuple[float, float] | None:
        """(saving per byte, the workload's cost after the move), or None if it cannot be made."""
        try:
            grown = self._growth(move, current)
            if grown is None:
                return None
            new_cost = self._move_cost(move, chosen)
        except CandidateRejected as e:
            self._reject(e)
            return None
        return (cost - new_cost) / max(grown, 8192), new_cost

    def _reject(self, e: CandidateRejected) -> None:
        """The server would not build it: never offer it again."""
        self.rejected.add(e.candidate)
        if e.candidate.table in self.on_table:
            self.on_table[e.candidate.table] -= {e.candidate}
        self.notes.append(f"candidate {e.candidate.definition()} rejected by the server: {e.cause}")

    def _size_of(self, config) -> int:
        return sum(self.size(c) for c in config)

    def _prune(self, chosen: list[IndexCandidate], cost: float) -> tuple[list[IndexCandidate], float]:
        for c in list(chosen):
            without = [x for x in chosen if x != c]
            new_cost = self.workload_cost(frozenset(without))
            if new_cost <= cost * (1 + 1e-9):
                chosen, cost = without, min(cost, new_cost)
        return chosen, cost


def _stop_reason(deadline: float | None, interrupted: threading.Event | None) -> tuple[str, str] | None:
    """Why the search stops before its end, and what the note advises, if it must stop now."""
    if interrupted is not None and interrupted.is_set():
        return "was interrupted (Ctrl-C)", "a search left to finish (the nightly job's) may find more"
    if deadline is not None and time.perf_counter() > deadline:
        return "reached its time limit (--search-seconds)", "a longer limit, or none (as the nightly job runs), may find more"
    return None


def _after(move, chosen: list[IndexCandidate]) -> frozenset[IndexCandidate]:
    """The configuration a (replaced, added) move leads to."""
    replaced, added = move
    return frozenset([*(c for c in chosen if c != replaced), added])


def _recommendations(whatif: WhatIf, queries: list[AdvisedQuery], chosen: list[IndexCandidate], validation: str,
                     writes: WriteLoad) -> tuple[Recommendation, ...]:
    config = frozenset(chosen)
    helped: dict[IndexCandidate, list[QueryCost]] = {c: [] for c in chosen}
    for q in queries:
        for c in whatif.used(q, config) & config:
            helped[c].append(_query_cost(whatif, q, frozenset(), config))
    recs = [Recommendation(c, whatif.size(c), tuple(helped[c]), validation, write_cost=writes.cost(c),
                           size_estimate=whatif.size_estimate(c)) for c in chosen]
    recs.sort(key=lambda r: r.write_cost - sum(q.weight * (q.cost_before - q.cost_after) for q in r.queries))
    return tuple(recs)


def _query_cost(whatif: WhatIf, q: AdvisedQuery, before: frozenset, after: frozenset) -> QueryCost:
    return QueryCost(q.fingerprint, q.normalized, q.weight, whatif.cost(q, before), whatif.cost(q, after))
