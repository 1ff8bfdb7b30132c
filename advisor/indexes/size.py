"""The size of a B-tree index as ``CREATE INDEX`` builds it, from the table's statistics.

HypoPG's ``hypopg_relation_size`` prices every row as its own index tuple, with a
fudge factor for composite keys: it ignores B-tree deduplication (PostgreSQL 13+),
which stores a key once with a posting list of 6-byte heap TIDs, so a low-cardinality
index builds 3-7× smaller than it says; and it counts two-column and INCLUDE tuples
about twice as wide as they are (1.8× too big on our test tables). ``suggest-indexes``
spends its ``--budget-mb`` by these sizes, so they must be the ones the server builds.

The model follows the bulk load of nbtsort.c (``_bt_load``, ``_bt_buildadd``):

- rows: ``reltuples``; keys: pg_stats (``n_distinct``, ``null_frac``, the most common
  values' frequencies, ``avg_width``). A single key's rows are grouped by value: the most
  common values by their frequencies, the others evenly; NULLs are one more group.
  Several keys: the combinations counted by extended statistics (CREATE STATISTICS …
  (ndistinct)) where there are some; else the keys are taken as independent, as the
  planner takes them, and the rows fill the product of their distinct counts. Correlated
  keys have fewer combinations, so their index builds smaller than estimated, never larger;
- a partial index keeps the rows the planner expects its predicate to keep; the keys it
  fixes (``c = 'x'``, ``c IS NULL``, …) have one value, the others what that many rows show;
- deduplication applies when every key's default operator class can say that equal
  means bitwise equal (its ``equalimage`` support function: not numeric, float, jsonb,
  arrays, nondeterministic collations …) and the index has no INCLUDE columns. At build
  a posting list tuple is capped at a tenth of a page (812 bytes);
- tuples: an 8-byte header (16 with a NULL bitmap), the keys aligned, MAXALIGNed,
  plus a 4-byte line pointer; leaves are filled to the fillfactor (90 % unless given)
  and the tuple that does not fit becomes the next page's first, as the build does;
  upper levels hold one pivot per page below (70 % full), plus the metapage.

Whatever the model cannot see (expression keys, methods other than B-tree, a table
never analyzed, a column whose statistics are hidden from us, a predicate the planner
cannot estimate) is left to HypoPG.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import psycopg
import sqlglot
from sqlglot import exp

from advisor.indexes.model import IndexCandidate, key_column

BLOCK = 8192
_PAGE_ROOM = BLOCK - 24 - 16 - 4  # page header, the B-tree's special space, the high key's line pointer
_LINE_POINTER = 4
_TID = 6
_MAXALIGN = 8
_MAX_POSTING = BLOCK * 10 // 100 // _MAXALIGN * _MAXALIGN - _LINE_POINTER  # nbtsort.c's cap at build: 812
_DEFAULT_FILLFACTOR = 90
_NONLEAF_FILLFACTOR = 70
_ALIGN = {"c": 1, "s": 2, "i": 4, "d": 8}

# One row per column of the table. The default B-tree operator class of the column's type
# (its own, else one it is binary-coercible to, as DefineIndex picks) and that class's
# equalimage procedure, if any: deduplication needs one that answers true.
_STATS = """
SELECT c.reltuples::float8, c.relkind::text, a.attnum::int4, a.attname::text, t.typlen::int4, t.typalign::text,
       coalesce(coll.collisdeterministic, true), s.avg_width::int4, s.n_distinct::float8,
       s.null_frac::float8, s.most_common_freqs::float8[],
       (SELECT p.amproc::regproc::text
          FROM pg_opclass oc
          JOIN pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree'
          LEFT JOIN pg_amproc p ON p.amprocfamily = oc.opcfamily AND p.amprocnum = 4
                               AND p.amproclefttype = oc.opcintype AND p.amprocrighttype = oc.opcintype
         WHERE oc.opcdefault
           AND (oc.opcintype = coalesce(nullif(t.typbasetype, 0), t.oid)
                OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = coalesce(nullif(t.typbasetype, 0), t.oid)
                                                     AND k.casttarget = oc.opcintype AND k.castmethod = 'b'))
         ORDER BY oc.opcintype = coalesce(nullif(t.typbasetype, 0), t.oid) DESC
         LIMIT 1)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
  LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                      AND s.attname = a.attname AND NOT s.inherited
 WHERE c.oid = $1::oid
