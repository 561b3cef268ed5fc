"""The Ray engine: an actor pool on a Ray cluster, this machine's or many machines'.

Each actor is one ``msekit.engines.base.Worker``: it loads the backends once and extracts one
file per task, reading the file where it runs (paths must mean the same on every node: shared
storage, and the driver's working directory for relative paths). The driver stays the store's
single writer: it hands out jobs, gathers the results in job order and commits them as the
process pool's do.

Scheduling and back-pressure
    Each actor holds one job at a time (so that an actor's death costs only the file it was
    extracting a try), the next one handed out as soon as it returns; at most ``4 * workers``
    results wait for the ones before them to be committed, so a slow file holds up no actor and
    the results in the driver's memory do not grow with the number of queued files.

Faults
    An actor that dies (killed, out of memory, its node lost) is restarted by Ray
    (``max_restarts``) and rejoins once it has loaded its backends again; the jobs it held go
    back to the front of the queue for any live actor. A file whose actor died ``retries + 1``
    times is recorded as a per-item failure (stage ``worker``) so that one poisonous file cannot
    stall the run; when every actor is gone for good the run stops with what it committed.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from msekit.engines.base import Backend, Job, Worker
from msekit.engines.pool import THREAD_ENV
from msekit.errors import MsekitError

# Options of `--ray-option KEY=VALUE`: Ray's actor options, then the driver's own.
ACTOR_OPTIONS = {"num_cpus": (int, float), "num_gpus": (int, float), "memory": (int, float),
                 "resources": dict, "accelerator_type": str, "max_restarts": int,
                 "scheduling_strategy": str}
DRIVER_OPTIONS = {"retries": int, "ready_timeout": (int, float)}
DEFAULTS = {"num_cpus": 1, "max_restarts": 3, "retries": 2, "ready_timeout": 600}


def import_ray():
    """The ``ray`` module, or a one-line MsekitError saying how to install it."""
    # Ray's progress bars replace builtins.print process-wide unless told not to; msekit's
    # driver keeps the real one (a library must not change the caller's print).
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    try:
        import ray
    except ImportError:
        raise MsekitError("--engine ray needs Ray, which is not installed: "
                          "pip install 'msekit[ray]'") from None
    return ray


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` over ``DEFAULTS``, each key and type checked."""
    known = {**ACTOR_OPTIONS, **DRIVER_OPTIONS}
    out = dict(DEFAULTS)
    for key, value in (options or {}).items():
        if key not in known:
            raise MsekitError(f"--ray-option {key}: unknown; use one of {sorted(known)}")
        if isinstance(value, bool) or not isinstance(value, known[key]):
            raise MsekitError(f"--ray-option {key}={value!r}: wrong type, expected "
                              f"{getattr(known[key], '__name__', 'a number')}")
        out[key] = value
    return out


