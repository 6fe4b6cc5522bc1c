"""Run a function over many inputs: in this process, on a process pool, or on Ray.

Every executor keeps at most ``2 * workers`` calls in flight (a huge sweep is never
queued at once) and hands each result to ``on_result(item, result)`` in this process as
it finishes, in any order. An exception raised by ``fn`` is raised again here (a
:class:`WatosError` keeps its message). Ray is an optional extra, imported only for
``executor="ray"``.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from watos.errors import WatosError

OnResult = Callable[[Any, Any], None]
Harvest = Callable[[list], Iterable[tuple[Hashable, Any]]]
EXECUTORS = ("local", "ray")


def _pipeline(items: Iterable, limit: int, submit: Callable[[Any], Hashable],
              harvest: Harvest, on_result: OnResult) -> None:
    """Submit ``items`` with at most ``limit`` pending; ``harvest(handles)`` blocks
    until some finish and gives ``(handle, result)`` for each."""
    pending: dict[Hashable, Any] = {}

    def drain_some() -> None:
        for handle, result in harvest(list(pending)):
            on_result(pending.pop(handle), result)

    for item in items:
        pending[submit(item)] = item
        if len(pending) >= limit:
            drain_some()
    while pending:
        drain_some()


def _harvest_futures(futures: list[Future]) -> list[tuple[Future, Any]]:
    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
    return [(f, f.result()) for f in finished]


def _run_local(fn: Callable, items: list, workers: int, on_result: OnResult) -> None:
    if workers == 1:
        for item in items:
            on_result(item, fn(item))
        return
    # fork: children inherit imported modules (torch) and caches; else spawn
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        _pipeline(items, 2 * workers, lambda item: pool.submit(fn, item),
                  _harvest_futures, on_result)
    finally:
        pool.shutdown(cancel_futures=True)


def _run_ray(fn: Callable, items: list, workers: int, ray_address: str | None,
             on_result: OnResult) -> None:
    try:
        import ray
    except ImportError:
        raise WatosError("--executor ray needs the optional extra: "
                         "pip install 'watos[ray]'") from None
    started = not ray.is_initialized()
    if started and ray_address is None:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    elif started:
        ray.init(address=ray_address, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(fn)

    def harvest(refs: list) -> list[tuple[Any, Any]]:
        ready, _ = ray.wait(refs, num_returns=1)
        try:
            return [(ref, ray.get(ref)) for ref in ready]
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause from exc

    try:
        _pipeline(items, 2 * workers, remote.remote, harvest, on_result)
    finally:
        if started:
            ray.shutdown()


def run_all(fn: Callable[[Any], Any], items: list, *, executor: str = "local",
            workers: int = 1, ray_address: str | None = None,
            on_result: OnResult | None = None) -> None:
    """Call ``fn(item)`` for every item, and ``on_result(item, result)`` here as each
    finishes.

    ``fn`` must be a module-level (picklable) function and ``items`` JSON-able.
    ``executor`` is ``"local"`` (``workers == 1``: in this process; more: a process
    pool) or ``"ray"`` (the cluster at ``ray_address``, or when None a local Ray of
    ``workers`` CPUs); a Ray connection made here is shut down on return."""
    if executor not in EXECUTORS:
        raise WatosError(f"--executor: expected one of {', '.join(EXECUTORS)}, "
                         f"got {executor!r}")
    if workers < 1:
        raise WatosError(f"--workers: expected at least 1, got {workers}")
    report = on_result or (lambda item, result: None)
    if executor == "local":
        _run_local(fn, items, workers, report)
    else:
        _run_ray(fn, items, workers, ray_address, report)
