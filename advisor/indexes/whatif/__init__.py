"""What-if costing for ``advisor suggest-indexes``: the planner's cost of a query under a set of indexes.

- ``costs.py``: ``WhatIf``, the front: each query worked out once, the cost cache
  (``CostCache``, keyed by the indexes a query could use), parallel prefetch (``--jobs``).
- ``queries.py``: what is worked out once per query (how to explain it, which tables count).
- ``backend.py``: the interface of the two strategies that make a configuration's indexes:
  ``hypopg.py`` (default: hypothetical indexes) and ``scratch.py`` (``--scratch``: real
  indexes in a transaction always rolled back).
- ``verify.py``: ``--verify``, the picks built for real and the queries measured before and after.
- ``errors.py``: what the engine says when it cannot answer.

The query is only ever EXPLAINed (no ANALYZE, except --verify's reads), each EXPLAIN in a
read-only transaction or savepoint. We never ANALYZE a table: statistics stay as they were
for the whole run, so costs are comparable.
"""

from advisor.indexes.whatif.costs import WhatIf
from advisor.indexes.whatif.errors import CandidateRejected, QueryNotCosted, WhatIfUnavailable
from advisor.indexes.whatif.hypopg import hypopg_missing

__all__ = ["CandidateRejected", "QueryNotCosted", "WhatIf", "WhatIfUnavailable", "hypopg_missing"]
