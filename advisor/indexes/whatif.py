"""What-if costing for ``advisor suggest-indexes``: the planner's cost of a query under a set of indexes.

Two backends, one API (``cost``, ``used``, ``size``, ``existing_cost``, ``verify``):

- ``hypopg`` (default): hypothetical indexes, which exist only in our backend's
  memory and only for plain EXPLAIN. The extension must already be created in the
  database: creating it is the user's decision, so we say how and stop
  (``WhatIfUnavailable``). HypoPG 1.3 (Debian bookworm's) has no way to hide an
  index (``hypopg_hide_index`` arrived in 1.4.0), so a configuration is made by
  diffing: on the tables the query touches, drop the hypothetical indexes it does
  not want and create the ones it lacks. A greedy search changes one index at a
  time, so that is about one HypoPG call per EXPLAIN, each well under a millisecond.
- ``real`` (scratch databases only, ``scratch=True``): one transaction, opened at
  start and always rolled back, in which each candidate is built for real
  (``CREATE INDEX``, not concurrently) the first time it is needed. A
  configuration drops the unwanted ones inside a savepoint that is rolled back
  after the EXPLAIN, so no index is ever built twice and none survives us.
  While the engine is open that transaction holds SHARE locks on the tables it
  indexed (writers on the scratch database wait), and the connection's
  idle-in-transaction timeout (60 s) bounds the pause between two calls.

The query is only ever EXPLAINed (no ANALYZE), through advisor.db.explain's and
advisor.db.session's own path: ``classify`` first (refused statements raise ``QueryNotCosted``), logged
parameters bound through the extended protocol, a generic plan for ``$n``
without values, each EXPLAIN in a read-only transaction (HypoPG) or a read-only
savepoint (real backend). We never ANALYZE: statistics stay as they were for
the whole run, so costs are comparable.

Cache. A query's plan can only change with indexes on the tables it touches:
these are found once per query (sqlglot's tables resolved by the server through
``search_path``, then closed over views' dependencies and partitions/inheritance),
and the cache key is (query, the part of the configuration on those tables).
The first plan is checked against that set (its "Relation Name"s); a query whose
plan reads a table we did not foresee (a set-returning SQL function inlined, …)
falls back to keying on the whole configuration.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import psycopg
import sqlglot
from sqlglot import exp

from advisor.db.explain import analyse, parse_parameters
from advisor.db.session import Session
from advisor.errors import AdvisorError
from advisor.indexes.existing import quote_ident
from advisor.indexes.model import AdvisedQuery, IndexCandidate, SizeEstimate
from advisor.indexes.size import BtreeSizes

__all__ = ["CandidateRejected", "QueryNotCosted", "WhatIf", "WhatIfUnavailable"]

Backend = Literal["hypopg", "real"]
Config = frozenset[IndexCandidate]

_SCRATCH_FIX = "or, on a scratch copy of the database, run with --scratch (real indexes in a rolled-back transaction)"


class WhatIfUnavailable(AdvisorError):
    """The what-if engine cannot run here (no HypoPG, not a scratch database, connection lost)."""


class QueryNotCosted(AdvisorError):
    """This query cannot be costed: refused by classify(), unreadable parameters, SQL error, timeout."""

    def __init__(self, fingerprint: str, reason: str) -> None:
        super().__init__(f"query {fingerprint} not costed: {reason}",
                         "it is left out of the index advice; see the reason")
        self.fingerprint = fingerprint
        self.reason = reason


class CandidateRejected(AdvisorError):
    """The server would not create this index (unknown table or column, unsupported method, …)."""

    def __init__(self, candidate: IndexCandidate, reason: str) -> None:
        super().__init__(f"index candidate {candidate.name} rejected: {reason}",
                         "leave it out of the search")
        self.candidate = candidate
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Costed:
    cost: float
    used: frozenset[IndexCandidate]
    rows_changed: float = 0.0  # rows the plan's ModifyTable takes in: what an INSERT/UPDATE/DELETE writes


@dataclass(slots=True)
class _Query:
    """What we work out once per query."""

    key: tuple[str, str, str | None]
    fingerprint: str
    sql: str
    kind: str  # classify(): read or write
    mode: str  # how explain.py explains it: "plain" (values bound, or none needed) or "generic"
    values: list[str | None] | None
    tables: frozenset[int] | None  # oids whose indexes can change the plan; None: any table
    relnames: frozenset[str]  # their names, to check the first plan against
    checked: bool = False  # the first plan confirmed ``tables``


@dataclass(frozen=True, slots=True)
class _Index:
    oid: int
    name: str  # as the plan's "Index Name" shows it


# Views (through their rewrite rules), partitions and inheritance children, and parents.
_CLOSURE = """
WITH RECURSIVE rels(oid) AS (
    SELECT to_regclass(n)::oid FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL
  UNION
    SELECT x.oid FROM rels, LATERAL (
        SELECT d.refobjid FROM pg_rewrite r
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         WHERE r.ev_class = rels.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rels.oid
        UNION ALL SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = rels.oid
        UNION ALL SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = rels.oid
    ) AS x(oid)
)
SELECT c.oid::int8, c.relname FROM rels JOIN pg_class c ON c.oid = rels.oid
 WHERE c.relkind IN ('r', 'p', 'm', 'f')
