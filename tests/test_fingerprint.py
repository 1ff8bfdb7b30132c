"""Statement fingerprints: literal-blind, shape-sensitive, faithful, stable, never raising."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import psycopg
import pytest
import sqlglot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from advisor.workload import fingerprint as fp_module
from advisor.workload.fingerprint import Fingerprint, fingerprint, mask_conditions, mask_literals

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
TYPES = {"select", "insert", "update", "delete", "merge", "with", "utility", "unknown"}


def fp(sql: str) -> Fingerprint:
    """Uncached, so that each test sees the whole path (pre-key and sqlglot) every time."""
    for cache in (fp_module._by_text, fp_module._by_short_key, fp_module._by_long_key):
        cache.cache_clear()
    fp_module._by_literal_key.clear()
    return fingerprint(sql)



# --- literal strategies --------------------------------------------------------------------------

def sql_string(text: str, style: str) -> str:
    if style == "plain":
        return "'" + text.replace("'", "''") + "'"
    if style == "escape":
        return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    tag = "$q$" if style == "tagged" else "$$"
    return tag + text.replace("$", "") + tag


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=20)
strings = st.builds(sql_string, texts, st.sampled_from(["plain", "escape", "dollar", "tagged"]))
integers = st.integers(-10**12, 10**12).map(str)
numbers = st.one_of(integers, st.sampled_from(["1.5", ".5", "5.", "1e10", "2.5E-3", "-0.25", "1_000"]))
literals = st.one_of(strings, numbers)
int_lists = st.lists(integers, min_size=1, max_size=12).map(", ".join)

TEMPLATES = [  # slots: {i} integer, {n} number, {s} string or number, {t} string, {l} list, {b}, {c} comment
    "SELECT * FROM users WHERE id = {i} AND name = {s}",
    "select u.id from users u where u.email = {s} and u.age > {n} order by u.id limit {i}",
    "UPDATE accounts SET balance = balance - {n}, note = {s} WHERE id = {i} RETURNING id",
    "INSERT INTO events (kind, payload, at) VALUES ({s}, {s}, {s})",
    "DELETE FROM sessions WHERE expires_at < {s} OR user_id IN ({l})",
    "SELECT count(*) FROM t WHERE created_at > now() - interval {t} AND tag = ANY(ARRAY[{l}])",
    "WITH x AS (SELECT id FROM t WHERE v BETWEEN {n} AND {n}) SELECT * FROM x LIMIT {i} OFFSET {i}",
    "SELECT * FROM t WHERE d = date {t} AND flag = {b} AND x IS NOT NULL ORDER BY 2",
    "select * from t where a = {i} /* {c} */ and b = {s} -- {c}\n",
    "SELECT coalesce(x, {n})::numeric(12,2), data->>{s} FROM t WHERE k IN ({l}) GROUP BY 1",
]


def fill(template: str, draw) -> str:
    out = template
    for slot, strategy in (("{i}", integers), ("{n}", numbers), ("{s}", literals), ("{l}", int_lists),
                           ("{t}", strings),
                           ("{b}", st.sampled_from(["true", "FALSE", "null"])),
                           ("{c}", st.text(alphabet="abc '\"$-;", max_size=10))):
        while slot in out:
            out = out.replace(slot, draw(strategy).replace("*/", ""), 1)
    return out


def pss_form(template: str) -> str:
    """The template as pg_stat_statements shows it: each literal a numbered parameter."""
    count = iter(range(1, 1000))
    out = re.sub(r"\{[c]\}", "", template)
    return re.sub(r"\{[insblt]\}", lambda m: f"${next(count)}", out)


# --- literals never matter, shapes always do ------------------------------------------------------

@SETTINGS
@given(st.sampled_from(TEMPLATES), st.data())
def test_literal_values_never_change_the_fingerprint(template, data):
    first, second = fill(template, data.draw), fill(template, data.draw)
    a, b = fp(first), fp(second)
    assert a.parsed and b.parsed, (first, a)
    assert a == b, (first, second)
    assert a == fp(pss_form(template))  # the log form and the pg_stat_statements form meet


@SETTINGS
@given(st.data())
def test_in_lists_of_any_length_collapse(data):
    values = data.draw(st.lists(integers, min_size=1, max_size=50))
    casts = data.draw(st.integers(1, 50))
    forms = [f"SELECT * FROM t WHERE id IN ({', '.join(values)}) AND b = 1",
             f"SELECT * FROM t WHERE id IN ({', '.join(f'${i}::integer' for i in range(1, casts + 1))})"
             f" AND b = ${casts + 1}",
             f"SELECT * FROM t WHERE id IN ({', '.join(repr(v) for v in values)}) AND b = 'x'"]
    assert len({fp(f) for f in forms}) == 1
    assert fp(forms[0]).normalized == "SELECT * FROM t WHERE id IN ($1) AND b = $2"


identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).map(lambda s: "c_" + s)
operators = st.sampled_from(["=", "<>", "<", ">", "<=", ">=", "LIKE", "ILIKE", "~", "@>"])


@SETTINGS
@given(identifiers, identifiers, identifiers, operators, st.data())
def test_changing_a_column_table_or_operator_changes_it(column, table, other, op, data):
    base = f"SELECT {column} FROM {table} WHERE {column} {op} 5"
    assume(other not in (column, table))
    other_op = data.draw(operators.filter(lambda o: o != op))
    changed = [f"SELECT {other} FROM {table} WHERE {column} {op} 5",
               f"SELECT {column} FROM {other} WHERE {column} {op} 5",
               f"SELECT {column} FROM {table} WHERE {other} {op} 5",
               f"SELECT {column} FROM {table} WHERE {column} {other_op} 5"]
    ids = [fp(s).id for s in [base, *changed]]
    assert len(set(ids)) == len(ids), [fp(s).normalized for s in [base, *changed]]


@pytest.mark.parametrize("a, b", [
    ("SELECT * FROM table1", "SELECT * FROM table2"),
    ("SELECT x1 FROM t", "SELECT x2 FROM t"),
    ('SELECT "t1".a FROM "t1"', 'SELECT "t2".a FROM "t2"'),
    ("SELECT a$1 FROM t", "SELECT a$2 FROM t"),
    ('SELECT "a b" FROM t', 'SELECT "a  b" FROM t'),
    ('SELECT "Foo" FROM t', "SELECT foo FROM t"),
    ("SELECT '--', a FROM t", "SELECT '--', b FROM t"),  # -- inside a string is no comment
    ("SELECT '/*', a FROM t", "SELECT '/*', b FROM t"),
    ("SELECT E'\\'', a FROM t", "SELECT E'\\'', b FROM t"),  # E-strings escape quotes
    ("SELECT $$it's$$, a FROM t", "SELECT $$it's$$, b FROM t"),
    ("SELECT 'it''s', a FROM t", "SELECT 'it''s', b FROM t"),
    ("SELECT /* it's */ a FROM t", "SELECT /* it's */ b FROM t"),
    ("SELECT a FROM t ORDER BY 1", "SELECT a FROM t ORDER BY 2"),  # positions, not constants
    ("SELECT a, b FROM t GROUP BY 1, 2", "SELECT a, b FROM t GROUP BY 1"),
    ("SELECT x::varchar(10) FROM t", "SELECT x::varchar(20) FROM t"),  # type modifiers
    ("SELECT a - 1 FROM t", "SELECT a, -1 FROM t"),
    ("SELECT a FROM t WHERE b IS NULL", "SELECT a FROM t WHERE b IS NOT NULL"),
    ("SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR UPDATE SKIP LOCKED"),
    ("SELECT * FROM t WHERE a < 1", "SELECT * FROM t WHERE a <-> 1"),
    ("SELECT * FROM t WHERE a < 1", "SELECT * FROM t WHERE a <@ 1"),
    ("SAVEPOINT a", "RELEASE SAVEPOINT a"),
])
def test_different_shapes_stay_apart(a, b):
    assert fp(a).id != fp(b).id, (fp(a).normalized, fp(b).normalized)


@pytest.mark.parametrize("a, b", [
    ("SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT 20"),
    ("SELECT * FROM Foo", "select * from foo"),
    ("SELECT * FROM t WHERE a = 5 AND b = 'x'", "SELECT * FROM t WHERE a = $1 AND b = $2"),
    ("SELECT * FROM t WHERE a = -5", "SELECT * FROM t WHERE a = $1"),
    ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = 1 AND b = 'x'"),  # JDBC style
    ("SELECT * FROM t WHERE a <- 1", "SELECT * FROM t WHERE a < $1"),  # PG reads `a < -1`
    ("SELECT * FROM t WHERE a = 1e10", "SELECT * FROM t WHERE a = 'x'"),
    ("SELECT * FROM t WHERE active = true", "SELECT * FROM t WHERE active = $1"),
    ("SELECT * FROM t WHERE d > now() - interval '1 day'", "SELECT * FROM t WHERE d > now() - interval $1"),
    ("SELECT * FROM t WHERE id = ANY(ARRAY[1, 2, 3])", "SELECT * FROM t WHERE id = ANY($1)"),
    ("SELECT * FROM t WHERE id = ANY('{1,2,3}')", "SELECT * FROM t WHERE id = ANY($1)"),
    ("INSERT INTO t (a, b) VALUES (1, 'a'), (2, 'b'), (3, 'c')", "INSERT INTO t (a, b) VALUES ($1, $2)"),
    ("SELECT a FROM t WHERE b = 'x'\n  -- trailing note", "  SELECT   a\nFROM t\tWHERE b = 'y';"),
    ("SELECT a FROM t /*controller='users',action='show',traceparent='00-4bf9-01'*/",
     "SELECT a FROM t /*controller='orders'*/"),
    ("SELECT /* nested /* comment */ here */ a FROM t", "SELECT a FROM t"),
    ("SELECT 'a'\n'b'", "SELECT 'c'"),  # adjacent strings on two lines are one constant in PG
    ('SAVEPOINT "_pg3_1"', 'SAVEPOINT "_pg3_2"'),
    ('ROLLBACK TO SAVEPOINT "_pg3_1"', "ROLLBACK TO $1"),  # PG 17's pg_stat_statements form
])
def test_same_shapes_meet(a, b):
    assert fp(a) == fp(b), (fp(a).normalized, fp(b).normalized)


# --- utility statements and sqlglot's misreadings -------------------------------------------------

@pytest.mark.parametrize("sql, must_not_contain", [
    ('SAVEPOINT "_pg3_1"', "savepoint as"),
    ('RELEASE SAVEPOINT "_pg3_1"', "release as"),
    ("COPY t FROM STDIN WITH (freeze on)", "freeze, on"),
    ("LISTEN channel", "listen as"),
    ("DECLARE c CURSOR FOR SELECT 1", "command"),
    ("SELECT date '2020-01-01'", "date as"),  # sqlglot alone reads `date AS '2020-01-01'`
    ("SELECT now() - interval '1' day", "'1"),  # sqlglot alone turns `interval $1 day` into text
])
def test_normalization_never_changes_what_a_statement_says(sql, must_not_contain):
    assert must_not_contain not in fp(sql).normalized.lower()


def test_utility_statements_use_the_token_fallback():
    copy = fp("COPY t FROM STDIN WITH (freeze on)")
    assert (copy.normalized, copy.parsed, copy.statement_type) == (
        "copy t from stdin with ( freeze on )", False, "utility")
    savepoint = fp('SAVEPOINT "_pg3_1"')
    assert (savepoint.normalized, savepoint.parsed) == ("savepoint $1", False)
    for sql in ["SET search_path = public", "BEGIN", "COMMIT", "ROLLBACK TO SAVEPOINT a",
                "FETCH 10 FROM c", "VACUUM ANALYZE t", "EXPLAIN SELECT 1", "SELECT 1; SELECT 2"]:
        assert fp(sql).parsed is False, sql
    assert fp("SET statement_timeout = 5000") == fp("SET statement_timeout = 6000")


REALISTIC = [
    'SELECT "auth_user"."id", "auth_user"."username" FROM "auth_user" WHERE "auth_user"."id" = 42 LIMIT 21',
    'SELECT "blog_post"."id" FROM "blog_post" INNER JOIN "blog_author" ON ("blog_post"."author_id" = '
    '"blog_author"."id") WHERE ("blog_author"."name" LIKE \'%smith%\' AND "blog_post"."published") '
    'ORDER BY "blog_post"."created_at" DESC NULLS LAST LIMIT 10 OFFSET 20',
    'INSERT INTO "orders" ("customer_id", "total") VALUES (5, 12.50) RETURNING "orders"."id"',
    "UPDATE orders SET status = 'shipped', updated_at = now() WHERE orders.id = 7",
    "select product0_.id as id1_3_ from product product0_ where product0_.price>? and product0_.name like ?",
    "WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 100 "
    "FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO archive SELECT * FROM moved",
    "SELECT date_trunc('day', created_at) AS day, sum(amount) FROM payments "
    "WHERE created_at BETWEEN '2024-01-01' AND '2024-02-01' GROUP BY 1 ORDER BY 1",
    "SELECT id FROM jobs WHERE payload->>'kind' = 'email' AND (payload->'attempts')::int < 3",
    "SELECT * FROM docs WHERE tags @> ARRAY['a','b']::text[] AND body @@ to_tsquery('english', 'cat')",
    "INSERT INTO kv (k, v) VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + EXCLUDED.v",
    "SELECT DISTINCT ON (user_id) user_id, ts FROM logins ORDER BY user_id, ts DESC",
    "SELECT x, row_number() OVER (PARTITION BY y ORDER BY z DESC) FROM t WHERE s ~* '^a' AND j ? 'k'",
    "SELECT * FROM t CROSS JOIN LATERAL (SELECT * FROM u WHERE u.t = t.id LIMIT 1) x",
    "SELECT CASE WHEN a > 0 THEN 'pos' ELSE NULL END, b IS DISTINCT FROM c FROM \"Mixed\".\"Case\"",
    "SELECT * FROM t WHERE a = 1 FOR NO KEY UPDATE NOWAIT",
    "SELECT * FROM t ORDER BY created_at DESC FETCH FIRST 10 ROWS WITH TIES",
    "SELECT count(*) FILTER (WHERE status = 'ok') FROM t TABLESAMPLE SYSTEM (10)",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
    "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)",
    "DELETE FROM t USING u WHERE t.u_id = u.id AND u.flag RETURNING t.id",
    "SELECT substring(x from 2 for 3), extract(epoch from now() - ts) FROM t",
    "SELECT x::character varying(10), y::double precision FROM t",
    "(SELECT 1) UNION (SELECT 2) ORDER BY 1",
    "VALUES (1, 'a'), (2, 'b')",
]


@pytest.mark.parametrize("sql", REALISTIC)
def test_realistic_statements_parse_and_are_a_fixed_point(sql):
    result = fp(sql)
    assert result.parsed, result
    again = fp(result.normalized)  # re-parsing the normalized SQL gives it back unchanged
    assert again == result


def _skeleton(sql: str) -> str:
    """sqlglot's reading of `sql` with every constant a `?` and unquoted names folded."""
    def blank(node):
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null, exp.Placeholder, exp.Parameter)) \
                and not isinstance(node.parent, (exp.Parameter, exp.Is, exp.DataTypeParam, exp.Ordered)):
            return exp.Placeholder()
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Placeholder):
            return node.this
        if isinstance(node, exp.Identifier) and not node.quoted:
            node.set("this", node.this.lower())
        return node
    return sqlglot.parse_one(sql, read="postgres").transform(blank).sql("postgres")


