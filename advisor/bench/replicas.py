"""`advisor bench replicas`: read-replica routing on this primary and its streaming replicas, measured.

Every *arm* routes one mixed workload through an ``advisor.routing.ReplicaRouter``:

``primary_only``          a router without replicas: every read and write on the primary
``round_robin``           reads spread over the replicas in turn, no lag check (probe failures still eject)
``least_busy``            reads to the replica with the fewest requests in flight, no lag check
``lag_aware``             round robin over replicas within ``--max-lag-ms`` / ``--max-lag-bytes``
``lag_aware_rwy_lsn``     the same with read-your-writes "lsn" (wait for the replay of the session's commit)
``lag_aware_rwy_window``  the same with read-your-writes "window" (the primary for 2 s after a session's write)

Workload: a table ``kv(id, v)`` of 1,000 rows in a temporary schema
``advisor_bench_<random>`` on the primary (replicated; dropped at the end
whatever happens). ``--concurrency`` threads each send requests for
``--duration`` seconds: with probability ``--read-ratio`` a read by a random
key; else a write (an INSERT of a new row or an UPDATE of one of the thread's
own rows, with a random token) followed at once by a read-back of that row
through the router, on the same session key (the thread). A read-back that does
not return the token is a *stale read*. One request is one read, or one write
with its read-back.

Lag: a sampler with its own connections reads every replica's lag (bytes and ms,
as the router computes it) every 200 ms over the whole run.

Failure drill (``--drill``; always with ``--local-replicas``, never on servers
we did not start): a lag-aware router serves reads while the last replica's
postmaster gets SIGINT (fast shutdown): failed reads, and the time until the
router ejects it; then the replica is started again: the time until re-admission
and until it serves a read again.

JSON document (``schema_version`` 1; built by ``advisor.report.bench``)::

    schema_version, kind ("bench_replicas"), tool_version
    primary, replicas[]   DSNs, passwords masked
    host_cores            cores this process may use; with local servers the client, the primary
                          and every replica share them (figures never extrapolate to scale-out)
    settings              {read_ratio, concurrency, duration_s, max_lag_ms, max_lag_bytes, probe_interval_s, local}
    arms[]                name, policy, lag_check, read_your_writes ("lsn" | "window" | null), requests,
                          elapsed_s, ops_per_s, p50_ms, p95_ms, p99_ms, max_ms, reads, writes, stale_reads,
                          failed_requests, replica_reads, primary_reads (the router's counts), fallbacks,
                          ejections, note,
                          answered_by_replicas, answered_by_primary   reads (read-backs too) as the answering
                                            server's pg_is_in_recovery() said: where they really went
                          replica_share     answered_by_replicas / all answered (null without reads)
                          reads_by_server   {DSN: reads the router sent there}
                          fallback_reasons  {no_healthy_replica | replica_error | read_your_writes_window |
                                             read_your_writes_lsn_timeout: count}
                          replica_problems  {DSN: why the router did not use it (first reason seen in the arm)}
    lag                   {interval_ms, arms: [{name, start_s, end_s}],
                           replicas: [{dsn, samples: [[t_s, lag_bytes, lag_ms], …]}]}  (null values: probe failed)
    drill                 null, or {replica, stopped_at_s, ejected_after_s, failed_reads, failed_reads_after_ejection (while down), failed_reads_after_restart,
                          reads_on_stopped_after_ejection, restarted, readmitted_after_s, first_read_after_restart_s,
                          reads, note}
    verdict               {summary: [sentences], compared: [arms ranked as replica routing: replicas answered
                          at least half their reads], placement: {arm: where its reads went, in words}}
    notes[]
"""

from __future__ import annotations

import contextlib
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql as pg_sql

from advisor.bench.load import (
    APPLICATION_NAME,
    Step,
    TaggedCursor,
    add_options,
    bench_connect,
    conninfo_params,
    create_schema,
    drop_schema,
    host_cores,
    new_schema_name,
    run_phase,
    scrubber,
)
from advisor.bench.quiet import quiet_dsn, quiet_session
from advisor.bench.replicas_drill import run_drill
from advisor.bench.replicas_model import ARMS, ROWS, ReplicaArm, ReplicaBenchConfig, ReplicaBenchResult
from advisor.bench.replicas_verdict import replica_verdict
from advisor.db.connect import TAG, redact_dsn
from advisor.errors import AdvisorError
from advisor.routing import Policy, ReadYourWrites, ReplicaRouter, probe_replica