"""

# Distinct combinations of columns, where the user asked the server to count them (CREATE STATISTICS … (ndistinct)).
_COMBINATIONS = """
SELECT e.n_distinct::text
  FROM pg_stats_ext e
  JOIN pg_namespace n ON n.nspname = e.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = e.tablename
 WHERE c.oid = $1::oid AND e.n_distinct IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class ColumnStats:
    name: str
    length: int  # pg_type.typlen: bytes, or -1 for a varlena
    align: int
    width: float  # average bytes stored (pg_stats.avg_width), a varlena's header included
    n_distinct: float  # distinct non-NULL values (pg_stats' fraction of the rows turned into a count)
    null_frac: float
    common_freqs: tuple[float, ...]  # the most common values' frequencies
    equal_image: bool  # equal values are bitwise equal: deduplication may merge them


@dataclass(frozen=True, slots=True)
class TableStats:
    rows: float
    columns: dict[str, ColumnStats]
    combinations: dict[frozenset[str], float] = field(default_factory=dict)  # extended statistics' ndistinct


def read_table_stats(lookup: Callable[[str, list], list[tuple]], table_oid: int) -> TableStats | None:
    """The table's rows and its columns' statistics; None for a table the model cannot read
    (never analyzed, partitioned, catalogs older than PostgreSQL 12)."""
    try:
        rows = lookup(_STATS, [str(table_oid)])
        combinations = [r[0] for r in lookup(_COMBINATIONS, [str(table_oid)])]
    except psycopg.Error:
        return None
    if not rows or rows[0][0] < 0 or rows[0][1] not in ("r", "m"):
        return None
    columns: dict[str, ColumnStats] = {}
    names: dict[str, str] = {}  # attnum -> name, for extended statistics
    for _, _, number, name, length, align, deterministic, width, n_distinct, null_frac, freqs, equal_image in rows:
        names[str(number)] = name
        if width is None:  # never analyzed, or hidden from this role
            continue
        distinct = n_distinct if n_distinct >= 0 else -n_distinct * rows[0][0]
        columns[name] = ColumnStats(
            name, length, _ALIGN[align], width, distinct, null_frac, tuple(freqs or ()),
            equal_image in ("btequalimage", "btvarstrequalimage") and deterministic)
    return TableStats(float(rows[0][0]), columns, _combinations(combinations, names))


def _combinations(texts: list[str], names: dict[str, str]) -> dict[frozenset[str], float]:
    """pg_ndistinct's text, {"1, 2": 2000, …} by attribute number, as column names -> distinct count."""
    found: dict[frozenset[str], float] = {}
    for text in texts:
        for numbers, distinct in json.loads(text).items():
            columns = [names.get(n.strip()) for n in numbers.split(",")]
            known = [c for c in columns if c is not None]
            if len(known) == len(columns):  # else an expression's statistics (negative numbers)
                found[frozenset(known)] = float(distinct)
    return found


def restricted(table: TableStats, kept: float, where: str) -> TableStats:
    """The statistics of the ``kept`` rows a partial index's predicate keeps: a column the predicate
    fixes (``c = 'x'``, ``c``, ``NOT c``, ``c IS NULL``) has one value; any other keeps the values
    that many rows drawn from the table would show, as the planner reckons the groups of a
    filtered GROUP BY (estimate_num_groups)."""
    fixed = _fixed_columns(where)

    def drawn(distinct: float) -> float:
        if distinct <= 0 or table.rows <= 0:
            return distinct
        return max(distinct * (1 - (max(table.rows - kept, 0.0) / table.rows) ** (table.rows / distinct)), 1.0)

    columns = {}
    for name, c in table.columns.items():
        if name in fixed:
            columns[name] = replace(c, n_distinct=1.0, null_frac=1.0 if fixed[name] else 0.0, common_freqs=())
        else:
            columns[name] = replace(c, n_distinct=drawn(c.n_distinct), common_freqs=())
    return TableStats(kept, columns, {k: drawn(d) for k, d in table.combinations.items()})


