"""Server logs as a workload source: split into parts, parse the parts in parallel, merge in order.

``parse_part`` is a pure function from a byte range of one file to a ``Partial``: what a worker,
local or remote, runs.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from advisor.errors import AdvisorError
from advisor.progress import Progress
from advisor.thresholds import DEFAULT, Thresholds
from advisor.workload.events import LogEvents
from advisor.workload.logs.formats import LogFormat, read_executions, sniff
from advisor.workload.logs.prefix import PrefixError
from advisor.workload.logs.reader import LogInputError, expand, is_compressed, size_of, split_points
from advisor.workload.logs.records import Tally
from advisor.workload.own_traffic import sent_by_advisor
from advisor.workload.sessions import SessionPatterns
from advisor.workload.sources.partial import Partial, Reading
from advisor.workload.stats import WorkloadStats

ByteRange = tuple[int, int | None]  # [start, end) of a file; end None: to its end
MIN_PART_BYTES = 32 << 20  # below this, starting a worker costs more than it saves


@dataclass(frozen=True, slots=True)
class Part:
    """A byte range of one log file that one worker parses."""

    path: str
    fmt: LogFormat
    start: int = 0
    end: int | None = None
    config: Thresholds = DEFAULT
    sessions: bool = True  # also look for N+1 runs and cache repeats (parse shows neither)
    continues: bool = False  # follows the previous part of the same file: its lines are numbered on from there
    followed: bool = False  # the next part of the same file follows: it reads on past ``end`` for what completes its executions

    @property
    def size(self) -> int:
        if self.end is not None:
            return self.end - self.start
        return size_of(self.path) - self.start if self.path != "-" else 0


def read_logs(
    paths: list[str],
    log_format: str = "auto",
    prefix: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    min_part_bytes: int = MIN_PART_BYTES,
    config: Thresholds = DEFAULT,
    sessions: bool = True,
    ranges: Mapping[str, ByteRange] | None = None,
    formats: Mapping[str, LogFormat] | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> Partial:
    """Parse the logs, split into parts for ``jobs`` workers, and merge what they found in file order.

    ``ranges`` (path → (start, end)) reads only those bytes of a file, as offsets.plan_incremental
    plans them: ``start`` must begin a line. Skipped lines keep their line numbers in the whole
    file, so a report can send the reader to them. ``formats`` (path → LogFormat) are used instead of sniffing, so a range is parsed in the
    format it was planned with. Paths are matched as they come out of glob expansion.

    ``engine`` "local" parses on this machine's processes; "dask" on a Dask cluster (``dask_engine``):
    a local one of ``jobs`` workers, or the one whose ``scheduler`` address is given.
    """
    files = [_spool_stdin() if path == "-" else path for path in expand(paths)]
    ranges, given = ranges or {}, formats or {}
    formats = {path: given[path] if path in given else sniff(path, log_format, prefix) for path in files}
    whole = Partial(WorkloadStats(), SessionPatterns(config), formats=formats)

    def split(workers: int) -> list[Part]:
        return [replace(part, config=config, sessions=sessions) for path in files
                for part in parts_of(path, formats[path], workers, min_part_bytes, ranges.get(path))]

    if engine == "dask":
        from advisor.workload.sources.dask_engine import DaskCluster

        with DaskCluster(jobs, scheduler) as cluster:
            parts = split(cluster.slots)
            return whole.merge(cluster.parse(parts, progress)) if parts else whole
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}: local or dask")
    jobs = jobs or os.cpu_count() or 1
    parts = split(jobs)
    total = sum(p.size for p in parts)
    for partial in _run(parts, jobs, progress, total):
        whole.merge(partial)
    return whole


def _lines_before(path: str, offset: int) -> int:
    """Newlines in the first ``offset`` bytes of an uncompressed file (read only when a range has bad lines)."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0 and (block := f.read(min(offset, 1 << 20))):
            count += block.count(b"\n")
            offset -= len(block)
    return count


