"""Statement fingerprints: sqlglot normalization, cached by a cheap pre-key.

Two stages, so that each distinct statement shape meets sqlglot once:

1. A PostgreSQL-faithful regex tokenizer turns the raw text into a *pre-key*:
   comments and whitespace dropped, tokens joined by one space, unquoted words
   lower-cased (PG folds them), every literal and parameter replaced by
   ``$1..$n``, constant IN/ARRAY lists and repeated VALUES rows collapsed.
   The log form (``id = 5``) and the pg_stat_statements form (``id = $1``)
   give the same pre-key.
2. The pre-key, never the raw text, is parsed by sqlglot and regenerated.
   Since sqlglot only ever sees the pre-key, two statements with the same
   pre-key get the same fingerprint by construction: the pre-key cache cannot
   merge statements that sqlglot would tell apart.

Whatever sqlglot cannot represent faithfully (utility statements, Command
nodes, parse errors, several statements, dropped words or parameters) keeps
the pre-key itself as its normalized text, with ``parsed=False``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

__all__ = ["Fingerprint", "fingerprint", "mask_literals"]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    id: str  # 16 hex digits: a stable hash of `normalized`
    normalized: str  # literals and parameters as $1..$n in order, IN-lists collapsed, no comments
    parsed: bool  # False: sqlglot could not represent it faithfully; token-level fallback
    statement_type: str  # select, insert, update, delete, merge, with, utility, unknown


# --- tokenizer (PostgreSQL's lexical rules, scan.l) ---------------------------

_START = "A-Za-z_\u0080-\U0010ffff"
_OPCH = r"(?:(?!--|/\*)[-+*/<>=~!@#%^&|`?])"  # an operator stops where a comment starts
_TOKEN = re.compile(
    rf"""(?P<ws>\s+) | (?P<lc>--[^\n]*) | (?P<bc>/\*)
    | (?P<str>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)
        | (?:[bBxXnN]|[uU]&)?'(?:[^']|'')*(?:'|\Z)
        | \$(?P<tag>(?:[{_START}][{_START}0-9]*)?)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<ident>(?:[uU]&)?"(?:[^"]|"")*(?:"|\Z))
    | (?P<num>0[xX](?:_?[0-9A-Fa-f])+ | 0[oO](?:_?[0-7])+ | 0[bB](?:_?[01])+
        | (?:[0-9]+(?:_[0-9]+)*(?:\.(?:[0-9]+(?:_[0-9]+)*)?)? | \.[0-9]+(?:_[0-9]+)*)(?:[eE][-+]?[0-9]+)?)
    | (?P<param>\$[0-9]+)
    | (?P<word>[{_START}][{_START}0-9$]*)
    | (?P<op>{_OPCH}*[~!@#%^&|`?]{_OPCH}* | (?:(?!--|/\*)[-+*/<>=])*[*/<>=] | [-+])
    | (?P<punct>::|[(),;\[\].:]) | (?P<other>.)""",
    re.X | re.S,
)  # `op`: PG drops a trailing + or - from an operator unless it holds one of ~!@#%^&|`?
_BLOCK = re.compile(r"/\*|\*/")
_LITERAL_KINDS = ("str", "num", "param")


def _scan(sql: str):
    """Yield (kind, text) for every token, whitespace and comments included."""
    pos, end, match = 0, len(sql), _TOKEN.match
    while pos < end:
        m = match(sql, pos)
        kind, stop = m.lastgroup, m.end()
        if kind == "bc":  # block comments nest in PG: count the levels
            depth = 1
            while depth and (b := _BLOCK.search(sql, stop)):
                depth += 1 if b.group() == "/*" else -1
                stop = b.end()
            stop = stop if not depth else end
        yield kind, sql[pos:stop]
        pos = stop


def mask_literals(sql: str) -> str:
    """The text as written, with string and number literals shown as `?` (for displaying samples)."""
    return "".join("?" if k in ("str", "num") else t for k, t in _scan(str(sql)))


# --- pre-key --------------------------------------------------------------------

MARK = "$?"  # a literal's slot in the pre-key (no token can equal it); numbered $1..$n when joined
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Words after which a `-` is a sign, not a subtraction (PG folds `-5` into one constant).
_UNARY_AFTER = frozenset("select where and or not when then else between limit offset by case on "
                         "having returning like ilike fetch first next distinct return".split())
# `type 'text'` is a typed literal: pg_stat_statements shows `interval $1`; sqlglot misreads both
# (`date AS $1`, `INTERVAL '1'`), so the pre-key spells it as the equivalent `$1::interval`.
_TYPED = frozenset("date time timestamp timestamptz timetz interval json jsonb uuid inet cidr macaddr "
                   "numeric decimal bool boolean int int2 int4 int8 integer bigint smallint real "
                   "float4 float8 text varchar char bpchar bytea money xml tsquery tsvector point "
                   "regclass oid".split())
_UNITS = frozenset("year month day hour minute second".split())
# Numbers that are not constants to PG (and stay in pg_stat_statements' text):
# type modifiers such as varchar(10), and positions such as ORDER BY 1.
_TYPMOD = frozenset("varchar char character varying numeric decimal time timestamp timestamptz "
                    "timetz interval bit varbit float".split())
_BY_ENDS = frozenset("limit offset fetch for having window union intersect except returning "
                     "order ; )".split())
_BY_ITEM_END = _BY_ENDS | frozenset(", asc desc nulls using".split()) | {""}


def _word(kind: str, text: str) -> str:
    if kind != "word":
        return text
    return text.lower() if text.isascii() else text.translate(_LOWER)  # PG folds ASCII only


def _is_operand_end(tok: str) -> bool:
    """True when `tok` ends an operand, so a following `-` subtracts."""
    if not tok or tok in _UNARY_AFTER:
        return False
    c = tok[0]
    return c.isalnum() or c in '_"$\x00' or ord(c) >= 0x80 or tok in (")", "]")


def _shape(toks: list[tuple[str, str]]) -> list[str]:
    """Tokens → pre-key tokens: literals masked, words folded, typed literals as casts."""
    out: list[str] = []
    depth, by_lists = 0, set()
    for i, (kind, text) in enumerate(toks):
        tok = _word(kind, text)
        prev = out[-1] if out else ""
        nxt = _word(*toks[i + 1]) if i + 1 < len(toks) else ""
        if tok in _BY_ENDS:
            by_lists.discard(depth)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif tok == "by" and prev in ("order", "group"):
            by_lists.add(depth)
        literal = kind in _LITERAL_KINDS or (
            tok in ("true", "false", "null") and prev not in ("is", "not", "set"))
        if not literal:
            out.append(tok)
        elif kind == "num" and (
            (depth in by_lists and prev in ("by", ",") and nxt in _BY_ITEM_END)
            or (prev in ("(", ",") and _in_typmod(out))):
            out.append(text)
        elif kind == "str" and prev == MARK and toks[i - 1][0] == "str":
            continue  # 'a' 'b' across lines is one constant in PG
        else:
            if prev == "-" and not _is_operand_end(out[-2] if len(out) > 1 else ""):
                out.pop()
            if prev in _TYPED and toks[i - 1][0] == "word" and nxt not in _UNITS:
                out[-1:] = [MARK, "::", prev]
            else:
                out.append(MARK)
    return out


def _in_typmod(out: list[str]) -> bool:
    """True inside `varchar(10`, `numeric(10,`: scan back over numbers and commas to the `(`."""
    j = len(out) - 1
    while j > 0 and out[j] != "(":
        if out[j] != "," and not out[j][:1].isdigit():
            return False
        j -= 1
    return j > 0 and out[j - 1] in _TYPMOD


def _const_item(out: list[str], j: int) -> int:
    """End of a `$n` or `$n::type[]` list item starting at j, or -1."""
    if j >= len(out) or out[j] != MARK:
        return -1
    j += 1
    if j + 1 < len(out) and out[j] == "::" and out[j + 1][:1].isalpha():
        j += 2
        while out[j:j + 2] == ["[", "]"]:
            j += 2
    return j


def _collapse_lists(out: list[str]) -> list[str]:
    """`in ($1, $2, …)` → `in ($1)`; `array[$1, $2, …]` → `array[$1]`."""
    res, i = [], 0
    while i < len(out):
        opener = {"in": "(", "array": "["}.get(out[i])
        if opener and out[i + 1:i + 2] == [opener]:
            j = first = _const_item(out, i + 2)
            while j > 0 and j < len(out) and out[j] == ",":
                j = _const_item(out, j + 1)
            if j > 0 and out[j:j + 1] == [")" if opener == "(" else "]"]:
                res += out[i:first] + [out[j]]
                i = j + 1
                continue
        res.append(out[i])
        i += 1
    return res


def _collapse_values(out: list[str]) -> list[str]:
    """`values (…), (…)` whose rows all have the same shape → one row."""
    res, i = [], 0
    while i < len(out):
        res.append(out[i])
        if out[i] == "values" and out[i + 1:i + 2] == ["("]:
            rows, j = [], i + 1
            while out[j:j + 1] == ["("]:
                k, d = j, 0
                while k < len(out):
                    d += {"(": 1, ")": -1}.get(out[k], 0)
                    if d == 0:
                        break
                    k += 1
                rows.append(out[j:k + 1])
                j = k + 2 if out[k + 1:k + 2] == [","] and out[k + 2:k + 3] == ["("] else k + 1
            if rows and all(r == rows[0] for r in rows):
                res += rows[0]
                i = j
                continue
        i += 1
    return res


_SAVEPOINT_FORMS = (  # PG 17's pg_stat_statements shows these names as $1, too
    (("savepoint",), ["savepoint"]),
    (("release",), ["release"]), (("release", "savepoint"), ["release"]),
    (("rollback", "to"), ["rollback", "to"]), (("rollback", "to", "savepoint"), ["rollback", "to"]),
    (("rollback", "work", "to"), ["rollback", "to"]),
    (("rollback", "transaction", "to"), ["rollback", "to"]),
    (("rollback", "work", "to", "savepoint"), ["rollback", "to"]),
    (("rollback", "transaction", "to", "savepoint"), ["rollback", "to"]),
)


def _pre_key(sql: str) -> str:
    toks = [(k, t) for k, t in _scan(sql) if k not in ("ws", "lc", "bc")]
    out = _collapse_values(_collapse_lists(_shape(toks)))
    while out and out[0] == ";":
        out.pop(0)
    while out and out[-1] == ";":
        out.pop()
    for words, spelled in _SAVEPOINT_FORMS:
        if len(out) == len(words) + 1 and tuple(out[:-1]) == words:
            out = spelled + [MARK]
    n = 0
    for i, tok in enumerate(out):
        if tok == MARK:
            n += 1
            out[i] = f"${n}"
    return " ".join(out)


# --- sqlglot stage -------------------------------------------------------------

_ROOTS = ((exp.Select, "select"), (exp.SetOperation, "select"), (exp.Values, "select"),
          (exp.Subquery, "select"), (exp.Insert, "insert"), (exp.Update, "update"),
          (exp.Delete, "delete"), (exp.Merge, "merge"))
_DML = {"select": "select", "values": "select", "table": "select", "insert": "insert",
        "update": "update", "delete": "delete", "merge": "merge"}
_UTILITY = frozenset(
    "set reset show savepoint release rollback begin start commit end abort prepare execute "
    "deallocate copy declare fetch move close listen unlisten notify vacuum analyze analyse "
    "explain discard lock create alter drop truncate grant revoke comment cluster reindex "
    "refresh checkpoint do call load security import reassign".split())
# Words sqlglot may legitimately drop or respell (its keywords, some noise words, function
# names), except those whose loss would change the meaning; any other word it drops, and any
# of the kept keywords it loses, means that it misread the statement.
_MUST_KEEP = frozenset(
    "only lateral distinct recursive not nowait skip locked ties symmetric similar ilike like "
    "any some exists union intersect except returning conflict nothing grouping rollup cube "
    "window over filter within tablesample update share no materialized escape collate "
    "ordinality natural cross full left right desc first last using".split())
_EXEMPT = frozenset(k.lower() for k in Postgres.Tokenizer.KEYWORDS if " " not in k) \
    - _MUST_KEEP | {"varying", "work", "transaction", "precision", "asymmetric"}
# sqlglot is pure Python (~5 µs per character) and recursive: a huge statement costs
# seconds and may exhaust the stack, so those keep the token-level normalization.
_PARSE_LIMIT = 100_000


def _renumber(sql: str) -> str:
    n = 0

    def number(m: re.Match) -> str:
        nonlocal n
        if m.group(1) is None:
            return m.group()
        n += 1
        return f"${n}"

    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$\d+)", number, sql)


def _words(sql: str, exempt: frozenset = frozenset()) -> Counter:
    """Occurrences of each word and quoted identifier, except `exempt` ones and function names."""
    toks = [(k, _word(k, t)) for k, t in _scan(sql) if k in ("word", "ident", "punct")]
    return Counter(t for i, (k, t) in enumerate(toks) if k != "punct" and t not in exempt and not (
        exempt and t not in _MUST_KEEP and i + 1 < len(toks) and toks[i + 1][1] == "("))


def _is_const(node: exp.Expression) -> bool:
    if isinstance(node, (exp.Parameter, exp.Placeholder, exp.Literal, exp.Null, exp.Boolean)):
        return True
    if isinstance(node, exp.Tuple):
        return all(_is_const(e) for e in node.expressions)
    return isinstance(node, (exp.Cast, exp.Neg, exp.Paren)) and _is_const(node.this)


def _param() -> exp.Parameter:
    return exp.Parameter(this=exp.Literal.number(1))  # numbered later, in text order


def _collapse_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Placeholder) or (
            isinstance(node, exp.Neg) and isinstance(node.this, exp.Parameter)):
        return _param()
    if isinstance(node, exp.Array) and node.expressions and all(map(_is_const, node.expressions)):
        return _param()
    if isinstance(node, exp.In) and node.expressions and all(map(_is_const, node.expressions)):
        first = node.expressions[0]
        one = exp.Tuple(expressions=[_param() for _ in first.expressions]) \
            if isinstance(first, exp.Tuple) else _param()
        node.set("expressions", [one])
    if isinstance(node, exp.Values) and len(node.expressions) > 1:
        rows = {re.sub(r"\$\d+", "$", r.sql(dialect="postgres")) for r in node.expressions}
        if len(rows) == 1:
            node.set("expressions", node.expressions[:1])
    return node


def _parse(key: str) -> tuple[str, str] | None:
    """(normalized, type) from sqlglot, or None when it cannot represent `key` faithfully."""
    try:
        trees = sqlglot.parse(key, read="postgres")
    except Exception:  # ParseError, TokenError, RecursionError, and its odd internal errors
        return None
    if len(trees) != 1 or trees[0] is None or trees[0].find(exp.Command):
        return None
    tree = trees[0]
    kind = next((name for cls, name in _ROOTS if isinstance(tree, cls)), None)
    # Every $n of the key exactly once: sqlglot turns some into text (`INTERVAL '1'`).
    params = sorted(p.name for p in tree.find_all(exp.Parameter))
    count = sum(k == "param" for k, _ in _scan(key))
    if kind is None or params != sorted(str(i) for i in range(1, count + 1)):
        return None
    try:
        before = tree.sql(dialect="postgres")
        if _words(key, _EXEMPT) - _words(before):  # a word vanished: a misreading
            return None
        return _renumber(tree.transform(_collapse_node, copy=False).sql(dialect="postgres")), kind
    except Exception:
        return None


def _fallback_type(key: str) -> str:
    toks = [_word(k, t) for k, t in _scan(key) if k not in ("ws", "lc", "bc")]
    first = next((t for t in toks if t != "("), "")
    if first != "with":
        return _DML.get(first) or ("utility" if first in _UTILITY else "unknown")
    depth = 0  # the main statement of a WITH is its first DML word outside parentheses
    for tok in toks:
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if depth == 0 and tok in _DML:
            return _DML[tok]
    return "with"


def _make(normalized: str, parsed: bool, kind: str) -> Fingerprint:
    digest = hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8)
    return Fingerprint(digest.hexdigest(), normalized, parsed, kind)


@lru_cache(maxsize=50_000)
def _from_key(key: str) -> Fingerprint:
    first = key.split(" ", 1)[0]
    if (first in _DML or first in ("with", "(")) and ";" not in key.split() \
            and len(key) <= _PARSE_LIMIT:
        if (result := _parse(key)) is not None:
            return _make(result[0], True, result[1])
    return _make(key, False, _fallback_type(key))


def _fingerprint(sql: str) -> Fingerprint:
    try:
        return _from_key(_pre_key(sql))
    except Exception:  # never raise on input: the hash of the raw text is still stable
        return _make(sql, False, "unknown")


_cached = lru_cache(maxsize=50_000)(_fingerprint)
_CACHE_TEXT_LIMIT = 2048  # longer texts skip the exact-text cache: it would hold too much memory


def fingerprint(sql: str) -> Fingerprint:
    """Fingerprint one statement as logged or as pg_stat_statements shows it; never raises."""
    if not isinstance(sql, str):
        sql = sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
    return _cached(sql) if len(sql) <= _CACHE_TEXT_LIMIT else _fingerprint(sql)
