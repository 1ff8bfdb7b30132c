"""Incremental log reading, like pgBadger's incremental mode: each run reads only what was appended.

A small JSON state file remembers, for every log path, the file's identity
(st_dev, st_ino, size, and a hash of its head to catch a file replaced under a
reused inode) and the byte offset read so far, always the end of a complete
line. ``plan_incremental`` says what to read next:

- seen before, same identity, not shorter than the offset → from the offset;
- rotated (other inode, other head) → from 0, unless the old file turns up
  under another name among ``paths`` (``postgresql.log`` renamed to
  ``postgresql.log.1``): then that one continues from the saved offset, so the
  lines written between the last run and the rotation are not lost;
- truncated (smaller than the offset) → from 0;
- compressed (gzip, bz2, xz; no seeking into them) → whole when new or
  changed, skipped when unchanged.

Every read ends at the end of the last complete line present when planning
(``Read.end``): a line still being written is left for the next run. Given a
``LogFormat`` per path, a read of a splittable format also stops before the last
line that starts a unit of work (statement + DETAIL parameters + continuation
lines), so an execution is never cut in two across runs.

    state = load_state(path)
    plan = plan_incremental(logs, state, formats)
    ranges = {read.path: (read.start, read.end) for read in plan.reads}
    scan = read_logs(list(ranges), ranges=ranges, formats=formats)  # advisor.workload.sources.logs
    for read in plan.reads:
        update_state(state, read.path, read.end)
    save_state(path, state)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from advisor.workload.logs.reader import is_compressed

STATE_VERSION = 1
HEAD_BYTES = 4096
_BACK_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class Read:
    """One byte range to parse: ``[start, end)``; ``end`` is None for a compressed file (read whole)."""

    path: str
    start: int
    end: int | None
    reason: str  # new, appended, rotated, truncated, renamed, changed (compressed)

    def __iter__(self):  # unpacks as (path, start_offset)
        return iter((self.path, self.start))


@dataclass(slots=True)
class Plan:
    reads: list[Read] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): nothing new to read
    notes: list[str] = field(default_factory=list)  # rotations, truncations, renames: for the report

    def __iter__(self):
        return iter(self.reads)

    def __len__(self) -> int:
        return len(self.reads)


# --- identity -----------------------------------------------------------------------


def head_hash(path: str, length: int = HEAD_BYTES) -> tuple[str, int]:
    """sha256 of the first ``length`` bytes (fewer if the file is shorter), and how many were hashed."""
    with open(path, "rb") as f:
        head = f.read(length)
    return hashlib.sha256(head).hexdigest(), len(head)


def identity(path: str) -> dict[str, Any]:
    st = os.stat(path)
    digest, hashed = head_hash(path)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "head": digest, "head_len": hashed,
            "compressed": is_compressed(path)}


def _match(saved: Mapping[str, Any], st: os.stat_result, path: str) -> str:
    """``same``: same device and inode, and the bytes it started with are still there;
    ``truncated``: same device and inode, now shorter than what was read; ``other``: another file."""
    if (saved.get("dev"), saved.get("ino")) != (st.st_dev, st.st_ino):
        return "other"
    if st.st_size < int(saved.get("offset", 0)):
        return "truncated"
    length = int(saved.get("head_len", HEAD_BYTES))
    if st.st_size < length or head_hash(path, length)[0] != saved.get("head"):
        return "other"
    return "same"


# --- state ------------------------------------------------------------------------------


def new_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "files": {}}


def load_state(path: str) -> dict[str, Any]:
    """The saved state, or an empty one when the file is missing (first run) or of another version."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return new_state()
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(state.get("files"), dict):
        return new_state()
    return state