def _fixed_columns(where: str) -> dict[str, bool]:
    """The columns a predicate's conjuncts fix to one value (True: to NULL)."""
    try:
        tree = sqlglot.parse_one(where, read="postgres")
    except sqlglot.errors.SqlglotError:
        return {}
    fixed = {}
    for term in tree.flatten() if isinstance(tree, exp.And) else [tree]:
        term = term.this if isinstance(term, exp.Not) else term  # NOT c: c is false
        if isinstance(term, exp.Column):
            fixed[term.name] = False
        elif isinstance(term, exp.Is) and isinstance(term.this, exp.Column) and isinstance(term.expression, exp.Null):
            fixed[term.this.name] = True
        elif isinstance(term, exp.EQ):
            column, value = (term.this, term.expression) if isinstance(term.this, exp.Column) else \
                (term.expression, term.this)
            if isinstance(column, exp.Column) and isinstance(value, (exp.Literal, exp.Boolean)):
                fixed[column.name] = False
    return fixed


def btree_size(table: TableStats, candidate: IndexCandidate, *, deduplication: bool = True) -> int | None:
    """Bytes of ``candidate`` built on ``table`` (for a partial index: ``restricted`` to the rows it
    keeps); None when the model cannot tell (see the module's docstring). ``deduplication``: the
    server has it (PostgreSQL 13+)."""
    if candidate.method != "btree":
        return None
    keys = _stats(table, [key_column(k) for k in candidate.columns])
    included = _stats(table, list(candidate.include))
    if keys is None or included is None:  # an expression, or a column without statistics
        return None
    values = _values(keys, table.rows, table.combinations.get(frozenset(k.name for k in keys)))
    dedup = deduplication and not included and all(k.equal_image for k in keys)
    tuple_size = _tuple_size([*keys, *included])
    tuples: defaultdict[tuple[float, float], float] = defaultdict(float)  # (size, posting list bytes) -> how many
    for rows, count in _whole(values if dedup else [(1.0, table.rows)]):
        for kind, n in _posting_tuples(rows, tuple_size).items():
            tuples[kind] += n * count
    fillfactor = candidate.fillfactor or _DEFAULT_FILLFACTOR
    level = math.ceil(sum(n / _per_page(*kind, fillfactor, leaf=True) for kind, n in tuples.items()))
    # A page boundary between equal keys gives its pivot a heap TID (suffix truncation cannot cut it).
    items = sum(tuples.values())
    ties = max(0.0, 1 - sum(count for _, count in values) / items) if items else 0.0
    pivot = _tuple_size(keys) + _MAXALIGN * ties
    blocks = level
    while level > 1:
        level = math.ceil(level / _per_page(pivot, 0.0, _NONLEAF_FILLFACTOR, leaf=False))
        blocks += level
    return (1 + blocks) * BLOCK  # the metapage too


def _stats(table: TableStats, names: list[str | None]) -> list[ColumnStats] | None:
    """The statistics of the named columns; None if one is an expression (no name) or has none."""
    found = [c for n in names if n is not None and (c := table.columns.get(n)) is not None]
    return found if len(found) == len(names) else None


def _tuple_size(columns: list[ColumnStats]) -> float:
    """The average size of an index tuple holding ``columns``, MAXALIGNed (line pointer apart)."""
    end = data = 0.0
    for c in columns:
        start = end if c.length < 0 and c.width <= 126 else _align(end, c.align)  # a short varlena is unaligned
        data += (start + (c.length if c.length > 0 else c.width) - end) * (1 - c.null_frac)
        end = start + (c.length if c.length > 0 else c.width)
    any_null = 1 - math.prod(1 - c.null_frac for c in columns)
    return _align(8 + _MAXALIGN * any_null + data, _MAXALIGN)  # a NULL adds a bitmap: the data starts at 16


