"""Where the markets of a baseline or a round are solved: in this process (`SerialExecutor`) or on Dask distributed
(`DaskExecutor`: a LocalCluster of N worker processes, or an existing scheduler). Both map a pure function over
calls and return the results in the calls' order, so whichever ran them, the answer is the same."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError

from .errors import StoreError, error_text
from .store.connection import env_seconds

CONNECT_TIMEOUT_ENV = "OPTALLOC_DASK_CONNECT_TIMEOUT"  # seconds to reach an existing Dask scheduler (--scheduler); default 30


class ClusterError(StoreError):
    """The Dask cluster cannot be reached (exit 5, like an unreachable store: nothing was done)."""


class SerialExecutor:
    """Runs the work units one after another in this process."""

    description = "serial"

    def map(self, fn: Callable, calls: Iterable[tuple]) -> list:
        return [fn(*args) for args in calls]

    def close(self) -> None:
        pass


class DaskExecutor:
    """Runs the work units on Dask distributed: a LocalCluster of `workers` processes (one thread each, so every
    solve is single-threaded and deterministic), or the existing cluster at `scheduler`. Connects on first use:
    a night with nothing to do starts no cluster."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        self.workers, self.scheduler = workers or 2, scheduler
        self.timeout = env_seconds(CONNECT_TIMEOUT_ENV, 30.0, zero=False) if scheduler else None  # checked before any work
        self.description = f"dask scheduler {scheduler}" if scheduler else f"dask LocalCluster, {self.workers} workers"
        self.cluster = self.client = None

    def _connect(self):
        from distributed import Client, LocalCluster

        if self.client is None:
            if self.scheduler:
                timeout = self.timeout
                try:
                    self.client = Client(self.scheduler, timeout=timeout)
                except (OSError, TimeoutError, ValueError) as e:
                    raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler} within {timeout:g} s: {e}") from None
            else:
                self.cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
                )
                self.client = Client(self.cluster)
        return self.client

    def map(self, fn: Callable, calls: Iterable[tuple]) -> list:
        """fn(*call) for each call, on the workers; the results in the order of `calls`.

        Calls are taken one at a time: each one's arguments (a market of an instance, its limits, held grants) go
        as data to the worker with the fewest of this map's tasks still running, and its task is submitted there at
        once, so the workers solve while the next calls are built and sent (`calls` may be a generator that builds
        each market only when it is taken: at 2 M sellers a baseline market is ~200 MB to send, 5 s to solve)."""
        client = self._connect()
        workers = sorted(client.scheduler_info()["workers"])
        futures, placed = [], []
        for args in calls:
            pin = None
            if workers:  # none yet (a cluster still scaling up): the scheduler places the data
                busy = Counter(w for w, f in zip(placed, futures) if not f.done())
                pin = [min(workers, key=busy.__getitem__)]  # ties: the first address in sorted order
            data = self._cluster(lambda: client.scatter([args], workers=pin, hash=False)[0])
            futures.append(self._cluster(lambda: client.submit(_apply, fn, data, pure=False, workers=pin)))
            placed.append(pin[0] if pin else None)
        outcomes = self._cluster(lambda: client.gather(futures))  # in submission order
        for ok, value in outcomes:
            if not ok:  # the first call that raised, as SerialExecutor raises it
                raise value
        return [value for _, value in outcomes]

    def _cluster(self, do: Callable):
        """`do()`, with the cluster's own failures (a worker lost mid-task and the data it held, a scheduler gone, no
        worker joining in time) as ClusterError (exit 5: not the period's fault, and the run stops as when the store
        is lost; the steps committed before it stay). A task's own error never gets here: `_apply` returns it."""
        from distributed import KilledWorker

        try:
            return do()
        except (KilledWorker, OSError, asyncio.CancelledError, CancelledError) as e:
            raise ClusterError(f"the Dask cluster failed this run's work ({self.description}): {error_text(e)}") from None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _apply(fn: Callable, args: tuple) -> tuple[bool, object]:
    """On the worker: (True, fn(*args)), or (False, the exception it raised), so that the driver tells a task's own
    error (raised again there) from the cluster's (`DaskExecutor._cluster`)."""
    try:
        return True, fn(*args)
    except Exception as e:  # noqa: BLE001 -- raised again in the driver
        return False, e


def make_executor(workers: int = 0, scheduler: str | None = None) -> SerialExecutor | DaskExecutor:
    """An existing Dask cluster (`scheduler`), else a LocalCluster of `workers` processes; 0 (the default, as for
    every command) runs in this process. On 2 cores a LocalCluster is slower at every size measured but the 2 M-seller
    baseline, where it is 7-10% faster for ~2.6 GiB more (docs/performance.md)."""
    if scheduler:
        return DaskExecutor(scheduler=scheduler)
    return DaskExecutor(workers) if workers > 0 else SerialExecutor()
