"""Deterministic generator of a realistic PostgreSQL stderr log, with ground truth.

The log is what a PostgreSQL 15 server writes with
``log_line_prefix = '%m [%p] %q%u@%d '`` (Debian's default),
``log_min_duration_statement = 0`` and connection/checkpoint/autovacuum logging
on: simple-protocol ``statement:`` entries, extended-protocol
``parse``/``bind``/``execute`` entries with ``DETAIL:  parameters:`` lines (both
unnamed and per-session named prepared statements ``S_n``), multi-line
statements (continuation lines start with a TAB), and noise that a parser must
not count as executions (connections, checkpoints, autovacuum, ERROR +
STATEMENT pairs, temporary-file + STATEMENT pairs).

Every statement shape reads one table whose name is unique to it
(``orders_s017``), so each tool's output can be mapped back to the shape that
produced it, whatever normalization the tool applies. The sidecar JSON records
how many executions of each shape were written: the ground truth.

Usage on its own:  python benchmarks/loggen.py --size-mb 50 --out /tmp/pg.log
"""

from __future__ import annotations

import argparse
import array
import bisect
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field

# Bump when the output changes, so cached logs from an older generator are not reused.
GENERATOR_VERSION = 3
LOG_LINE_PREFIX = "%m [%p] %q%u@%d "
TAG_RE = re.compile(r"_s(\d{3})\b")  # the shape tag inside a table name
START_EPOCH = 1709510400  # 2024-03-04 00:00:00 UTC

BASES = ("orders", "customers", "products", "line_items", "invoices", "payments",
         "users", "sessions", "events", "shipments", "carts", "reviews",
         "inventory", "accounts", "audit_log", "coupons")
JOINED = (("customers", "customer_id"), ("products", "product_id"),
          ("warehouses", "warehouse_id"), ("accounts", "account_id"),
          ("regions", "region_id"))
COLUMNS = ("id", "status", "amount", "customer_id", "created_at", "updated_at",
           "name", "email", "region", "score", "quantity", "price", "note")
WORDS = {
    "status": ("new", "paid", "shipped", "cancelled", "refunded", "pending"),
    "region": ("eu-west", "us-east", "ap-south", "sa-east", "eu-central"),
    "tier": ("free", "pro", "enterprise"),
    "country": ("DE", "FR", "US", "JP", "BR", "IN", "GB", "NL", "ES", "IT"),
    # Quotes and non-ASCII text: literal handling and byte/char accounting must cope.
    "note": ("rush", "gift wrap", "O'Brien's order", "Müller GmbH", "東京 delivery",
             "call before", "leave at door", "fragile; handle with care",
             "ring twice\nthen wait"),  # a newline inside a literal: the log tabs it too
    "like": ("a%", "jo%", "%son", "mar%", "%x%", "st%"),
}
# As written to the log: the server puts a TAB after every newline of a message,
# inside literals and parameter values too.
LOGGED_WORDS = {k: tuple(w.replace("\n", "\n\t") for w in v) for k, v in WORDS.items()}
USERS = (("app", "shop", "web"), ("app", "shop", "worker"), ("report", "analytics", "metabase"),
         ("batch", "shop", "cron"), ("api", "shop", "api-gateway"))


# --- Statement shapes -------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """A place where each execution puts its own value(s)."""
    kind: str  # int, money, ts, word, email, in_int, in_word, limit, offset
    arg: str = ""
    lo: int = 0
    hi: int = 0


@dataclass
class Shape:
    id: int
    tag: str
    kind: str  # select, insert, update, delete
    mode: str  # simple, unnamed, named
    multiline: bool
    parts: list  # str | Slot, log-ready: newlines already followed by a TAB
    template: str  # readable form, slots shown as ?
    weight: float = 0.0
    median_ms: float = 1.0
    calls: int = 0
    total_ms: float = 0.0
    errors: int = 0
    parses: int = 0  # parse entries written (not executions)
    binds: int = 0  # bind entries written (not executions)
    temp_files: int = 0  # temporary-file LOG + STATEMENT pairs (not executions)
    durations: array.array = field(default_factory=lambda: array.array("d"))  # for exact quantiles


