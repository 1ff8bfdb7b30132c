"""Counts in sentences, for every layer that writes one (checks, index advice, reports)."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 query', '2 queries', '0 indexes': the count with its noun agreed."""
    if n == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else \
            word + "es" if word.endswith(("s", "x", "ch", "sh")) else word + "s"
    return f"{n:,} {many}"