def _values(keys: list[ColumnStats], rows: float, combinations: float | None = None) -> list[tuple[float, float]]:
    """(rows with a key value, how many such values): the duplicates deduplication can merge.
    Several keys: ``combinations`` counted by extended statistics, else the combinations that
    ``rows`` rows fill when the keys are independent: of the product of the keys' distinct
    counts (a NULL one more value), as many as that many draws are expected to find."""
    if len(keys) > 1:
        product = math.prod(max(k.n_distinct, 1.0) + (k.null_frac > 0) for k in keys)
        distinct = min(combinations or _filled(product, rows), rows)
        return [(rows / distinct, distinct)] if distinct >= 1 else []
    key = keys[0]
    values = [(f * rows, 1.0) for f in key.common_freqs if f * rows >= 1]
    rest = rows * (1 - key.null_frac) - sum(n for n, _ in values)
    if rest >= 1:
        others = min(max(key.n_distinct - len(values), 1.0), rest)
        values.append((rest / others, others))
    if rows * key.null_frac >= 1:
        values.append((rows * key.null_frac, 1.0))
    return values


def _filled(cells: float, rows: float) -> float:
    """How many of ``cells`` equally likely values ``rows`` rows are expected to show."""
    return cells if cells <= 1 else cells * -math.expm1(rows * math.log1p(-1 / cells))


def _whole(values: list[tuple[float, float]]) -> Iterator[tuple[int, float]]:
    """Whole rows per value: 2.3 rows each is 70 % of the values with 2 rows and 30 % with 3."""
    for rows, count in values:
        low = math.floor(rows)
        yield low, count * (1 - (rows - low))
        if rows > low:
            yield low + 1, count * (rows - low)


def _posting_tuples(rows: int, tuple_size: float) -> Counter[tuple[float, float]]:
    """The tuples one value's rows make, as the build merges them: (size, posting list bytes) -> how many."""
    per_tuple = int((_MAX_POSTING // _MAXALIGN * _MAXALIGN - tuple_size) // _TID)
    full, rest = divmod(rows, per_tuple)
    tuples = Counter({_posting_tuple(per_tuple, tuple_size): full} if full else {})
    if rest:
        tuples[_posting_tuple(rest, tuple_size)] += 1
    return tuples


def _posting_tuple(tids: int, tuple_size: float) -> tuple[float, float]:
    if tids == 1:
        return tuple_size, 0.0
    return _align(tuple_size + _TID * tids, _MAXALIGN), float(_TID * tids)


@functools.lru_cache(maxsize=4096)
def _per_page(size: float, posting: float, fillfactor: int, *, leaf: bool) -> int:
    """How many tuples of one size a page keeps, filled as _bt_buildadd fills it: the page is
    finished when the next tuple does not fit or the free space left is under the fillfactor's
    (a posting list counting as free, since the high key drops it); its last tuple then moves
    to the next page, which so starts with one, and a copy of its key becomes the high key."""
    target_free = BLOCK * (100 - fillfactor) // 100
    free, on_page = _PAGE_ROOM - size - _LINE_POINTER, 1
    while True:
        room = free - _LINE_POINTER
        if room < size + (_MAXALIGN if leaf else 0) or (room + posting < target_free and on_page >= 2):
            return max(on_page - 1, 1)
        free -= size + _LINE_POINTER
        on_page += 1


def _align(n: float, to: int) -> float:
    return math.ceil(n / to) * to


class BtreeSizes:
    """Model sizes in one database, reading each table's statistics once. ``rows_kept``: the
    planner's estimate of the rows a partial index's predicate keeps (None: it cannot say)."""

    def __init__(self, lookup: Callable[[str, list], list[tuple]], server_version_num: int,
                 rows_kept: Callable[[IndexCandidate], float | None]) -> None:
        self._lookup = lookup
        self._deduplication = server_version_num >= 130000
        self._rows_kept = rows_kept
        self._tables: dict[int, TableStats | None] = {}

    def estimate(self, candidate: IndexCandidate, table_oid: int) -> int | None:
        if table_oid not in self._tables:
            self._tables[table_oid] = read_table_stats(self._lookup, table_oid)
        if (table := self._tables[table_oid]) is None or candidate.method != "btree":
            return None
        if candidate.where:
            if (kept := self._rows_kept(candidate)) is None:
                return None
            table = restricted(table, kept, candidate.where)
        return btree_size(table, candidate, deduplication=self._deduplication)
