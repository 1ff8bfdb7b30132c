"""Turn a ``log_line_prefix`` into a regular expression that reads it back.

Every escape PostgreSQL documents becomes a group; the groups we use later
(time, pid, session, user, database, application, vxid, query id, SQLSTATE) are named.
After the prefix comes ``SEVERITY:  message``.
"""

from __future__ import annotations

import re

_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_TZ = r"(?: [A-Za-z0-9+\-:]+)?"

# escape -> (group name or None, pattern).  Text fields are lazy so that the
# literal that follows them in the prefix decides where they end.
ESCAPES: dict[str, tuple[str | None, str]] = {
    "a": ("application", r".*?"),
    # Role and database names with spaces are legal but rare; application
    # names with spaces are common ("PostgreSQL JDBC Driver").
    "u": ("user", r"\S*?"),
    "d": ("database", r"\S*?"),
    "r": (None, r"\S*?"),
    "h": (None, r"\S*?"),
    "b": (None, r".*?"),
    "p": ("pid", r"\d+"),
    "P": (None, r"\d*"),
    "t": ("timestamp", _TS + _TZ),
    "m": ("timestamp", _TS + r"\.\d+" + _TZ),
    "n": ("timestamp", r"\d+\.\d+"),
    "i": (None, r".*?"),
    "e": ("sqlstate", r"[0-9A-Z]{5}"),
    "c": ("session", r"[0-9a-f]+\.[0-9a-f]+"),
    "l": (None, r"\d+"),
    "s": (None, _TS + _TZ),
    "v": ("vxid", r"(?:-?\d+/-?\d+)?"),
    "x": (None, r"\d+"),
    "Q": ("query_id", r"-?\d+"),
}

SEVERITY = r"(?P<severity>DEBUG[1-5]?|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|QUERY|CONTEXT|STATEMENT|LOCATION):  ?"

# Defaults seen in the field, tried in order when the user gives none.
COMMON_PREFIXES = (
    "%m [%p] %q%u@%d ",  # Debian and Ubuntu packages
    "%m [%p] ",  # PostgreSQL's own default
    "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",  # pgBadger's recommendation
    "%t [%p]: [%l-1] user=%u,db=%d ",
    "%t [%p]: user=%u,db=%d,app=%a,client=%h ",
    "%t [%p]: db=%d,user=%u,app=%a,client=%h ",
    "%t:%r:%u@%d:[%p]:",  # AWS RDS
    "%t:%h:%u@%d:[%p]:",
    "%m [%p] %c %q%u@%d app=%a ",  # advisor's embedded cluster
    "%m [%p] %q%u@%d app=%a ",  # advisor's docker/ configuration
    "%m [%p] user=%u,db=%d ",
    "%m [%p] [queryid=%Q] %u@%d ",
    "%t [%p]: [%l-1] [%x] usr=%u,db=%d,appli=%a ",
    "%t [%p]: [%l-1] user=%u,db=%d,host=%h,app=%a",
    "%t [%p]: [%l-1] ",
    "db=%d,user=%u,app=%a,client=%h ",  # pgBadger's recommendation for syslog
    "user=%u,db=%d,app=%a,client=%h ",
    "[%p]: [%l-1] db=%d,user=%u ",  # Google Cloud SQL
    " sql_error_code = %e ",  # Heroku
    "%q%u@%d ",
    "%t [%p] ",
    "%m ",
    "%t ",
)

_ESCAPE = re.compile(r"%(-?\d+)?(.)")


class PrefixError(ValueError):
    """The prefix has an escape PostgreSQL does not know."""


def prefix_regex(prefix: str) -> re.Pattern[str]:
    """Compile ``prefix`` followed by the severity into an anchored pattern."""
    # ASCII: the server writes the prefix's digits and separators in ASCII, and the Unicode
    # classes cost a fifth of every line's match.
    return re.compile(_translate(prefix) + SEVERITY + r"(?P<message>.*)", re.DOTALL | re.ASCII)


# Escapes whose text never begins with whitespace and is never empty (a time, a number, a session id).
_VISIBLE_FIRST = frozenset("mtnpclsxQe%")


def begins_visibly(prefix: str) -> bool:
    """Whether every line the prefix begins starts with a character other than whitespace: then a line
    that starts with a TAB is never a record's first line (the server indents continuations so)."""
    if not prefix or prefix[0].isspace():
        return False
    return prefix[0] != "%" or prefix[1:2] in _VISIBLE_FIRST


def _translate(prefix: str) -> str:
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    optional_from: int | None = None
    for m in _ESCAPE.finditer(prefix):
        parts.append(re.escape(prefix[pos : m.start()]))
        pos = m.end()
        padding, escape = m.group(1), m.group(2)
        if escape == "%":
            parts.append("%")
        elif escape == "q":
            # %q: what follows is printed only by session processes.
            optional_from = len(parts)
        elif escape in ESCAPES:
            parts.append(_group(escape, seen, padded=padding is not None))
        else:
            raise PrefixError(f"unknown escape %{escape} in log_line_prefix {prefix!r}")
    parts.append(re.escape(prefix[pos:]))
    if optional_from is not None:
        parts[optional_from:] = ["(?:" + "".join(parts[optional_from:]) + ")?"]
    return "".join(parts)


def _group(escape: str, seen: set[str], *, padded: bool) -> str:
    name, pattern = ESCAPES[escape]
    if name is not None and name not in seen:
        seen.add(name)
        pattern = f"(?P<{name}>{pattern})"
    else:
        pattern = f"(?:{pattern})"
    return rf"\s*{pattern}\s*" if padded else pattern


def detect_prefix(lines: list[str]) -> str | None:
    """The common prefix that reads the most of ``lines``; None if none reads half."""
    best, best_hits = None, 0
    for prefix in COMMON_PREFIXES:
        regex = prefix_regex(prefix)
        hits = sum(1 for line in lines if regex.match(line))
        # Strictly more: the list is ordered from specific to generic.
        if hits > best_hits:
            best, best_hits = prefix, hits
    heads = sum(1 for line in lines if line and not line.startswith("\t"))
    return best if heads and best_hits * 2 >= heads else None
