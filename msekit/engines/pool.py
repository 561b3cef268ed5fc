"""The default engine: a stdlib ``multiprocessing`` spawn pool on this machine."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from msekit.engines.base import Backend, Job, Worker
from msekit.errors import MsekitError

# Threads per worker: extraction parallelizes over files, so each worker uses one core.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

_WORKER: dict[str, Worker] = {}


def _init_worker(config: Any, modules: list[str], asr: bool = False) -> None:
    """Pool initializer: import plugin modules, load the extractors once per worker."""
    _WORKER["w"] = Worker(config, modules, asr=asr)


def _describe() -> dict[str, Backend] | str:
    return _WORKER["w"].describe()


def _work(job: Job) -> dict[str, Any]:
    return _WORKER["w"].work(job)


class PoolEngine:
    """``workers`` spawned processes, each loading the backends once with one thread.

    The models load in the workers while the driver reads the tokenizer; the driver only needs
    the backends' names and settings, which one worker reports (``backends``).
    """

    name = "pool"

    def __init__(self, config: Any, plugins: list[str], workers: int, asr: bool = False) -> None:
        import multiprocessing as mp

        self.workers = workers
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        os.environ.update({k: "1" for k in THREAD_ENV})  # inherited by the spawned workers
        try:
            self.pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                     initargs=(config, plugins, asr))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self._described = self.pool.apply_async(_describe)

    def backends(self) -> dict[str, Backend]:
        got = self._described.get()
        if isinstance(got, str):
            raise MsekitError(f"the extraction workers cannot load the extractors: {got}")
        return got

    def results(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """The results in job order.

        At most ``4 * workers`` jobs are in flight, so results that finish out of order wait in
        a bounded buffer while the one before them is still running.
        """
        window: deque = deque()
        pending = iter(jobs)
        for job in pending:
            window.append(self.pool.apply_async(_work, (job,)))
            if len(window) >= 4 * self.workers:
                break
        while window:
            res = window.popleft().get()
            nxt = next(pending, None)
            if nxt is not None:
                window.append(self.pool.apply_async(_work, (nxt,)))
            yield res

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
