"""Statement fingerprints: sqlglot normalization, cached by a cheap pre-key.

(Contract only; the implementation is being written.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fingerprint:
    id: str  # 16 hex digits: a stable hash of `normalized`
    normalized: str  # literals and parameters as $1..$n in order, IN-lists collapsed, no comments
    parsed: bool  # False: sqlglot could not represent it faithfully; token-level fallback
    statement_type: str  # select, insert, update, delete, merge, with, utility, unknown


def fingerprint(sql: str) -> Fingerprint:
    raise NotImplementedError
