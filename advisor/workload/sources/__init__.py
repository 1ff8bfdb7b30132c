"""Workload sources as equals: server logs, pg_stat_statements and a file of SQL each read into
the same mergeable ``Partial`` (see ``partial.py`` for the contract), and ``load_workload`` reads
a command's sources in order and collects one ``Workload``.

A new source (server events, a remote engine's partitions) is a class with a ``label`` and a
``read(reading) -> Partial``.
"""

from typing import TYPE_CHECKING

from advisor.workload.sources.logs import LogFiles, read_logs
from advisor.workload.sources.partial import Partial, Reading, Source, collect, load_workload
from advisor.workload.sources.sql_file import SqlFile

if TYPE_CHECKING:
    from advisor.workload.sources.stat_statements import StatStatements

__all__ = ["LogFiles", "Partial", "Reading", "Source", "SqlFile", "StatStatements", "collect", "load_workload",
           "read_logs"]


def __getattr__(name: str) -> object:
    """``StatStatements`` on first use: it brings psycopg, which reading logs does not need."""
    if name == "StatStatements":
        from advisor.workload.sources.stat_statements import StatStatements

        return StatStatements
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
