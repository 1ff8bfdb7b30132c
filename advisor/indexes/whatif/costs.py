"""The what-if engine's front: ``WhatIf`` costs queries under index configurations, and caches the answers.

``WhatIf`` works out each query once (queries.py), asks its backend (HypoPG, or real
indexes on a scratch database: backend.py) for the plan of a configuration it has not
seen, and keeps the answer in a ``CostCache``. ``prefetch`` spreads the misses of many
configurations over helper sessions (``--jobs``) that plan in parallel. ``verify``
(verify.py) builds the picks for real and measures.

Cache. A query's plan can only change with indexes on the tables it touches, so the
cache key is (query, the part of the configuration on those tables). The first plan
is checked against that set (its "Relation Name"s); a query whose plan reads a table
we did not foresee (a set-returning SQL function inlined, …) falls back to keying on
the whole configuration.

Derived answers. Most configurations a search asks about are known ones plus an index
on a table that already has one (Chaudhuri and Narasayya's atomic configurations,
VLDB 1997; the "cost requests" that need no "what-if call" of Kossmann et al., VLDB
2020). A statement that names a table once scans it once, and a scan uses one index
unless it combines several in a bitmap. So with two indexes a and b of such a table
in a configuration, the best plan lacks one of them: its cost is the cheaper of the
configuration without a and the configuration without b, when both are known. The
planner searches every join order below join_collapse_limit, so this is exact there;
a bitmap scan can combine two indexes whose keys the query's conditions compare
(BitmapAnd, BitmapOr), so no answer is derived from such a pair; and a query whose
plan ever combines indexes gets no derived answers from then on, and those it had
are forgotten.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from advisor.db.session import Session
from advisor.errors import AdvisorError
from advisor.indexes.model import AdvisedQuery, IndexCandidate, SizeEstimate, key_column
from advisor.indexes.whatif.backend import Config, IndexBackend
from advisor.indexes.whatif.errors import CandidateRejected, QueryNotCosted, WhatIfUnavailable
from advisor.indexes.whatif.hypopg import HypoPG
from advisor.indexes.whatif.queries import PreparedQuery, QueryKey, prepare, query_key
from advisor.indexes.whatif.scratch import Scratch
from advisor.indexes.whatif.verify import Measured, verify

__all__ = ["CacheKey", "CostCache", "Costed", "WhatIf"]

PlanJSON = Mapping[str, Any]  # a node of EXPLAIN (FORMAT JSON)'s plan
_COMBINING = frozenset({"BitmapAnd", "BitmapOr"})  # plan nodes that use several indexes of one table
DERIVE_MAX = 4  # indexes sharing a table named once that a derivation may look past (2^n sub-configurations)

_BACKENDS: dict[str, type[IndexBackend]] = {b.name: b for b in (HypoPG, Scratch)}


@dataclass(frozen=True, slots=True)
class Costed:
    """What one EXPLAIN says about a query under a configuration."""

    cost: float
    used: frozenset[IndexCandidate]
    rows_changed: float = 0.0  # rows the plan's ModifyTable takes in: what an INSERT/UPDATE/DELETE writes

    @staticmethod
    def of(nodes: list[PlanJSON], ours: Mapping[str, IndexCandidate]) -> Costed:
        """From a plan's nodes in pre-order (``_nodes``, the root first): the root's Total Cost, the candidates
        among ``ours`` (by index name) the plan uses, and the rows entering its ModifyTable nodes (at the
        root, or in a data-changing CTE)."""
        return Costed(float(nodes[0]["Total Cost"]),
                      frozenset(ours[n["Index Name"]] for n in nodes if n.get("Index Name") in ours),
                      sum(float(n["Plans"][0]["Plan Rows"]) for n in nodes
                          if n["Node Type"] == "ModifyTable" and n.get("Plans")))


def _nodes(node: PlanJSON) -> Iterator[PlanJSON]:
    """The nodes of EXPLAIN's JSON plan, pre-order. advisor.plans.parse_plan would give them too, with
    per-node arithmetic that costs as much as the what-if EXPLAIN itself (about a millisecond) for
    the three fields read here."""
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


class CacheKey(NamedTuple):
    query: QueryKey
    config: Config  # the part of the configuration that can change the query's plan


class CostCache:
    """Answers by (query, the indexes of the configuration on the tables the query can read).

    Failures are answers too (QueryNotCosted): a statement the server would not plan
    fails under every configuration. Keys name queries and candidates, never a
    session's oids, so an answer from any session holds in every other (``merge``).
    Where index advice at scale reshapes the search (atomic configurations), this
    key is the seam.
    """

    def __init__(self, table_oid: Callable[[IndexCandidate], int]) -> None:
        self._table_oid = table_oid
        self._answers: dict[CacheKey, Costed | QueryNotCosted] = {}
        self._derived: set[CacheKey] = set()
        self.hits = 0
        self.derivations = 0  # answers derived from others instead of explained

    def key(self, query: PreparedQuery, config: Config) -> CacheKey:
        tables = query.tables
        if tables is None:
            return CacheKey(query.key, config)
        return CacheKey(query.key, frozenset(c for c in config if self._table_oid(c) in tables))

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._answers

    def get(self, key: CacheKey) -> Costed | None:
        """The answer known (raising the query's QueryNotCosted), or None."""
        if (known := self._answers.get(key)) is None:
            return None
        self.hits += 1
        if isinstance(known, QueryNotCosted):
            raise known
        return known

    def put(self, key: CacheKey, answer: Costed | QueryNotCosted) -> None:
        self._answers[key] = answer

    def forget(self, query: PreparedQuery, *, derived_only: bool = False) -> None:
        """Drop every answer about ``query`` (its key changed), or only those derived."""
        for stale in [k for k in (self._derived if derived_only else self._answers) if k.query == query.key]:
            self._answers.pop(stale, None)
            self._derived.discard(stale)

    def merge(self, other: CostCache, combines: Callable[[QueryKey], bool] = lambda _: False) -> None:
        """Take ``other``'s answers (it keeps none), but not what it derived for a query that ``combines``
        indexes (another session saw its plan do so)."""
        for key in [k for k in other._derived if combines(k.query)]:
            del other._answers[key]
            other._derived.discard(key)
        self._answers.update(other._answers)
        self._derived |= other._derived
        self.derivations += other.derivations
        other._answers.clear()
        other._derived.clear()
        other.derivations = 0

    def derive(self, query: PreparedQuery, key: CacheKey) -> Costed | None:
        """The answer for ``key`` from known ones (the module's docstring says when), kept; or None."""
        if query.tables is None or query.combines or not query.single:
            return None
        on_single = Counter(oid for c in key.config if (oid := self._table_oid(c)) in query.single)
        if sum(n for n in on_single.values() if n > 1) > DERIVE_MAX:
            return None
        if (answer := self._known(query, key.config, {})) is not None:
            self._answers[key] = answer
            self._derived.add(key)
            self.derivations += 1
        return answer

    def _known(self, query: PreparedQuery, config: Config, seen: dict[Config, Costed | None]) -> Costed | None:
        if config in seen:
            return seen[config]
        seen[config] = None  # while we work on it
        known = self._answers.get(CacheKey(query.key, config))
        if known is not None:
            seen[config] = known if isinstance(known, Costed) else None
            return seen[config]
        by_table: dict[int, list[IndexCandidate]] = {}
        for c in sorted(config, key=IndexCandidate.definition):  # the same answer whatever the hash order
            if (oid := self._table_oid(c)) in query.single:
                by_table.setdefault(oid, []).append(c)
        for members in by_table.values():
            for a, b in itertools.combinations(members, 2):
                if _filters(query, a) and _filters(query, b):
                    continue  # a BitmapAnd or BitmapOr could use both
                if (without_a := self._known(query, config - {a}, seen)) is None:
                    continue
                if (without_b := self._known(query, config - {b}, seen)) is not None:
                    seen[config] = min(without_a, without_b, key=lambda answer: answer.cost)
                    return seen[config]
        return None


def _filters(query: PreparedQuery, index: IndexCandidate) -> bool:
    """A key of the index is compared in the query's conditions: a bitmap scan could use it."""
    names = [key_column(k) for k in index.columns]
    return any(name is None or name.lower() in query.conditions for name in names)  # None: an expression


class WhatIf:
    """The planner's cost of queries under index configurations; a context manager.

    ``whatif_calls`` counts real EXPLAINs, ``cache_hits`` the answers the cache
    gave instead, ``whatif_ms`` the time spent on misses (configuration + EXPLAIN).
    """

    def __init__(self, target: str | Session, *, backend: str = "hypopg", scratch: bool = False,
                 statement_timeout_ms: int = 30_000, sessions: int = 1) -> None:
        """``target``: a DSN, or the command's open Session, which is left open on close()
        (the helper sessions of ``sessions`` > 1 always connect anew). ``backend``: "hypopg",
        or "real" (indexes built for real: ``scratch`` databases only)."""
        if backend not in _BACKENDS:
            raise ValueError(f"unknown what-if backend {backend!r}: 'hypopg' or 'real'")
        if _BACKENDS[backend].writes and not scratch:
            raise WhatIfUnavailable(
                "the real-index backend builds indexes (in a transaction that is rolled back) "
                "and runs only on a database marked as scratch",
                "pass --scratch if this database is a scratch copy; otherwise install HypoPG")
        self.scratch = scratch
        self.whatif_calls = 0
        self.whatif_ms = 0.0
        self._timeout_ms = statement_timeout_ms
        self._queries: dict[QueryKey, PreparedQuery | QueryNotCosted] = {}
        self._helpers: list[WhatIf] | None = None
        self._owns_session = not isinstance(target, Session)
        session = target if isinstance(target, Session) else Session(target, statement_timeout_ms=statement_timeout_ms)
        self._closed = False
        try:
            # The same EXPLAIN text runs under many configurations: never let psycopg prepare it server-side.
            session.conn.prepare_threshold = None
            self.backend: IndexBackend = _BACKENDS[backend](session, statement_timeout_ms)
            self.backend.open()
        except BaseException:
            self._closed = True
            if self._owns_session:
                session.close()
            raise
        self._sessions = max(1, sessions) if self.backend.parallel else 1  # see prefetch()
        self._cache = CostCache(self.backend.table_oid)

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> WhatIf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hypothetical index (or roll the scratch transaction back) and disconnect
        (a session given is left open)."""
        for helper in self._helpers or ():
            helper.close()
        if self._closed:
            return
        self._closed = True
        try:
            if not self.backend.session.lost:
                self.backend.close()
        finally:
            if self._owns_session:
                self.backend.session.close()

    def reset(self) -> None:
        """Forget every index we made (``hypopg_reset()``, or a new scratch transaction); costs stay cached."""
        self.backend.reset()

    @property
    def cache_hits(self) -> int:
        return self._cache.hits

    @property
    def derived(self) -> int:
        """Cost requests answered from other answers, with no EXPLAIN (the module's docstring)."""
        return self._cache.derivations

    # --- the API -----------------------------------------------------------------------

    def cost(self, query: AdvisedQuery, config: Iterable[IndexCandidate]) -> float:
        """Total Cost of the plan's root with exactly ``config`` (and the existing indexes) present."""
        return self._evaluate(query, frozenset(config)).cost

    def existing_cost(self, query: AdvisedQuery) -> float:
        return self.cost(query, frozenset())

    def used(self, query: AdvisedQuery, config: Iterable[IndexCandidate]) -> frozenset[IndexCandidate]:
        """The members of ``config`` that the plan uses."""
        config = frozenset(config)
        return self._evaluate(query, config).used & config

    def rows_changed(self, query: AdvisedQuery) -> float:
        """The rows a data-changing statement writes, by the planner's estimate with today's indexes
        (0 for a read)."""
        return self._evaluate(query, frozenset()).rows_changed

    def size(self, candidate: IndexCandidate) -> int:
        """Estimated bytes, known as ``size_estimate`` says."""
        return self.backend.size(candidate)[0]

    def size_estimate(self, candidate: IndexCandidate) -> SizeEstimate:
        """How ``size`` knows: "built" (the index built for real), "btree-model" (PostgreSQL's B-tree
        build, deduplication included, modelled from the table's statistics: size.py), else
        "hypopg" (HypoPG's estimate, which ignores deduplication)."""
        return self.backend.size(candidate)[1]

    def verify(self, queries: Iterable[AdvisedQuery], candidates: Iterable[IndexCandidate], *,
               runs: int = 2) -> dict[str, Measured]:
        """Measure before and after building ``candidates`` for real, in one transaction rolled back
        (scratch databases only; advisor.indexes.whatif.verify says how).
        Returns fingerprint -> {"before_ms", "after_ms", "cost_before", "cost_after"}
        (plus "error" for a query that could not be measured).
        """
        if not self.scratch:
            raise WhatIfUnavailable("--verify builds real indexes (rolled back) and runs only on a scratch database",
                                    "pass --scratch if this database is a scratch copy")
        prepared: list[PreparedQuery | QueryNotCosted] = []
        for q in queries:
            try:
                prepared.append(self._prepared(q))
            except QueryNotCosted as err:
                prepared.append(err)
        return verify(self.backend, prepared, candidates, runs)

    # --- parallel costing ----------------------------------------------------------------

    def prefetch(self, pairs: Iterable[tuple[AdvisedQuery, frozenset[IndexCandidate]]]) -> None:
        """Cost (query, configuration) pairs ahead of need, spread over ``sessions`` sessions
        that plan in parallel; the answers land in the cache, so later calls find them there.

        Only the wall time changes: every answer is the one a call of cost() would have got,
        and the search that asks stays sequential and deterministic. HypoPG only (the scratch
        backend's indexes exist in one session's transaction); a helper session that fails
        is dropped, and its share is left for cost() to do.
        """
        if self._sessions < 2:
            return
        misses: dict[CacheKey, tuple[AdvisedQuery, frozenset[IndexCandidate]]] = {}
        for query, config in pairs:
            try:
                info = self._prepared(query)
            except QueryNotCosted:
                continue
            key = self._cache.key(info, config)
            if key not in self._cache and self._cache.derive(info, key) is None:
                misses.setdefault(key, (query, config))
        if len(misses) < 2:
            return
        helpers = self._start_helpers()
        work = list(misses.values())
        shares = [work[i::len(helpers) + 1] for i in range(len(helpers) + 1)]
        with ThreadPoolExecutor(len(helpers)) as pool:
            running = [pool.submit(h._cost_all, share) for h, share in zip(helpers, shares[1:])]
            self._cost_all(shares[0])
            for helper, done in list(zip(helpers, running)):  # a copy: a failed helper leaves the list
                if done.result():
                    self._adopt(helper)
                else:
                    helper.close()
                    helpers.remove(helper)

    def _start_helpers(self) -> list[WhatIf]:
        if self._helpers is None:
            self._helpers = []
            for _ in range(self._sessions - 1):
                try:
                    self._helpers.append(WhatIf(self.backend.session.dsn, statement_timeout_ms=self._timeout_ms))
                except AdvisorError:
                    break  # too few connections left: go on with those we have
        return self._helpers

    def _cost_all(self, pairs: list[tuple[AdvisedQuery, frozenset[IndexCandidate]]]) -> bool:
        """Cost each pair (for the cache); False if this session broke on the way."""
        for query, config in pairs:
            try:
                self._evaluate(query, config)
            except (QueryNotCosted, CandidateRejected):
                continue  # cached, or to be met again by whoever asks for it
            except (AdvisorError, psycopg.Error):
                return False
        return True

    def _adopt(self, helper: WhatIf) -> None:
        """Take a helper's new answers and counts, and forget what either derived for a query that
        either saw combine indexes."""
        for key, theirs in helper._queries.items():
            mine = self._queries.get(key)
            if isinstance(mine, PreparedQuery) and not mine.combines and getattr(theirs, "combines", False):
                self._combining(mine)
        self._cache.merge(helper._cache, lambda query: getattr(self._queries.get(query), "combines", False))
        self.whatif_calls += helper.whatif_calls
        self.whatif_ms += helper.whatif_ms
        helper.whatif_calls, helper.whatif_ms = 0, 0.0

    # --- evaluation ----------------------------------------------------------------------

    def _evaluate(self, query: AdvisedQuery, config: Config) -> Costed:
        info = self._prepared(query)
        key = self._cache.key(info, config)
        if (hit := self._cache.get(key)) is not None:
            return hit
        if (derived := self._cache.derive(info, key)) is not None:
            return derived
        plan = self._explain(info, key)
        nodes = list(_nodes(plan))
        if not info.checked:
            info.checked = True
            relations = {n["Relation Name"] for n in nodes if "Relation Name" in n}
            if info.tables is not None and not relations <= info.relnames:
                # The plan reads a table we did not foresee: key this query on whole configurations.
                info.tables = None
                self._cache.forget(info)
                return self._evaluate(query, config)
        if not info.combines and any(n["Node Type"] in _COMBINING for n in nodes):
            self._combining(info)
        result = Costed.of(nodes, self.backend.by_name)  # the walk made once, for the checks above too
        self._cache.put(key, result)
        return result

    def _combining(self, info: PreparedQuery) -> None:
        """``info``'s plans combine indexes: what was derived for it may be wrong, derive no more."""
        info.combines = True
        self._cache.forget(info, derived_only=True)

    def _explain(self, info: PreparedQuery, key: CacheKey) -> PlanJSON:
        """The plan with exactly ``key.config`` among our indexes on the query's tables (a failure is cached)."""
        started = time.perf_counter()
        try:
            return self.backend.explain(info, key.config)["Plan"]
        except QueryNotCosted as err:
            self._cache.put(key, err)
            raise
        finally:
            self.whatif_calls += 1
            self.whatif_ms += (time.perf_counter() - started) * 1000

    def _prepared(self, query: AdvisedQuery) -> PreparedQuery:
        key = query_key(query)
        if (info := self._queries.get(key)) is None:
            try:
                info = prepare(query, self.backend.lookup)
            except QueryNotCosted as err:
                info = err
            self._queries[key] = info
        if isinstance(info, QueryNotCosted):
            raise info
        return info