SLOT_RE = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _compile(text: str) -> list:
    """Split a template like 'id = {int:1:99}' into text parts and Slots."""
    parts, pos = [], 0
    for m in SLOT_RE.finditer(text):
        parts.append(text[pos:m.start()])
        kind, args = m.group(1), (m.group(2) or "").split(":")
        if kind in ("int", "in_int"):
            parts.append(Slot(kind, lo=int(args[0]), hi=int(args[1])))
        elif kind == "in_word":
            parts.append(Slot(kind, args[0], int(args[1]), int(args[2])))
        else:
            parts.append(Slot(kind, args[0] if args[0] else ""))
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p != ""]


def _predicates(rng: random.Random, alias: str, n: int) -> list[str]:
    pool = (
        f"{alias}.id = {{int:1:5000000}}",
        f"{alias}.customer_id = {{int:1:200000}}",
        f"{alias}.status = {{word:status}}",
        f"{alias}.status IN {{in_word:status:1:5}}",
        f"{alias}.id IN {{in_int:1:40}}",
        f"{alias}.created_at >= {{ts}}",
        f"{alias}.created_at BETWEEN {{ts}} AND {{ts}}",
        f"{alias}.amount > {{money}}",
        f"{alias}.email = {{email}}",
        f"{alias}.name LIKE {{word:like}}",
        f"{alias}.region = {{word:region}}",
        f"{alias}.score BETWEEN {{int:0:50}} AND {{int:50:100}}",
        f"{alias}.deleted_at IS NULL",
        f"lower({alias}.email) = lower({{email}})",
    )
    return rng.sample(pool, n)


def _select(rng: random.Random, table: str) -> str:
    cols = ", ".join("t." + c for c in rng.sample(COLUMNS, rng.randint(1, 5)))
    aggregate = rng.random() < 0.15
    if aggregate:
        cols = "t.status, count(*) AS n, sum(t.amount) AS total"
    sql = f"SELECT {cols} FROM {table} t"
    preds = _predicates(rng, "t", rng.randint(1, 3))
    if rng.random() < 0.45:
        joined, fk = rng.choice(JOINED)
        join = "LEFT JOIN" if rng.random() < 0.3 else "JOIN"
        sql = sql.replace(" FROM", ", j.name AS j_name FROM", 1) if not aggregate else sql
        sql += f" {join} {joined} j ON j.id = t.{fk}"
        if rng.random() < 0.5:
            preds.append(rng.choice(("j.tier = {word:tier}", "j.country IN {in_word:country:1:6}")))
    sql += " WHERE " + " AND ".join(preds)
    if aggregate:
        sql += " GROUP BY t.status"
    if rng.random() < 0.5:
        sql += rng.choice((" ORDER BY t.created_at DESC", " ORDER BY t.id", " ORDER BY t.amount DESC, t.id"))
        if rng.random() < 0.8:
            sql += " LIMIT {limit}"
            if rng.random() < 0.3:
                sql += " OFFSET {offset}"
    elif rng.random() < 0.05:
        sql += " FOR UPDATE"
    return sql


def _insert(rng: random.Random, table: str) -> str:
    pairs = [("customer_id", "{int:1:200000}"), ("status", "{word:status}"),
             ("amount", "{money}"), ("note", "{word:note}"), ("created_at", "{ts}"),
             ("quantity", "{int:1:20}"), ("email", "{email}")]
    chosen = rng.sample(pairs, rng.randint(3, len(pairs)))
    sql = (f"INSERT INTO {table} ({', '.join(c for c, _ in chosen)}) "
           f"VALUES ({', '.join(v for _, v in chosen)})")
    tail = rng.random()
    if tail < 0.4:
        sql += " RETURNING id"
    elif tail < 0.55:
        sql += " ON CONFLICT (id) DO UPDATE SET updated_at = now()"
    return sql


