"""A lag-aware read-replica router for applications (plain psycopg and SQLAlchemy 2).

Writes go to the primary; reads go to a *healthy* streaming replica, chosen by a
policy (``round_robin`` or ``least_busy``), and to the primary when no replica
qualifies. One background thread per replica probes it every
``probe_interval_s``:

* on the replica: ``pg_is_in_recovery()``, ``pg_last_wal_receive_lsn()``,
  ``pg_last_wal_replay_lsn()`` and ``pg_last_xact_replay_timestamp()``;
* on the primary: ``pg_current_wal_lsn()``.

Lag in bytes is primary LSN − replayed LSN. Lag in time is 0 when the replica
has replayed everything it received (``now() - pg_last_xact_replay_timestamp()``
keeps growing on an idle replica that is fully caught up, so it is not used
then), else ``now() - pg_last_xact_replay_timestamp()``, capped by how long the
router itself has seen the primary ahead of the replayed LSN (a replica idle for
an hour that receives one commit is not an hour behind). A replica beyond
``max_lag_ms`` or ``max_lag_bytes``, not in recovery, failing a probe (timeout,
connection error), whose probe is overdue, or whose connection just failed a
read, is *ejected* with the reason; a later passing probe re-admits it.

Read-your-writes (``read_your_writes``), per ``session`` key (a user id, a
request id, the SQLAlchemy Session):

``"lsn"``     after a write, remember the primary's WAL insert position (it is at or
              past the commit record, also with ``synchronous_commit=off``); a read
              for that session waits up to ``wait_s`` on the chosen replica until
              ``pg_last_wal_replay_lsn()`` reaches it, else it goes to the primary.
``"window"``  reads go to the primary for ``window_s`` after the session's last write.
``None``      no guarantee: a read right after a write may miss it on a replica.

Example (plain psycopg; connections come from one psycopg_pool.ConnectionPool per node)::

    from advisor.routing import ReplicaRouter

    with ReplicaRouter("postgresql://app@primary/db",
                       ["postgresql://app@replica1/db", "postgresql://app@replica2/db"],
                       max_lag_ms=1000, read_your_writes="lsn") as router:
        with router.write(session=user_id) as conn:          # the primary; committed on exit
            conn.execute("UPDATE users SET name = %s WHERE id = %s", (name, user_id))
        with router.read(session=user_id) as conn:           # a replica that has the update
            row = conn.execute("SELECT name FROM users WHERE id = %s", (user_id,)).fetchone()
        print(router.stats(), router.replicas())

Example (SQLAlchemy 2)::

    from sqlalchemy import create_engine, select
    from advisor.routing import ReplicaRouter, routing_sessionmaker

    primary = create_engine("postgresql+psycopg://app@primary/db")
    replicas = {dsn: create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
                for dsn in ("postgresql://app@replica1/db", "postgresql://app@replica2/db")}
    router = ReplicaRouter("postgresql://app@primary/db", list(replicas), read_your_writes="lsn")
    Session = routing_sessionmaker(router, primary, replicas)
    with Session() as session:
        session.add(User(name="ada")); session.commit()            # flush + commit: the primary
        session.scalars(select(User)).all()                         # a replica that has replayed the commit
        session.scalars(select(User).with_for_update()).all()       # FOR UPDATE: the primary
    router.close()

Inside one SQLAlchemy transaction, reads stay on one replica (one snapshot
source) until the transaction writes; from then on everything goes to the
primary until it ends.

The router's own traffic is recognisable: its statements (probes, the commit
position, the replay wait) start with ``/* advisor */`` and its probe connections
are named ``advisor_router_probe`` (``<application_name>_probe`` when that starts
with ``advisor``), so a workload read from the logs or pg_stat_statements leaves
them out. The application's connections keep the DSN's ``application_name`` unless
``application_name`` is given: they carry the application's queries, which must
stay in its workload. With ``autocommit=False`` (psycopg's default) psycopg opens
each transaction with a bare ``BEGIN``; that is the application's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advisor.routing.health import ReplicaState
from advisor.routing.lsn import format_lsn, parse_lsn
from advisor.routing.marks import MAX_SESSIONS
from advisor.routing.probe import Probe, probe_replica
from advisor.routing.router import MiB, Policy, ReadYourWrites, ReplicaRouter

if TYPE_CHECKING:
    from advisor.routing.sqlalchemy import RoutingSession, routing_sessionmaker

__all__ = ["ReplicaRouter", "ReplicaState", "RoutingSession", "routing_sessionmaker", "parse_lsn", "probe_replica",
           "format_lsn", "Probe", "MiB", "MAX_SESSIONS", "Policy", "ReadYourWrites"]

# Imported on first use (PEP 562), so the psycopg API loads without SQLAlchemy.
_SQLALCHEMY_NAMES = ("RoutingSession", "routing_sessionmaker")


def __getattr__(name: str) -> Any:
    if name in _SQLALCHEMY_NAMES:
        from advisor.routing import sqlalchemy

        return getattr(sqlalchemy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
