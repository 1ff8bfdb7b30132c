"""EXPLAIN's text format read back into the JSON shape ``plans.parse_plan`` reads.

auto_explain writes text unless ``auto_explain.log_format = json``, and most
servers keep the default: their logs hold the real plans (real parameters,
real timings) in a form meant for people. ``text_plan`` turns one such plan
into the document ``EXPLAIN (FORMAT JSON)`` would have given, with the same
keys and values, so the plan checks read a logged plan exactly as one the
advisor explained itself; ``logged_plan`` takes either format.

The text format, as PostgreSQL's explain.c writes it:
- a node is ``Label  (cost=a..b rows=n width=w)``, then ``(actual time=a..b
  rows=n loops=n)``, ``(actual rows=n loops=n)`` without timing, or
  ``(never executed)``; the root at the left margin, every other node after
  ``->  ``, its details indented six columns past the arrow (two for the root);
- ``InitPlan 1 (returns $0)``, ``SubPlan 2`` and ``CTE x`` label the node on
  the next line; other children are Outer then Inner (Member below an Append,
  a BitmapAnd/Or; Subquery below a Subquery Scan), as the JSON names them;
- details are ``Key: value`` lines with JSON's own key names, except the
  grouped ones read below (Buffers, Sort Method, Buckets, Batches, Heap
  Blocks, the Memoize counters, ``Worker n:`` lines);
- text omits what is zero or false (a Buffers line with no blocks, ``Parallel
  Aware``): with BUFFERS on, a node without a Buffers line touched nothing.

What it cannot read (a line that is none of these) raises ``PlanTextError``
naming the line: the caller then explains the query or notes why not.
"""

from __future__ import annotations

import json
import re
from typing import Any

from advisor.plans import BUFFER_KEYS, Plan, parse_plan


class PlanTextError(ValueError):
    """A logged plan this module cannot read, with the line that stopped it."""


_NODE = re.compile(
    r"(?P<label>\S.*?)  \(cost=(?P<startup>[\d.]+)\.\.(?P<total>[\d.]+) rows=(?P<rows>\d+) width=(?P<width>\d+)\)"
    r"(?: \((?:actual (?:time=(?P<astart>[\d.]+)\.\.(?P<atotal>[\d.]+) )?rows=(?P<arows>[\d.]+) loops=(?P<loops>\d+)"
    r"|(?P<never>never executed))\))?$"
)
_SUBPLAN = re.compile(r"(?:InitPlan \d+|SubPlan \d+|CTE \S+)(?: \(returns .*\))?$")
_PROPERTY = re.compile(r"(?P<key>[A-Z][\w /-]*?): +(?P<value>.*)$")
_WORKER = re.compile(r"Worker (?P<n>\d+): +(?P<rest>.*)$")
_KB = re.compile(r"(\d+)kB$")

_JOINS = ("Hash", "Merge", "Nested Loop")
_JOIN_TYPES = ("Left", "Right", "Full", "Semi", "Anti", "Right Anti", "Right Semi")
_AGGREGATES = {"Aggregate": "Plain", "HashAggregate": "Hashed", "GroupAggregate": "Sorted", "MixedAggregate": "Mixed"}
_SETOPS = {"SetOp": "Sorted", "HashSetOp": "Hashed"}
_MODIFY = ("Insert", "Update", "Delete", "Merge")
_INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan"})
_MEMBER_PARENTS = frozenset({"Append", "Merge Append", "BitmapAnd", "BitmapOr"})
_LIST_KEYS = frozenset({"Sort Key", "Group Key", "Presorted Key", "Output"})
_INT_KEYS = frozenset({"Rows Removed by Filter", "Rows Removed by Index Recheck", "Rows Removed by Join Filter",
                       "Heap Fetches", "Workers Planned", "Workers Launched", "Planned Partitions"})
_BUFFER_NAMES = {f"{kind} {counter}": key for key, kind, counter in
                 ((key, *key.lower().split()[:2]) for key, _ in BUFFER_KEYS)}  # "shared hit" → "Shared Hit Blocks"


