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

JSON document (``schema_version`` 1)::

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
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql as pg_sql

from advisor import __version__
from advisor.bench.load import (
    APPLICATION_NAME,
    ERROR_BACKOFF_S,
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
from advisor.db.connect import TAG, redact_dsn
from advisor.errors import AdvisorError
from advisor.routing import ReplicaRouter, probe_replica

__all__ = ["ARMS", "SCHEMA_VERSION", "ReplicaArm", "ReplicaBenchConfig", "ReplicaBenchResult",
           "replica_bench_document", "replica_bench_text", "run_replica_bench"]

SCHEMA_VERSION = 1
ROWS = 1_000
LAG_SAMPLE_S = 0.2
WINDOW_S = 2.0
LSN_WAIT_S = 1.0
MAX_SAMPLES = 3_000  # per replica; older samples are thinned beyond this
# name, policy, lag check, read-your-writes
ARMS: tuple[tuple[str, str, bool, str | None], ...] = (
    ("primary_only", "round_robin", False, None),
    ("round_robin", "round_robin", False, None),
    ("least_busy", "least_busy", False, None),
    ("lag_aware", "round_robin", True, None),
    ("lag_aware_rwy_lsn", "round_robin", True, "lsn"),
    ("lag_aware_rwy_window", "round_robin", True, "window"),
)


@dataclass(frozen=True, slots=True)
class ReplicaBenchConfig:
    primary_dsn: str | None = None
    replica_dsns: tuple[str, ...] = ()
    local_replicas: int = 0  # > 0: start a throwaway primary with this many replicas
    read_ratio: float = 0.9
    concurrency: int = 4
    duration_s: float = 5.0
    max_lag_ms: float = 1000.0
    max_lag_bytes: int = 16 << 20
    probe_interval_s: float = 0.25
    drill: bool = False
    arms: tuple[str, ...] = tuple(a[0] for a in ARMS)


@dataclass(frozen=True, slots=True)
class ReplicaArm:
    name: str
    policy: str
    lag_check: bool
    read_your_writes: str | None
    requests: int
    elapsed_s: float
    ops_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    reads: int
    writes: int
    stale_reads: int
    failed_requests: int
    replica_reads: int
    primary_reads: int
    fallbacks: int
    ejections: int
    note: str | None = None
    answered_by_replicas: int = 0  # reads (read-backs too) whose server said pg_is_in_recovery()
    answered_by_primary: int = 0
    reads_by_server: dict = field(default_factory=dict)  # redacted DSN -> reads the router sent there
    fallback_reasons: dict = field(default_factory=dict)  # why reads went to the primary -> count
    replica_problems: dict = field(default_factory=dict)  # redacted DSN -> why it was not used (first seen)

    @property
    def replica_share(self) -> float | None:
        """The share of reads a replica answered, as measured on the server; None without reads."""
        answered = self.answered_by_replicas + self.answered_by_primary
        return self.answered_by_replicas / answered if answered else None


@dataclass(frozen=True, slots=True)
class ReplicaBenchResult:
    primary: str
    replicas: tuple[str, ...]
    host_cores: int
    settings: dict
    arms: tuple[ReplicaArm, ...]
    lag: dict
    drill: dict | None
    verdict: dict
    notes: tuple[str, ...] = field(default_factory=tuple)


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
                _, standby = conn.execute(self.select, (rng.randint(1, ROWS),)).fetchone()
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
            standby = conn.execute(TAG + "SELECT pg_is_in_recovery()").fetchone()[0] if row is None else row[1]
        with self._lock:
            self.writes += 1
            self.answered[standby] += 1
            if row is None or row[0] != token:
                self.stale += 1


def _router(cfg: ReplicaBenchConfig, primary: str, replicas: list[str], policy: str, lag_check: bool,
            rwy: str | None) -> ReplicaRouter:
    return ReplicaRouter(
        primary, replicas, policy=policy, read_your_writes=rwy, window_s=WINDOW_S, wait_s=LSN_WAIT_S,
        max_lag_ms=cfg.max_lag_ms if lag_check else None, max_lag_bytes=cfg.max_lag_bytes if lag_check else None,
        probe_interval_s=cfg.probe_interval_s, probe_timeout_s=1.0, pool_min_size=1,
        pool_max_size=max(2, cfg.concurrency + 1), checkout_timeout_s=10.0, application_name=APPLICATION_NAME,
        # autocommit: the router's commit and rollback become no-ops, so no untagged BEGIN/COMMIT is sent
        # (every request is one statement); the cursor tags what the router does not
        connect_kwargs={"autocommit": True, "cursor_factory": TaggedCursor},
    )  # fmt: skip


def _run_arm(cfg: ReplicaBenchConfig, spec: tuple, primary: str, replicas: list[str], schema: str,
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


# --- the failure drill ------------------------------------------------------------------------------


def _drill(cfg: ReplicaBenchConfig, primary: str, replicas: list[str], victim, schema: str, t0: float,
           step: Step) -> dict:
    """Stop the last replica's postmaster under load, then start it again; times relative to the run start."""
    index = len(replicas) - 1
    port = victim.port
    router = _router(cfg, primary, replicas, "round_robin", True, None)
    table = pg_sql.SQL("{}.kv").format(pg_sql.Identifier(schema))
    query = (pg_sql.SQL(TAG) + pg_sql.SQL("SELECT v, inet_server_port() FROM {} WHERE id = %s").format(table)).as_string(None)
    log: list[tuple[float, int | None, bool]] = []  # (monotonic, port, ok)
    lock = threading.Lock()
    stop = threading.Event()

    def reader(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            began = time.monotonic()  # a read counts at the time it was routed, not when it failed
            try:
                with router.read() as conn:
                    row = conn.execute(query, (rng.randint(1, ROWS),)).fetchone()
                entry = (began, row[1] if row else None, True)
            except Exception:
                entry = (began, None, False)
                time.sleep(ERROR_BACKOFF_S)
            with lock:
                log.append(entry)

    def poll(predicate, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic()
            time.sleep(0.01)
        return None

    out: dict = {"replica": redact_dsn(replicas[index]), "stopped_at_s": None, "ejected_after_s": None,
                 "failed_reads": 0, "failed_reads_after_ejection": 0, "failed_reads_after_restart": 0,
                 "reads_on_stopped_after_ejection": 0,
                 "restarted": False, "readmitted_after_s": None, "first_read_after_restart_s": None,
                 "reads": 0, "note": None}
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(cfg.concurrency)]
    t_restart = None
    try:
        router.wait_ready(timeout_s=10.0)
        for t in threads:
            t.start()
        time.sleep(0.5)  # a steady state before the failure (the measured part is polled, not slept)
        step(f"drill: stopping replica on port {port}")
        t_stop = time.monotonic()
        victim.halt()
        out["stopped_at_s"] = round(t_stop - t0, 3)
        t_eject = poll(lambda: not router.replicas()[index].healthy, 20.0)
        if t_eject is not None:
            out["ejected_after_s"] = round(t_eject - t_stop, 3)
        time.sleep(0.5)  # reads after the ejection: must all go elsewhere
        step(f"drill: starting replica on port {port} again")
        t_start = t_restart = time.monotonic()
        try:
            victim.resume()
            out["restarted"] = True
        except Exception as err:
            out["note"] = f"could not restart the replica: {(str(err).splitlines() or [''])[0]}"
        if out["restarted"]:
            t_in = poll(lambda: router.replicas()[index].healthy, 30.0)
            if t_in is not None:
                out["readmitted_after_s"] = round(t_in - t_start, 3)
                t_read = poll(lambda: any(p == port and ts > t_start for ts, p, ok in list(log)), 10.0)
                if t_read is not None:
                    out["first_read_after_restart_s"] = round(t_read - t_start, 3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        router.close()
    with lock:
        entries = list(log)
    out["reads"] = len(entries)
    t_stop = t0 + (out["stopped_at_s"] or 0.0)
    t_eject = t_stop + out["ejected_after_s"] if out["ejected_after_s"] is not None else None
    out["failed_reads"] = sum(1 for ts, _, ok in entries if not ok and ts >= t_stop)
    if t_eject is not None:
        # While the replica is down and ejected: the window the router must route around it.
        # Reads during its restart are a separate matter (failed_reads_after_restart).
        until = t_restart if t_restart is not None else float("inf")
        out["failed_reads_after_ejection"] = sum(1 for ts, _, ok in entries if not ok and t_eject < ts < until)
        out["failed_reads_after_restart"] = sum(1 for ts, _, ok in entries if not ok and ts >= until)
        out["reads_on_stopped_after_ejection"] = sum(1 for ts, p, ok in entries if ok and p == port and t_eject < ts < until)
    return out


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
    t0 = time.monotonic()
    arms: list[ReplicaArm] = []
    spans: list[dict] = []
    drill = None
    try:
        with conn:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                schema = None
                raise AdvisorError("--primary is a standby (pg_is_in_recovery() is true)", "give the primary's DSN")
            step(f"creating {schema}.kv ({ROWS:,} rows) on the primary")
            s = pg_sql.Identifier(schema)
            create_schema(conn, schema,
                          pg_sql.SQL("CREATE TABLE {}.kv (id bigint PRIMARY KEY, v bigint NOT NULL)").format(s),
                          pg_sql.SQL("INSERT INTO {}.kv SELECT g, g FROM generate_series(1, {}) g")
                          .format(s, pg_sql.Literal(ROWS)))
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
                    drill = _drill(cfg, pq, rq, replica_clusters[-1], schema, t0, step) | {
                        "replica": redact_dsn(replicas[-1])}
                    spans.append({"name": "drill", "start_s": round(start, 3), "end_s": round(time.monotonic() - t0, 3)})
                    if drill.get("note"):
                        notes.append("drill: " + drill["note"])
    finally:
        if schema is not None:
            step(f"dropping {schema}")
            if (failed := drop_schema(pq, schema)) is not None:
                notes.append(failed)
    lag = {"interval_ms": int(LAG_SAMPLE_S * 1000), "arms": spans,
           "replicas": [{"dsn": redact_dsn(d), "samples": _thin(s)} for d, s in zip(replicas, sampler.samples)]}
    cores = host_cores()
    if replica_clusters:
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
                  "probe_interval_s": cfg.probe_interval_s, "local": bool(replica_clusters),
                  "window_s": WINDOW_S, "lsn_wait_s": LSN_WAIT_S},
        arms=tuple(arms), lag=lag, drill=drill, verdict=_verdict(arms, drill),
        notes=tuple(scrub(n) for n in notes),
    )


def _wait_replicated(primary: str, replicas: list[str], schema: str, timeout: float = 30.0) -> None:
    """Every replica sees the table before the arms start (a poll with a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    for dsn in replicas:
        info = pg_conninfo.make_conninfo(dsn, application_name=APPLICATION_NAME, connect_timeout="5")
        with contextlib.suppress(psycopg.Error), bench_connect(info) as conn:
            while time.monotonic() < deadline:
                if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.kv",)).fetchone()[0]:
                    break
                time.sleep(0.02)


REPLICA_ARM_SHARE = 0.5  # an arm is a replica routing result when replicas answered at least this share of its reads
_FALLBACK_WORDS = {
    "no_healthy_replica": "no replica was healthy",
    "replica_error": "a replica connection failed",
    "read_your_writes_window": "the session had just written (read-your-writes window)",
    "read_your_writes_lsn_timeout": "the replica had not replayed the session's write in time",
}


def _percent(share: float) -> str:
    """A share as a percentage that says 0 or 100 only when it is (0.2 %, not 0 %)."""
    return f"{share:.1%}" if 0 < share < 0.01 or 0.99 < share < 1 else f"{share:.0%}"


def _placement(arm: ReplicaArm) -> str:
    """Where an arm's reads went, measured: '87 % on replicas (…)', with the reasons when they fell back."""
    share = arm.replica_share
    answered = arm.answered_by_replicas + arm.answered_by_primary
    if share is None:
        return "no read completed"
    text = f"reads {_percent(share)} on replicas ({arm.answered_by_replicas:,} of {answered:,})"
    if share >= REPLICA_ARM_SHARE or arm.policy == "primary":
        return text
    why = [f"{_FALLBACK_WORDS.get(r, r)} ({n:,})" for r, n in sorted(arm.fallback_reasons.items(), key=lambda x: -x[1])]
    why += [f"{dsn}: {reason}" for dsn, reason in arm.replica_problems.items()]
    fell = "all fell back" if share == 0 else "the rest fell back"
    return f"{text}, {fell} to the primary" + (f" because {'; '.join(why)}" if why else "")


def _verdict(arms: list[ReplicaArm], drill: dict | None) -> dict:
    """Compares arms only on what they did: an arm whose reads mostly did not reach a replica is no replica result."""
    summary = []
    by = {a.name: a for a in arms}
    base = by.get("primary_only")
    routed = [a for a in arms if a.name != "primary_only"]
    real = [a for a in routed if (a.replica_share or 0) >= REPLICA_ARM_SHARE and a.ops_per_s > 0]
    if real:
        best = max(real, key=lambda a: a.ops_per_s)
        versus = f", {best.ops_per_s / base.ops_per_s:.2f}x primary_only" if base and base.ops_per_s > 0 else ""
        summary.append(f"Of the arms whose reads reached the replicas ({len(real)} of {len(routed)}), {best.name} "
                       f"served the most requests ({best.ops_per_s:,.0f}/s{versus}; {_placement(best)}) on this host.")
    elif routed:
        summary.append(f"No arm's reads reached the replicas (at least {REPLICA_ARM_SHARE:.0%} of them): this run "
                       "measured the primary, not replica routing.")
    for a in routed:  # where every arm's reads went, measured on the servers
        extra = f", {a.fallbacks:,} fallbacks, p95 {a.p95_ms} ms" if a.read_your_writes else ""
        judged = "" if a in real else "; not compared as replica routing"
        summary.append(f"{a.name}: {_placement(a)}{extra}{judged}.")
    if arms:
        stale = [f"{a.name} {a.stale_reads}" for a in arms if a.stale_reads]
        summary.append("stale read-backs: " + (", ".join(stale) if stale else "none in any arm") + ".")
    if drill:
        if drill["ejected_after_s"] is not None:
            summary.append(f"drill: the stopped replica was ejected {drill['ejected_after_s']:.2f} s after its "
                           f"shutdown; {drill['failed_reads']} read(s) failed, {drill['failed_reads_after_ejection']} "
                           "after the ejection.")
        else:
            summary.append("drill: the stopped replica was not ejected within 20 s.")
        if drill["readmitted_after_s"] is not None:
            summary.append(f"drill: re-admitted {drill['readmitted_after_s']:.2f} s after the restart began.")
    return {"summary": summary, "compared": [a.name for a in real],
            "placement": {a.name: _placement(a) for a in arms}}


# --- rendering ----------------------------------------------------------------------------------------


def replica_bench_document(result: ReplicaBenchResult) -> dict:
    """The versioned JSON document (see the module docstring)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "bench_replicas",
        "tool_version": __version__,
        "primary": result.primary,
        "replicas": list(result.replicas),
        "host_cores": result.host_cores,
        "settings": result.settings,
        "arms": [dict(asdict(a), replica_share=None if a.replica_share is None else round(a.replica_share, 4))
                 for a in result.arms],
        "lag": result.lag,
        "drill": result.drill,
        "verdict": result.verdict,
        "notes": list(result.notes),
    }


def replica_bench_text(result: ReplicaBenchResult):
    """A Rich renderable: arms, lag summary, drill, verdict, notes."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def num(x, fmt: str = ",.2f") -> str:
        return "-" if x is None else format(x, fmt)

    t = Table(title="arms", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("arm", "rwy", "requests", "ops/s", "p50", "p95", "p99", "stale", "failed", "on replicas",
                "fallbacks", "eject"):
        t.add_column(col, justify="left" if col in ("arm", "rwy") else "right", no_wrap=True)
    for a in result.arms:
        t.add_row(a.name, a.read_your_writes or "-", f"{a.requests:,}", num(a.ops_per_s, ",.0f"), num(a.p50_ms),
                  num(a.p95_ms), num(a.p99_ms), str(a.stale_reads), str(a.failed_requests),
                  "-" if a.replica_share is None else _percent(a.replica_share), str(a.fallbacks), str(a.ejections))
    lines = [Text(f"primary {result.primary}; replicas {', '.join(result.replicas)}; host cores {result.host_cores}"),
             t, Text("latency in ms per request (a read, or a write with its read-back); on replicas: the share of "
                     "reads a standby answered (pg_is_in_recovery() of the server, read with each row)", style="dim")]
    for rep in result.lag["replicas"]:
        ok = [s for s in rep["samples"] if s[1] is not None]
        if ok:
            lines.append(Text(f"lag {rep['dsn']}: max {max(s[1] for s in ok):,} bytes, "
                              f"max {max((s[2] or 0) for s in ok):,.0f} ms over {len(rep['samples'])} samples "
                              f"({len(rep['samples']) - len(ok)} failed)"))
    if result.drill:
        d = result.drill
        lines.append(Text(f"drill ({d['replica']}): ejected after {num(d['ejected_after_s'])} s, "
                          f"failed reads {d['failed_reads']} ({d['failed_reads_after_ejection']} after ejection), "
                          f"restarted {d['restarted']}, re-admitted after {num(d['readmitted_after_s'])} s, "
                          f"first read after restart {num(d['first_read_after_restart_s'])} s"))
    lines.append(Text("verdict:", style="bold"))
    lines += [Text(f"  {s}") for s in result.verdict["summary"]]
    lines += [Text(f"  {a.name}: {a.note}") for a in result.arms if a.note]
    if result.notes:
        lines.append(Text("notes:", style="bold"))
        lines += [Text(f"  {n}") for n in result.notes]
    return Group(*lines)
