"""The values a server logged for a statement's ``$n`` parameters (``DETAIL: parameters: …``)."""

from __future__ import annotations

import re

# One `$n = value` of the logged text; a value is NULL or a quoted string with '' inside.
_PARAMETER = re.compile(r"\s*\$(\d+)\s*=\s*(?:(NULL)|'((?:[^']|'')*)')\s*(?:,|\Z)", re.S)


def parse_parameters(text: str) -> list[str | None]:
    """``$1 = '7', $2 = NULL, $3 = 'it''s'`` -> ['7', None, "it's"], in $n order.

    Raises ValueError when the text is not in that form or a number is missing.
    """
    values: dict[int, str | None] = {}
    pos = 0
    while pos < len(text.rstrip()):
        match = _PARAMETER.match(text, pos)
        if not match:
            raise ValueError(f"unreadable parameters at offset {pos}: {text[pos:pos + 40]!r}")
        number, null, quoted = match.groups()
        values[int(number)] = None if null else quoted.replace("''", "'")
        pos = match.end()
    if sorted(values) != list(range(1, len(values) + 1)):
        raise ValueError(f"parameters are not $1..$n: {sorted(values)}")
    return [values[n] for n in range(1, len(values) + 1)]
