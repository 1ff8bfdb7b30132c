"""N+1 detection on the log of a real SQLAlchemy application with lazy-loaded relationships.

The app runs against the harness server with statement logging on, through a
pool of one connection, so one backend serves every request, as behind a
real pool. The detector must find each N+1 the app makes and flag none of
its legitimate repeats.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import psycopg
import pytest
from batched_proof import from_evidence, rows_by_key
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

from advisor.checks import adv101_n_plus_one
from advisor.checks.context import Context
from advisor.db.catalog import read_catalog
from advisor.workload.sources import collect, read_logs


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author", lazy="select")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(String(80))
    author: Mapped[Author] = relationship(back_populates="books")
    reviews: Mapped[list[Review]] = relationship(lazy="select")


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("books.id"))
    stars: Mapped[int]


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(20))


# --- the application's requests ----------------------------------------------


def author_list_lazy(session: Session) -> None:
    """N+1: each author's books loaded one author at a time."""
    for author in session.scalars(select(Author).order_by(Author.name).limit(8)):
        _ = [b.title for b in author.books]


def author_list_eager(session: Session) -> None:
    """The fixed version: two queries whatever the number of authors."""
    for author in session.scalars(select(Author).options(selectinload(Author.books)).limit(8)):
        _ = [b.title for b in author.books]


def book_reviews_lazy(session: Session) -> None:
    """N+1 one level down: reviews per book."""
    for book in session.scalars(select(Book).where(Book.author_id.in_([1, 2]))):
        _ = sum(r.stars for r in book.reviews)


def theme_lookups(session: Session) -> None:
    """Legitimate, if wasteful: the same row read again and again (a cache candidate, not an N+1)."""
    for _ in range(6):
        session.execute(select(Setting.value).where(Setting.key == "theme").execution_options(populate_existing=True)).all()


def nightly_batch(session: Session) -> None:
    """Legitimate: a batch job looks up three specific books."""
    for book_id in (3, 11, 17):
        session.execute(select(Book.title).where(Book.id == book_id)).all()


REQUESTS = [author_list_lazy, author_list_eager, book_reviews_lazy, theme_lookups, nightly_batch] * 3


@pytest.fixture(scope="module")
def app_log(embedded_cluster, pg_dsn):
    app = f"shop-{uuid.uuid4().hex[:6]}"
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(
        url, pool_size=1, max_overflow=0,
        connect_args={"application_name": app, "options": "-c log_min_duration_statement=0"},
    )  # fmt: skip
    setup = create_engine(url)  # not logged, not the app: its bulk insert is not the app's workload
    Base.metadata.create_all(setup)
    with Session(setup) as session, session.begin():
        session.add_all(Author(id=a, name=f"author {a}") for a in range(1, 11))
        session.add_all(Book(id=b, author_id=1 + b % 10, title=f"book {b}") for b in range(1, 41))
        session.add_all(Review(id=r, book_id=1 + r % 40, stars=r % 5) for r in range(1, 121))
        session.add(Setting(key="theme", value="dark"))
    setup.dispose()
    for request in REQUESTS:
        with Session(engine) as session, session.begin():
            request(session)
    engine.dispose()
    marker = f"SELECT 'done {app}'"
    with create_engine(url, connect_args={"options": "-c log_min_duration_statement=0"}).connect() as conn:
        conn.exec_driver_sql(marker).all()
    deadline = time.monotonic() + 15
    while marker not in embedded_cluster.stderr_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the server log never showed the run"
        time.sleep(0.1)
    workload = collect(read_logs([str(embedded_cluster.stderr_log)], jobs=1))
    return [r for r in workload.repeats if app in r.applications], workload, app


def test_every_n_plus_one_is_found(app_log):
    repeats, _, _ = app_log
    found = {(r.kind, r.child_normalized): r for r in repeats}
    books = [r for (kind, sql), r in found.items() if kind == "n_plus_one" and "FROM books" in sql and "author_id" in sql]
    reviews = [r for (kind, sql), r in found.items() if kind == "n_plus_one" and "FROM reviews" in sql]
    assert len(books) == 1 and len(reviews) == 1
    assert books[0].occurrences == 3 and books[0].most_per_occurrence == 8  # three lazy author lists of 8 authors
    assert "FROM authors" in books[0].parent_normalized
    assert reviews[0].occurrences == 3 and reviews[0].most_per_occurrence == 8  # authors 1 and 2 have four books each
    assert "FROM books" in reviews[0].parent_normalized


def test_no_legitimate_repeat_is_flagged(app_log):
    repeats, workload, app = app_log
    assert len(repeats) == 2
    # The repeats that are not N+1s did run, often enough to be tempting.
    theme = _query(workload, app, "FROM settings")
    batch = _query(workload, app, "SELECT books.title FROM books")
    assert theme.calls == 18 and batch.calls == 9
    assert {theme.fingerprint, batch.fingerprint}.isdisjoint(r.child_fingerprint for r in repeats)


def test_identical_repeats_show_up_as_cache_candidates(app_log):
    _, workload, app = app_log
    theme = _query(workload, app, "FROM settings")
    (cached,) = [c for c in workload.cache if c.fingerprint == theme.fingerprint]
    # Six identical reads per request, three requests: every read after the first is a hit.
    assert cached.lookups == 18 and max(h for _, _, h in cached.hits) == 17


def _query(workload, app: str, text: str):
    (query,) = [q for q in workload.queries if app in q.applications and text in q.normalized]
    return query


def test_every_printed_rewrite_returns_the_rows_of_each_parent(app_log, pg_dsn):
    """The batched statement each finding prints, run against the app's data, gives every key the rows the
    ORM's one-per-parent queries gave it (the SQLAlchemy statements as the server logged them)."""
    _repeats, workload, app = app_log
    with psycopg.connect(pg_dsn) as conn:
        ctx = Context(workload=workload, catalog=read_catalog(conn))
        found = [f for f in adv101_n_plus_one.run(ctx) if app in (f.application or "")]
        assert len(found) == 2
        for finding in found:
            batched = from_evidence(finding.evidence["batched"])
            assert batched.kind == "rows" and batched.sql in finding.suggestion
            assert not batched.key_added  # SQLAlchemy selects the foreign key already: no column added
            keys = [1, 2, 3, 7, 10, 99]  # 99: no parent has it, no rows
            expected, got = rows_by_key(conn, finding.normalized, batched, keys)
            assert any(expected.values()) and not expected[99]
            assert {k: Counter(v) for k, v in got.items()} == {k: Counter(v) for k, v in expected.items()}
