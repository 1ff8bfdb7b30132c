"""`advisor bench replicas --drill`: a lag-aware router serves reads while the last replica's postmaster is
stopped (fast shutdown) and started again. Measured: failed reads, the time until the router ejects the replica,
re-admits it and routes a read to it again. Only ever on servers the benchmark started itself."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from psycopg import sql as pg_sql

from advisor.bench.load import ERROR_BACKOFF_S, Step
from advisor.bench.replicas_model import ROWS
from advisor.db.connect import TAG, redact_dsn
from advisor.routing import ReplicaRouter

if TYPE_CHECKING:
    from advisor.db.embedded import EmbeddedCluster

Entry = tuple[float, int | None, bool]  # (monotonic time the read was routed, port that answered, ok)


class _Readers:
    """Threads reading random rows through the router, each read logged with the port that answered it."""

    def __init__(self, router: ReplicaRouter, schema: str, concurrency: int) -> None:
        table = pg_sql.SQL("{}.kv").format(pg_sql.Identifier(schema))
        self.router = router
        self.query = (pg_sql.SQL(TAG) + pg_sql.SQL("SELECT v, inet_server_port() FROM {} WHERE id = %s")
                      .format(table)).as_string(None)
        self.log: list[Entry] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(concurrency)]

    def _read(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stop.is_set():
            began = time.monotonic()  # a read counts at the time it was routed, not when it failed
            entry: Entry
            try:
                with self.router.read() as conn:
                    row = conn.execute(self.query, (rng.randint(1, ROWS),)).fetchone()
                entry = (began, row[1] if row else None, True)
            except Exception:
                entry = (began, None, False)
                time.sleep(ERROR_BACKOFF_S)
            with self.lock:
                self.log.append(entry)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def entries(self) -> list[Entry]:
        with self.lock:
            return list(self.log)


def _poll(predicate: Callable[[], bool], timeout: float) -> float | None:
    """The time ``predicate`` first held, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    return None


def run_drill(router: ReplicaRouter, replicas: list[str], victim: EmbeddedCluster, schema: str, concurrency: int,
          t0: float, step: Step) -> dict:
    """Stop the last replica's postmaster under load, then start it again; times relative to the run start.
    ``router`` is lag-aware over ``replicas`` (the last one is ``victim``); it is closed before returning."""
    out: dict = {"replica": redact_dsn(replicas[-1]), "stopped_at_s": None, "ejected_after_s": None,
                 "failed_reads": 0, "failed_reads_after_ejection": 0, "failed_reads_after_restart": 0,
                 "reads_on_stopped_after_ejection": 0,
                 "restarted": False, "readmitted_after_s": None, "first_read_after_restart_s": None,
                 "reads": 0, "note": None}
    readers = _Readers(router, schema, concurrency)
    try:
        router.wait_ready(timeout_s=10.0)
        readers.start()
        time.sleep(0.5)  # a steady state before the failure (the measured part is polled, not slept)
        t_restart = _stop_and_restart(router, len(replicas) - 1, victim, readers, out, t0, step)
    finally:
        readers.join()
        router.close()
    _count_reads(out, readers.entries(), t0, t_restart, victim.port)
    return out


def _stop_and_restart(router: ReplicaRouter, index: int, victim: EmbeddedCluster, readers: _Readers, out: dict,
                      t0: float, step: Step) -> float:
    """Halt the victim, time its ejection, resume it, time its re-admission and its first read; the restart's
    start time."""
    port = victim.port
    step(f"drill: stopping replica on port {port}")
    t_stop = time.monotonic()
    victim.halt()
    out["stopped_at_s"] = round(t_stop - t0, 3)
    t_eject = _poll(lambda: not router.replicas()[index].healthy, 20.0)
    if t_eject is not None:
        out["ejected_after_s"] = round(t_eject - t_stop, 3)
    time.sleep(0.5)  # reads after the ejection: must all go elsewhere
    step(f"drill: starting replica on port {port} again")
    t_start = time.monotonic()
    try:
        victim.resume()
        out["restarted"] = True
    except Exception as err:
        out["note"] = f"could not restart the replica: {(str(err).splitlines() or [''])[0]}"
    if out["restarted"]:
        t_in = _poll(lambda: router.replicas()[index].healthy, 30.0)
        if t_in is not None:
            out["readmitted_after_s"] = round(t_in - t_start, 3)
            t_read = _poll(lambda: any(p == port and ts > t_start for ts, p, ok in list(readers.log)), 10.0)
            if t_read is not None:
                out["first_read_after_restart_s"] = round(t_read - t_start, 3)
    return t_start


def _count_reads(out: dict, entries: list[Entry], t0: float, t_restart: float, port: int) -> None:
    """Reads, and failed reads after the stop, after the ejection and after the restart."""
    out["reads"] = len(entries)
    t_stop = t0 + (out["stopped_at_s"] or 0.0)
    t_eject = t_stop + out["ejected_after_s"] if out["ejected_after_s"] is not None else None
    out["failed_reads"] = sum(1 for ts, _, ok in entries if not ok and ts >= t_stop)
    if t_eject is not None:
        # While the replica is down and ejected: the window the router must route around it.
        # Reads during its restart are a separate matter (failed_reads_after_restart).
        out["failed_reads_after_ejection"] = sum(1 for ts, _, ok in entries if not ok and t_eject < ts < t_restart)
        out["failed_reads_after_restart"] = sum(1 for ts, _, ok in entries if not ok and ts >= t_restart)
        out["reads_on_stopped_after_ejection"] = sum(1 for ts, p, ok in entries if ok and p == port and t_eject < ts < t_restart)