def _update(rng: random.Random, table: str) -> str:
    sets = rng.choice(("status = {word:status}", "amount = amount + {money}",
                       "quantity = {int:0:100}, price = {money}", "note = {word:note}"))
    where = rng.choice(("id = {int:1:5000000}", "id IN {in_int:1:30}",
                        "customer_id = {int:1:200000} AND status = {word:status}"))
    return f"UPDATE {table} SET {sets}, updated_at = now() WHERE {where}"


def _delete(rng: random.Random, table: str) -> str:
    where = rng.choice(("id = {int:1:5000000}", "created_at < {ts}", "id IN {in_int:1:30}",
                        "status = {word:status} AND created_at < {ts}"))
    return f"DELETE FROM {table} WHERE {where}"


MULTILINE_BREAKS = re.compile(r" (?=(?:FROM|LEFT JOIN|JOIN|WHERE|AND|GROUP BY|ORDER BY|LIMIT|VALUES|SET|RETURNING|ON CONFLICT) )")


def _multiline(sql: str, comment: bool) -> str:
    """Spread a statement over lines the way application code often formats it."""
    sql = MULTILINE_BREAKS.sub("\n  ", sql)
    return "-- " + sql.split(None, 1)[0].lower() + " from the app\n" + sql if comment else sql


def build_shapes(seed: int, count: int) -> list[Shape]:
    rng = random.Random(seed * 7919 + 17)
    shapes = []
    for i in range(count):
        tag = f"s{i:03d}"
        table = f"{BASES[i % len(BASES)]}_{tag}"
        kind = rng.choices(("select", "insert", "update", "delete"), (55, 15, 18, 12))[0]
        sql = {"select": _select, "insert": _insert, "update": _update, "delete": _delete}[kind](rng, table)
        multiline = rng.random() < 0.2
        if multiline:
            sql = _multiline(sql, comment=rng.random() < 0.3)
        if rng.random() < 0.1:
            sql = sql.lower()  # some applications write lower-case SQL
        if rng.random() < 0.05:
            sql = f"/* app:{BASES[i % 5]} */ " + sql  # ORM / sqlcommenter-style tag
        parts = _compile(sql.replace("\n", "\n\t"))  # PostgreSQL tabs continuation lines
        template = SLOT_RE.sub(lambda m: "(?)" if m.group(1).startswith("in_") else "?", sql)
        median = 10 ** rng.uniform(-1.3, 1.5)
        shapes.append(Shape(i, tag, kind, "simple", multiline, parts, template, median_ms=median))
    _assign_weights_and_modes(rng, shapes)
    return shapes


def _assign_weights_and_modes(rng: random.Random, shapes: list[Shape]) -> None:
    """Zipf-like popularity; by popularity rank, 4 shapes in 10 use the extended protocol.

    Spreading the modes over the ranks (not at random) keeps the extended
    share of executions near 30% whatever the seed.
    """
    order = list(range(len(shapes)))
    rng.shuffle(order)
    for rank, idx in enumerate(order):
        shape = shapes[idx]
        shape.weight = 1.0 / (rank + 1) ** 0.8
        shape.mode = {1: "unnamed", 6: "unnamed", 3: "named"}.get(rank % 10, "simple")


# --- Rendering one execution -----------------------------------------------

