"""Running `advisor bench pool`'s arms: each arm's clients opened, a warm-up, the measured window with the
backend monitor sampling beside it, the figures; a throwaway PgBouncer per local PgBouncer arm."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

from advisor.bench.load import (
    APPLICATION_NAME,
    Step,
    bench_connect,
    first_line,
    host_cores,
    rounded,
    run_phase,
    scrubber,
)
from advisor.bench.pgbouncer import LocalPgBouncer, pgbouncer_version
from advisor.bench.pool_clients import Client, ConnectTimes, connect_stats
from advisor.bench.pool_model import MODES, PGBOUNCER_MODES, Arm, PoolBenchConfig
from advisor.bench.pool_server import Plan, Server, bench_conninfo, is_local, session_settings
from advisor.bench.quiet import Logging
from advisor.db.connect import TAG

MONITOR_INTERVAL_S = 0.1


class _Monitor:
    """Samples backend counts from its own connection every 100 ms while an arm's window runs."""

    _SAMPLE = TAG + ("SELECT count(*) FILTER (WHERE datname = current_database()), "
                     "count(*) FILTER (WHERE backend_type = 'client backend') "
                     "FROM pg_stat_activity WHERE pid <> pg_backend_pid()")

    def __init__(self, conninfo: str) -> None:
        self.conn = bench_connect(conninfo)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak = (0, 0)
        self.failed = False

    def _counts(self) -> tuple[int, int]:
        """Backends of this database and client backends of the server, the monitor not counted."""
        row = self.conn.execute(self._SAMPLE).fetchone()
        assert row is not None  # an aggregate without GROUP BY: one row
        return row[0], row[1]

    def _sample(self) -> None:
        try:
            db, server = self._counts()
        except psycopg.Error:
            self.failed = True
            return
        self.peak = (max(self.peak[0], db), max(self.peak[1], server))

    def backends(self) -> int | None:
        """Backends of this database now (the monitor not counted); None when the monitor cannot read them."""
        try:
            return self._counts()[0]
        except psycopg.Error:
            return None

    def settle(self, baseline: int | None, timeout_s: float = 5.0) -> None:
        """Wait until this database has no more backends than ``baseline`` (those of a stopped PgBouncer exit)."""
        end = time.monotonic() + timeout_s
        while baseline is not None and time.monotonic() < end:
            now = self.backends()
            if now is None or now <= baseline:
                return
            time.sleep(0.02)

    def start(self, cap_s: float) -> None:
        self.peak, self.failed = (0, 0), False
        self._stop.clear()

        def run() -> None:
            end = time.monotonic() + cap_s
            self._sample()
            while not self._stop.wait(MONITOR_INTERVAL_S) and time.monotonic() < end and not self.failed:
                self._sample()

        self._thread = threading.Thread(target=run, daemon=True, name="advisor-bench-monitor")
        self._thread.start()

    def stop(self) -> tuple[int, int] | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return None if self.failed else self.peak

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class Bouncer:
    """How to start each local PgBouncer arm's own throwaway PgBouncer (one per arm, so that the backends an arm
    saw are its own: PgBouncer keeps idle server connections for minutes)."""

    binary: Path
    version: tuple[int, int, int]
    target: dict[str, str]
    user: str
    dbname: str
    pool_size: int
    max_clients: int
    settings: dict[str, str]  # run on each server connection (connect_query)

    def launch(self, pool_mode: str) -> LocalPgBouncer:
        return LocalPgBouncer(self.target, user=self.user, dbname=self.dbname, pool_mode=pool_mode,
                              pool_size=self.pool_size, max_clients=self.max_clients, session_settings=self.settings,
                              binary=self.binary)


def default_pgbouncer_pool_size(server_local: bool, cores: int) -> int:
    """Two server connections per core when the server is on this host (PgBouncer's and PostgreSQL's rule of
    thumb for a CPU-bound load), else PgBouncer's own default_pool_size, 20."""
    return max(2, 2 * cores) if server_local else 20


def local_bouncer(cfg: PoolBenchConfig, binary: Path, params: dict[str, str], server: Server, logging: Logging,
                   notes: list[str]) -> Bouncer:
    """The local PgBouncer every PgBouncer arm starts, and a note on what it is."""
    version = pgbouncer_version(binary)
    local, cores = is_local(params), host_cores()
    size = cfg.pgbouncer_pool_size or default_pgbouncer_pool_size(local, cores)
    why = ("as given" if cfg.pgbouncer_pool_size else
           "2 per core of this host, which the server shares" if local else "PgBouncer's default")
    settings = {"application_name": APPLICATION_NAME, **session_settings(cfg.request_timeout_s), **logging.quieted}
    notes.append(
        f"local PgBouncer {'.'.join(map(str, version))} ({binary}): one started for each PgBouncer arm on a loopback "
        f"port and stopped after it, pool size {size} ({why}) per pooling mode, up to {max(cfg.concurrency)} clients; "
        "it logs in with the DSN's user and password from an auth_file (mode 0600) in its own directory, removed "
        "after. Its server connections are named advisor_bench in their startup packet, then run one tagged "
        "connect_query with the benchmark's timeouts, read-only default and statement logging off (what direct "
        "sessions send as startup options); no server_reset_query runs.")
    return Bouncer(binary, version, params, server.user, server.dbname, size, max(cfg.concurrency), settings)


