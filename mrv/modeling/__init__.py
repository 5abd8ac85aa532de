"""SOC model: covariates at sites, quantile regression forest (or gradient-boosted quantiles), spatial
cross-validation (kNNDM folds or square blocks), conformal calibration and map prediction.

The names below are imported lazily on first use, so ``import mrv.modeling`` loads no scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrv.lazy import lazy_exports

if TYPE_CHECKING:
    from mrv.modeling.features import extract_at_points
    from mrv.modeling.model import OUTPUTS, SOCPredictor
    from mrv.modeling.predict import predict_map
    from mrv.modeling.train import TrainingResult
    from mrv.modeling.validation import Metrics, metrics

__all__ = [
    "OUTPUTS",
    "Metrics",
    "SOCPredictor",
    "TrainingResult",
    "extract_at_points",
    "metrics",
    "predict_map",
]

#: Public name -> the submodule defining it (imported on first access, PEP 562).
_LAZY: dict[str, str] = {
    "extract_at_points": "features",
    "OUTPUTS": "model", "SOCPredictor": "model",
    "TrainingResult": "train",
    "predict_map": "predict",
    "Metrics": "validation", "metrics": "validation",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