def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Renderer:
    """Draws slot values and renders a shape as literal SQL or as $n SQL + parameters."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def values(self, slot: Slot) -> list[tuple[str, bool]]:
        """The slot's values for one execution, each with 'is it a string'."""
        r = self.rng
        k = slot.kind
        if k == "int":
            return [(str(r.randrange(slot.lo, slot.hi + 1)), False)]
        if k == "money":
            return [(f"{r.randrange(100, 1000000) / 100:.2f}", False)]
        if k == "ts":
            return [(f"2024-{r.randrange(1, 4):02d}-{r.randrange(1, 29):02d} "
                     f"{r.randrange(24):02d}:{r.randrange(60):02d}:00", True)]
        if k == "word":
            return [(r.choice(LOGGED_WORDS[slot.arg]), True)]
        if k == "email":
            return [(f"user{r.randrange(1, 500000)}@example.com", True)]
        if k == "limit":
            return [(r.choice(("10", "20", "25", "50", "100")), False)]
        if k == "offset":
            return [(str(20 * r.randrange(0, 50)), False)]
        if k == "in_int":
            n = r.randrange(slot.lo, slot.hi + 1)
            return [(str(r.randrange(1, 5000000)), False) for _ in range(n)]
        if k == "in_word":
            n = r.randrange(slot.lo, slot.hi + 1)
            return [(w, True) for w in r.sample(LOGGED_WORDS[slot.arg], min(n, len(WORDS[slot.arg])))]
        raise ValueError(k)

    def literal(self, shape: Shape) -> str:
        """Simple protocol: values inlined as SQL literals."""
        out = []
        for part in shape.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            vals = [_quote(v) if s else v for v, s in self.values(part)]
            out.append("(" + ", ".join(vals) + ")" if part.kind.startswith("in_") else vals[0])
        return "".join(out)

    def parameterized(self, shape: Shape) -> tuple[str, list[str]]:
        """Extended protocol: $n placeholders, and the values as PostgreSQL logs them."""
        out, params = [], []
        for part in shape.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            first = len(params) + 1
            params.extend(_quote(v) for v, _ in self.values(part))
            marks = [f"${n}" for n in range(first, len(params) + 1)]
            out.append("(" + ", ".join(marks) + ")" if part.kind.startswith("in_") else marks[0])
        return "".join(out), params


# --- Sessions and the event loop -------------------------------------------

@dataclass
class Session:
    pid: int
    prefix: str  # "[pid] user@db "
    connect_prefix: str  # "[pid] [unknown]@[unknown] "
    user: str
    db: str
    app: str
    port: int
    started_ms: int
    remaining: int  # executions left before it disconnects
    pending: list = field(default_factory=list)  # steps of an execution under way, reversed
    prepared: dict = field(default_factory=dict)  # (shape id, n params) -> S_n