"""


class WhatIf:
    """The planner's cost of queries under index configurations; a context manager.

    ``whatif_calls`` counts real EXPLAINs, ``cache_hits`` the answers the cache
    gave instead, ``whatif_ms`` the time spent on misses (configuration + EXPLAIN).
    """

    def __init__(self, target: str | Session, *, backend: Backend = "hypopg", scratch: bool = False,
                 statement_timeout_ms: int = 30_000, sessions: int = 1) -> None:
        """``target``: a DSN, or the command's open Session, which is left open on close()
        (the helper sessions of ``sessions`` > 1 always connect anew)."""
        if backend not in ("hypopg", "real"):
            raise ValueError(f"unknown what-if backend {backend!r}: 'hypopg' or 'real'")
        if backend == "real" and not scratch:
            raise WhatIfUnavailable(
                "the real-index backend builds indexes (in a transaction that is rolled back) "
                "and runs only on a database marked as scratch",
                "pass --scratch if this database is a scratch copy; otherwise install HypoPG")
        self.backend: Backend = backend
        self.scratch = scratch
        self.whatif_calls = 0
        self.cache_hits = 0
        self.whatif_ms = 0.0
        self._timeout_ms = statement_timeout_ms
        self._cache: dict[tuple, _Costed | QueryNotCosted] = {}
        self._queries: dict[tuple, _Query | QueryNotCosted] = {}
        self._table_oids: dict[str, int] = {}
        self._sizes: dict[IndexCandidate, tuple[int, SizeEstimate]] = {}
        self._present: dict[IndexCandidate, _Index] = {}  # hypothetical now, or built in our transaction
        self._by_name: dict[str, IndexCandidate] = {}
        self._built = 0  # real backend: names advisor_whatif_<n>
        self._sessions = max(1, sessions) if backend == "hypopg" else 1  # see prefetch()
        self._helpers: list[WhatIf] | None = None
        self._owns_session = not isinstance(target, Session)
        self._session = Session(target, statement_timeout_ms=statement_timeout_ms) if self._owns_session else target
        self._dsn = self._session.dsn
        self._closed = False
        # The same EXPLAIN text runs under many configurations: never let psycopg prepare it server-side.
        self._session.conn.prepare_threshold = None
        self._btree_sizes = BtreeSizes(self._lookup, self._session.server_version_num, self._rows_kept)
        try:
            if backend == "hypopg":
                self._hypopg = self._check_hypopg()
            else:
                self._run("BEGIN")  # read-write: the indexes are built here; rolled back on close
        except BaseException:
            self._closed = True
            if self._owns_session:
                self._session.close()
            raise

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
            if not self._session.lost:
                if self.backend == "hypopg":
                    self.reset()
                else:
                    self._run("ROLLBACK")
        finally:
            if self._owns_session:
                self._session.close()

    def reset(self) -> None:
        """Forget every index we made (``hypopg_reset()``, or a new scratch transaction); costs stay cached."""
        if self.backend == "hypopg":
            self._run(f"SELECT {self._hypopg}.hypopg_reset()")
        else:
            self._run("ROLLBACK")
            self._run("BEGIN")
        self._present.clear()
        self._by_name.clear()

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
        misses: dict[tuple, tuple[AdvisedQuery, frozenset[IndexCandidate]]] = {}
        for query, config in pairs:
            try:
                info = self._query(query)
            except QueryNotCosted:
                continue
            key = (info.key, self._relevant(config, info.tables))
            if key not in self._cache:
                misses.setdefault(key, (query, config))
        if len(misses) < 2:
            return
        helpers = self._start_helpers()
        work = list(misses.values())
        shares = [work[i::len(helpers) + 1] for i in range(len(helpers) + 1)]
        with ThreadPoolExecutor(len(helpers)) as pool:
            running = [pool.submit(h._cost_all, share) for h, share in zip(helpers, shares[1:])]
            self._cost_all(shares[0])
            for helper, done in zip(helpers, running):
                if done.result():
                    self._adopt(helper)
                else:
                    helper.close()
                    self._helpers.remove(helper)

    def _start_helpers(self) -> list[WhatIf]:
        if self._helpers is None:
            self._helpers = []
            for _ in range(self._sessions - 1):
                try:
                    self._helpers.append(WhatIf(self._dsn, statement_timeout_ms=self._timeout_ms))
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
        """Take a helper's new answers and counts. Keys name queries and candidates, never
        session-local oids, so an answer from any session holds in every other."""
        self._cache.update(helper._cache)
        helper._cache.clear()
        self.whatif_calls += helper.whatif_calls
        self.whatif_ms += helper.whatif_ms
        helper.whatif_calls, helper.whatif_ms = 0, 0.0

    def rows_changed(self, query: AdvisedQuery) -> float:
        """The rows a data-changing statement writes, by the planner's estimate with today's indexes
        (0 for a read)."""
        return self._evaluate(query, frozenset()).rows_changed

    def size(self, candidate: IndexCandidate) -> int:
        """Estimated bytes, known as ``size_estimate`` says."""
        return self._size(candidate)[0]

    def size_estimate(self, candidate: IndexCandidate) -> SizeEstimate:
        """How ``size`` knows: "built" (the index built for real), "btree-model" (PostgreSQL's B-tree
        build, deduplication included, modelled from the table's statistics: size.py), else
        "hypopg" (HypoPG's estimate, which ignores deduplication)."""
        return self._size(candidate)[1]

    def _size(self, candidate: IndexCandidate) -> tuple[int, SizeEstimate]:
        if candidate not in self._sizes:
            index = self._make(candidate)  # the server's word on the candidate first
            if self.backend == "real":
                known = int(self._run(f"SELECT pg_relation_size({index.oid})").fetchone()[0]), "built"
            elif (modelled := self._btree_sizes.estimate(candidate, self._table_oid(candidate))) is not None:
                known = modelled, "btree-model"
            else:
                hypopg = self._run(f"SELECT {self._hypopg}.hypopg_relation_size({index.oid})").fetchone()[0]
                known = int(hypopg), "hypopg"
            self._sizes[candidate] = known
        return self._sizes[candidate]

    def _rows_kept(self, candidate: IndexCandidate) -> float | None:
        """The rows a partial index's predicate keeps, by the planner's estimate; None if it cannot say."""
        try:
            plan = self._session.explain(f"SELECT FROM {candidate.target} WHERE {candidate.where}",
                                         "plain", None, self._timeout_ms)
        except psycopg.Error as err:
            if self._session.lost:
                raise WhatIfUnavailable(self._session.describe(err, self._timeout_ms), "check the server") from None
            return None
        return float(plan["Plan"]["Plan Rows"])

    def verify(self, queries: Iterable[AdvisedQuery], candidates: Iterable[IndexCandidate], *,
               runs: int = 2) -> dict[str, dict]:
        """Measure before and after building ``candidates`` for real, in one transaction rolled back.

        Scratch databases only. HypoPG backend: on a connection of its own, where no
        hypothetical index exists. Real backend: in a savepoint of our own transaction
        (another session would wait on the locks it holds) that first drops the indexes
        built for costing. Every query is run ``runs`` times before and after (the
        fastest counts, so the "after" is not flattered by caches the "before"
        warmed); only reads get EXPLAIN ANALYZE,
        writes and generic plans only their costs (times None). Statistics are not
        refreshed between: the new indexes are planned with the table's statistics.
        Returns fingerprint -> {"before_ms", "after_ms", "cost_before", "cost_after"}
        (plus "error" for a query that could not be measured).
        """
        if not self.scratch:
            raise WhatIfUnavailable("--verify builds real indexes (rolled back) and runs only on a scratch database",
                                    "pass --scratch if this database is a scratch copy")
        infos: list[_Query | QueryNotCosted] = []
        for q in queries:
            try:
                infos.append(self._query(q))
            except QueryNotCosted as err:
                infos.append(err)
        results = {i.fingerprint: {"before_ms": None, "after_ms": None, "cost_before": None, "cost_after": None}
                   for i in infos}
        for i in infos:
            if isinstance(i, QueryNotCosted):
                results[i.fingerprint]["error"] = i.reason
        if self.backend == "real":
            session, begin, end = self._session, ("SAVEPOINT advisor_verify",), (
                "ROLLBACK TO SAVEPOINT advisor_verify", "RELEASE SAVEPOINT advisor_verify")
            if self._present:
                begin += ("DROP INDEX " + ", ".join(self._qualified(c) for c in self._present),)
        else:
            session, begin, end = Session(self._dsn, statement_timeout_ms=self._timeout_ms), ("BEGIN",), ("ROLLBACK",)
            session.conn.prepare_threshold = None
        try:
            for statement in begin:
                session.run(statement)
            for phase in ("before", "after"):
                if phase == "after":
                    for n, candidate in enumerate(candidates, 1):
                        self._build_in(session, candidate, f"advisor_verify_{n}")
                for info in infos:
                    if isinstance(info, _Query):
                        self._measure(session, info, phase, runs, results[info.fingerprint])
        finally:
            if not session.lost:
                for statement in end:
                    session.run(statement)
            if session is not self._session:
                session.close()
        return results

    # --- evaluation ----------------------------------------------------------------------

    def _evaluate(self, query: AdvisedQuery, config: Config) -> _Costed:
        info = self._query(query)
        relevant = self._relevant(config, info.tables)
        key = (info.key, relevant)
        if (hit := self._cache.get(key)) is not None:
            self.cache_hits += 1
            if isinstance(hit, QueryNotCosted):
                raise hit
            return hit
        started = time.perf_counter()
        try:
            plan = self._explain(info, relevant)
        except QueryNotCosted as err:
            self._cache[key] = err
            raise
        finally:
            self.whatif_calls += 1
            self.whatif_ms += (time.perf_counter() - started) * 1000
        if not info.checked:
            info.checked = True
            if info.tables is not None and not _relation_names(plan["Plan"]) <= info.relnames:
                # The plan reads a table we did not foresee: key this query on whole configurations.
                info.tables = None
                for stale in [k for k in self._cache if k[0] == info.key]:
                    del self._cache[stale]
                return self._evaluate(query, config)
        names = _index_names(plan["Plan"])
        result = _Costed(float(plan["Plan"]["Total Cost"]),
                         frozenset(self._by_name[n] for n in names if n in self._by_name),
                         _rows_changed(plan["Plan"]))
        self._cache[key] = result
        return result

    def _relevant(self, config: Config, tables: frozenset[int] | None) -> Config:
        if tables is None:
            return config
        return frozenset(c for c in config if self._table_oid(c) in tables)

    def _explain(self, info: _Query, want: Config) -> dict:
        """EXPLAIN (FORMAT JSON) with exactly ``want`` among our indexes on the query's tables."""
        on_tables = (lambda c: True) if info.tables is None else (lambda c: self._table_oid(c) in info.tables)
        unwanted = [c for c in self._present if c not in want and on_tables(c)]
        if self.backend == "hypopg":
            if unwanted:
                oids = ",".join(str(self._present[c].oid) for c in unwanted)
                self._run(f"SELECT count({self._hypopg}.hypopg_drop_index(o)) FROM unnest('{{{oids}}}'::oid[]) o")
                for c in unwanted:
                    del self._by_name[self._present.pop(c).name]
            for c in want:
                self._make(c)
            return self._explain_statement(info)
        for c in want:
            self._make(c)  # built at the top of the scratch transaction, once
        self._run("SAVEPOINT advisor_config")
        try:
            if unwanted:
                self._run("DROP INDEX " + ", ".join(self._qualified(c) for c in unwanted))
            self._run("SET LOCAL transaction_read_only = on")
            return self._explain_statement(info, begin="SAVEPOINT advisor_explain",
                                           end="ROLLBACK TO SAVEPOINT advisor_explain")
        finally:
            if not self._session.lost:
                self._run("ROLLBACK TO SAVEPOINT advisor_config")
                self._run("RELEASE SAVEPOINT advisor_config")

    def _explain_statement(self, info: _Query, **transaction: str) -> dict:
        try:
            return self._session.explain(info.sql, info.mode, info.values, self._timeout_ms, **transaction)
        except psycopg.Error as err:
            reason = self._session.describe(err, self._timeout_ms)
            if self._session.lost:
                raise WhatIfUnavailable(reason, "check the server; then run again") from None
            raise QueryNotCosted(info.fingerprint, reason) from None

    def _measure(self, session: Session, info: _Query, phase: str, runs: int, out: dict) -> None:
        mode = "analyze" if info.kind == "read" and info.mode != "generic" else info.mode
        best: dict | None = None
        session.run("SAVEPOINT advisor_measure")
        try:
            session.run("SET LOCAL transaction_read_only = on")  # the indexes are built; the queries only read
            for _ in range(runs if mode == "analyze" else 1):
                plan = session.explain(info.sql, mode, info.values, self._timeout_ms,
                                       begin="SAVEPOINT advisor_explain", end="ROLLBACK TO SAVEPOINT advisor_explain")
                if best is None or plan.get("Execution Time", 0) < best.get("Execution Time", 0):
                    best = plan
        except psycopg.Error as err:
            if session.lost:
                raise WhatIfUnavailable(session.describe(err, self._timeout_ms), "check the server") from None
            error = f"{phase}: {session.describe(err, self._timeout_ms)}"
            out["error"] = f"{out['error']}; {error}" if "error" in out else error
            return
        finally:
            if not session.lost:
                session.run("ROLLBACK TO SAVEPOINT advisor_measure")
                session.run("RELEASE SAVEPOINT advisor_measure")
        out[f"cost_{phase}"] = float(best["Plan"]["Total Cost"])
        if "Execution Time" in best:
            out[f"{phase}_ms"] = round(float(best["Execution Time"]), 3)

    # --- queries -----------------------------------------------------------------------

    def _query(self, query: AdvisedQuery) -> _Query:
        key = (query.fingerprint, query.sql, query.parameters)
        if (info := self._queries.get(key)) is None:
            try:
                info = self._prepare(query, key)
            except QueryNotCosted as err:
                info = err
            self._queries[key] = info
        if isinstance(info, QueryNotCosted):
            raise info
        return info

    def _prepare(self, query: AdvisedQuery, key: tuple) -> _Query:
        analysis = analyse(query.sql)
        kind = analysis.classification.kind
        if kind == "refused":
            raise QueryNotCosted(query.fingerprint, analysis.classification.reason or "refused")
        values = None
        if query.parameters is not None:
            try:
                values = parse_parameters(query.parameters)
            except ValueError as err:
                raise QueryNotCosted(query.fingerprint, f"could not read the logged parameters: {err}") from None
        mode = "generic" if values is None and analysis.has_parameters else "plain"
        tables, relnames = self._tables(query.sql)
        return _Query(key, query.fingerprint, query.sql, kind, mode, values, tables, relnames)

    def _tables(self, sql: str) -> tuple[frozenset[int] | None, frozenset[str]]:
        """The oids (and names) of the tables a statement can read, or None when we cannot tell."""
        try:
            tree = sqlglot.parse_one(sql, read="postgres")  # classify() has parsed it already
        except Exception:  # a trailing comment, …: key on whole configurations, always right
            return None, frozenset()
        names: set[str] = set()
        for table in tree.find_all(exp.Table):
            if isinstance(table.this, exp.Anonymous):  # a user's set-returning function may be inlined
                return None, frozenset()
            if not isinstance(table.this, exp.Identifier):  # generate_series(…) and other built-ins
                continue
            parts = {k: table.args[k].copy() for k in ("this", "db", "catalog") if table.args.get(k)}
            names.add(exp.Table(**parts).sql(dialect="postgres"))
        try:
            rows = self._lookup(_CLOSURE, [_pg_array(sorted(names))])
        except psycopg.Error:  # a name the server cannot take (a cross-database reference, …)
            return None, frozenset()
        return frozenset(int(oid) for oid, _ in rows), frozenset(name for _, name in rows)

    # --- indexes -----------------------------------------------------------------------

    def _table_oid(self, candidate: IndexCandidate) -> int:
        if (oid := self._table_oids.get(candidate.table)) is None:
            schema, _, name = candidate.table.rpartition(".")
            text = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
            try:
                oid = self._lookup("SELECT to_regclass($1)::oid::int8", [text])[0][0]
            except psycopg.Error as err:
                raise self._rejected(candidate, err) from None
            if oid is None:
                raise CandidateRejected(candidate, f"table {candidate.table} does not exist")
            self._table_oids[candidate.table] = oid = int(oid)
        return oid

    def _make(self, candidate: IndexCandidate) -> _Index:
        """The candidate's index, created if it is not there now."""
        if (index := self._present.get(candidate)) is not None:
            return index
        self._table_oid(candidate)  # an unknown table is rejected here, in words
        if self.backend == "hypopg":
            try:
                row = self._run(f"SELECT indexrelid::int8, indexname FROM {self._hypopg}.hypopg_create_index($1)",
                                [f"CREATE INDEX {candidate.definition()}"]).fetchone()
            except psycopg.Error as err:
                raise self._rejected(candidate, err) from None
            if row is None:
                raise CandidateRejected(candidate, "HypoPG did not create it")
            index = _Index(int(row[0]), row[1])
        else:
            self._built += 1
            index = self._build_in(self._session, candidate, f"advisor_whatif_{self._built}")
        self._present[candidate] = index
        self._by_name[index.name] = candidate
        return index

    def _build_in(self, session: Session, candidate: IndexCandidate, name: str) -> _Index:
        """CREATE INDEX in ``session``'s open transaction; a failure leaves the transaction usable."""
        session.run("SAVEPOINT advisor_build")
        try:
            # The extended protocol runs one command only, whatever the candidate's text holds.
            session.run(f"CREATE INDEX {quote_ident(name)} {candidate.definition()}")
            oid = session.run("SELECT c.oid::int8 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                              "WHERE i.indrelid = $1 AND c.relname = $2",
                              [str(self._table_oid(candidate)), name]).fetchone()[0]
        except psycopg.Error as err:
            if not session.lost:
                session.run("ROLLBACK TO SAVEPOINT advisor_build")
                session.run("RELEASE SAVEPOINT advisor_build")
            raise self._rejected(candidate, err, session) from None
        session.run("RELEASE SAVEPOINT advisor_build")
        return _Index(int(oid), name)

    def _rejected(self, candidate: IndexCandidate, err: psycopg.Error,
                  session: Session | None = None) -> AdvisorError:
        session = session or self._session
        reason = session.describe(err, self._timeout_ms)
        if session.lost:
            return WhatIfUnavailable(reason, "check the server; then run again")
        return CandidateRejected(candidate, reason)

    def _qualified(self, candidate: IndexCandidate) -> str:
        """A built index's name, in its table's schema."""
        schema = candidate.table.rpartition(".")[0]
        name = quote_ident(self._present[candidate].name)
        return f"{quote_ident(schema)}.{name}" if schema else name

    # --- the server --------------------------------------------------------------------

    def _run(self, text: str, params: list | None = None) -> psycopg.RawCursor:
        try:
            return self._session.run(text, params)
        except psycopg.Error as err:
            if self._session.lost:
                raise WhatIfUnavailable(f"connection lost: {self._session.describe(err, self._timeout_ms)}",
                                        "check the server; then run again") from None
            raise

    def _lookup(self, text: str, params: list) -> list[tuple]:
        """A catalog query whose failure must not abort the scratch transaction."""
        if self.backend == "hypopg":
            return self._run(text, params).fetchall()
        self._run("SAVEPOINT advisor_lookup")
        try:
            rows = self._run(text, params).fetchall()
        except psycopg.Error:
            self._run("ROLLBACK TO SAVEPOINT advisor_lookup")
            self._run("RELEASE SAVEPOINT advisor_lookup")
            raise
        self._run("RELEASE SAVEPOINT advisor_lookup")
        return rows

    def _check_hypopg(self) -> str:
        """The extension's schema, quoted for use; or WhatIfUnavailable saying what to do."""
        hypopg = self._session.extension("hypopg")
        created = hypopg.schema_sql
        if created is None:
            raise hypopg_missing(hypopg.available, self._session.server_version_num, hypopg.database)
        try:
            self._run(f"SELECT count(*) FROM {created}.hypopg()")  # the library loads
        except psycopg.Error as err:
            raise WhatIfUnavailable(f"the hypopg extension does not load: {str(err).strip().splitlines()[0]}",
                                    f"reinstall postgresql-{_major(self._session.server_version_num)}-hypopg "
                                    f"on the server; {_SCRATCH_FIX}") from None
        return created


def hypopg_missing(available: bool, server_version_num: int, database: str) -> WhatIfUnavailable:
    """The error for a database without HypoPG: the package is missing, or the extension is not created."""
    major = _major(server_version_num)
    create = f'CREATE EXTENSION hypopg; in database "{database}"'
    if not available:
        return WhatIfUnavailable(
            f"HypoPG is not installed on the database server (PostgreSQL {major})",
            f"install it on the server: apt-get install postgresql-{major}-hypopg, then run {create}; {_SCRATCH_FIX}")
    return WhatIfUnavailable(
        f'the hypopg extension is installed on the server but not created in database "{database}"',
        f"run {create} (as its owner or a superuser); {_SCRATCH_FIX}")


def _major(server_version_num: int) -> int:
    return server_version_num // 10000


def _pg_array(items: list[str]) -> str:
    """A text[] literal (bound as a parameter, never spliced into SQL)."""
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"


def _walk(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from _walk(child)


def _rows_changed(plan: dict) -> float:
    """Rows entering the ModifyTable nodes (at the root, or in a data-changing CTE)."""
    return sum(float(node["Plans"][0]["Plan Rows"]) for node in _walk(plan)
               if node["Node Type"] == "ModifyTable" and node.get("Plans"))


def _index_names(plan: dict) -> set[str]:
    return {n["Index Name"] for n in _walk(plan) if "Index Name" in n}


def _relation_names(plan: dict) -> set[str]:
    return {n["Relation Name"] for n in _walk(plan) if "Relation Name" in n}
