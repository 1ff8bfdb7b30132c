"""Statement fingerprints: sqlglot normalization, cached by a cheap pre-key.

A tokenizer following PostgreSQL's lexer makes the *pre-key*: no comments, tokens joined by
one space, unquoted words folded as PG folds them, literals and parameters as $1..$n,
constant IN/ARRAY lists and same-shape VALUES rows collapsed (a log's `id = 5` and
pg_stat_statements' `id = $1` give one pre-key). sqlglot parses the pre-key, never the raw
text, so caching by pre-key cannot merge statements that sqlglot tells apart. What sqlglot
cannot represent faithfully keeps the pre-key as normalized text, with parsed=False.
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

__all__ = ["Fingerprint", "fingerprint", "mask_conditions", "mask_literals"]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    id: str  # 16 hex digits: a stable hash of `normalized`
    normalized: str  # literals and parameters as $1..$n in order, IN-lists collapsed, no comments
    parsed: bool  # False: sqlglot could not represent it faithfully; token-level fallback
    statement_type: str  # select, insert, update, delete, merge, with, utility, unknown


# --- tokenizer ------------------------------------------------------------------------------

# Identifier characters as classes of what they leave out (ASCII only): a class that spells
# the non-ASCII range costs re.compile tens of thousands of steps, paid by every process.
_W = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # what may start a PG identifier: a letter, _, any non-ASCII
_W_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # ... or a digit
_IDENT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # ... or $: what may continue one
_IDENT_OR_DOT = r"[^\x00-\x23\x25-\x2d\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
_OPCH = r"(?:(?!--|/\*)[-+*/<>=~!@#%^&|`?])"  # an operator ends where a comment starts
# Frequent tokens first (each alternative tried costs time). An operator without one of
# ~!@#%^&|`? cannot end in + or - (PG's rule: `a=-5` is `a`, `=`, `-`, `5`).
_TOKEN = rf"""(?![eEbBxXnN]'|[uU]&['"]){_W}{_IDENT}*
    | (?:[uU]&)?"(?:[^"]|"")*(?:"|\Z) | :[:=]? | [(),;\[\]] | \.(?![0-9])
    | {_OPCH}*[~!@#%^&|`?]{_OPCH}* | (?:(?!--|/\*)[-+*/<>=])*[*/<>=] | [-+]
    | 0[xX](?:_?[0-9A-Fa-f])+ | 0[oO](?:_?[0-7])+ | 0[bB](?:_?[01])+
    | (?:[0-9]+(?:_[0-9]+)*(?:\.(?:[0-9]+(?:_[0-9]+)*)?)? | \.[0-9]+(?:_[0-9]+)*)(?:[eE][-+]?[0-9]+)?
    | [eE]'(?:[^'\\]|\\.|'')*(?:'|\Z) | (?:[bBxXnN]|[uU]&)?'(?:[^']|'')*(?:'|\Z) | \$[0-9]+
    | \$(?P<tag>(?:{_W}{_W_DIGIT}*)?)\$.*?(?:\$(?P=tag)\$|\Z) | ."""
# Block comments nest in PG; one level of nesting is understood, a deeper one ends early.
_COMMENT = r"/\*(?:[^*/]|\*(?!/)|/(?!\*)|/\*(?:[^*]|\*(?!/))*(?:\*/|\Z))*(?:\*/|\Z)"
# One C-speed pass giving (whitespace and comments before, token, dollar-quote tag).
_LEX = re.compile(rf"((?:\s+|--[^\n]*|{_COMMENT})*)({_TOKEN}|\Z)", re.X | re.S)


def _lex(sql: str) -> list[str]:
    return [t for _, t, _ in _LEX.findall(sql) if t]


def _kind(t: str) -> str:
    c, c2 = t[0], t[1:2]
    if (c.isalpha() or c == "_") and c2 != "'" and c2 != "&":  # the common case first
        return "word"
    if c == '"' or (c in "uU" and t[1:3] == '&"'):
        return "ident"
    if c == "'" or (c in "eEbBxXnNuU" and (c2 == "'" or t[1:3] == "&'")) or (c == "$" and c2 and \
            not "0" <= c2 <= "9"):
        return "str"
    if "0" <= c <= "9" or (c == "." and c2):
        return "num"
    return "param" if c == "$" and c2 else "word" if c >= "\x80" else "sym"


def mask_literals(sql: str) -> str:
    """The text as written, with string and number literals shown as `?` (to display samples)."""
    return "".join(skip + ("?" if t and _kind(t) in ("str", "num") else t)
                   for skip, t, _ in _LEX.findall(str(sql)))


def mask_conditions(excerpt: str) -> str:
    """A plan excerpt ('Seq Scan on t (rows 1,000 scanned, filter: (a = 42), 3.1 ms self)') with the
    literals of its conditions masked and the plan's own numbers (rows, loops, times) kept.

    A condition is what follows a `label:` up to the `,` or `)` that closes it at its own depth:
    EXPLAIN's conditions have no top-level comma, so this holds for bare ones (`filter: active`) too.
    """
    out, in_condition, depth = [], False, 0
    for skip, t, _ in _LEX.findall(str(excerpt)):
        if not in_condition:
            in_condition, depth = t == ":", 0
        elif t in ("(", "["):
            depth += 1
        elif t in (")", "]", ",") and depth == 0:
            in_condition = False
        elif t in (")", "]"):
            depth -= 1
        out.append(skip + ("?" if in_condition and t and _kind(t) in ("str", "num") else t))
    return "".join(out)


# --- pre-key --------------------------------------------------------------------------------

_MARK = "$?"  # a literal's slot (no token equals it); numbered $1..$n at the end
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CONSTANT_WORDS = frozenset(("true", "false", "null"))  # constants to PG, but not everywhere
_SIGN_AFTER = frozenset("select where and or not when then else between limit offset by case "
                        "on having returning like ilike fetch first next distinct return".split())
# `type 'text'` is a typed literal, `interval $1` in pg_stat_statements; sqlglot misreads both
# (`date AS $1`, `INTERVAL '1'`), so the pre-key spells the equivalent `$1::interval`.
_TYPED = frozenset("date time timestamp timestamptz timetz interval json jsonb uuid inet cidr "
                   "numeric decimal bool boolean int int2 int4 int8 integer bigint smallint real "
                   "float4 float8 text varchar char bpchar bytea money xml tsquery tsvector "
                   "point regclass oid macaddr".split())
_UNITS = frozenset("year month day hour minute second".split())
_KEEP_AFTER = _TYPED | {"is", "not", "set"}  # IS NULL, NOT NULL, SET NULL, DDL's `int NULL`
# Numbers that PG does not take as constants stay, as in pg_stat_statements: type modifiers
# (varchar(10)) and positions (ORDER BY 1).
_TYPMOD = frozenset("varchar char character varying numeric decimal time timestamp "
                    "timestamptz timetz interval bit varbit float".split())
_BY_ENDS = frozenset("limit offset fetch for having window union intersect except returning "
                     "order ; )".split())
_BY_ITEM_END = _BY_ENDS | frozenset(", asc desc nulls using".split()) | {""}


def _fold(t: str) -> str:
    return t.lower() if t.isascii() else t.translate(_LOWER)  # PG folds ASCII letters only


def _keeps_number(toks: list[str], i: int, out: list[str], by_list: bool) -> bool:
    prev, nxt = out[-1] if out else "", _fold(toks[i + 1]) if i + 1 < len(toks) else ""
    if by_list and prev in ("by", ",") and nxt in _BY_ITEM_END:
        return True
    j = len(out) - 1  # inside `varchar(10` or `numeric(10,`: back over numbers and commas
    while j > 0 and (out[j] == "," or "0" <= out[j][:1] <= "9"):
        j -= 1
    return prev in ("(", ",") and j > 0 and out[j] == "(" and out[j - 1] in _TYPMOD


def _shape(toks: list[str]) -> list[str]:
    """Tokens → pre-key tokens: literals masked, words folded, typed literals as casts."""
    out: list[str] = []
    depth, by_lists, prev_kind = 0, set(), ""
    for i, text in enumerate(toks):
        kind = _kind(text)
        tok = _fold(text) if kind == "word" else text
        prev = out[-1] if out else ""
        if kind in ("sym", "word"):
            if tok in _BY_ENDS:
                by_lists.discard(depth)
            depth += (tok == "(") - (tok == ")")
            if tok == "by" and prev in ("order", "group"):
                by_lists.add(depth)
        constant = kind == "word" and (  # LIMIT ALL is LIMIT NULL to PG
            (tok in _CONSTANT_WORDS and prev not in _KEEP_AFTER) or (tok == "all" and prev == "limit"))
        if kind in ("sym", "word", "ident") and not constant:
            out.append(tok)
        elif kind == "num" and _keeps_number(toks, i, out, depth in by_lists):
            out.append(text)
        elif not (kind == "str" and prev_kind == "str" and prev == _MARK):  # 'a'\n'b' is one
            if prev == "-" and (len(out) < 2 or out[-2] in _SIGN_AFTER or not (
                    out[-2][0].isalnum() or out[-2][0] in '_"$' or out[-2] in (")", "]"))):
                out.pop()  # a sign, not a subtraction: PG folds `-5` into one constant
            if prev in _TYPED and prev_kind == "word" and kind in ("str", "param") and (
                    i + 1 == len(toks) or _fold(toks[i + 1]) not in _UNITS):
                out[-1:] = [_MARK, "::", prev]
            else:
                out.append(_MARK)
        prev_kind = kind
    return out


def _item_end(out: list[str], j: int) -> int:
    """End of a `$?` or `$?::type[]` list item at j, or -1."""
    if out[j:j + 1] != [_MARK]:
        return -1
    if out[j + 1:j + 2] == ["::"] and out[j + 2:j + 3] and out[j + 2][0].isalpha():
        j += 2
        while out[j + 1:j + 3] == ["[", "]"]:
            j += 2
    return j + 1


def _collapse(out: list[str]) -> list[str]:
    """`in ($?, $?)` → `in ($?)`, `array[$?, $?]` → `array[$?]`, equal VALUES rows → one."""
    res, done = [], 0
    for i in [i for i, tok in enumerate(out) if tok in ("in", "array", "values")]:
        if i < done:
            continue
        res += out[done:i]
        done, close = i, {"in": ")", "array": "]", "values": ""}[out[i]]
        if close and out[i + 1:i + 2] == ["(" if close == ")" else "["]:
            j = first = _item_end(out, i + 2)
            while j > 0 and out[j:j + 1] == [","]:
                j = _item_end(out, j + 1)
            if j > 0 and out[j:j + 1] == [close]:
                res, done = res + out[i:first] + [close], j + 1
        elif not close and out[i + 1:i + 2] == ["("]:
            rows, j = [], i + 1
            while out[j:j + 1] == ["("]:
                k, d = j, 1
                while d and k + 1 < len(out):
                    k += 1
                    d += (out[k] == "(") - (out[k] == ")")
                rows.append(out[j:k + 1])
                j = k + 2 if out[k + 1:k + 3] == [",", "("] else k + 1
            if all(r == rows[0] for r in rows):
                res, done = res + ["values"] + rows[0], j
    return res + out[done:]


# PG 17's pg_stat_statements shows savepoint names as $1; drivers number them (_pg3_1).
_SAVEPOINT = re.compile(r'(savepoint|release|rollback(?: work| transaction)? to)(?: savepoint)? '
                        r'(?:"(?:[^"]|"")*"|[^\s"$]\S*)')


def _pre_key(sql: str) -> str:
    out = _collapse(_shape(_lex(sql)))
    while out and out[0] == ";":
        out.pop(0)
    while out and out[-1] == ";":
        out.pop()
    marks = iter(range(1, len(out) + 1))
    key = " ".join(f"${next(marks)}" if tok == _MARK else tok for tok in out)
    if m := _SAVEPOINT.fullmatch(key):
        key = re.sub(" work| transaction", "", m.group(1)) + " $1"
    return key


# --- sqlglot stage --------------------------------------------------------------------------

_ROOTS = ((exp.Select, "select"), (exp.SetOperation, "select"), (exp.Values, "select"),
          (exp.Subquery, "select"), (exp.Insert, "insert"), (exp.Update, "update"),
          (exp.Delete, "delete"), (exp.Merge, "merge"))
_DML = {"select": "select", "values": "select", "table": "select", "insert": "insert",
        "update": "update", "delete": "delete", "merge": "merge"}
_UTILITY = frozenset("set reset show savepoint release rollback begin start commit end abort "
                     "prepare execute deallocate copy declare fetch move close listen unlisten "
                     "notify vacuum analyze analyse explain discard lock create alter drop "
                     "truncate grant revoke comment cluster reindex refresh checkpoint do call "
                     "load security import reassign".split())
# A word of the statement missing from sqlglot's output means that it misread it, unless
# sqlglot may drop or respell it harmlessly: its keywords (but these), noise words, functions.
_MUST_KEEP = frozenset("only lateral distinct recursive not nowait skip locked ties symmetric "
                       "similar ilike like any some exists union intersect except returning "
                       "conflict nothing grouping rollup cube window over filter within "
                       "tablesample update share no materialized escape collate ordinality "
                       "natural cross full left right desc first last using".split())
_EXEMPT = frozenset(k.lower() for k in Postgres.Tokenizer.KEYWORDS if " " not in k) \
    - _MUST_KEEP | {"varying", "work", "transaction", "precision", "asymmetric"}
# sqlglot is pure Python (about 5 µs per character) and recursive: a huge statement would
# cost seconds or exhaust the stack, so it keeps the token-level normalization.
_PARSE_LIMIT = 100_000
# Renumbering $n in text order must skip strings, quoted names and names such as a$1.
_QUOTED_OR_PARAM = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![\w$])(\$\d+)")


def _words(sql: str, exempt: frozenset = frozenset()) -> Counter:
    """Occurrences of each word, quoted identifier and $n, but `exempt` ones and function names."""
    toks = [(_kind(t), _fold(t)) for t in _lex(sql)]
    return Counter(t for i, (k, t) in enumerate(toks) if k in ("word", "ident", "param")
                   and t not in exempt and not (
                       exempt and t not in _MUST_KEEP and toks[i + 1:i + 2] == [("sym", "(")]))


def _is_const(node: exp.Expr) -> bool:
    if isinstance(node, (exp.Parameter, exp.Placeholder, exp.Literal, exp.Null, exp.Boolean)):
        return True
    if isinstance(node, exp.Tuple):
        return all(map(_is_const, node.expressions))
    return isinstance(node, (exp.Cast, exp.Neg, exp.Paren)) and _is_const(node.this)


_PARAM = exp.Parameter(this=exp.Literal.number(1))  # copied; numbered in text order afterwards


def _collapse_node(node: exp.Expr) -> exp.Expr:
    """The pre-key's collapsing, and what only the tree shows (casts, signs, tuples, `?`)."""
    if isinstance(node, exp.Placeholder) or (
            isinstance(node, exp.Neg) and isinstance(node.this, exp.Parameter)):
        return _PARAM.copy()
    items = node.expressions if isinstance(node, (exp.Array, exp.In)) else []
    if items and all(map(_is_const, items)):
        if isinstance(node, exp.Array):
            return _PARAM.copy()
        one = items[0]
        node.set("expressions", [exp.Tuple(expressions=[_PARAM.copy() for _ in one.expressions])
                                 if isinstance(one, exp.Tuple) else _PARAM.copy()])
    if isinstance(node, exp.Values) and len(node.expressions) > 1:
        if len({re.sub(r"\$\d+", "$", r.sql(dialect="postgres")) for r in node.expressions}) == 1:
            node.set("expressions", node.expressions[:1])
    return node


def _parse(key: str) -> tuple[str, str] | None:
    """(normalized, type) by sqlglot, or None where it cannot represent `key` faithfully."""
    try:
        trees = sqlglot.parse(key, read="postgres")
        tree = trees[0]  # None for a statement that is only a comment or a semicolon
        kind = next((name for cls, name in _ROOTS if isinstance(tree, cls)), None)
        if len(trees) != 1 or tree is None or kind is None or tree.find(exp.Command):
            return None
        # Every $n once in the tree and shown as $n (sqlglot turns `interval 5` to INTERVAL '1').
        count = sum(_kind(t) == "param" for t in _lex(key))
        if sorted(int(p.name) for p in tree.find_all(exp.Parameter)) != list(
                range(1, count + 1)) or _words(key, _EXEMPT) - _words(tree.sql("postgres")):
            return None
        sql = tree.transform(_collapse_node, copy=False).sql("postgres")
        numbers = iter(range(1, len(sql)))  # $1..$n in the order of the text
        return _QUOTED_OR_PARAM.sub(lambda m: f"${next(numbers)}" if m[1] else m[0], sql), kind
    except Exception:  # ParseError, TokenError, RecursionError, odd internal errors
        return None


def _fallback_type(key: str) -> str:
    toks = key.split()
    first = next((t for t in toks if t != "("), "")
    if first != "with":
        return _DML.get(first) or ("utility" if first in _UTILITY else "unknown")
    depth = 0  # a WITH's main statement: its first DML word outside parentheses
    for tok in toks:
        depth += (tok == "(") - (tok == ")")
        if depth == 0 and tok in _DML:
            return _DML[tok]
    return "with"


def _make(normalized: str, parsed: bool, kind: str) -> Fingerprint:
    digest = hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=8)
    return Fingerprint(digest.hexdigest(), normalized, parsed, kind)


def _from_key(key: str) -> Fingerprint:
    first = key.split(" ", 1)[0]
    if (first in _DML or first in ("with", "(")) and " ; " not in key and len(key) <= _PARSE_LIMIT:
        if result := _parse(key):
            return _make(result[0], True, result[1])
    return _make(key, False, _fallback_type(key))


# Both caches are bounded in entries and, through the size of what they hold, in memory:
# short texts and shapes (nearly all) get big caches, long ones (bulk statements) small ones.
_SHORT, _by_short_key, _by_long_key = 2048, lru_cache(50_000)(_from_key), lru_cache(500)(_from_key)


def _computed(sql: str) -> Fingerprint:
    key = _pre_key(sql)
    return (_by_short_key if len(key) <= _SHORT else _by_long_key)(key)


def _uncached(sql: str) -> Fingerprint:
    try:
        return _computed(sql)
    except Exception:  # a bug here must not stop a scan: the raw text is still a stable key
        return _make(sql, False, "unknown")


# A first-level key, several times cheaper than the pre-key: the raw text with comments
# dropped, constant IN lists collapsed and its string literals, $n and numbers masked.
# Equal literal keys mean texts that differ only where both have literals (or comments),
# which the pre-key masks (drops) too, so they share a fingerprint. That holds only where
# the masking cannot misread the text, so quoted identifiers, E'' and dollar-quoted
# strings, nested comments, comments touching an operator and type modifiers take the
# full path; and numbers after BY or, in a text with a BY, after a comma (ORDER BY 1, 2
# are positions, not constants) stay in the key as written.
# Each begins with what it matches, not a lookahead, so the engine skips to that character
# (four times faster on texts with $n parameters).
_DOLLAR_QUOTE = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_E_STRING = re.compile(r"[eE]'(?<![\w$][eE]')")
_TYPMOD_NAME = re.compile(r"(?i:\b(?:" + "|".join(sorted(_TYPMOD)) + r"))\Z")
_PAREN_DIGIT = re.compile(r"\(\s*\d")  # where a type modifier may begin: the name before it decides
_K_STR, _K_PARAM = r"'(?:[^']|'')*'", rf"(?<!{_IDENT})\$\d+"
_K_NUM = rf"(?<!{_IDENT_OR_DOT})(?<![eE][-+])(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?!{_IDENT_OR_DOT})"
_K_ITEM = rf"-?(?:{_K_STR}|{_K_PARAM}|{_K_NUM})"
_LITERAL_PATTERN = rf"""(?=['$0-9.,bBiI/-])  # only where a literal can start: several times faster
    (?: (?P<comment>(?<![-+*/<>=~!@#%^&|`?])(?:--[^\n]*|/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/))
    | (?P<list>(?<!{_IDENT})[iI][nN]\s*\(\s*{_K_ITEM}(?:\s*,\s*{_K_ITEM})*\s*\))
    | (?P<string>{_K_STR}) | (?P<param>{_K_PARAM})
    | (?P<keep>(?:\b[bB][yY]|,)\s*\d+(?!{_IDENT_OR_DOT}))
    | {_K_NUM} )"""
# ASCII classes: PostgreSQL's lexer knows only ASCII digits and whitespace, so a Unicode one
# is left in the key as written, which only keeps texts apart; and they are faster.
_LITERAL = re.compile(_LITERAL_PATTERN, re.X | re.A)
# Without a BY anywhere there is no position list, so a number after a comma is a constant
# (VALUES (14, 1, 199779)): masking it keeps such statements on the cached path.
_LITERAL_NO_BY = re.compile(_LITERAL_PATTERN.replace(r"(?:\b[bB][yY]|,)", r"\b[bB][yY]"), re.X | re.A)
_LITERAL_KEYS = 20_000
_by_literal_key: dict[str, Fingerprint] = {}


def _unsafe_to_mask(sql: str) -> bool:
    # Substring tests first: they are C-speed and almost always false.
    return (
        '"' in sql or "\0" in sql or "\1" in sql or "\2" in sql or "\3" in sql
        or ("$" in sql and _DOLLAR_QUOTE.search(sql) is not None)
        or (("e'" in sql or "E'" in sql) and _E_STRING.search(sql) is not None)
        or ("(" in sql and _has_typmod(sql))
    )  # fmt: skip


def _has_typmod(sql: str) -> bool:
    """Whether a type name with a modifier appears (varchar(10), numeric (10, 2)): from each ``(`` before
    a digit, the word before it. A search for the names anywhere costs several times more."""
    for m in _PAREN_DIGIT.finditer(sql):
        if _TYPMOD_NAME.search(sql[: m.start()].rstrip()[-16:]) is not None:  # names are at most 11 letters
            return True
    return False


# One mark per kind, as the lexer treats them apart (adjacent strings are one literal,
# `interval $1` is a cast); control characters, which no text that reaches here has.
_MARKS: dict[str | None, str | None] = {"keep": None, "comment": " ", "list": "in (\3)", "string": "\0", "param": "\2"}


def _mask_for_key(m: re.Match) -> str:
    return _MARKS.get(m.lastgroup, "\1") or m.group(0)


def _via_literal_key(sql: str) -> Fingerprint:
    if _unsafe_to_mask(sql):
        return _uncached(sql)
    has_by = "by" in sql or "BY" in sql or "By" in sql or "bY" in sql  # substring tests: C speed
    key = (_LITERAL if has_by else _LITERAL_NO_BY).sub(_mask_for_key, sql)
    if "'" in key or "--" in key or "/*" in key:  # unterminated strings, nested comments: the lexer's job
        return _uncached(sql)
    found = _by_literal_key.get(key)
    if found is None:
        try:
            found = _computed(sql)
        except Exception:  # the raw-text fallback belongs to this text alone: not cached by key
            return _uncached(sql)
        if len(_by_literal_key) >= _LITERAL_KEYS:
            _by_literal_key.clear()  # bounded: start over rather than grow
        _by_literal_key[key] = found
    return found


_by_text = lru_cache(20_000)(_via_literal_key)  # texts with literals seldom recur exactly: the literal key does the work


def fingerprint(sql: str) -> Fingerprint:
    """Fingerprint one statement, as logged or as pg_stat_statements shows it. Never raises."""
    if not isinstance(sql, str):
        sql = sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
    return _by_text(sql) if len(sql) <= _SHORT else _uncached(sql)
