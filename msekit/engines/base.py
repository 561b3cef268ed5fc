"""What every engine shares: the worker side (load the backends once, extract one file per call)
and the in-process engine used with one worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msekit.errors import MsekitError

Job = tuple  # (sample id, media path as given[, text job]): process_file's arguments


@dataclass
class Backend:
    """What the driver needs of a backend loaded elsewhere: names, version, settings."""

    name: str
    version: str
    feature_names: list[str]
    saved: dict[str, Any]

    def settings(self) -> dict[str, Any]:
        return self.saved


class Worker:
    """The extracting side of an engine: one per pool process or Ray actor.

    Setup errors are kept, not raised: a raising pool initializer makes ``multiprocessing``
    respawn workers forever, and a Ray actor that fails in ``__init__`` is restarted. The driver
    reads them through ``describe``.

    Args:
        config: the run's ``ExtractConfig``.
        modules: plugin modules to import first (backends registered outside msekit).
        cwd: directory to run in (the driver's, so that relative paths mean the same); ignored
            where it does not exist.
    """

    def __init__(self, config: Any, modules: list[str], cwd: str | None = None,
                 asr: bool = False) -> None:
        import importlib

        from msekit import textstage
        from msekit.extract import _build_extractors

        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self.extractors: dict[str, Any] = {}
        self.error: str | None = None
        try:
            for m in modules:
                importlib.import_module(m)
            self.extractors = _build_extractors(config)
            textstage.preload(config.asr_config(), asr)  # the ASR model, once per worker
        except MsekitError as e:
            self.error = str(e)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        if "torch" in sys.modules:  # extraction parallelizes over files: one thread each
            sys.modules["torch"].set_num_threads(1)

    def describe(self) -> dict[str, Backend] | str:
        """The loaded backends as ``Backend``s, or the setup error message."""
        if self.error is not None:
            return self.error
        return {kind: Backend(x.name, str(x.version), list(x.feature_names),
                              x.settings())
                for kind, x in self.extractors.items()}

    def work(self, job: Job) -> dict[str, Any]:
        """``msekit.extract.process_file`` on one job (never raises for a bad file)."""
        from msekit.extract import process_file

        if self.error is not None:
            return {"id": job[0], "path": job[1], "ok": False, "stage": "setup",
                    "reason": f"the worker could not load the extractors: {self.error}"}
        return process_file(job[0], Path(job[1]), self.extractors, *job[2:])

    def pid(self) -> int:
        """The process id (lets tests and benchmarks find and kill a worker)."""
        return os.getpid()


class LocalEngine:
    """One worker: the backends run in this process (no pool, no start-up cost)."""

    name = "local"

    def __init__(self, config: Any) -> None:
        from msekit.extract import _build_extractors

        self.workers = 1
        self.extractors = _build_extractors(config)  # raises at once: fails before any store

    def backends(self) -> dict[str, Any]:
        return self.extractors

    def results(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        from msekit.extract import process_file

        return (process_file(j[0], Path(j[1]), self.extractors, *j[2:]) for j in jobs)

    def close(self) -> None:
        self.extractors = {}