def run_arms(cfg: PoolBenchConfig, plan: Plan, params: dict[str, str], sql_text: str,
             param: Callable[[random.Random], tuple | None], step: Step, bouncer: Bouncer | None) -> list[Arm]:
    """Every arm of ``plan`` at every concurrency level, in the order of the document."""
    duration = cfg.window_s
    slack = cfg.request_timeout_s + 5.0
    arms: list[Arm] = []
    server_arms = [info for mode, _, info in plan if mode not in PGBOUNCER_MODES and info is not None]
    monitor = _Monitor(server_arms[0] if server_arms else bench_conninfo(params, cfg.request_timeout_s))
    try:
        for concurrency in cfg.concurrency:
            for mode, transport, info in plan:
                step(f"{mode} over {transport}, concurrency {concurrency}")
                if info is not None:
                    arms.append(_run_arm(mode, transport, info, concurrency, sql_text, param, duration, cfg.requests,
                                         cfg, monitor, slack))
                else:
                    assert bouncer is not None  # the plan has arms without a conninfo only with a local PgBouncer
                    arms.append(_run_local_pgbouncer_arm(bouncer, mode, transport, concurrency, sql_text, param,
                                                         duration, cfg, monitor, slack))
    finally:
        monitor.close()
    arms.sort(key=lambda a: (a.mode in PGBOUNCER_MODES, a.transport, a.concurrency, MODES.index(a.mode)))
    return arms


def _run_local_pgbouncer_arm(bouncer: Bouncer, mode: str, transport: str, concurrency: int, sql_text: str,
                             param: Callable[[random.Random], tuple | None], duration: float, cfg: PoolBenchConfig,
                             monitor: _Monitor, slack: float) -> Arm:
    pool_mode = transport.removeprefix("pgbouncer-")
    # In session mode a client connection holds its server connection until it closes: a client pool larger than
    # PgBouncer's would leave connections waiting for ever, so it gets PgBouncer's size, as a deployment would.
    capped = pool_mode == "session" and mode != "pgbouncer" and concurrency > bouncer.pool_size
    baseline = monitor.backends()
    with bouncer.launch(pool_mode) as pgb:
        info = pgb.conninfo(application_name=APPLICATION_NAME, connect_timeout=str(max(2, int(cfg.request_timeout_s))))
        arm = _run_arm(mode, transport, info, concurrency, sql_text, param, duration, cfg.requests, cfg, monitor,
                       slack, pool_size=bouncer.pool_size if capped else None, secret=info)
    monitor.settle(baseline)  # PgBouncer's server connections are gone before the next arm counts its own
    if capped:
        note = f"client pool of {bouncer.pool_size} (PgBouncer's pool size in session mode) for {concurrency} threads"
        arm = replace(arm, note=f"{arm.note}; {note}" if arm.note else note)
    return arm


def _run_arm(mode: str, transport: str, info: str, concurrency: int, sql_text: str,
             param: Callable[[random.Random], tuple | None], duration: float, requests: int | None,
             cfg: PoolBenchConfig, monitor: _Monitor, slack: float, pool_size: int | None = None,
             secret: str | None = None) -> Arm:
    connects = ConnectTimes()
    client = Client(mode, info, concurrency, sql_text, cfg.request_timeout_s, connects, pool_size)
    scrub = scrubber(cfg.dsn, cfg.pgbouncer_dsn, secret)

    def empty(note: str) -> Arm:
        return Arm(mode, transport, concurrency, 0, 0.0, 0.0, None, None, None, None, None, None, None, 0, 0, 0,
                   None, None, scrub(note))

    try:
        try:
            client.open()
        except Exception as err:
            return empty(f"could not open the clients: {type(err).__name__}: {first_line(err)}")
        if cfg.warmup_s > 0:
            run_phase(client.request, concurrency, cfg.warmup_s, requests, param, slack)  # at most as many
        connects.times.clear()  # only connections opened in the measured window count
        monitor.start(cap_s=duration + slack)
        try:
            phase = run_phase(client.request, concurrency, duration, requests, param, slack)
        finally:
            peaks = monitor.stop()
        opened = list(connects.times)
    finally:
        try:
            client.close()
        except Exception:  # a pool that cannot close cleanly must not lose the measurement
            pass
    c_mean, c_p50, c_p95 = connect_stats(opened)
    n = len(phase.latencies)
    note_parts = []
    if phase.first_error:
        note_parts.append(f"first failure: {phase.first_error}")
    if phase.stuck:
        note_parts.append(f"{phase.stuck} thread(s) still waiting on a request when the arm ended")
    if requests is not None and n + phase.errors + phase.timeouts < requests and not phase.stuck:
        note_parts.append(f"stopped by the {duration:g} s time cap before {requests:,} requests")
    if peaks is None:
        note_parts.append("the backend monitor failed")
    note = scrub("; ".join(note_parts)) if note_parts else None
    return Arm(
        mode=mode, transport=transport, concurrency=concurrency, **phase.figures(),
        connect_ms=rounded(c_mean), connect_p50_ms=rounded(c_p50),
        connect_p95_ms=rounded(c_p95), connections_opened=len(opened),
        errors=phase.errors, timeouts=phase.timeouts,
        peak_backends=None if peaks is None else peaks[0], peak_server_backends=None if peaks is None else peaks[1],
        note=note,
    )