__all__ = ["ARMS", "ReplicaArm", "ReplicaBenchConfig", "ReplicaBenchResult", "run_replica_bench"]

LAG_SAMPLE_S = 0.2
WINDOW_S = 2.0
LSN_WAIT_S = 1.0
MAX_SAMPLES = 3_000  # per replica; older samples are thinned beyond this


# --- the lag sampler ---------------------------------------------------------------------------


class _LagSampler:
    """Every replica's lag, from its own connections, every LAG_SAMPLE_S."""

    def __init__(self, primary: str, replicas: list[str], t0: float) -> None:
        self.primary, self.replicas, self.t0 = primary, replicas, t0
        self.samples: list[list[list]] = [[] for _ in replicas]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="advisor-bench-lag")

    def _connect(self, dsn: str):
        params = dict(add_options(conninfo_params(dsn), "-c statement_timeout=1000"),
                      application_name=f"{APPLICATION_NAME}_lag", connect_timeout="2")
        return bench_connect(pg_conninfo.make_conninfo("", **params))

    def _run(self) -> None:
        conns: list = [None] * len(self.replicas)
        pconn = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if pconn is None or pconn.closed:
                    pconn = self._connect(self.primary)
            except psycopg.Error:
                pconn = None
            for i, dsn in enumerate(self.replicas):
                t = round(time.monotonic() - self.t0, 3)
                try:
                    if conns[i] is None or conns[i].closed:
                        conns[i] = self._connect(dsn)
                    p = probe_replica(conns[i], pconn)
                    self.samples[i].append([t, p.lag_bytes, None if p.lag_ms is None else round(p.lag_ms, 1)])
                except psycopg.Error:
                    with contextlib.suppress(Exception):
                        conns[i].close()
                    conns[i] = None
                    self.samples[i].append([t, None, None])
            self._stop.wait(max(0.0, LAG_SAMPLE_S - (time.monotonic() - started)))
        for c in [pconn, *conns]:
            with contextlib.suppress(Exception):
                if c is not None:
                    c.close()

    def __enter__(self) -> _LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _thin(samples: list[list]) -> list[list]:
    if len(samples) <= MAX_SAMPLES:
        return samples
    step = len(samples) / MAX_SAMPLES
    return [samples[int(i * step)] for i in range(MAX_SAMPLES)]


# --- the workload ---------------------------------------------------------------------------------