class Generator:
    def __init__(self, seed: int, shape_count: int):
        self.rng = random.Random(seed)
        self.render = Renderer(self.rng)
        self.shapes = build_shapes(seed, shape_count)
        total = 0.0
        self.cum = []
        for s in self.shapes:
            total += s.weight
            self.cum.append(total)
        self.total_weight = total
        self.now_ms = START_EPOCH * 1000
        self._sec = -1
        self._sec_text = ""
        self.next_pid = 20000
        self.sessions = [self._new_session() for _ in range(48)]
        self.next_checkpoint = self.now_ms + 60_000
        self.checkpoint_done_at = None
        self.counts = {"statements": 0, "simple": 0, "unnamed": 0, "named": 0,
                       "parse": 0, "bind": 0, "errors": 0, "temp_files": 0,
                       "connections": 0, "disconnections": 0, "checkpoints": 0,
                       "autovacuum": 0, "autoanalyze": 0}

    # time ------------------------------------------------------------------
    def _ts(self) -> str:
        """%m: '2024-03-04 10:00:00.123 UTC'; the date text is cached per second."""
        sec, ms = divmod(self.now_ms, 1000)
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        return f"{self._sec_text}.{ms:03d} UTC "

    # sessions --------------------------------------------------------------
    def _new_session(self) -> Session:
        r = self.rng
        self.next_pid += r.randrange(1, 40)
        if self.next_pid > 4_000_000:
            self.next_pid = 20000
        user, db, app = r.choice(USERS)
        pid = self.next_pid
        return Session(pid, f"[{pid}] {user}@{db} ", f"[{pid}] [unknown]@[unknown] ",
                       user, db, app, r.randrange(30000, 60000), self.now_ms,
                       int(r.expovariate(1 / 400)) + 1)

    def _connect_lines(self, s: Session) -> str:
        self.counts["connections"] += 1
        ts = self._ts()
        return (f"{ts}{s.connect_prefix}LOG:  connection received: host=10.0.{s.pid % 7}.{s.pid % 250 + 2} port={s.port}\n"
                f"{ts}{s.prefix}LOG:  connection authorized: user={s.user} database={s.db} application_name={s.app}\n")

    def _disconnect_line(self, s: Session) -> str:
        self.counts["disconnections"] += 1
        secs = (self.now_ms - s.started_ms) / 1000
        h, rem = divmod(secs, 3600)
        m, sec = divmod(rem, 60)
        return (f"{self._ts()}{s.prefix}LOG:  disconnection: session time: {int(h)}:{int(m):02d}:{sec:06.3f} "
                f"user={s.user} database={s.db} host=10.0.{s.pid % 7}.{s.pid % 250 + 2} port={s.port}\n")

    # executions ------------------------------------------------------------
    def _duration(self, shape: Shape) -> float:
        return round(shape.median_ms * math.exp(self.rng.gauss(0.0, 0.7)), 3)

    def _plan_execution(self, s: Session) -> None:
        """Queue the log entries (steps) of one execution of a weighted-random shape."""
        r = self.rng
        shape = self.shapes[bisect.bisect_left(self.cum, r.random() * self.total_weight)]
        steps = []
        if shape.mode == "simple":
            sql, params = self.render.literal(shape), None
        else:
            sql, params = self.render.parameterized(shape)
            detail = "DETAIL:  parameters: " + ", ".join(f"${i} = {v}" for i, v in enumerate(params, 1))
            if shape.mode == "unnamed":
                name = "<unnamed>"
                steps.append((f"LOG:  duration: {r.random() * 0.1 + 0.01:.3f} ms  parse {name}: {sql}",))
            else:
                key = (shape.id, len(params))
                name = s.prepared.get(key)
                if name is None:  # first use in this session: JDBC-style server-side prepare
                    name = s.prepared[key] = f"S_{len(s.prepared) + 1}"
                    steps.append((f"LOG:  duration: {r.random() * 0.1 + 0.01:.3f} ms  parse {name}: {sql}",))
            if steps:
                self.counts["parse"] += 1
                shape.parses += 1
            self.counts["bind"] += 1
            shape.binds += 1
            steps.append((f"LOG:  duration: {r.random() * 0.05 + 0.005:.3f} ms  bind {name}: {sql}", detail))
        failed = self._maybe_fail(shape, sql, steps)
        if not failed:
            self._maybe_temp_file(shape, sql, steps)
            ms = self._duration(shape)
            if params is None:
                steps.append((f"LOG:  duration: {ms:.3f} ms  statement: {sql}",))
            else:
                steps.append((f"LOG:  duration: {ms:.3f} ms  execute {name}: {sql}", detail))
            shape.calls += 1
            shape.total_ms += ms
            shape.durations.append(ms)
            self.counts["statements"] += 1
            self.counts[shape.mode] += 1
        steps.reverse()
        s.pending = steps

    def _maybe_fail(self, shape: Shape, sql: str, steps: list) -> bool:
        """Rare failures: logged as ERROR + STATEMENT, with no duration line, so not executions."""
        p = self.rng.random()
        if shape.kind == "insert" and p < 0.004:
            key = self.rng.randrange(1, 5000000)
            steps.append((f'ERROR:  duplicate key value violates unique constraint "{BASES[shape.id % len(BASES)]}_{shape.tag}_pkey"',
                          f"DETAIL:  Key (id)=({key}) already exists.", f"STATEMENT:  {sql}"))
        elif shape.kind == "select" and p < 0.0005:
            steps.append(("ERROR:  canceling statement due to statement timeout", f"STATEMENT:  {sql}"))
        else:
            return False
        shape.errors += 1
        self.counts["errors"] += 1
        return True

    def _maybe_temp_file(self, shape: Shape, sql: str, steps: list) -> None:
        """A sort spilled to disk: LOG + STATEMENT while the statement runs, then its duration line."""
        if shape.kind == "select" and self.rng.random() < 0.001:
            self.counts["temp_files"] += 1
            shape.temp_files += 1
            steps.append((f'LOG:  temporary file: path "base/pgsql_tmp/pgsql_tmp{self.next_pid}.{self.rng.randrange(100)}", '
                          f"size {self.rng.randrange(1 << 20, 1 << 28)}", f"STATEMENT:  {sql}"))

    # background noise -------------------------------------------------------
    def _noise(self) -> str:
        out = ""
        if self.now_ms >= self.next_checkpoint:
            self.counts["checkpoints"] += 1
            out += f"{self._ts()}[812] LOG:  checkpoint starting: time\n"
            self.checkpoint_done_at = self.now_ms + self.rng.randrange(20_000, 40_000)
            self.next_checkpoint += 300_000
        if self.checkpoint_done_at is not None and self.now_ms >= self.checkpoint_done_at:
            self.checkpoint_done_at = None
            b = self.rng.randrange(100, 20000)
            out += (f"{self._ts()}[812] LOG:  checkpoint complete: wrote {b} buffers ({b / 1638.4:.1f}%); "
                    f"0 WAL file(s) added, 0 removed, {self.rng.randrange(5)} recycled; write=26.912 s, "
                    f"sync=0.011 s, total=26.950 s; sync files=42, longest=0.004 s, average=0.001 s; "
                    f"distance={b * 8} kB, estimate={b * 9} kB\n")
        if self.rng.random() < 0.00005:
            out += self._autovacuum()
        return out

    def _autovacuum(self) -> str:
        r = self.rng
        self.counts["autovacuum"] += 1
        self.counts["autoanalyze"] += 1
        pid = self.next_pid + r.randrange(1, 9)
        ts = self._ts()
        shape = r.choice(self.shapes)
        table = f'"shop.public.{BASES[shape.id % len(BASES)]}_{shape.tag}"'
        pages = r.randrange(100, 90000)
        return (f"{ts}[{pid}] LOG:  automatic vacuum of table {table}: index scans: 1\n"
                f"\tpages: 0 removed, {pages} remain, {pages} scanned (100.00% of total)\n"
                f"\ttuples: {r.randrange(1000)} removed, {pages * 40} remain, 0 are dead but not yet removable\n"
                f"\tremovable cutoff: 4862211, which was 0 XIDs old when operation ended\n"
                f"\tindex scan needed: 12 pages from table (0.50% of total) had 160 dead item identifiers removed\n"
                f"\tavg read rate: 0.000 MB/s, avg write rate: 0.382 MB/s\n"
                f"\tbuffer usage: {pages * 2} hits, 0 misses, 12 dirtied\n"
                f"\tWAL usage: 310 records, 12 full page images, 104535 bytes\n"
                f"\tsystem usage: CPU: user: 0.01 s, system: 0.00 s, elapsed: 0.24 s\n"
                f"{ts}[{pid}] LOG:  automatic analyze of table {table}\n"
                f"\tavg read rate: 0.000 MB/s, avg write rate: 0.000 MB/s\n"
                f"\tbuffer usage: 1218 hits, 0 misses, 0 dirtied\n"
                f"\tsystem usage: CPU: user: 0.02 s, system: 0.00 s, elapsed: 0.03 s\n")

    # main loop ---------------------------------------------------------------
    def events(self, n: int) -> list[str]:
        """The text of the next n events (a step of some session, or its connect/disconnect)."""
        r = self.rng
        out = []
        sessions = self.sessions
        for _ in range(n):
            self.now_ms += r.randrange(3)
            out.append(self._noise())
            i = r.randrange(len(sessions))
            s = sessions[i]
            if not s.pending:
                if s.remaining <= 0:
                    out.append(self._disconnect_line(s))
                    s = sessions[i] = self._new_session()
                    out.append(self._connect_lines(s))
                    continue
                s.remaining -= 1
                self._plan_execution(s)
            out.append(self.next_step(s))
        return out

    def next_step(self, s: Session) -> str:
        """The session's next queued log entry; every line of it carries the prefix."""
        head = self._ts() + s.prefix
        return "".join(head + body + "\n" for body in s.pending.pop())


