"""What the server logs beside statements: temp files, lock waits, deadlocks, errors, sessions,
checkpoints and autovacuum, tied to the statement and application they belong to (issue #13).

``LogEvents`` is a mergeable aggregate like ``WorkloadStats``: each log part fills its own and
partials merge in input order."""

from __future__ import annotations


class LogEvents:
    """Being built (issue #13): the aggregate every log part fills."""
