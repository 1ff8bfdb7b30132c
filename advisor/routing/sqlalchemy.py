"""SQLAlchemy 2: a Session whose ``get_bind`` routes through a ``ReplicaRouter``; the one routing module that
imports SQLAlchemy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause

from advisor.db.connect import redact_dsn
from advisor.routing.marks import INFO_KEY
from advisor.routing.router import ReplicaRouter

_WRITE_TEXT = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(?!select\b|show\b|values\b|table\b|explain\b)\w", re.I | re.S)
_LOCKING_TEXT = re.compile(r"\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b", re.I)
_STATE_KEY = "advisor_routing"  # session.info: this transaction's routing (wrote yet? its replica)


def _fresh_state() -> dict[str, Any]:
    return {"wrote": False, "replica": None}


class RoutingSession(Session):
    """A Session whose ``get_bind`` routes: the primary engine for flushes, INSERT/UPDATE/DELETE,
    ``SELECT … FOR UPDATE/SHARE``, and anything in a transaction that has written; else a healthy
    replica's engine chosen by the router (read-your-writes keyed by this Session). Build it with
    ``routing_sessionmaker``."""

    router: ReplicaRouter | None = None
    primary_engine: Engine | None = None
    replica_engines: Mapping[str, Engine] = {}

    def _advisor_state(self) -> dict[str, Any]:
        return self.info.setdefault(_STATE_KEY, _fresh_state())

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Any:
        state = self._advisor_state()
        if self.router is None or self.primary_engine is None:
            return super().get_bind(mapper, clause=clause, **kw)
        if self._flushing or _is_write(clause):
            state["wrote"] = True
            return self.primary_engine
        if state["wrote"] or _is_locking(clause):
            self.router.count_primary_read()
            return self.primary_engine
        mark = self.info.get(INFO_KEY) if self.router.read_your_writes else None
        if mark is not None and self.router.read_your_writes == "lsn" and state.get("mark_checked") is mark:
            mark = None  # this transaction already waited for it on its replica
        dsn = self.router.choose_replica(mark, current=state["replica"])
        if dsn is None or dsn not in self.replica_engines:
            state["replica"] = None
            return self.primary_engine
        state["replica"] = dsn
        state["mark_checked"] = self.info.get(INFO_KEY)
        return self.replica_engines[dsn]


def _is_write(clause: Any) -> bool:
    """INSERT/UPDATE/DELETE, or a text() statement that is not a read (SELECT, SHOW, VALUES, TABLE, EXPLAIN)."""
    if clause is None:
        return False
    if isinstance(clause, UpdateBase):
        return True
    return isinstance(clause, TextClause) and bool(_WRITE_TEXT.match(clause.text))


def _is_locking(clause: Any) -> bool:
    """``SELECT … FOR UPDATE/SHARE`` (a ``with_for_update()`` or text()): it locks rows, so the primary."""
    if clause is None:
        return False
    if getattr(clause, "_for_update_arg", None) is not None:
        return True
    return isinstance(clause, TextClause) and bool(_LOCKING_TEXT.search(clause.text))


@event.listens_for(RoutingSession, "after_flush")
def _after_flush(session: RoutingSession, flush_context: Any) -> None:
    session.info.setdefault(_STATE_KEY, _fresh_state())["wrote"] = True


@event.listens_for(RoutingSession, "after_commit")
def _after_commit(session: RoutingSession) -> None:
    state = session.info.get(_STATE_KEY)
    if state and state["wrote"] and session.router is not None and session.router.read_your_writes:
        session.router.note_write(session)  # the mark lives in session.info


@event.listens_for(RoutingSession, "after_transaction_end")
def _after_transaction_end(session: RoutingSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the root transaction: next one starts clean
        session.info[_STATE_KEY] = _fresh_state()


def routing_sessionmaker(router: ReplicaRouter, primary_engine: Engine, replica_engines: Mapping[str, Engine],
                         **kw: Any) -> sessionmaker[RoutingSession]:
    """A ``sessionmaker`` of ``RoutingSession``; ``replica_engines`` maps each replica DSN given to the
    router to its Engine (a replica without an engine is never chosen for the ORM)."""
    unknown = set(replica_engines) - {n.dsn for n in router.nodes}
    if unknown:
        raise ValueError(f"replica engines for DSNs the router does not know: {sorted(redact_dsn(d) for d in unknown)}")
    bound = type("BoundRoutingSession", (RoutingSession,), {
        "router": router, "primary_engine": primary_engine, "replica_engines": dict(replica_engines)})
    return sessionmaker(class_=bound, **kw)