def generate(path: str, size_mb: float, seed: int = 42, shapes: int = 300) -> dict:
    """Write at least size_mb MiB of log to path; return the ground truth (also saved beside it)."""
    target = int(size_mb * 1024 * 1024)
    gen = Generator(seed, shapes)
    written = lines = 0
    started = time.perf_counter()
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        while written < target:
            data = "".join(gen.events(5000)).encode()
            f.write(data)
            written += len(data)
            lines += data.count(b"\n")
        # Let sessions finish what they started, so no execution is cut in half.
        for s in gen.sessions:
            while s.pending:
                data = gen.next_step(s).encode()
                f.write(data)
                written += len(data)
                lines += data.count(b"\n")
    os.replace(tmp, path)
    truth = _truth(gen, path, size_mb, seed, written, lines, time.perf_counter() - started)
    with open(truth_path(path), "w") as f:
        json.dump(truth, f, indent=1)
    return truth


def _truth(gen: Generator, path: str, size_mb: float, seed: int, size: int, lines: int, secs: float) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "log": os.path.basename(path),
        "log_line_prefix": LOG_LINE_PREFIX,
        "size_mb_requested": size_mb,
        "seed": seed,
        "bytes": size,
        "lines": lines,
        "generation_seconds": round(secs, 2),
        "statements": gen.counts["statements"],
        "counts": gen.counts,
        "shapes": [
            {"tag": s.tag, "kind": s.kind, "mode": s.mode, "multiline": s.multiline,
             "calls": s.calls, "total_ms": round(s.total_ms, 3), "errors": s.errors,
             "parses": s.parses, "binds": s.binds, "temp_files": s.temp_files,
             **_duration_stats(s.durations),
             "template": s.template}
            for s in gen.shapes
        ],
    }


