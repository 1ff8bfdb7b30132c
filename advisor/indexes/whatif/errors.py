"""What the what-if engine says when it cannot answer: for the whole engine, for one query, for one candidate."""

from __future__ import annotations

import psycopg

from advisor.db.session import Session
from advisor.errors import AdvisorError
from advisor.indexes.model import IndexCandidate

__all__ = ["CandidateRejected", "QueryNotCosted", "WhatIfUnavailable", "candidate_error"]


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


def candidate_error(candidate: IndexCandidate, err: psycopg.Error, session: Session,
                    timeout_ms: int) -> AdvisorError:
    """A failure while making ``candidate``: the candidate's fault, unless the connection went with it."""
    reason = session.describe(err, timeout_ms)
    if session.lost:
        return WhatIfUnavailable(reason, "check the server; then run again")
    return CandidateRejected(candidate, reason)
