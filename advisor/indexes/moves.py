"""The moves of the index search (selection.py): add a candidate, or change a chosen index into a better one.

Beyond Extend's "extend a chosen index by one column": widen it into a candidate that starts
with its keys (an INCLUDE variant, a longer composite), or merge another candidate's columns
with the same leading key into its INCLUDE list (index merging, Chaudhuri and Narasayya, ICDE
1999): one index serving two queries' index-only scans.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from advisor.indexes.candidates import CandidateSet
from advisor.indexes.model import IndexCandidate, key_column

__all__ = ["MAX_MERGED_INCLUDE", "Move", "Moves"]

MAX_MERGED_INCLUDE = 5  # INCLUDE columns of a merged index, at most

Move = tuple[IndexCandidate | None, IndexCandidate]  # (the chosen index it replaces, or None; the index it adds)


class Moves:
    """The moves from a set of chosen indexes, over the workload's candidates."""

    def __init__(self, found: CandidateSet, max_width: int, max_indexes: int | None) -> None:
        self.found = found
        self.max_width = max_width
        self.max_indexes = max_indexes
        self._wider: dict[tuple[str, tuple[str, ...]], list[IndexCandidate]] | None = None

    def __call__(self, chosen: list[IndexCandidate]) -> Iterator[Move]:
        """(replaced, added) pairs: new candidates; chosen indexes extended by one column; and
        chosen indexes widened into a candidate that starts with the same keys (a covering
        variant with INCLUDE columns, or a longer composite)."""
        for c in self.found.candidates:
            if c not in chosen and (self.max_indexes is None or len(chosen) < self.max_indexes):
                yield None, c
        for c in chosen:
            if c.where:
                continue
            if len(c.columns) < self.max_width and not c.include:
                for column in self._extensions(c):
                    yield c, c.extended(column)
            for d in (*self._widenings(c), *self._merges(c)):
                if d not in chosen:
                    yield c, d

    def _extensions(self, c: IndexCandidate) -> list[str]:
        """Columns that queries using the index's leading column also filter, join, sort, group
        on or read: a read column as the next key makes the scan index-only, as INCLUDE
        would, and can still serve a range or an order."""
        columns: dict[str, None] = {}
        for uses in self.found.uses.values():
            use = uses.get(c.table)
            if use is None:
                continue
            attributes = [*use.equality, *use.range, *use.join, *(col for col, _ in use.order), *use.group]
            if c.columns[0] in attributes:
                columns.update(dict.fromkeys(a for a in (*attributes, *use.read) if a not in c.columns))
        return list(columns)

    def _merges(self, c: IndexCandidate) -> list[IndexCandidate]:
        """``c`` covering what another candidate with the same leading key also covers: its keys,
        then the other's key and INCLUDE columns as INCLUDE columns."""
        merged = []
        for d in self._starting_with(c.table, c.columns[:1]):
            extra = [k for k in (*d.columns, *d.include) if k not in c.columns and k not in c.include]
            if d.where or not extra or any(key_column(k) is None or key_column(k) != k for k in extra):
                continue
            include = tuple(dict.fromkeys((*c.include, *extra)))
            if len(include) <= MAX_MERGED_INCLUDE:
                merged.append(replace(c, include=include))
        return list(dict.fromkeys(merged))

    def _widenings(self, c: IndexCandidate) -> list[IndexCandidate]:
        """Candidates with ``c``'s keys first and more after them or in INCLUDE."""
        return [d for d in self._starting_with(c.table, c.columns) if d != c and not d.where
                and set(c.include) <= set(d.include) | set(d.columns)]

    def _starting_with(self, table: str, keys: tuple[str, ...]) -> list[IndexCandidate]:
        """The candidates on ``table`` whose key columns start with ``keys``."""
        if self._wider is None:
            self._wider = {}
            for d in self.found.candidates:
                for n in range(1, len(d.columns) + 1):
                    self._wider.setdefault((d.table, d.columns[:n]), []).append(d)
        return self._wider.get((table, keys), [])