def logged_plan(text: str) -> Plan:
    """The Plan of one auto_explain entry, JSON or text (what follows ``plan:`` in the log)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return parse_plan(json.loads(stripped))
        except ValueError as e:
            raise PlanTextError(f"unreadable JSON plan: {e}") from e
    return parse_plan(text_plan(text))


def text_plan(text: str) -> dict[str, Any]:
    """The ``EXPLAIN (FORMAT JSON)`` document (``result[0]``) of a text-format plan."""
    # stderr logs indent continuation lines with a tab; csvlog and jsonlog do not
    lines = [line.removeprefix("\t").rstrip() for line in text.split("\n")]
    start = next((i for i, line in enumerate(lines) if _NODE.match(line)), None)
    if start is None:
        raise PlanTextError("no plan node in the logged plan (a node line ends with '(cost=… rows=… width=…)')")
    head = "\n".join(lines[:start])
    query = head.partition("Query Text: ")[2].partition("\nQuery Parameters: ")[0].strip()
    doc: dict[str, Any] = {"Query Text": query} if query else {}
    doc["Plan"] = _Reader(lines[start:]).read()
    return doc


class _Reader:
    """One pass over the plan's lines, keeping the open nodes by the column their details start at."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = [line for line in lines if line.strip()]
        self.stack: list[tuple[int, dict[str, Any]]] = []  # (details column, node), innermost last
        self.label: str | None = None  # a subplan label waiting for its node
        self.buffers = False  # some node printed a Buffers line: BUFFERS was on
        self.trailer = False  # past the tree (JIT, triggers): not plan nodes

    def read(self) -> dict[str, Any]:
        for line in self.lines:
            self._line(line)
        root = self.stack[0][1]
        _fill_defaults(root, self.buffers)
        return root

    def _line(self, line: str) -> None:
        column = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if self.trailer or (self.stack and column == 0):
            self.trailer = True  # JIT:, Trigger …: what follows the tree describes the run, not a node
            return
        if body.startswith("->  ") or not self.stack:
            arrow = body.startswith("->  ")
            node = _node(body[4:] if arrow else body, line)
            self._attach(column + 6 if arrow else 2, node, column)
            return
        while self.stack and self.stack[-1][0] > column:
            self.stack.pop()
        if not self.stack:
            raise PlanTextError(f"a plan line outside any node: {body!r}")
        if _SUBPLAN.match(body):
            self.label = body
            return
        self._detail(self.stack[-1][1], body, line)

    def _attach(self, details: int, node: dict[str, Any], column: int) -> None:
        while self.stack and self.stack[-1][0] > column:
            self.stack.pop()
        if self.stack:
            parent = self.stack[-1][1]
            kids = parent.setdefault("Plans", [])
            if self.label is not None:
                node["Parent Relationship"] = "SubPlan" if self.label.startswith("SubPlan") else "InitPlan"
                node["Subplan Name"] = self.label
            else:
                node["Parent Relationship"] = _relationship(parent, kids)
            # JSON lists the relationship right after the type; keep its order for readers of raw
            node = {"Node Type": node.pop("Node Type"), "Parent Relationship": node.pop("Parent Relationship"), **node}
            kids.append(node)
        self.label = None
        self.stack.append((details, node))

    def _detail(self, node: dict[str, Any], body: str, line: str) -> None:
        if m := _WORKER.match(body):
            _worker(node, int(m["n"]), m["rest"], line)
            return
        m = _PROPERTY.match(body)
        if m is None:
            raise PlanTextError(f"a plan line the text reader does not know: {body!r}")
        key, value = m["key"], m["value"]
        if key == "Buffers":
            self.buffers = True
        if not _grouped(node, key, value):
            node[key] = _value(key, value)


def _node(label_line: str, line: str) -> dict[str, Any]:
    m = _NODE.match(label_line)
    if m is None:
        raise PlanTextError(f"a plan node the text reader does not know: {line.strip()!r}")
    node = _label(m["label"])
    node.update({"Startup Cost": float(m["startup"]), "Total Cost": float(m["total"]),
                 "Plan Rows": int(m["rows"]), "Plan Width": int(m["width"])})
    if m["never"]:
        node.update({"Actual Startup Time": 0.0, "Actual Total Time": 0.0, "Actual Rows": 0, "Actual Loops": 0})
    elif m["loops"] is not None:
        if m["atotal"] is not None:
            node.update({"Actual Startup Time": float(m["astart"]), "Actual Total Time": float(m["atotal"])})
        node.update({"Actual Rows": _number(m["arows"]), "Actual Loops": int(m["loops"])})
    return node


def _label(label: str) -> dict[str, Any]:
    """'Parallel Index Only Scan Backward using i on s.t x' → Node Type, Parallel Aware, names."""
    node: dict[str, Any] = {}
    parallel = label.startswith("Parallel ")
    label = label.removeprefix("Parallel ")
    target = ""
    if " on " in label:
        label, target = label.split(" on ", 1)
    using = ""
    if " using " in label:
        label, using = label.split(" using ", 1)
    if label.endswith(" Backward"):
        label, node["Scan Direction"] = label.removesuffix(" Backward"), "Backward"
    elif label.startswith("Index"):
        node["Scan Direction"] = "Forward"
    node["Node Type"] = _type(label, node)
    node["Parallel Aware"] = parallel
    if using:
        node["Index Name"] = using
    if target:
        _target(node, target)
    return node


