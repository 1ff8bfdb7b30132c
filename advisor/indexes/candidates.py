"""From queries to index candidates: which indexes would serve what each statement filters, joins, sorts and reads.

What a statement uses on each table comes from :mod:`advisor.indexes.usage`; from there it is a
pure function of those uses and the Catalog:

:func:`candidates` turns each table occurrence into btree candidates, the classic way: equality
columns, most selective first (:func:`selectivity`), then one range column; or the equality
columns then the ORDER BY columns (an index in that order returns rows sorted: no Sort, and a
LIMIT stops early); join columns leading (the inner side of a nested loop); every prefix up to
``max_width``; single columns; an INCLUDE variant when it makes the scan index-only with at most
three more columns; a partial index for a rare constant (``WHERE status = 'pending'``);
expression indexes (``lower(email)``). Tables under ``min_rows`` rows get none: a sequential scan
of a few pages wins.

:func:`workload_candidates` does it for a workload and sets aside the candidates an
existing valid index already serves (:func:`served_by_existing`), naming that index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import sqlglot
from sqlglot import exp

from advisor.db.catalog import Catalog, Column, Index, Table
from advisor.indexes.existing import quote_ident
from advisor.indexes.model import AdvisedQuery, IndexCandidate
from advisor.indexes.usage import (
    ConstantPredicate,
    Occurrence,
    TableUse,
    merged_by_table,
    occurrences,
    stored_name,
    unparen,
)

__all__ = ["CandidateSet", "candidates", "selectivity", "served_by_existing", "static_table", "workload_candidates"]

MIN_ROWS = 1_000  # below this an index rarely beats a sequential scan
MAX_INCLUDE = 3  # INCLUDE variant only when the query reads at most this many more columns
RARE_SHARE = 0.05  # a constant matching at most this share of the rows earns a partial index
SKEW = 0.25  # …and at most this fraction of an average value's share: rare among its peers, as
# 'pending' among statuses, not one die column of twenty (a logged literal may be a parameter)
PARTIAL_MAX_DISTINCT = 100  # …on a column of at most this many values (a status, not an id)
DEFAULT_EQ_SEL = 0.005  # PostgreSQL's guess for "column = something" without statistics
MAX_RANGE_COLUMNS = 3  # composites tried per distinct range column
STATIC_FILLFACTOR = 100  # for indexes on a table no one writes (see static_table)

# Types without a btree operator class: they are never key columns.
_NOT_BTREE = re.compile(r"^(json|xml|point|line|lseg|box|path|polygon|circle)\b")


@dataclass(frozen=True, slots=True)
class CandidateSet:
    candidates: tuple[IndexCandidate, ...]  # deduplicated across queries, in order of first appearance
    by_query: dict[str, tuple[IndexCandidate, ...]]  # fingerprint -> its candidates
    moot: tuple[tuple[IndexCandidate, str], ...]  # (candidate, name of the existing index that serves it)
    uses: dict[str, dict[str, TableUse]]  # fingerprint -> table -> how the query uses it


# --- the public functions -------------------------------------------------------------


def selectivity(column: str | Column, table: Table, values: Sequence[str | None] | None = None) -> float:
    """The share of ``table``'s rows an equality on ``column`` keeps (smaller is more selective).

    With ``values`` (literals as pg_stats prints them, None for IS NULL): their
    frequencies from the most-common-values list, else the share left over by that
    list spread over the other distinct values. Without (a parameter): the expected
    share for a value drawn as the column's own values are, Σ freq² / (1 − null_frac),
    which puts a skewed column (90 % 'done') after an evenly spread one.
    From pg_stats: n_distinct (negative: minus a fraction of the rows), null_frac,
    most_common_vals/freqs. Without statistics: 1/rows for a column with a unique
    single-column index, else PostgreSQL's default 0.005.
    """
    col = table.columns.get(column) if isinstance(column, str) else column
    rows = max(table.rows, 1.0)
    if col is None or col.n_distinct is None:
        name = column if isinstance(column, str) else column.name
        unique = any(i.unique and i.valid and i.predicate is None and i.columns == (name,) for i in table.indexes)
        return 1.0 / rows if unique else DEFAULT_EQ_SEL
    null = min(max(col.null_frac or 0.0, 0.0), 1.0)
    freqs = col.most_common_freqs
    distinct = max(col.n_distinct if col.n_distinct > 0 else -col.n_distinct * rows, 1.0)
    others = max(distinct - len(freqs), 1.0)
    rest = max(1.0 - null - sum(freqs), 0.0)
    if values is not None:
        share = 0.0
        for value in values:
            if value is None:
                share += null
                continue
            found = _mcv_frequency(col, value)
            share += found if found is not None else (rest / others if rest > 0 else 1.0 / rows)
        return min(share, 1.0)
    if null >= 1.0:
        return 1.0 / rows
    return (sum(f * f for f in freqs) + rest * rest / others) / (1.0 - null)


def _mcv_frequency(col: Column, value: str) -> float | None:
    padded = col.type.startswith("character(")  # pg_stats prints char(n) values padded with blanks
    for v, f in zip(col.most_common_vals, col.most_common_freqs):
        if v == value or _same_number(v, value) or (padded and v.rstrip(" ") == value.rstrip(" ")):
            return f
    return None


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _distinct(col: Column, table: Table) -> float | None:
    if col.n_distinct is None:
        return None
    return col.n_distinct if col.n_distinct > 0 else -col.n_distinct * max(table.rows, 1.0)


def _rare(predicate: ConstantPredicate, table: Table) -> bool:
    """A constant worth a partial index: few rows, on a column of few values (not a per-request id)."""
    col = table.columns.get(predicate.column)
    if col is None or col.n_distinct is None:
        return False
    share = selectivity(col, table, predicate.values)
    if predicate.values != (None,):
        distinct = _distinct(col, table)
        if distinct is None or distinct > PARTIAL_MAX_DISTINCT or share > SKEW / distinct:
            return False
    return share <= RARE_SHARE


def _key_column(table: Table, name: str) -> bool:
    col = table.columns.get(name)
    return col is not None and not _NOT_BTREE.match(col.type)


def _occurrence_candidates(occ: Occurrence, max_width: int) -> list[IndexCandidate]:
    table, name = occ.table, occ.table.qualified
    # Equality keys, most selective first; an expression ranks as its column does.
    eq_keys = [(c, c, occ.literal_values.get(c)) for c in occ.equality if _key_column(table, c)]
    eq_keys += [(text, column, None) for text, column in occ.eq_expressions.items()]
    eq = [key for key, _, _ in sorted(eq_keys, key=lambda k: selectivity(k[1], table, k[2]))]
    ranges = [c for c in occ.range if _key_column(table, c) and c not in eq]
    ranges += [text for text in occ.range_expressions if text not in eq]
    joins = [c for c in occ.join if _key_column(table, c)]
    order = _order_keys(occ, eq)
    group = [c for c in occ.group if _key_column(table, c)] if occ.group_complete else []

    composites: list[list[str]] = [eq + [r] for r in ranges[:MAX_RANGE_COLUMNS]] or ([eq] if eq else [])
    if order and (occ.has_limit or (eq and not ranges)):
        composites.append(eq + order)
    if group and len(group) == len(occ.group):
        composites.append(eq + group)
    if joins:
        composites.append(joins + eq + ranges[:1])
    full = [list(dict.fromkeys(c)) for c in composites if c]
    composites = [c[:max_width] for c in full]

    found: list[IndexCandidate] = []
    for keys in composites:
        found += [IndexCandidate(name, tuple(keys[:width])) for width in range(1, len(keys) + 1)]
    found += [IndexCandidate(name, (key,)) for key in (*eq, *ranges, *joins)]
    if not occ.written:
        def bare(keys) -> set[str]:  # key columns without " DESC"
            return {_wanted_key(k, table)[0] for k in keys}

        covering = [IndexCandidate(name, tuple(keys), include=extra) for keys in composites
                    if 1 <= len(extra := tuple(c for c in occ.read if c not in bare(keys) and c in table.columns))
                    <= MAX_INCLUDE]
        # (a) INCLUDE (b, c) is dominated by (a, b) INCLUDE (c): the same columns, and more of them in order
        found += [c for c in covering if not any(
            o.columns[:len(c.columns)] == c.columns and len(o.columns) > len(c.columns)
            and bare(o.columns) | set(o.include) == bare(c.columns) | set(c.include) for o in covering)]
    for predicate in occ.constants:
        if _rare(predicate, table):
            for keys in full or [[predicate.column]]:
                rest = [k for k in keys if k != predicate.column] or [predicate.column]
                found.append(IndexCandidate(name, tuple(rest[:max_width]), where=predicate.sql))
    return found


def _order_keys(occ: Occurrence, eq: list[str]) -> list[str]:
    """ORDER BY as index keys after the equality columns: directions relative to the first (a btree
    scans both ways), so ORDER BY a DESC, b DESC is (a, b) and ORDER BY a, b DESC is (a, b DESC)."""
    items = [(c, d) for c, d in occ.order if c not in eq]
    if not items or not all(_key_column(occ.table, c) for c, _ in items):
        return []
    first = items[0][1]
    return [c if d == first else f"{quote_ident(c)} DESC" for c, d in items]


def _generate(occurrences: list[Occurrence], max_width: int) -> list[IndexCandidate]:
    found: list[IndexCandidate] = []
    for occ in occurrences:
        found += _occurrence_candidates(occ, max(1, max_width))
    return list(dict.fromkeys(found))


def candidates(query: AdvisedQuery | str, catalog: Catalog, *, max_width: int = 3,
               min_rows: float = MIN_ROWS) -> list[IndexCandidate]:
    """Index candidates for one statement, deduplicated, without those an existing index serves."""
    sql = query.sql if isinstance(query, AdvisedQuery) else query
    return [c for c in _generate([o for o in occurrences(sql, catalog) if o.table.rows >= min_rows], max_width)
            if served_by_existing(c, catalog.tables[c.table]) is None]


# --- existing indexes ---------------------------------------------------------------------


def _key(text: str, table: Table) -> str:
    """A key column, or an expression in one spelling: pg_get_indexdef's ``lower((email)::text)`` and
    our ``lower(email)`` agree."""
    if text in table.columns:
        return text
    try:
        tree = sqlglot.parse_one(text, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return text
    def noise(n: exp.Expr) -> bool:  # parentheses, and the ::text PostgreSQL adds to literals and varchar
        return isinstance(n, exp.Paren) or (isinstance(n, exp.Cast) and n.to.this in (exp.DType.TEXT, exp.DType.VARCHAR)
                                            and isinstance(unparen(n.this), (exp.Column, exp.Literal)))

    for node in reversed(list(tree.walk())):  # deepest first
        if noise(node) and node is not tree:
            node.replace(node.this)
    while noise(tree):
        tree = tree.this
    return "(" + tree.sql(dialect="postgres", normalize_functions="lower") + ")"


def _wanted_key(text: str, table: Table) -> tuple[str, bool]:
    """A candidate's key column: (normalized key, descending)."""
    if text in table.columns or not text.endswith(" DESC"):
        return _key(text, table), False
    bare = text[:-5]
    return _key(bare[1:-1].replace('""', '"') if bare.startswith('"') else bare, table), True


