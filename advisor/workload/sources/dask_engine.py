"""Log parts parsed as Dask tasks (``--engine dask``): on a local dask.distributed cluster of ``--jobs``
worker processes, or on an existing cluster (``--dask-scheduler tcp://host:8786``).

Each part (``logs.parts_of``: a byte range of a large file, a whole compressed file, a file of a glob)
is one task running ``logs.parse_part`` where a worker is free; the partials are then combined on the
workers by a tree of merge tasks that pairs neighbours, so left always stays before right, which is all
``Partial.merge`` asks: the result is the single process's, sketches merged rather than re-estimated.

A worker that dies takes the results it held with it; the scheduler runs those tasks again elsewhere.
That is why a merge adds into a copy of its left input: merging into the input itself would change a
result that a re-run merge reads again, and count its right input twice.

Dask is imported only here, and this module only when the engine is asked for. With a remote scheduler
the workers open the logs themselves: give paths they can read (object storage, a shared volume).
"""

from __future__ import annotations

import logging
import os
import pickle
from types import ModuleType

from advisor.errors import AdvisorError
from advisor.progress import Progress
from advisor.workload.sources.logs import Part, parse_part
from advisor.workload.sources.partial import Partial

INSTALL = "pip install 'advisor[dask]'"
CONNECT_TIMEOUT_S = 30


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as e:
        raise AdvisorError("--engine dask needs dask.distributed, which is not installed", INSTALL) from e
    return distributed


def merged(left: Partial, right: Partial) -> Partial:
    """``left`` then ``right`` in one partial; neither input changes (a task may be run again on them).
    The copy is a pickle round trip: half the time of copy.deepcopy on a real partial."""
    return pickle.loads(pickle.dumps(left, pickle.HIGHEST_PROTOCOL)).merge(right)


class DaskCluster:
    """A client of a Dask cluster for the length of one read: a local cluster it starts (and stops) with
    ``jobs`` single-threaded worker processes, or the running cluster at ``scheduler``."""

    def __init__(self, jobs: int | None = None, scheduler: str | None = None):
        self._dask = _distributed()
        self._local = None
        if scheduler:
            try:
                self.client = self._dask.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as e:
                raise AdvisorError(f"cannot reach the Dask scheduler at {scheduler}: {e}",
                                   "check --dask-scheduler (tcp://host:8786) and that its scheduler is running") from e
        else:
            # Loopback only and no dashboard: nothing listens beyond this machine for a local run. Its logs
            # silenced: a failed task raises here, and what else workers log (a heartbeat that races the
            # scheduler's close at the end) would print tracebacks on the user's stderr.
            self._local = self._dask.LocalCluster(n_workers=jobs or os.cpu_count() or 1, threads_per_worker=1,
                                                  processes=True, host="127.0.0.1", dashboard_address=None,
                                                  silence_logs=logging.CRITICAL)
            self.client = self._dask.Client(self._local)
        # Parts per large file: one per worker thread unless --jobs says otherwise.
        self.slots = jobs or max(1, sum(self.client.nthreads().values()))

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self._local is not None:
            self._local.close()

    def parse(self, parts: list[Part], progress: Progress | None = None) -> Partial:
        """The parts parsed by the workers and merged in order; ``progress`` hears the bytes of each part done."""
        futures = self.client.map(parse_part, parts, pure=False)
        whole = self._tree(futures)
        if progress:
            size = {future.key: part.size for future, part in zip(futures, parts)}
            total, done = sum(size.values()), 0
            for future in self._dask.as_completed(futures):
                done += size[future.key]
                progress(done, total)
        return whole.result()

    def _tree(self, level: list):
        """One future of all of ``level`` merged: neighbours paired, level by level, left before right."""
        while len(level) > 1:
            pairs = [self.client.submit(merged, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
            level = pairs + level[-1:] if len(level) % 2 else pairs
        return level[0]