def _spool_stdin() -> str:
    """Standard input copied to a temporary file: sniffing reads the head, parsing reads it again."""
    folder = tempfile.mkdtemp(prefix="advisor-stdin-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "stdin")
    with open(path, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return path


def parts_of(path: str, fmt: LogFormat, jobs: int, min_part_bytes: int = MIN_PART_BYTES,
             span: ByteRange | None = None) -> list[Part]:
    """The parts of one file that ``jobs`` workers parse: each begins at a line that starts an execution
    and reads its neighbours' records around its cuts (messages.py's boundary rule), so merging their
    partials in order gives the whole file's."""
    if span is not None:  # split_points cuts whole files only
        return [Part(path, fmt, *span)]
    # Compressed streams cannot be entered in the middle: one part each.
    if jobs == 1 or not fmt.splittable or is_compressed(path):
        return [Part(path, fmt)]
    points = split_points(path, jobs, fmt.is_unit_start(), min_part_bytes)
    return [Part(path, fmt, start, end, continues=start > 0, followed=i + 1 < len(points))
            for i, (start, end) in enumerate(points)]


def parse_part(part: Part) -> Partial:
    """One part read into a partial workload: the unit of work a local or remote worker runs."""
    tally = Tally(part.path, continues=part.continues)
    stats = WorkloadStats()
    patterns = SessionPatterns(part.config)
    add, observe = stats.add, patterns.add
    events = LogEvents()
    executions = read_executions(part.path, part.fmt, tally, part.start, part.end, events,
                                 before=part.continues, after=part.followed)
    sessions = part.sessions
    for e in executions:  # one loop, no filtering generator between: it runs per logged statement
        if sent_by_advisor(e.sql, e.application):
            tally.own += 1  # the advisor's own statements are left out, and counted
        elif sessions:
            observe(e, add(e))
        else:
            add(e)
    if sessions:
        patterns.finish()
    if part.start and not part.continues and tally.skipped:  # a range: number its lines in the file
        offset = _lines_before(part.path, part.start)
        tally.skipped = [replace(s, line=s.line + offset) for s in tally.skipped]
    return Partial(stats, patterns, [tally], events=events)


def _run(parts: list[Part], jobs: int, progress: Progress | None, total: int):
    done = 0
    if jobs == 1 or len(parts) == 1:
        for part in parts:
            result = parse_part(part)
            done += part.size
            if progress:
                progress(done, total)
            yield result
        return
    # fork: workers start at once and inherit the warm fingerprint cache.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(jobs, len(parts)), mp_context=context) as pool:
        for part, result in zip(parts, pool.map(parse_part, parts)):
            done += part.size
            if progress:
                progress(done, total)
            yield result


@dataclass(frozen=True, slots=True)
class LogFiles:
    """The source: log files or globs ('-' is stdin), in any format the server writes.

    ``ranges`` and ``formats`` as ``read_logs`` takes them (the nightly job reads only what was
    appended since its last run)."""

    paths: tuple[str, ...]
    log_format: str = "auto"
    prefix: str | None = None
    jobs: int | None = None
    ranges: Mapping[str, ByteRange] | None = None
    formats: Mapping[str, LogFormat] | None = None
    notes: tuple[str, ...] = ()  # what the caller knows about these files (an incremental plan's)
    label: str = "reading the logs"
    engine: str = "local"  # or "dask": parts parsed as Dask tasks (read_logs)
    scheduler: str | None = None  # with dask: an existing cluster's scheduler; None starts a local one

    def read(self, reading: Reading) -> Partial:
        # A smaller part size splits a modest log into parts, so tests can run a split on a real server's log.
        min_part_bytes = int(os.environ.get("ADVISOR_MIN_PART_BYTES", MIN_PART_BYTES))
        try:
            partial = read_logs(list(self.paths), self.log_format, self.prefix, self.jobs, reading.progress,
                                min_part_bytes, reading.config, reading.sessions, self.ranges, self.formats,
                                self.engine, self.scheduler)
        except (LogInputError, PrefixError) as e:
            raise AdvisorError(str(e), "check the path and the options (advisor parse --help)") from e
        partial.notes.extend(self.notes)
        return partial