@pytest.mark.parametrize("sql", [  # without what the pre-key collapses, or sqlglot reads literally
    s for s in REALISTIC if not re.search(r"(?i)\bIN \(\d|ARRAY\[|VALUES \(.*\),|date_trunc|->", s)])
def test_the_pre_key_keeps_sqlglots_reading_of_the_original(sql):
    """sqlglot on the raw text and sqlglot on our normalized text see the same statement."""
    assert _skeleton(sql) == _skeleton(fp(sql).normalized)


# --- types, robustness, stability ------------------------------------------------------------------

@pytest.mark.parametrize("sql, kind", [
    ("SELECT 1", "select"), ("select * from t union select * from u", "select"), ("VALUES (1)", "select"),
    ("TABLE t", "select"), ("INSERT INTO t VALUES (1)", "insert"), ("UPDATE t SET a = 1", "update"),
    ("DELETE FROM t", "delete"), ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "merge"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
    ("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN (SELECT * FROM x)", "delete"),
    ("WITH x AS (SELECT 1) DELETE FROM t USING x ORDER BY ??? garbage", "delete"),  # fallback too
    ("WITH x AS (SELECT 1)", "with"), ("SET x = 1", "utility"), ("BEGIN", "utility"),
    ("SAVEPOINT a", "utility"), ("CREATE INDEX i ON t (a)", "utility"), ("", "unknown"),
    ("-- just a comment", "unknown"), ("hello world", "unknown"),
])
def test_statement_types(sql, kind):
    assert fp(sql).statement_type == kind


