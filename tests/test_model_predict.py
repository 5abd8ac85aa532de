"""The single-walk prediction path agrees with quantile-forest's own quantile and mean predictions."""

from __future__ import annotations

import numpy as np

from mrv.config import ModelConfig
from mrv.modeling.model import SOCModel, make_forest


def test_fast_predict_matches_quantile_forest() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = 5 * X[:, 0] + rng.normal(size=300) + 50
    model = SOCModel(make_forest(ModelConfig(n_estimators=50)).fit(X, y), tuple("abcdef"), 0.9, margin_t_ha=1.0)
    Xt = rng.normal(size=(2000, 6)).astype("float32")
    Xt[5, 2] = np.nan
    out = model.predict(Xt, batch=700)  # several batches
    ok = np.isfinite(Xt).all(axis=1)
    q = model.raw_quantiles(Xt[ok])
    mean = model.forest.predict(Xt[ok], quantiles="mean")
    np.testing.assert_allclose(out[ok, 0], mean, atol=1e-4)
    np.testing.assert_allclose(out[ok, 1], q[:, 0] - 1.0, atol=1e-4)
    np.testing.assert_allclose(out[ok, 2], q[:, 1], atol=1e-4)
    np.testing.assert_allclose(out[ok, 3], q[:, 2] + 1.0, atol=1e-4)
    assert np.isnan(out[5]).all()
