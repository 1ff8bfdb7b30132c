"""Which candidate index can serve which query: the part of a configuration that can change its plan.

The search (selection.py) costs a query only with the indexes it could use, so the what-if
cache answers for every configuration that differs in the others; it bounds a move by the
queries the index can help, and it stops costing a filter-only index for a query whose plan
left it unused (``filter_only``).
"""

from __future__ import annotations

import re

from advisor.indexes.candidates import CandidateSet
from advisor.indexes.model import AdvisedQuery, IndexCandidate, key_column
from advisor.indexes.usage import TableUse

__all__ = ["Usable"]


class Usable:
    """Answers about (query, candidate) pairs, each worked out once."""

    def __init__(self, found: CandidateSet) -> None:
        self.found = found
        self._known: dict[tuple[str, IndexCandidate], bool] = {}
        self._words: dict[str, frozenset[str]] = {}

    def part(self, q: AdvisedQuery, config: frozenset[IndexCandidate]) -> frozenset[IndexCandidate]:
        """The part of ``config`` the planner could use for ``q``: the others cannot change its plan.

        A btree helps a query only through its first column (a qual, a join, an order, a grouping,
        min/max) or by holding every column the query reads on that table (_serves). Partial and
        expression indexes, tables the query reads no column of (count(*)), and tables the
        parse did not see (views) are always kept. Costing ``q`` with the usable part only
        gives the same plan and lets the cache answer for every other configuration.
        """
        return frozenset(c for c in config if self.can_use(q, c))

    def can_help(self, q: AdvisedQuery, c: IndexCandidate) -> bool:
        """``c`` can lower ``q``'s cost: ``q`` reads its table (or we could not read ``q``) and can use it."""
        return self.reads(q, c.table) and self.can_use(q, c)

    def reads(self, q: AdvisedQuery, table: str) -> bool:
        """``q`` reads ``table``, or we could not read ``q``."""
        uses = self.found.uses.get(q.fingerprint)
        return not uses or table in uses

    def can_use(self, q: AdvisedQuery, c: IndexCandidate) -> bool:
        key = (q.fingerprint, c)
        if (known := self._known.get(key)) is None:
            use = self.found.uses.get(q.fingerprint, {}).get(c.table)
            bare = [key_column(k) for k in (*c.columns, *c.include)]
            columns = [col for col in bare if col is not None]  # not an expression
            if use is None or not use.read or c.where or c.method != "btree" or len(columns) < len(bare):
                known = True
            else:
                known = self._serves(q, use, columns)
            self._known[key] = known
        return known

    def filter_only(self, q: AdvisedQuery, c: IndexCandidate) -> bool:
        """``c`` could only serve a filter (or an index-only read) of its table in ``q``: not a join key,
        an ORDER BY or GROUP BY key, or a LIMIT, whose worth depends on the plan above the scan."""
        use = self.found.uses.get(q.fingerprint, {}).get(c.table)
        lead = key_column(c.columns[0])
        if use is None or lead is None or use.has_limit or c.where or c.method != "btree":
            return False
        return lead not in (*use.join, *use.group, *(col for col, _ in use.order))

    def _serves(self, q: AdvisedQuery, use: TableUse, columns: list[str]) -> bool:
        """A B-tree on ``columns`` can serve ``q``'s use of the table: its first column is compared,
        joined, sorted or grouped on (or in a min/max, or named where the parse could not place it),
        or it holds every column the query reads there (an index-only scan). A qual on a later
        column alone makes PostgreSQL read the whole index, which only an index-only scan repays."""
        lead = columns[0]
        if lead in (*use.equality, *use.range, *use.join, *use.group, *(col for col, _ in use.order)):
            return True
        if set(use.read) <= set(columns):
            return True
        words = self._words.get(q.fingerprint)
        if words is None:
            words = self._words[q.fingerprint] = frozenset(re.findall(r"\w+", q.sql.lower()))
        name = lead.lower()
        return name in words and (lead not in use.read or re.search(
            rf"\b(?:min|max)\s*\(\s*(?:\w+\.)?{re.escape(name)}\b", q.sql, re.IGNORECASE) is not None)
