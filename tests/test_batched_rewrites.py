"""Every batched form the N+1 check prints returns, per key, the rows of the N queries it replaces.

Each case runs the child once per key on the real server (one key has no
rows, one is absent from the parent table), then the batched statement once
with the array of keys, and compares the rows of every key: as multisets,
or in order where the child orders them (ORDER BY … LIMIT).
"""

from __future__ import annotations

from collections import Counter

import pytest
from batched_proof import rows_by_key

from advisor.checks.rewrite import KINDS, Batched, batched_lookup

SCHEMA = """
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO authors SELECT g, 'author ' || g FROM generate_series(1, 6) g;
CREATE TABLE books (id int PRIMARY KEY, author_id int NOT NULL REFERENCES authors, title text NOT NULL,
                    stars int);
INSERT INTO books SELECT g, 1 + g % 5, 'book ' || lpad(((g * 37) % 101)::text, 3, '0'), nullif(g % 6, 0)
FROM generate_series(1, 60) g;
CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL);
INSERT INTO accounts SELECT g, 1 + g % 4, (g * 7919) % 1000 - 300 FROM generate_series(1, 2000) g
"""
AUTHORS = [1, 2, 5, 6, 99]  # 6 has no books, 99 is no author at all
BRANCHES = [1, 3, 4, 7]  # 7 has no accounts

# (child as the log normalizes it, its keys, the values of its other parameters, compared in order, kind)
CASES = [
    ("SELECT id, title FROM books WHERE author_id = $1", AUTHORS, [], False, "rows"),
    ("SELECT author_id, title FROM books WHERE author_id = $1 ORDER BY title DESC", AUTHORS, [], True, "rows"),
    ("SELECT * FROM books WHERE author_id = $1 AND stars > $2", AUTHORS, [2], False, "rows"),
    ("SELECT b.id, a.name FROM books AS b JOIN authors AS a ON a.id = b.author_id WHERE b.author_id = $1::INTEGER",
     AUTHORS, [], False, "rows"),
    ("SELECT COUNT(*) FROM accounts WHERE bid = $1", BRANCHES, [], False, "aggregate"),
    ("SELECT count(*), sum(abalance), max(abalance), count(*) FILTER (WHERE abalance > $2), count(stars) + 1 "
     "FROM accounts AS a, LATERAL (SELECT NULL::int AS stars) AS s WHERE a.bid = $1 AND a.aid > $3",
     BRANCHES, [100, 40], False, None),  # a join: no aggregate form is provable
    ("SELECT count(*), sum(abalance), max(abalance), count(*) FILTER (WHERE abalance > $2), avg(abalance) * 2 "
     "FROM accounts AS a WHERE a.bid = $1 AND a.aid > $3", BRANCHES, [100, 40], False, "aggregate"),
    ("SELECT count(stars), sum(1), string_agg(title, ',') FROM books WHERE author_id = $1", AUTHORS, [], False,
     "aggregate"),
    ("SELECT string_agg(title, ',' ORDER BY title), array_agg(id ORDER BY id DESC), coalesce(sum(stars), $2), "
     "count(DISTINCT stars) FROM books WHERE author_id = $1", AUTHORS, [-1], False, "aggregate"),
    ("SELECT b.title, (SELECT count(*) FROM books AS o WHERE o.stars = b.stars) FROM books AS b "
     "WHERE b.author_id = $1", AUTHORS, [], False, "rows"),  # the aggregate is the subquery's: row lookups
    ("SELECT id, title FROM books WHERE author_id = $1 ORDER BY title DESC LIMIT $2", AUTHORS, [3], True, "top_n"),
    ("SELECT id FROM books WHERE author_id = $1::INTEGER ORDER BY id LIMIT $2 OFFSET $3", AUTHORS, [2, 3], True,
     "top_n"),
    ("SELECT max(stars) FROM books WHERE author_id = $1 LIMIT $2", AUTHORS, [1], True, "top_n"),
]


@pytest.mark.parametrize(("child", "keys", "others", "ordered", "kind"), CASES, ids=[c[0][:60] for c in CASES])
def test_batched_form_returns_the_rows_of_each_key(schema_conn, child, keys, others, ordered, kind):
    batched = batched_lookup(child)
    if kind is None:
        assert isinstance(batched, str) and "join" in batched
        return
    assert isinstance(batched, Batched) and batched.kind == kind and kind in KINDS
    assert batched.parameter == "$1" and batched.others == tuple(f"${i}" for i in range(2, len(others) + 2))
    expected, got = rows_by_key(schema_conn, child, batched, keys, others)
    assert set(got) == set(keys)  # no row under a key that was not asked for
    # A key without rows took part: no rows, or the aggregates of none (0 or NULL).
    assert any(not rows or any(v is None or v == 0 for v in rows[0]) for rows in expected.values())
    for key in keys:
        if ordered:
            assert got[key] == expected[key], (key, batched.sql)
        else:
            assert Counter(got[key]) == Counter(expected[key]), (key, batched.sql)


@pytest.mark.parametrize(("child", "reason"), [
    ("SELECT DISTINCT title FROM books WHERE author_id = $1", "DISTINCT"),
    ("SELECT title, row_number() OVER (ORDER BY id) FROM books WHERE author_id = $1", "window"),
    ("SELECT stars, count(*) FROM books WHERE author_id = $1 GROUP BY stars", "GROUP BY"),
    ("SELECT title FROM books WHERE author_id = $1 OR stars = $2", "no `column = parameter`"),
    ("SELECT title FROM books WHERE author_id = $1 AND id IN (SELECT id FROM books WHERE stars = $1)",
     "used elsewhere"),
    ("WITH b AS (SELECT * FROM books) SELECT title FROM b WHERE author_id = $1", "WITH"),
    ("SELECT max(stars) FROM books WHERE author_id = $1 HAVING count(*) > 1", "HAVING"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY stars) FROM books WHERE author_id = $1", "WITHIN GROUP"),
    ("SELECT count(*) FROM books AS b JOIN authors AS a ON a.id = b.author_id WHERE b.author_id = $1", "join"),
    ("SELECT jsonb_agg(title) FROM books WHERE author_id = $1", "cannot classify"),
    ("SELECT title FROM books WHERE author_id = $1 FOR UPDATE", "locking"),
    ("SELECT title FROM books WHERE author_id = $1 UNION SELECT name FROM authors WHERE id = $2", "not a plain SELECT"),
])
def test_no_batched_form_where_none_is_provable(child, reason):
    result = batched_lookup(child)
    assert isinstance(result, str) and reason in result
