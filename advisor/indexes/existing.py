"""Index hygiene from the catalog: invalid, duplicate, redundant and unused indexes, unindexed foreign keys.

Each index gets at most one issue, the first that applies in that order: an
invalid index is only that, a duplicate is not also reported as unused. Indexes
that enforce something (primary key, unique, constraint) are never proposed for
dropping. Suggestions are DDL for the user to run; nothing here executes them.

Two indexes are interchangeable only when method, key columns and their order,
operator classes, collations, DESC/NULLS and predicate all agree (an index with
``text_pattern_ops`` serves LIKE 'x%' where the default one does not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from advisor.db.catalog import Catalog, ForeignKey, Index, Table

__all__ = ["IndexIssue", "index_issues", "quote_ident"]

IssueKind = Literal["invalid", "duplicate", "redundant", "unused", "unindexed_foreign_key"]


@dataclass(frozen=True, slots=True)
class IndexIssue:
    kind: IssueKind
    table: str  # "schema.name"
    reason: str
    suggestion: str  # DDL, never executed by the advisor
    index: Index | None = None  # None for an unindexed foreign key
    foreign_key: ForeignKey | None = None
    covered_by: Index | None = None  # the index that makes a duplicate or redundant one unnecessary


def index_issues(catalog: Catalog) -> list[IndexIssue]:
    """Every issue, table by table in name order."""
    issues: list[IndexIssue] = []
    for name in sorted(catalog.tables):
        table = catalog.tables[name]
        issues += _index_issues(table, _fk_supports(table, catalog.foreign_keys))
        issues += [_unindexed(fk, table) for fk in catalog.foreign_keys
                   if fk.table == name and not any(_covers_fk(i, fk) for i in table.indexes)]
    return issues


def _index_issues(table: Table, fk_supports: set[str]) -> list[IndexIssue]:
    found = []
    for index in table.indexes:
        if not index.valid:
            found.append(_issue("invalid", index, "invalid: a failed CREATE INDEX CONCURRENTLY or REINDEX left "
                                "it; it is maintained on every write but never used"))
        elif _enforces(index):
            continue
        elif keeper := _duplicate_of(index, table.indexes):
            found.append(_issue("duplicate", index, f"same definition as {keeper.name}", keeper))
        elif keeper := _covering(index, table.indexes):
            found.append(_issue("redundant", index, f"its columns ({', '.join(index.columns)}) lead "
                                f"{keeper.name} ({', '.join(keeper.columns)}), which serves the same lookups",
                                keeper))
        elif index.idx_scan == 0 and index.name not in fk_supports:
            found.append(_issue("unused", index, f"never scanned since the statistics were last reset "
                                f"({_size(index.size_bytes)}); check replicas too, they count their own scans"))
    return found


def _issue(kind: IssueKind, index: Index, reason: str, covered_by: Index | None = None) -> IndexIssue:
    drop = f"DROP INDEX CONCURRENTLY {quote_ident(index.schema)}.{quote_ident(index.name)};"
    return IndexIssue(kind, f"{index.schema}.{index.table}", reason, drop, index=index, covered_by=covered_by)


def _enforces(index: Index) -> bool:
    return index.unique or index.primary or index.backs_constraint


def _same_shape(index: Index) -> tuple:
    """What must agree for one index to stand in for another (the key columns aside)."""
    return index.method, index.predicate


def _keys(index: Index) -> tuple[tuple[str, str], ...]:
    return tuple(zip(index.columns, index.key_options or ("",) * len(index.columns)))


def _duplicate_of(index: Index, indexes: tuple[Index, ...]) -> Index | None:
    """The index this one duplicates; of identical ones the one that enforces, else the most used, stays."""
    same = [other for other in indexes if other.valid and _same_shape(other) == _same_shape(index)
            and _keys(other) == _keys(index) and set(other.include) == set(index.include)]
    keeper = min(same, key=lambda i: (not _enforces(i), -i.idx_scan, i.name))
    return keeper if keeper is not index else None


def _covering(index: Index, indexes: tuple[Index, ...]) -> Index | None:
    """A valid index whose key starts with this one's key and that also holds its INCLUDE columns.

    B-tree only: there a leading prefix is what a lookup uses; other methods differ.
    """
    keys, include = _keys(index), set(index.include)
    for other in indexes:
        if (index.method == "btree" and other is not index and other.valid
                and _same_shape(other) == _same_shape(index) and _keys(other)[:len(keys)] == keys
                and include <= set(other.columns + other.include)
                and (_keys(other), set(other.include)) != (keys, include)):  # an identical twin is a duplicate
            return other
    return None


def _covers_fk(index: Index, fk: ForeignKey) -> bool:
    """Lookups by the FK columns (deletes and key updates on the referenced table) can use it."""
    n = len(fk.columns)
    return (index.valid and index.predicate is None and index.method in ("btree", "hash")
            and set(index.columns[:n]) == set(fk.columns))


def _fk_supports(table: Table, foreign_keys: tuple[ForeignKey, ...]) -> set[str]:
    """Indexes that back a foreign key of this table: an unused one is still needed for parent deletes."""
    return {i.name for fk in foreign_keys if fk.table == table.qualified
            for i in table.indexes if _covers_fk(i, fk)}


def _unindexed(fk: ForeignKey, table: Table) -> IndexIssue:
    cols = ", ".join(quote_ident(c) for c in fk.columns)
    ddl = f"CREATE INDEX CONCURRENTLY ON {quote_ident(table.schema)}.{quote_ident(table.name)} ({cols});"
    reason = (f"foreign key {fk.name} ({', '.join(fk.columns)}) → {fk.ref_table} has no index starting with "
              f"its columns: every delete or key update on {fk.ref_table} scans {table.qualified}")
    return IndexIssue("unindexed_foreign_key", table.qualified, reason, ddl, foreign_key=fk)


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# PostgreSQL's keywords that are not "unreserved" (pg_get_keywords() catcode R, T or C):
# quote_ident() quotes them, and so do we.
_KEYWORDS = frozenset("""
    all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create
    current_catalog current_date current_role current_time current_timestamp current_user default deferrable
    desc distinct do else end except false fetch for foreign from grant group having in initially intersect
    into lateral leading limit localtime localtimestamp not null offset on only or order placing primary
    references returning select session_user some symmetric table then to trailing true union unique user
    using variadic when where window with
    authorization binary collation concurrently cross current_schema freeze full ilike inner is isnull join
    left like natural notnull outer overlaps right similar tablesample verbose
    between bigint bit boolean char character coalesce dec decimal exists extract float greatest grouping
    inout int integer interval least national nchar none normalize nullif numeric out overlay position
    precision real row setof smallint substring time timestamp treat trim values varchar xmlattributes
    xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
""".split())


def quote_ident(name: str) -> str:
    """``name`` as SQL: bare when PostgreSQL reads it back unchanged, else double-quoted."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'