def _type(label: str, node: dict[str, Any]) -> str:
    """JSON's Node Type of a text label, the label's other facts (strategy, join type, …) put in ``node``."""
    for mode in ("Partial", "Finalize"):
        if label.startswith(mode + " ") and label.split(" ", 1)[1] in _AGGREGATES:
            node["Partial Mode"], label = mode, label.split(" ", 1)[1]
    if label in _AGGREGATES:
        node["Strategy"] = _AGGREGATES[label]
        node.setdefault("Partial Mode", "Simple")
        return "Aggregate"
    for setop, strategy in _SETOPS.items():
        if label.startswith(setop + " "):
            node["Strategy"], node["Command"] = strategy, label[len(setop) + 1 :]
            return "SetOp"
    if label in _MODIFY:
        node["Operation"] = label
        return "ModifyTable"
    for join in _JOINS:
        node_type = join if join == "Nested Loop" else f"{join} Join"
        if label == node_type:
            node["Join Type"] = "Inner"
            return node_type
        for kind in _JOIN_TYPES:
            if label == f"{join} {kind} Join":
                node["Join Type"] = kind
                return node_type
    return label


def _target(node: dict[str, Any], target: str) -> None:
    """'s.t x' after ' on ': the relation (or index, function, CTE) and its alias, as JSON names them."""
    name, _, alias = target.partition(" ")
    kind = node["Node Type"]
    if kind == "Bitmap Index Scan":
        node["Index Name"] = name
        return
    key = {"CTE Scan": "CTE Name", "Function Scan": "Function Name", "Subquery Scan": None,
           "WorkTable Scan": "CTE Name", "Values Scan": None, "Named Tuplestore Scan": "Tuplestore Name",
           "Table Function Scan": None}.get(kind, "Relation Name")
    if key == "Relation Name" and "." in name and not name.startswith('"'):
        node["Schema"], name = name.split(".", 1)
    if key is not None:
        node[key] = name
    node["Alias"] = alias or name


def _relationship(parent: dict[str, Any], siblings: list[dict[str, Any]]) -> str:
    if parent["Node Type"] in _MEMBER_PARENTS:
        return "Member"
    if parent["Node Type"] == "Subquery Scan":
        return "Subquery"
    plain = [k for k in siblings if k.get("Parent Relationship") in ("Outer", "Inner")]
    return "Outer" if not plain else "Inner"


def _grouped(node: dict[str, Any], key: str, value: str) -> bool:
    """The detail lines that hold several fields; False when ``key: value`` is one plain field."""
    fields = _fields(f"{key}: {value}")
    if key == "Buffers":
        node.update(_buffers(value))
    elif key == "Heap Blocks":
        node.update({f"{k.title()} Heap Blocks": int(v) for k, v in _pairs(value).items()})
    elif key == "Sort Method":
        node.update(_sort(fields))
    elif key == "Buckets":
        node.update(_hash(fields))
    elif key in ("Batches", "Planned Partitions") and node["Node Type"] == "Aggregate":
        node.update(_hashagg(fields))
    elif key == "Hits":
        node.update({f"Cache {k}": int(v) for k, v in fields.items() if k != "Memory Usage"})
        node.update(_memory(fields, "Memory Usage", "Peak Memory Usage"))
    else:
        return False
    return True


def _fields(text: str) -> dict[str, str]:
    """'Buckets: 1024  Batches: 1  Memory Usage: 9kB' → {Buckets: 1024, …} (fields are two spaces apart)."""
    return {k.strip(): v.strip() for k, _, v in (part.partition(": ") for part in text.split("  ") if part.strip())}


def _pairs(text: str) -> dict[str, str]:
    """'hit=12 read=3' → {hit: 12, read: 3}."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def _buffers(value: str) -> dict[str, int]:
    """'shared hit=1 read=2, temp read=3 written=4' → JSON's Shared Hit Blocks, … Temp Written Blocks."""
    out = {}
    for group in value.split(", "):
        kind, _, counts = group.partition(" ")
        for counter, n in _pairs(counts).items():
            if (key := _BUFFER_NAMES.get(f"{kind} {counter}")) is not None:
                out[key] = int(n)
    return out


