"""The run's local Dask cluster: in-process threads, and the maps it predicts equal those without a cluster."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from mrv.config import DaskConfig, ModelConfig
from mrv.dask_cluster import dask_client
from mrv.modeling.model import SOCModel, make_forest
from mrv.modeling.predict import predict_map


def _stack_and_model() -> tuple[xr.DataArray, SOCModel]:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3)).astype("float32")
    y = 40 + 5 * X[:, 0] + 2 * X[:, 1] ** 2 + rng.normal(0, 1, 300)
    model = SOCModel(make_forest(ModelConfig(n_estimators=20)).fit(X, y), ("a", "b", "c"), 0.9, margin_t_ha=0.5)
    data = rng.normal(size=(3, 70, 90)).astype("float32")
    data[:, 3, 4] = np.nan
    stack = xr.DataArray(data, dims=("covariate", "y", "x"),
                         coords={"covariate": ["a", "b", "c"], "y": np.arange(70.0), "x": np.arange(90.0)})  # fmt: skip
    return stack, model


def test_local_cluster_is_in_process_threads_and_gives_the_same_maps() -> None:
    stack, model = _stack_and_model()
    plain = predict_map(stack, model, chunk_px=32).compute().to_numpy()
    with dask_client(DaskConfig(n_workers=2, threads_per_worker=1)) as client:
        assert set(client.run(os.getpid).values()) == {os.getpid()}  # no worker processes to start
        assert sum(client.nthreads().values()) == 2
        assert os.environ["OMP_NUM_THREADS"] == "1"
        clustered = predict_map(stack, model, client=client, chunk_px=32).compute().to_numpy()
    np.testing.assert_array_equal(clustered, plain)
    np.testing.assert_array_equal(np.isnan(plain[:, 3, 4]), np.ones(5, bool))
    X = stack.to_numpy().reshape(3, -1).T
    np.testing.assert_allclose(plain.reshape(5, -1).T, model._predict_numpy(X), atol=1e-4)