def served_by_existing(candidate: IndexCandidate, table: Table) -> Index | None:
    """A valid index that already does what ``candidate`` would, or None.

    Same method; its leading key columns equal the candidate's (directions equal or all
    reversed: a btree scans both ways); no other operator class or collation; the
    candidate's INCLUDE columns among its columns; a compatible predicate: the same
    one, or none — a partial candidate ``(k) WHERE c = …`` is served by a plain index
    on (c, k…) or, when k is c, on (c). Of several, the narrowest.
    """
    wanted = [_wanted_key(k, table) for k in candidate.columns]
    predicate = _key(candidate.where, table) if candidate.where else None
    predicate_columns = _predicate_columns(candidate.where, table) if candidate.where else []
    served = []
    for index in table.indexes:
        if not index.valid or index.method != candidate.method:
            continue
        options = (*index.key_options, *("",) * (len(index.columns) - len(index.key_options)))
        if any(set(o.split()) - {"DESC", "NULLS", "FIRST", "LAST"} for o in options):
            continue
        if not set(candidate.include) <= set(index.columns) | set(index.include):
            continue
        have = [(_key(c, table), "DESC" in o.split()) for c, o in zip(index.columns, options)]
        if index.predicate is not None:
            ok = _key(index.predicate, table) == predicate and _leads(have, wanted)
        elif predicate is None:
            ok = _leads(have, wanted)
        elif [k for k, _ in wanted] == predicate_columns:  # (c) WHERE c = …
            ok = _leads(have, wanted)
        else:  # (k) WHERE c = … against a plain (c, k)
            n = len(predicate_columns)
            ok = (bool(predicate_columns) and sorted(k for k, _ in have[:n]) == sorted(predicate_columns)
                  and _leads(have[n:], wanted))
        if ok:
            served.append(index)
    return min(served, key=lambda i: (len(i.columns) + len(i.include), i.name)) if served else None