arbitrary = st.one_of(
    st.text(),
    st.binary().map(lambda b: b.decode("utf-8", "replace")),
    st.lists(st.sampled_from(["SELECT", "select", "*", "FROM", "t", "WHERE", "a", "=", "1", "'x", "'y'",
                              "$1", "$$", "$q$", "(", ")", ",", ";", "--", "/*", "*/", "\n", "E'\\'",
                              "IN", "ARRAY[", "]", "VALUES", "::", "-", "ORDER BY", "interval", '"',
                              "true", "NULL", "?", "u&'", "0x", "1e", "WITH", "INSERT", "Ä"]), max_size=40)
    .map(" ".join),
)


@SETTINGS
@given(arbitrary)
def test_fingerprint_never_raises(sql):
    result = fp(sql)
    assert re.fullmatch(r"[0-9a-f]{16}", result.id)
    assert result.statement_type in TYPES
    assert fingerprint(sql) == result  # the cached path agrees with the uncached one
    assert fp_module._from_key(fp_module._pre_key(sql)) == result  # and the safety net was not needed


@SETTINGS
@given(arbitrary)
def test_the_tokenizer_covers_every_character(sql):
    assert "".join(skip + token for skip, token, _ in fp_module._LEX.findall(sql)) == sql


def test_odd_inputs():
    for sql in ["", "\udcff\udc80 select", "\x00", "select 'unterminated", "select $$x", "/* open",
                "(" * 5000 + "1" + ")" * 5000, b"SELECT 1", None]:
        assert isinstance(fingerprint(sql), Fingerprint)
    big = "SELECT * FROM t WHERE id IN (" + ", ".join(map(str, range(150_000))) + ")"
    assert fingerprint(big).normalized == "SELECT * FROM t WHERE id IN ($1)"
    huge = "SELECT " + " + ".join(f"'{i}'" for i in range(30_000))  # over the parse limit
    result = fingerprint(huge)
    assert not result.parsed and result.normalized.startswith("select $1 + $2")


