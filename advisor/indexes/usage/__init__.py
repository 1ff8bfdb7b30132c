"""What each statement uses on each table, read from its sqlglot AST and qualified against the
catalog: which columns it filters, joins, sorts, groups and reads, for
:mod:`advisor.indexes.candidates` to turn into index candidates.

:func:`query_columns` merges the references to one table into a :class:`TableUse`;
:func:`occurrences` gives them one by one (:class:`Occurrence`), as candidate generation needs;
:func:`walk` reads a parsed statement and lets a caller see every predicate with its columns
resolved (``on_predicate``), as :mod:`advisor.db.representative` does for ``$n``.

The package: ``model`` (what is recorded), ``sources`` (which table column a reference stands
for), ``clauses`` (which predicate shapes and sort orders an index serves: the advisor's rules),
``walker`` (the statement, scope by scope).
"""

from advisor.indexes.usage.clauses import ColumnOf, PredicateHook
from advisor.indexes.usage.model import ConstantPredicate, Occurrence, TableUse, merged_by_table
from advisor.indexes.usage.sources import stored_name, unparen
from advisor.indexes.usage.walker import UsageWalker, occurrences, query_columns, walk

__all__ = ["ColumnOf", "ConstantPredicate", "Occurrence", "PredicateHook", "TableUse", "UsageWalker",
           "merged_by_table", "occurrences", "query_columns", "stored_name", "unparen", "walk"]