def _sort(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"Sort Method": fields.get("Sort Method")}
    for space in ("Memory", "Disk"):
        if space in fields and (kb := _KB.match(fields[space])):
            out.update({"Sort Space Used": int(kb.group(1)), "Sort Space Type": space})
    return out


def _hash(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, json_key in (("Buckets", "Hash Buckets"), ("Batches", "Hash Batches")):
        now, _, originally = fields.get(key, "").partition(" (originally ")
        if now:
            out[json_key] = int(now)
            out[f"Original {json_key}"] = int(originally.rstrip(")")) if originally else int(now)
    out.update(_memory(fields, "Memory Usage", "Peak Memory Usage"))
    return out


def _hashagg(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "Planned Partitions" in fields:
        out["Planned Partitions"] = int(fields["Planned Partitions"])
    if "Batches" in fields:
        out["HashAgg Batches"] = int(fields["Batches"])
    out.update(_memory(fields, "Memory Usage", "Peak Memory Usage"))
    out.update(_memory(fields, "Disk Usage", "Disk Usage"))
    return out


def _memory(fields: dict[str, str], key: str, json_key: str) -> dict[str, int]:
    kb = _KB.match(fields.get(key, ""))
    return {json_key: int(kb.group(1))} if kb else {}


def _worker(node: dict[str, Any], number: int, rest: str, line: str) -> None:
    """'Worker 0:  Sort Method: …' (or Batches, actual time, Buffers): one entry of JSON's Workers."""
    workers = node.setdefault("Workers", [])
    entry = next((w for w in workers if w["Worker Number"] == number), None)
    if entry is None:
        entry = {"Worker Number": number}
        workers.append(entry)
    fields = _fields(rest)
    if rest.startswith("Sort Method: "):
        entry.update(_sort(fields))
    elif rest.startswith(("Batches: ", "Planned Partitions: ")):
        entry.update(_hashagg(fields))
    elif rest.startswith("Buffers: "):
        entry.update(_buffers(rest.removeprefix("Buffers: ")))
    elif m := re.match(r"actual (?:time=([\d.]+)\.\.([\d.]+) )?rows=([\d.]+) loops=(\d+)", rest):
        if m.group(2) is not None:
            entry.update({"Actual Startup Time": float(m.group(1)), "Actual Total Time": float(m.group(2))})
        entry.update({"Actual Rows": _number(m.group(3)), "Actual Loops": int(m.group(4))})
    elif rest.startswith("Hits: "):
        entry.update({f"Cache {k}": int(v) for k, v in fields.items() if k != "Memory Usage"})
    else:
        raise PlanTextError(f"a worker line the text reader does not know: {line.strip()!r}")


def _value(key: str, value: str) -> Any:
    if key in _INT_KEYS:
        return _number(value)
    if key in _LIST_KEYS:
        return _split_list(value)
    return value


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _split_list(text: str) -> list[str]:
    """'a, lower(b), f(c, d)' → its items: commas inside parentheses or quotes do not split."""
    items: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    items.append("".join(current).strip())
    return items


def _fill_defaults(node: dict[str, Any], buffers: bool) -> None:
    """What the text format leaves out when it is zero or false, and JSON prints (explain.c)."""
    node.setdefault("Async Capable", False)
    if node["Node Type"] == "Gather":
        node.setdefault("Single Copy", False)
    if "Actual Loops" in node:
        for condition, removed in (("Filter", "Rows Removed by Filter"), ("Join Filter", "Rows Removed by Join Filter")):
            if condition in node:
                node.setdefault(removed, 0)
        if "Recheck Cond" in node or ("Index Cond" in node and node["Node Type"] in _INDEX_SCANS):
            node.setdefault("Rows Removed by Index Recheck", 0)
        if node["Node Type"] == "Bitmap Heap Scan":
            node.setdefault("Exact Heap Blocks", 0)
            node.setdefault("Lossy Heap Blocks", 0)
        if "HashAgg Batches" in node:
            node.setdefault("Disk Usage", 0)
    if node["Node Type"] == "Aggregate" and node.get("Strategy") in ("Hashed", "Mixed"):
        node.setdefault("Planned Partitions", 0)
    if buffers:  # BUFFERS was on: a node the text printed no Buffers line for touched no block
        for key, _ in BUFFER_KEYS:
            node.setdefault(key, 0)
    for kid in node.get("Plans", ()):
        _fill_defaults(kid, buffers)


__all__ = ["PlanTextError", "logged_plan", "text_plan"]