def save_state(path: str, state: Mapping[str, Any]) -> None:
    """Written to a temporary file beside it, then renamed over it: a crash leaves the old state whole."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".offsets-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def update_state(state: dict[str, Any], path: str, end_offset: int | None) -> None:
    """Record that ``path`` was read up to ``end_offset`` (None: a compressed file, read whole).

    The offset is moved back to the end of the last complete line before it,
    so a caller cannot save a position in the middle of a line.
    """
    key = os.path.abspath(path)
    entry = identity(path)
    if entry["compressed"] or end_offset is None:
        entry["offset"] = entry["size"]
    else:
        entry["offset"] = line_boundary(path, min(end_offset, entry["size"]))
        # hash only what was read: the head of a small, growing file is not final yet
        if entry["head_len"] > entry["offset"]:
            entry["head"], entry["head_len"] = head_hash(path, entry["offset"])
    # one path per file: a renamed file's old entry is superseded
    for other, saved in list(state["files"].items()):
        if other != key and (saved.get("dev"), saved.get("ino")) == (entry["dev"], entry["ino"]):
            del state["files"][other]
    state["files"][key] = entry


def forget_missing(state: dict[str, Any]) -> list[str]:
    """Drop entries of files that no longer exist (rotated away and deleted); returns their paths."""
    gone = [p for p in state["files"] if not os.path.exists(p)]
    for p in gone:
        del state["files"][p]
    return gone


# --- line boundaries -----------------------------------------------------------------------


def line_boundary(path: str, offset: int, floor: int = 0) -> int:
    """The largest position ≤ ``offset`` that ends a line (just after a newline), or ``floor``."""
    if offset <= floor:
        return floor
    with open(path, "rb") as f:
        pos = offset
        while pos > floor:
            start = max(floor, pos - _BACK_BLOCK)
            f.seek(start)
            block = f.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
    return floor


def unit_boundary(path: str, start: int, end: int, is_unit_start: Callable[[str], bool]) -> int:
    """The start of the last line in ``(start, end)`` that opens a unit of work, or ``start``.

    What follows it (DETAIL parameters, continuation lines) may still be on
    its way: the unit is read next time, whole. ``end`` must be a line boundary.
    """
    block = _BACK_BLOCK
    with open(path, "rb") as f:
        hi = end
        while hi > start:
            lo = max(start, hi - block)
            f.seek(lo)
            data = f.read(hi - lo)
            starts = [lo + m.end() for m in re.finditer(b"\n", data) if lo + m.end() < hi]
            for at in reversed(starts):
                line = data[at - lo:data.index(b"\n", at - lo)]
                if is_unit_start(line.decode("utf-8", "replace").rstrip("\r")):
                    return at
            if lo == start:
                return start
            first = data.find(b"\n")
            if first < 0:  # one line longer than the block: look further back
                block *= 2
                continue
            hi = lo + first + 1  # the line cut at lo is read whole with the next block
    return start


# --- the plan ---------------------------------------------------------------------------------


def plan_incremental(
    paths: Iterable[str],
    state: Mapping[str, Any],
    formats: Mapping[str, Any] | None = None,
) -> Plan:
    """What to read of each log this time (see the module docstring).

    ``formats`` (path → LogFormat), when given, makes reads of splittable
    formats end before the last unit of work, which may not be complete yet.
    """
    paths = [os.path.abspath(p) for p in paths]
    saved_files: Mapping[str, Mapping[str, Any]] = state.get("files", {})
    formats = {os.path.abspath(k): v for k, v in (formats or {}).items()}
    plan = Plan()
    stats = {p: os.stat(p) for p in paths}
    for path in paths:
        st = stats[path]
        saved = saved_files.get(path)
        note = None
        match = _match(saved, st, path) if saved is not None else "other"
        if match == "same":
            reason = "appended"
        elif match == "truncated":
            reason, saved = "truncated", None
            note = f"{path}: truncated ({st.st_size} bytes, more were read before); reading it from the start"
        else:
            # the file we knew may have moved to a name we were also given (rotation by rename)
            moved = next((p for p, s in saved_files.items() if p != path and _match(s, st, path) == "same"), None)
            if moved is not None:
                saved, reason = saved_files[moved], "renamed"
                note = f"{path}: was {moved}; continuing at byte {saved.get('offset', 0)}"
            elif saved is not None:
                reason = "rotated"
                note = f"{path}: replaced by a new file since the last run (rotated); reading it from the start"
                saved = None
            else:
                reason = "new"

        if is_compressed(path):
            if saved is not None and saved.get("size") == st.st_size:
                plan.skipped.append((path, "compressed and unchanged since the last run"))
                continue
            if saved is not None:
                reason = "changed"
                note = f"{path}: compressed file changed since the last run; reading it whole"
            if note:
                plan.notes.append(note)
            plan.reads.append(Read(path, 0, None, reason))
            continue

        start = int(saved.get("offset", 0)) if saved is not None else 0
        if note:
            plan.notes.append(note)
        end = line_boundary(path, st.st_size, start)
        fmt = formats.get(path)
        if fmt is not None and getattr(fmt, "splittable", False) and end > start:
            end = unit_boundary(path, start, end, fmt.is_unit_start())
        if end <= start:
            plan.skipped.append((path, "nothing new" if st.st_size == start else "only a line still being written"))
            continue
        plan.reads.append(Read(path, start, end, reason))
    return plan


__all__ = ["HEAD_BYTES", "Plan", "Read", "forget_missing", "identity", "line_boundary", "load_state", "new_state",
           "plan_incremental", "save_state", "unit_boundary", "update_state"]