class RayEngine:
    """``workers`` Ray actors, each loading the backends once.

    Args:
        config: the run's ``ExtractConfig``.
        plugins: plugin modules the actors import before building the backends.
        workers: actors to start.
        address: None (a ``RAY_ADDRESS`` cluster, else a new local one on this machine, stopped
            at the end), 'auto' (the cluster this machine belongs to), 'HOST:PORT' or
            'ray://HOST:10001' (Ray Client).
        options: ``ACTOR_OPTIONS`` (per actor: ``num_cpus``, ``num_gpus``, ...) and
            ``DRIVER_OPTIONS`` (``retries`` per file, ``ready_timeout`` seconds).
    """

    name = "ray"

    def __init__(self, config: Any, plugins: list[str], workers: int, *,
                 address: str | None = None, options: dict[str, Any] | None = None,
                 asr: bool = False) -> None:
        self.ray = ray = import_ray()
        opts = check_options(options)
        self.retries, self.ready_timeout = opts.pop("retries"), opts.pop("ready_timeout")
        self.workers = workers
        self.owned, local = _connect(ray, address, workers, opts)
        self.actors: list[Any] = []
        self.probes: dict[Any, int] = {}  # describe() refs of actors loading -> actor index
        self.ready: list[int] = []  # actors that loaded their backends
        self.described: dict[str, Backend] | None = None
        try:
            if local:
                _check_fits(ray, opts)
            threads = str(max(1, int(opts["num_cpus"])))
            actor = ray.remote(Worker).options(
                **opts, max_task_retries=0,  # the driver retries, on any live actor
                runtime_env={"env_vars": {k: threads for k in THREAD_ENV}})
            self.actors = [actor.remote(config, plugins, os.getcwd(), asr) for _ in range(workers)]
            self.probes = {a.describe.remote(): i for i, a in enumerate(self.actors)}
        except BaseException:
            self.close()
            raise

    # -- actors joining and leaving

    def _admit(self, refs: list[Any]) -> None:
        """Probes that finished: their actors join, or the run stops on a setup error."""
        for ref in refs:
            i = self.probes.pop(ref)
            try:
                got = self.ray.get(ref)
            except self.ray.exceptions.RayError:
                continue  # died for good while loading: it no longer counts
            if isinstance(got, str):
                raise MsekitError(f"a Ray actor cannot load the extractors: {got}")
            self.described = self.described or got
            self.ready.append(i)

    def _wait_for_actor(self) -> None:
        """Block until some actor is ready (or none can be)."""
        while not self.ready:
            if not self.probes:
                raise MsekitError("every Ray actor died; the samples committed so far are kept: "
                                  "rerun the same command to resume")
            done, _ = self.ray.wait(list(self.probes), num_returns=1, timeout=self.ready_timeout)
            if not done:
                raise MsekitError(
                    f"no Ray actor started within {self.ready_timeout:g} s; the cluster has "
                    f"{self.ray.cluster_resources()}: lower --ray-option num_cpus/num_gpus, add "
                    "nodes or raise --ray-option ready_timeout")
            self._admit(done)

    def _lost(self, i: int) -> None:
        """Actor ``i`` died: out of the schedule until Ray restarts it and it reloads."""
        if i in self.ready:
            self.ready.remove(i)
            self.probes[self.actors[i].describe.remote()] = i

    def backends(self) -> dict[str, Backend]:
        self._wait_for_actor()
        return self.described

    # -- the jobs

    def results(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """The results in job order, with at most ``4 * workers`` held at any time."""
        queue, head, window = deque(range(len(jobs))), 0, 4 * self.workers
        inflight: dict[Any, tuple[int, int]] = {}  # task ref -> (job index, actor)
        done: dict[int, dict[str, Any]] = {}
        tries: Counter = Counter()
        while head < len(jobs):
            # Hand out work before yielding: the actors go on while the driver writes.
            busy = {a for _, a in inflight.values()}
            for a in [i for i in self.ready if i not in busy]:
                if not queue or queue[0] >= head + window:
                    break
                j = queue.popleft()
                inflight[self.actors[a].work.remote(jobs[j])] = (j, a)
            if head in done:
                yield done.pop(head)
                head += 1
                continue
            if not inflight:
                self._wait_for_actor()
                continue
            ready, _ = self.ray.wait(list(inflight) + list(self.probes), num_returns=1)
            if ready[0] in self.probes:
                self._admit(ready)
                continue
            j, a = inflight.pop(ready[0])
            res, died = self._result(ready[0], jobs[j], tries, j)
            if died:
                self._lost(a)
            if res is None:  # to retry: the job goes first to whoever is free
                queue.appendleft(j)
            else:
                done[j] = res

    def _result(self, ref: Any, job: Job, tries: Counter,
                j: int) -> tuple[dict[str, Any] | None, bool]:
        """(the task's result, None to retry it or a failure record past the retries; whether
        its actor died)."""
        ex = self.ray.exceptions
        try:
            return self.ray.get(ref), False
        except (ex.RayActorError, ex.ObjectLostError) as e:
            tries[j] += 1
            if tries[j] <= self.retries:
                return None, True
            n = tries[j]
            reason = (f"its Ray actor died {n} time{'s' if n > 1 else ''} while extracting it "
                      f"({type(e).__name__}); rerun to retry it")
            died = True
        except ex.RayError as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            died = False
        return {"id": job[0], "path": job[1], "ok": False, "stage": "worker",
                "reason": reason}, died

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone, or the cluster is
                pass
        self.actors, self.probes = [], {}
        if self.owned:
            self.ray.shutdown()


def _connect(ray: Any, address: str | None, workers: int,
             opts: dict[str, Any]) -> tuple[bool, bool]:
    """Join or start a cluster: (whether this run connected, and so disconnects at the end;
    whether it started a local cluster)."""
    if ray.is_initialized():  # the caller's own session (a notebook): use it, leave it
        return False, False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A local cluster: as many CPUs as the actors ask for, like a pool of that many
        # processes (on a small machine they share its cores).
        cpus = max(os.cpu_count() or 1, math.ceil(workers * opts["num_cpus"]))
        # Ray enables token authentication on a new local cluster and says so on every start.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        if _no_auth_notice not in notice.filters:
            notice.addFilter(_no_auth_notice)
        # Actors at this process's niceness, as the pool's workers (Ray adds 15 by default,
        # which on a shared machine hands the actors' CPU to everyone else); no idle workers
        # prestarted (the actors, with their own env, could not use them).
        ray.init(num_cpus=cpus, include_dashboard=False, **quiet,
                 _system_config={"worker_niceness": 0, "enable_worker_prestart": False,
                                 "prestart_worker_first_driver": False})
        return True, True
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        auth = ("" if os.environ.get("RAY_AUTH_MODE") or address == "auto" else
                "; a cluster with token authentication (Ray's default) also needs "
                "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token")
        raise MsekitError(f"--address {address or os.environ.get('RAY_ADDRESS')}: cannot join "
                          f"a Ray cluster there ({first}); start one with `ray start --head` "
                          f"or leave --address out for a local one{auth}") from None
    return True, False


def _no_auth_notice(record: logging.LogRecord) -> bool:
    return "Token authentication is enabled" not in record.getMessage()


def _check_fits(ray: Any, opts: dict[str, Any]) -> None:
    """On a local cluster nothing will be added: refuse actors that no node can host."""
    have = ray.cluster_resources()
    need = {"CPU": opts.get("num_cpus", 0), "GPU": opts.get("num_gpus", 0),
            **opts.get("resources", {})}
    short = {k: v for k, v in need.items() if v and have.get(k, 0) < v}
    if short:
        raise MsekitError(f"--ray-option: an actor asks for {short} but this machine's Ray has "
                          f"{ {k: have.get(k, 0) for k in short} }; lower it or join a cluster "
                          "with --address")
