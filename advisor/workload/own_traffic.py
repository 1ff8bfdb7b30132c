"""The advisor's own statements: never part of the workload it reports on.

Everything the advisor sends to a server (catalog reads, EXPLAIN, HypoPG, the
benchmarks' connections) starts with ``TAG`` and runs under an
``application_name`` that starts with ``advisor``, so a log or
pg_stat_statements shows it beside the application's statements. This is the
one rule that tells them apart, for every source.
"""

from __future__ import annotations

from advisor.db.connect import TAG
from advisor.words import plural

APPLICATION_PREFIX = "advisor"
_MARK = TAG.strip()


def sent_by_advisor(sql: str, application: str | None = None) -> bool:
    """Whether a statement came from the advisor itself (pg_stat_statements knows no application)."""
    return (application is not None and application.startswith(APPLICATION_PREFIX)) or sql.lstrip().startswith(_MARK)


# What an extension the advisor calls runs inside the advisor's own statement. pg_stat_statements with
# track = all records it apart, as a nested statement without our tag: HypoPG reads the highest oid in
# use each time it creates a hypothetical index. Logs never show it (they log top-level statements).
_RUN_FOR_ADVISOR = frozenset({"SELECT max(oid) FROM pg_catalog.pg_class WHERE oid < $1"})


def run_for_advisor(sql: str) -> bool:
    """Whether pg_stat_statements shows a statement an extension ran for the advisor (see above)."""
    return " ".join(sql.split()) in _RUN_FOR_ADVISOR


def left_out_note(count: int) -> str:
    return f"{plural(count, 'statement')} sent by the advisor itself {'was' if count == 1 else 'were'} left out"