def _leads(have: list[tuple[str, bool]], wanted: list[tuple[str, bool]]) -> bool:
    """``have`` starts with ``wanted``'s keys, in the same directions or all reversed."""
    n = len(wanted)
    if len(have) < n or [k for k, _ in have[:n]] != [k for k, _ in wanted]:
        return False
    same = [a == b for (_, a), (_, b) in zip(have, wanted)]
    return all(same) or not any(same)


def _predicate_columns(where: str, table: Table) -> list[str]:
    try:
        tree = sqlglot.parse_one(where, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return []
    names = list(dict.fromkeys(stored_name(c.this) for c in tree.find_all(exp.Column)))
    return names if all(n in table.columns for n in names) else []


def workload_candidates(queries: Iterable[AdvisedQuery | str], catalog: Catalog, max_width: int = 3, *,
                        min_rows: float = MIN_ROWS) -> CandidateSet:
    """Candidates for every query, deduplicated, with those existing indexes serve set aside.

    ``moot`` covers small tables too: that a lookup is already served by the primary key is
    worth saying whatever the table's size; new candidates need ``min_rows`` rows.
    """
    from advisor.workload.fingerprint import fingerprint

    every: dict[IndexCandidate, None] = {}
    by_query: dict[str, tuple[IndexCandidate, ...]] = {}
    moot: dict[IndexCandidate, str] = {}
    uses: dict[str, dict[str, TableUse]] = {}
    for query in queries:
        sql = query.sql if isinstance(query, AdvisedQuery) else query
        key = query.fingerprint if isinstance(query, AdvisedQuery) else fingerprint(query).id
        occs = occurrences(sql, catalog)
        kept = []
        for candidate in _generate(occs, max_width):
            table = catalog.tables[candidate.table]
            existing = served_by_existing(candidate, table)
            if existing is not None:
                moot.setdefault(candidate, existing.name)
            elif table.rows >= min_rows:
                kept.append(candidate)
                every.setdefault(candidate)
        by_query[key] = tuple(dict.fromkeys((*by_query.get(key, ()), *kept)))
        uses[key] = {**uses.get(key, {}), **merged_by_table(occs)}
    written = {t for per_table in uses.values() for t, use in per_table.items() if use.written}
    packed = {t for t in {c.table for c in every} if t not in written and static_table(catalog.tables[t])}

    def pack(c: IndexCandidate) -> IndexCandidate:
        return replace(c, fillfactor=STATIC_FILLFACTOR) if c.table in packed else c

    by_query = {key: tuple(pack(c) for c in found) for key, found in by_query.items()}
    return CandidateSet(tuple(pack(c) for c in every), by_query, tuple(moot.items()), uses)


def static_table(table: Table) -> bool:
    """A table no one changes: no row updated or deleted since the statistics were reset, none
    inserted since the last ANALYZE, and analyzed at least once.

    Its indexes can be packed full (fillfactor 100 instead of btree's 90): PostgreSQL's
    documentation advises it for static tables, and the index is about a tenth smaller and
    cheaper to scan. The workload must not write the table either (checked by the caller).
    """
    analyzed = table.last_analyze or table.last_autoanalyze
    return bool(analyzed) and table.n_tup_upd == 0 and table.n_tup_del == 0 and table.n_mod_since_analyze == 0
