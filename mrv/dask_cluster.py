"""Connect to the configured Dask cluster, or start a local one; open it once per run (``predict_maps``).

What a client costs to open (benchmarks/README.md; 2 shared cores): a LocalCluster of two worker
*processes* took 1.8 s (load average 1.9) to 15 s (load 11) and 3-5 CPU s to start (two interpreters
importing distributed, then numpy/sklearn/quantile-forest/numba on the first task), 1-4 s to close,
and its rounds cost 1.3-1.6x the CPU of the same prediction in one process (results pickled back to
the client, heartbeats, the COG-writing client beside two workers). The compiled QRF walk releases
the GIL, so the local cluster is now one in-process worker with ``n_workers x threads_per_worker``
threads: 0.03-0.15 s to start, the same maps (the model is still scattered once, as on a real
cluster), no worker or scheduler ports (in-process transport). distributed's scheduler still starts its
HTTP server (health and metrics routes, no dashboard without bokeh) on port 8787 or a free one.

Where that start goes (measured 2026-12-01 at load average 7, one process): ``import distributed``
1.8 s wall / 0.46 CPU s (paid once per process, by any code that imports Dask's scheduler); the
first :func:`dask_client` in the process 0.49 s wall / 0.12 CPU s (the scheduler's and worker's lazy
imports, the event-loop thread); every later one 0.02-0.08 s / 0.02 CPU s; closing 0.03-0.06 s. So
one client per run (the flow's ``predict-maps`` task opens it once for all rounds) costs about 0.1
CPU s on top of the import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster

from mrv.config import DaskConfig
from mrv.errors import ConfigError
from mrv.heap import limit_heap_growth

__all__ = ["LOCAL_CLUSTER_CONFIG", "dask_client"]

#: Dask settings while the run's local cluster is open: distributed's statistical profiler (a thread sampling
#: every worker thread's stack each 10 ms) and the disk counters of its system monitor (psutil every 500 ms)
#: only feed a dashboard the local cluster does not start; they took ~3 % of a round's samples (py-spy,
#: benchmarks/README.md). An existing cluster (``dask.address``) keeps its own settings.
LOCAL_CLUSTER_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.disk": False,
    "distributed.admin.system-monitor.interval": "2s",
}


@contextmanager
def dask_client(cfg: DaskConfig, *, connect_timeout_s: float = 20.0, worker_timeout_s: float = 60.0) -> Iterator[Client]:
    """A ``distributed.Client`` on ``cfg.address`` or on a LocalCluster of worker processes.

    On an existing cluster the client waits up to ``worker_timeout_s`` for at least one worker, so
    a scheduler without workers fails with a clear message instead of hanging. Computations
    survive the loss of workers as long as one remains (Dask reschedules their tasks; the model
    is broadcast to every worker). Workers of an existing cluster must have this package
    installed in the same version.

    Without ``cfg.address`` the LocalCluster is one worker in this process with
    ``n_workers x threads_per_worker`` threads (see the module docstring for why not processes).
    BLAS/OpenMP are set to one thread (``OMP_NUM_THREADS=1``) so model prediction does not
    oversubscribe the cores Dask already parallelises over; start the workers of an existing
    cluster with the same environment. Large arrays are mapped, not taken from the heap, from here on
    (:func:`limit_heap_growth`), so the maps stage's memory stays flat as the region grows.
    """
    limit_heap_growth()  # the client process gathers strip windows and writes the maps, whatever the cluster
    if cfg.address:
        try:
            client = Client(cfg.address, timeout=f"{connect_timeout_s:g}s", set_as_default=True)
        except OSError as exc:
            raise ConfigError(
                f"Cannot reach the Dask scheduler at {cfg.address}: {exc}. Start it or unset dask.address."
            ) from exc
        with client:
            try:
                client.wait_for_workers(1, timeout=worker_timeout_s)
            except TimeoutError as exc:
                raise ConfigError(
                    f"The Dask scheduler at {cfg.address} has no workers after {worker_timeout_s:g} s. "
                    f"Start workers with 'dask worker {cfg.address} --nthreads 1' or unset dask.address."
                ) from exc
            yield client
        return
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for BLAS/OpenMP pools started from here on (threads already share the cores)
    try:
        with (
            dask.config.set(LOCAL_CLUSTER_CONFIG),
            LocalCluster(
                n_workers=1,
                threads_per_worker=max(1, cfg.n_workers * cfg.threads_per_worker),
                processes=False,  # in-process transport: no scheduler/worker ports
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
