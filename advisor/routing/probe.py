"""Probing a replica: its recovery state and WAL positions, and the primary's, on connections of their own."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psycopg
from psycopg import conninfo as pg_conninfo

from advisor.db.connect import TAG
from advisor.routing.lsn import one_row, parse_lsn

_REPLICA_PROBE = TAG + """SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000"""
_PRIMARY_PROBE = TAG + "SELECT pg_current_wal_lsn()::text"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of a replica (and of the primary, for the byte lag)."""

    in_recovery: bool
    receive_lsn: int | None
    replay_lsn: int | None
    primary_lsn: int | None
    lag_bytes: int | None
    lag_ms: float | None  # None: unknown (nothing replayed yet and not caught up)


def probe_replica(replica: psycopg.Connection, primary: psycopg.Connection | None) -> Probe:
    """Read a replica's position and the primary's; the replica first, so the lag is never underestimated."""
    in_rec, receive, replay, age_ms = one_row(replica, _REPLICA_PROBE)
    primary_lsn = parse_lsn(one_row(primary, _PRIMARY_PROBE)[0]) if primary is not None else None
    receive_i, replay_i = parse_lsn(receive), parse_lsn(replay)
    if receive_i is not None and receive_i == replay_i:
        lag_ms: float | None = 0.0  # caught up with all it received: the replay timestamp's age means nothing
    else:
        lag_ms = None if age_ms is None else max(0.0, float(age_ms))
    lag_bytes = None
    if primary_lsn is not None and replay_i is not None:
        lag_bytes = max(0, primary_lsn - replay_i)
        if lag_bytes == 0:
            lag_ms = 0.0  # replayed all the primary has written (e.g. just restarted, not streaming yet)
    return Probe(bool(in_rec), receive_i, replay_i, primary_lsn, lag_bytes, lag_ms)


def probe_conninfo(dsn: str, timeout_s: float, application_name: str) -> str:
    """``dsn`` with the probe's name and its timeouts: a probe that hangs must fail, not stall the probe loop."""
    params = {k: v for k, v in pg_conninfo.conninfo_to_dict(dsn).items() if v is not None}
    params.setdefault("connect_timeout", str(max(2, round(timeout_s))))
    params["application_name"] = application_name
    ms = max(1, int(timeout_s * 1000))
    params["options"] = f"{params.get('options', '')} -c statement_timeout={ms} -c lock_timeout={ms}".strip()
    return pg_conninfo.make_conninfo("", **params)


class ReplicaProbe:
    """One replica's probe connection and one to the primary, each reopened after it failed."""

    def __init__(self, dsn: str, primary_dsn: str, timeout_s: float, application_name: str) -> None:
        self.dsn, self.primary_dsn = dsn, primary_dsn
        self.timeout_s, self.application_name = timeout_s, application_name
        self._replica: psycopg.Connection | None = None
        self._primary: psycopg.Connection | None = None

    def _connect(self, dsn: str) -> psycopg.Connection:
        return psycopg.connect(probe_conninfo(dsn, self.timeout_s, self.application_name), autocommit=True)

    def probe(self) -> Probe:
        """Probe the replica; without the byte lag when the primary cannot be reached. Raises when the
        replica cannot be probed; call ``reset()`` then."""
        if self._replica is None or self._replica.closed:
            self._replica = self._connect(self.dsn)
        replica = self._replica
        primary: psycopg.Connection | None = None
        with contextlib.suppress(psycopg.Error):
            if self._primary is None or self._primary.closed:
                self._primary = self._connect(self.primary_dsn)
            primary = self._primary
        try:
            return probe_replica(replica, primary)
        except psycopg.Error:
            if replica.closed or replica.broken or primary is None:
                raise
            # the primary half failed: measure the replica alone
            self._close_primary()
            return probe_replica(replica, None)

    def reset(self) -> None:
        """Drop the replica's connection after a failure: the next probe opens a new one."""
        if self._replica is not None:
            with contextlib.suppress(Exception):
                self._replica.close()
        self._replica = None

    def _close_primary(self) -> None:
        if self._primary is not None:
            with contextlib.suppress(Exception):
                self._primary.close()
        self._primary = None

    def close(self) -> None:
        self.reset()
        self._close_primary()