def test_mask_literals():
    assert mask_literals("SELECT a1, 'it''s', 42, E'\\'', $1 FROM t2 -- 'keep'\nWHERE x = 1.5e3") == \
        "SELECT a1, ?, ?, ?, $1 FROM t2 -- 'keep'\nWHERE x = ?"



def test_mask_conditions_keeps_the_plan_numbers():
    line = ("Seq Scan on t2 (rows 1,000,000 scanned, 12 returned, estimated 10, loops 3, "
            "filter: ((note = 'a,)b'::text) AND (v > 4242)), index cond: (id = ANY ('{1,2}'::integer[])), "
            "join filter: f(a, 7), recheck: active, 96.9 ms self, 100.0 ms total)")
    assert mask_conditions(line) == (
        "Seq Scan on t2 (rows 1,000,000 scanned, 12 returned, estimated 10, loops 3, "
        "filter: ((note = ?::text) AND (v > ?)), index cond: (id = ANY (?::integer[])), "
        "join filter: f(a, ?), recheck: active, 96.9 ms self, 100.0 ms total)")


KNOWN = {  # a change here changes every stored fingerprint: treat it as a format change
    "SELECT * FROM t WHERE a = 5 AND b = 'x'": ("SELECT * FROM t WHERE a = $1 AND b = $2", "98c9648b10f18390"),
    'SAVEPOINT "_pg3_1"': ("savepoint $1", "904666e8219a33f9"),
}