class _Workload:
    """One arm's requests: reads by key, writes with an immediate read-back through the router.

    Every read also returns ``pg_is_in_recovery()`` of the server that answered it: where the reads really
    went, whatever the router believes."""

    def __init__(self, router: ReplicaRouter, schema: str, read_ratio: float, concurrency: int) -> None:
        self.router = router
        table = pg_sql.SQL("{}.kv").format(pg_sql.Identifier(schema))
        self.select = (pg_sql.SQL(TAG) + pg_sql.SQL("SELECT v, pg_is_in_recovery() FROM {} WHERE id = %s")
                       .format(table)).as_string(None)
        self.insert = (pg_sql.SQL(TAG) + pg_sql.SQL("INSERT INTO {} (id, v) VALUES (%s, %s)").format(table)).as_string(None)
        self.update = (pg_sql.SQL(TAG) + pg_sql.SQL("UPDATE {} SET v = %s WHERE id = %s").format(table)).as_string(None)
        self.read_ratio = read_ratio
        self.concurrency = concurrency
        self._ids = itertools.count(10_000_000 + secrets.randbelow(1_000_000) * 1_000)
        self._workers = itertools.count()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.reads = self.writes = self.stale = 0
        self.answered = {True: 0, False: 0}  # reads (read-backs too) answered by a standby / by the primary

    def _worker(self) -> int:
        if not hasattr(self._local, "id"):
            self._local.id = next(self._workers)
        return self._local.id

    def request(self, rng: random.Random) -> None:
        wid = self._worker()
        if rng.random() < self.read_ratio:
            with self.router.read(session=wid) as conn:
                _, standby = _one_row(conn.execute(self.select, (rng.randint(1, ROWS),)).fetchone())
            with self._lock:
                self.reads += 1
                self.answered[standby] += 1
            return
        token = rng.getrandbits(62)
        with self.router.write(session=wid) as conn:
            if rng.random() < 0.5:
                key = next(self._ids)
                conn.execute(self.insert, (key, token))
            else:  # a row only this worker updates, so the read-back has one right answer
                key = wid % self.concurrency + 1 + self.concurrency * rng.randrange(max(1, ROWS // self.concurrency))
                key = min(key, ROWS)
                conn.execute(self.update, (token, key))
        with self.router.read(session=wid) as conn:
            row = conn.execute(self.select, (key,)).fetchone()
            standby = _fetch_one(conn, TAG + "SELECT pg_is_in_recovery()") if row is None else row[1]
        with self._lock:
            self.writes += 1
            self.answered[standby] += 1
            if row is None or row[0] != token:
                self.stale += 1


def _router(cfg: ReplicaBenchConfig, primary: str, replicas: list[str], policy: Policy, lag_check: bool,
            rwy: ReadYourWrites) -> ReplicaRouter:
    return ReplicaRouter(
        primary, replicas, policy=policy, read_your_writes=rwy, window_s=WINDOW_S, wait_s=LSN_WAIT_S,
        max_lag_ms=cfg.max_lag_ms if lag_check else None, max_lag_bytes=cfg.max_lag_bytes if lag_check else None,
        probe_interval_s=cfg.probe_interval_s, probe_timeout_s=1.0, pool_min_size=1,
        pool_max_size=max(2, cfg.concurrency + 1), checkout_timeout_s=10.0, application_name=APPLICATION_NAME,
        # autocommit: the router's commit and rollback become no-ops, so no untagged BEGIN/COMMIT is sent
        # (every request is one statement); the cursor tags what the router does not
        connect_kwargs={"autocommit": True, "cursor_factory": TaggedCursor},
    )  # fmt: skip


def _run_arm(cfg: ReplicaBenchConfig, spec: tuple[str, Policy, bool, ReadYourWrites], primary: str, replicas: list[str], schema: str,
             scrub: Callable[[str], str], shown: dict[str, str]) -> ReplicaArm:
    name, policy, lag_check, rwy = spec
    nodes = [] if name == "primary_only" else replicas
    router = _router(cfg, primary, nodes, policy, lag_check, rwy)
    try:
        ready = router.wait_ready(timeout_s=10.0)
        problems = _problems(router, {})
        workload = _Workload(router, schema, cfg.read_ratio, cfg.concurrency)
        phase = run_phase(workload.request, cfg.concurrency, cfg.duration_s, None, lambda rng: rng, 15.0)
        stats = router.stats()
        problems = _problems(router, problems)
    finally:
        router.close()
    notes = []
    if nodes and not ready:
        notes.append("not every replica was healthy when the arm began")
    if phase.first_error:
        notes.append(f"first failure: {phase.first_error}")
    if phase.stuck:
        notes.append(f"{phase.stuck} thread(s) still busy when the arm ended")
    return ReplicaArm(
        name=name, policy=policy if nodes else "primary", lag_check=lag_check, read_your_writes=rwy,
        **phase.figures(), reads=workload.reads,
        writes=workload.writes, stale_reads=workload.stale, failed_requests=phase.errors + phase.timeouts,
        replica_reads=stats["replica_reads"], primary_reads=stats["primary_reads"], fallbacks=stats["fallbacks"],
        ejections=stats["ejections"], note=scrub("; ".join(notes)) if notes else None,
        answered_by_replicas=workload.answered[True], answered_by_primary=workload.answered[False],
        reads_by_server={shown.get(d, d): n for d, n in stats["reads"].items()},
        fallback_reasons=stats["fallback_reasons"],
        replica_problems={shown.get(d, d): scrub(r) for d, r in problems.items()},
    )


def _problems(router: ReplicaRouter, seen: dict[str, str]) -> dict[str, str]:
    """``seen`` plus, for each replica the router does not use now and had no reason for yet, the reason."""
    return seen | {r.dsn: r.reason for r in router.replicas() if not r.healthy and r.reason and r.dsn not in seen}


# --- the run ------------------------------------------------------------------------------------------


def _check(cfg: ReplicaBenchConfig) -> None:
    if cfg.local_replicas and (cfg.primary_dsn or cfg.replica_dsns):
        raise AdvisorError("--local-replicas starts its own servers", "give either --local-replicas N or --primary/--replica")
    if not cfg.local_replicas and not (cfg.primary_dsn and cfg.replica_dsns):
        raise AdvisorError("no servers to measure", "give --primary DSN and --replica DSN (repeatable), or --local-replicas N")
    if not 0 <= cfg.local_replicas <= 8:
        raise AdvisorError("--local-replicas must be between 1 and 8", "for example --local-replicas 2")
    if not 0.0 <= cfg.read_ratio <= 1.0:
        raise AdvisorError(f"--read-ratio must be between 0 and 1, not {cfg.read_ratio}", "for example --read-ratio 0.9")
    if not 1 <= cfg.concurrency <= 256:
        raise AdvisorError("--concurrency must be between 1 and 256", "for example --concurrency 4")
    if not 0 < cfg.duration_s <= 3600:
        raise AdvisorError("--duration must be in (0, 3600] seconds", "for example --duration 5")
    unknown = [a for a in cfg.arms if a not in {s[0] for s in ARMS}]
    if unknown:
        raise AdvisorError(f"unknown arm(s): {', '.join(unknown)}", f"arms: {', '.join(s[0] for s in ARMS)}")


def _with_sync_commit(dsn: str) -> str:
    return pg_conninfo.make_conninfo("", **add_options(conninfo_params(dsn), "-c synchronous_commit=on"))


def run_replica_bench(cfg: ReplicaBenchConfig, step: Step | None = None, warn: Step | None = None) -> ReplicaBenchResult:
    """Measure every arm (and the drill); local servers are stopped and the schema dropped before returning.
    ``warn`` (else ``step``) hears, before the first arm, when this role may not turn statement logging off."""
    step = step or (lambda text: None)
    warn = warn or step
    _check(cfg)
    notes: list[str] = []
    cluster = None
    replica_clusters: list = []
    try:
        if cfg.local_replicas:
            from advisor.db.embedded import EmbeddedCluster

            step(f"starting a throwaway primary with {cfg.local_replicas} streaming replica(s)")
            cluster = EmbeddedCluster().start()
            replica_clusters = [cluster.add_replica() for _ in range(cfg.local_replicas)]
            # The embedded cluster commits asynchronously; applications usually do not, and
            # read-your-writes by LSN would otherwise wait for the WAL writer (up to 200 ms).
            primary = _with_sync_commit(cluster.dsn())
            replicas = [r.dsn() for r in replica_clusters]
            notes.append("local servers: the primary's sessions use synchronous_commit=on (the throwaway "
                         "cluster's default is off)")
        else:
            assert cfg.primary_dsn is not None  # _check refused a run without one
            primary, replicas = cfg.primary_dsn, list(cfg.replica_dsns)
        return _measure(cfg, primary, replicas, replica_clusters, notes, step, warn)
    finally:
        if cluster is not None:
            step("stopping the local servers")
            cluster.stop()


def _measure(cfg: ReplicaBenchConfig, primary: str, replicas: list[str], replica_clusters: list,
             notes: list[str], step: Step, warn: Step) -> ReplicaBenchResult:
    scrub = scrubber(primary, *replicas)
    # Sessions use pq/rq: the DSNs with statement logging off where the role may (the same role has the same
    # rights on a standby); what is shown keeps the DSNs as given.
    conn, pq, logging = quiet_session(primary, notes)
    rq = [quiet_dsn(d, logging) for d in replicas]
    shown = dict(zip(map(redact_dsn, [pq, *rq]), map(redact_dsn, [primary, *replicas])))
    if logging.left_on:
        which = "every statement" if logging.logs_all else f"each statement slower than {logging.threshold_ms:,} ms"
        notes.append(f"statement logging stays on for this role's sessions ({logging.describe()}): the servers log "
                     f"{which} of the run (thousands a second); to avoid it run as a superuser or "
                     f"{logging.grant()} (PostgreSQL 15+)")
        warn(notes[-1])
    schema = new_schema_name()
    on_primary = False  # the schema is dropped in the end only where it may have been created
    t0 = time.monotonic()
    arms: list[ReplicaArm] = []
    spans: list[dict] = []
    drill = None
    try:
        with conn:
            if _fetch_one(conn, "SELECT pg_is_in_recovery()"):
                raise AdvisorError("--primary is a standby (pg_is_in_recovery() is true)", "give the primary's DSN")
            on_primary = True
            step(f"creating {schema}.kv ({ROWS:,} rows) on the primary")
            _create_table(conn, schema)
        _wait_replicated(pq, rq, schema)
        with _LagSampler(pq, rq, t0) as sampler:
            for spec in ARMS:
                if spec[0] not in cfg.arms:
                    continue
                step(f"arm {spec[0]}")
                start = time.monotonic() - t0
                arms.append(_run_arm(cfg, spec, pq, rq, schema, scrub, shown))
                spans.append({"name": spec[0], "start_s": round(start, 3), "end_s": round(time.monotonic() - t0, 3)})
            if cfg.drill or cfg.local_replicas:
                if not replica_clusters:
                    notes.append("the failure drill runs only on servers it started (--local-replicas): "
                                 "it never stops a server it did not start")
                else:
                    start = time.monotonic() - t0
                    router = _router(cfg, pq, rq, "round_robin", True, None)
                    drill = run_drill(router, rq, replica_clusters[-1], schema, cfg.concurrency, t0, step) | {
                        "replica": redact_dsn(replicas[-1])}
                    spans.append({"name": "drill", "start_s": round(start, 3), "end_s": round(time.monotonic() - t0, 3)})
                    if drill.get("note"):
                        notes.append("drill: " + drill["note"])
    finally:
        if on_primary:
            step(f"dropping {schema}")
            if (failed := drop_schema(pq, schema)) is not None:
                notes.append(failed)
    lag = {"interval_ms": int(LAG_SAMPLE_S * 1000), "arms": spans,
           "replicas": [{"dsn": redact_dsn(d), "samples": _thin(s)} for d, s in zip(replicas, sampler.samples)]}
    return _result(cfg, primary, replicas, bool(replica_clusters), arms, lag, drill, notes)


def _one_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row a statement that always returns one returned (keys 1..ROWS always exist)."""
    assert row is not None
    return row


def _fetch_one(conn: psycopg.Connection, query: str, params: tuple | None = None) -> Any:
    """The first column of the one row ``query`` returns."""
    return _one_row(conn.execute(query, params).fetchone())[0]


def _create_table(conn: psycopg.Connection, schema: str) -> None:
    s = pg_sql.Identifier(schema)
    create_schema(conn, schema,
                  pg_sql.SQL("CREATE TABLE {}.kv (id bigint PRIMARY KEY, v bigint NOT NULL)").format(s),
                  pg_sql.SQL("INSERT INTO {}.kv SELECT g, g FROM generate_series(1, {}) g")
                  .format(s, pg_sql.Literal(ROWS)))


def _result(cfg: ReplicaBenchConfig, primary: str, replicas: list[str], local: bool, arms: list[ReplicaArm],
            lag: dict, drill: dict | None, notes: list[str]) -> ReplicaBenchResult:
    """The result, with the notes every run gets: the host's cores, what a stale read is."""
    cores = host_cores()
    if local:
        notes.append(f"the client, the primary and {len(replicas)} replica(s) all ran on this host and shared its "
                     f"{cores} core(s): replicas add no CPU here, so these figures say nothing about scale-out")
    else:
        notes.append(f"the client ran on {cores} core(s); the servers' cores are unknown: figures hold for this "
                     "setup only and are not extrapolated to more replicas")
    notes.append("stale_reads: a write's read-back through the router (same session key) that missed the write; "
                 "read-your-writes 'lsn' and 'window' exist to make it zero")
    return ReplicaBenchResult(
        primary=redact_dsn(primary), replicas=tuple(redact_dsn(d) for d in replicas), host_cores=cores,
        settings={"read_ratio": cfg.read_ratio, "concurrency": cfg.concurrency, "duration_s": cfg.duration_s,
                  "max_lag_ms": cfg.max_lag_ms, "max_lag_bytes": cfg.max_lag_bytes,
                  "probe_interval_s": cfg.probe_interval_s, "local": local,
                  "window_s": WINDOW_S, "lsn_wait_s": LSN_WAIT_S},
        arms=tuple(arms), lag=lag, drill=drill, verdict=replica_verdict(arms, drill),
        notes=tuple(map(scrubber(primary, *replicas), notes)),
    )


def _wait_replicated(primary: str, replicas: list[str], schema: str, timeout: float = 30.0) -> None:
    """Every replica sees the table before the arms start (a poll with a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    for dsn in replicas:
        info = pg_conninfo.make_conninfo(dsn, application_name=APPLICATION_NAME, connect_timeout="5")
        with contextlib.suppress(psycopg.Error), bench_connect(info) as conn:
            while time.monotonic() < deadline:
                if _fetch_one(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.kv",)):
                    break
                time.sleep(0.02)
