"""Extraction engines: where the per-file work of ``msekit.extract`` runs.

Every engine has the same small interface, which ``msekit.extract`` calls through
``open_engine``:

- ``workers``: how many workers (processes or actors) it runs;
- ``backends()``: the loaded backends' names, versions, feature names and settings (blocks until
  one worker has loaded them; raises ``MsekitError`` when they cannot load);
- ``results(jobs)``: a generator of ``process_file`` results in the order of ``jobs`` =
  [(id, path)], holding a bounded number of them;
- ``close()``.

Engines: 'pool' (the default: in this process with one worker, else a stdlib spawn pool) and
'ray' (an actor pool on a Ray cluster, ``pip install 'msekit[ray]'``). They give identical
stores: the driver commits every engine's results the same way, in sorted id order.
"""

from __future__ import annotations

import json
from typing import Any

from msekit.errors import MsekitError

ENGINES = ("pool", "ray")


def open_engine(name: str, config: Any, plugins: list[str], workers: int, *,
                address: str | None = None, options: dict[str, Any] | None = None,
                asr: bool = False):
    """Start the engine ``name`` with ``workers`` workers for the run's ``config``.

    Args:
        name: 'pool' or 'ray'.
        config: the run's ``ExtractConfig``.
        plugins: modules the workers import first (backends registered outside msekit).
        workers: workers to start (pool: 1 = in this process).
        address: the Ray cluster (ray only; see ``msekit.engines.ray.RayEngine``).
        options: Ray actor / driver options (ray only).
        asr: the workers load the ASR model at start (some sample needs transcribing).

    Raises:
        MsekitError: unknown engine, Ray options without Ray, Ray not installed.
    """
    if name not in ENGINES:
        raise MsekitError(f"engine must be one of {list(ENGINES)}, got {name!r}")
    if name == "pool":
        if address is not None or options:
            raise MsekitError("--address and --ray-option need --engine ray")
        if workers <= 1:
            from msekit.engines.base import LocalEngine

            return LocalEngine(config)
        from msekit.engines.pool import PoolEngine

        return PoolEngine(config, plugins, workers, asr=asr)
    from msekit.engines.ray import RayEngine

    return RayEngine(config, plugins, max(1, workers), address=address, options=options,
                     asr=asr)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``['num_cpus=2', 'resources={"fast_disk": 1}']`` -> a dict (values read as JSON when
    they parse, else kept as strings)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MsekitError(f"--ray-option {pair!r}: expected KEY=VALUE, e.g. num_cpus=1")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