def test_ids_are_stable_across_runs_and_hash_seeds():
    code = ("from advisor.workload.fingerprint import fingerprint as f; import json, sys; "
            "json.dump({s: f(s).id for s in json.load(sys.stdin)}, sys.stdout)")
    for seed in ("0", "12345"):  # other processes, other str hashes: same ids
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(list(KNOWN)), text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, check=True,
                              cwd=Path(__file__).resolve().parents[1])
        assert json.loads(done.stdout) == {sql: id_ for sql, (_, id_) in KNOWN.items()}
    for sql, (normalized, id_) in KNOWN.items():
        assert (fp(sql).normalized, fp(sql).id) == (normalized, id_)
        assert fingerprint(sql).id == fingerprint(sql).id == id_  # and cached


# --- against a real server: the log form meets what pg_stat_statements shows ----------------------

SERVER_STATEMENTS = [
    "SELECT * FROM fp_t WHERE id = 5 AND name = 'x'",
    "SELECT * FROM fp_t WHERE id IN (1, 2, 3, 4, 5)",
    "SELECT * FROM fp_t WHERE id = -5 OR id = ANY(ARRAY[1, 2])",
    "SELECT * FROM fp_t WHERE flag = true AND name IS NOT NULL",
    "SELECT * FROM fp_t WHERE created_at > now() - interval '1 day' AND created_at::date <> date '2020-01-01'",
    "SELECT name, count(*) FROM fp_t GROUP BY 1 ORDER BY 2 DESC LIMIT 10 OFFSET 5",
    "SELECT name::varchar(10), 1.5::numeric(10, 2) FROM fp_t",
    "INSERT INTO fp_t (id, name) VALUES (1, 'a'), (2, NULL)",
    "UPDATE fp_t SET name = 'b' WHERE id = 1",
    "DELETE FROM fp_t WHERE id = 2",
    "WITH x AS (SELECT id FROM fp_t WHERE id > 3) SELECT * FROM x",
    "SELECT '{\"a\": 1}'::jsonb ? 'a', E'\\n', $$dollar$$",
    "SELECT id * -1, id - 1 FROM fp_t WHERE name IN ('a'::text, 'b'::text) AND id IN (-1, 2)",
    "SELECT CASE WHEN id BETWEEN 1 AND 10 THEN NULL ELSE 'big' END FROM fp_t FETCH FIRST 5 ROWS ONLY",
    "SELECT * FROM (SELECT name FROM fp_t ORDER BY 1 LIMIT ALL) s WHERE name LIKE 'a%' ESCAPE '!'",
    "SELECT 'a'\n'b', numeric '1.5', 1e3, .5 FROM fp_t",
    "SAVEPOINT sp_1",
    "SET statement_timeout = 5000",
]