def _duration_stats(durations: array.array) -> dict:
    """Exact min, max and quantiles of one shape's execution times.

    A quantile q is the value at rank floor(q*(n-1)) of the sorted values (numpy's
    'lower' method, the rule DDSketch uses): with another rule, the tail
    quantiles of a shape with a hundred calls differ by a whole order statistic.
    """
    if not durations:
        return {}
    ordered = sorted(durations)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[int(q * (n - 1))]

    return {"min_ms": ordered[0], "max_ms": ordered[-1],
            "p50_ms": rank(0.50), "p95_ms": rank(0.95), "p99_ms": rank(0.99)}


def truth_path(log_path: str) -> str:
    return log_path + ".truth.json"


def cached_log(workdir: str, size_mb: float, seed: int, shapes: int = 300) -> tuple[str, dict, bool]:
    """The log for (size, seed, shapes): reused when a complete one is cached, else generated.

    Returns (path, ground truth, whether it was generated now).
    """
    os.makedirs(workdir, exist_ok=True)
    name = f"pg-stderr-{size_mb:g}mb-seed{seed}-shapes{shapes}-v{GENERATOR_VERSION}.log"
    path = os.path.join(workdir, name)
    try:
        with open(truth_path(path)) as f:
            truth = json.load(f)
        if os.path.getsize(path) == truth["bytes"]:
            return path, truth, False
    except (OSError, ValueError, KeyError):
        pass
    return path, generate(path, size_mb, seed, shapes), True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shapes", type=int, default=300)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    truth = generate(args.out, args.size_mb, args.seed, args.shapes)
    print(f"{args.out}: {truth['bytes'] / 2**20:.1f} MiB, {truth['lines']} lines, "
          f"{truth['statements']} statements, {truth['generation_seconds']} s")


if __name__ == "__main__":
    main()