def test_log_form_meets_pg_stat_statements_form(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fp_t (id int, name text, flag bool, created_at timestamptz)")
        for sql in SERVER_STATEMENTS:
            conn.execute("SELECT pg_stat_statements_reset()")
            with conn.transaction() if sql.startswith("SAVEPOINT") else nullcontext():
                conn.execute(sql)
            shown = conn.execute(
                "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%' "
                "AND query NOT IN ('BEGIN', 'COMMIT')").fetchall()
            assert len(shown) == 1, shown
            assert fp(sql) == fp(shown[0][0]), (sql, shown[0][0], fp(sql).normalized, fp(shown[0][0]).normalized)


@pytest.mark.parametrize(
    "first, second",
    [
        ("SELECT a FROM t ORDER BY 1", "SELECT a FROM t ORDER BY 2"),
        ("SELECT a, b FROM t GROUP BY 1, 2", "SELECT a, b FROM t GROUP BY 1, 3"),
        ("select a from t order by b, 1", "select a from t order by b, 2"),  # a position after a column
        ("INSERT INTO t VALUES (1, 2) RETURNING (SELECT a FROM u ORDER BY a, 1 LIMIT 1)",
         "INSERT INTO t VALUES (1, 2) RETURNING (SELECT a FROM u ORDER BY a, 3 LIMIT 1)"),
        ("SELECT x::varchar(10) FROM t", "SELECT x::varchar(20) FROM t"),
        ("SELECT CAST(x AS numeric(10, 2)) FROM t", "SELECT CAST(x AS numeric(12, 4)) FROM t"),
        ("SELECT x::VARCHAR\n                          ( 10) FROM t", "SELECT x::VARCHAR\n                          ( 20) FROM t"),
        ("SELECT f(1), x::timestamptz(3) FROM t", "SELECT f(2), x::timestamptz(6) FROM t"),  # not the first '('
        ("SELECT a FROM t WHERE b = E'it\\'s' AND c = 1", "SELECT a FROM t WHERE b = E'x\\' AND c = 1 --'"),
        ("SELECT $$a 'b$$ FROM t1", "SELECT $$a 'b$$ FROM t2"),
        ("SELECT a$1 FROM t", "SELECT a$2 FROM t"),
        ("SELECT col1 FROM t WHERE x = 5", "SELECT col1 FROM t WHERE x = 5.5e3"),
    ],
)
def test_the_literal_key_cache_never_merges_what_the_full_path_separates(first, second):
    """fingerprint() caches by a cheap literal-masked key; its answer must equal the uncached one."""
    from advisor.workload.fingerprint import _uncached

    fingerprint(first)  # warm the cache with the first shape
    assert fingerprint(second) == _uncached(second)


@SETTINGS
@given(st.lists(arbitrary, min_size=2, max_size=12))
def test_the_caches_never_answer_for_another_text(sqls):
    """A sequence primes the caches; every answer must still be the text's own."""
    fp("")  # empty caches
    for sql in sqls:
        assert fingerprint(sql) == fp_module._uncached(sql)
