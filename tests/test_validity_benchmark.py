"""The statistics of ``benchmarks/validity.py``: the width ratio's interval, the 'about 90 %' rule, the presets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from mrv.synthetic import SceneSpec

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "validity.py"


@pytest.fixture(scope="module")
def validity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validity_benchmark", BENCH)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["validity_benchmark"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_width_ratio_interval_covers_the_true_ratio_90_percent(validity: ModuleType) -> None:
    # intervals exactly as wide as the errors' sd implies (true ratio 1), 8 regions each, 4000 repetitions:
    # the 90 % interval of the ratio must contain 1 in ~90 % of them, and the point estimate must be ~1 for many
    rng = np.random.default_rng(7)
    sigma = 2.5
    width = [2 * validity.Z90 * sigma] * 8
    hits = 0
    for _ in range(4000):
        _, lo, hi = validity.width_ratio(width, list(rng.normal(0.0, sigma, 8)))
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 4000 <= 0.92
    ratio, lo, hi = validity.width_ratio([2 * validity.Z90 * sigma] * 20_000, list(rng.normal(0.0, sigma, 20_000)))
    assert ratio == pytest.approx(1.0, abs=0.02)
    assert lo < ratio < hi


def test_about_ninety_percent_is_the_central_binomial_range(validity: ModuleType) -> None:
    # Binomial(20, 0.9): P(X <= 15) = 0.043, P(X <= 16) = 0.133, so 16..20 of 20 are about 90 %
    assert validity._about(17, 20)
    assert validity._about(16, 20)
    assert validity._about(20, 20)
    assert not validity._about(15, 20)
    # Binomial(8, 0.9): P(X <= 5) = 0.038, P(X <= 6) = 0.187, so 6/8 is about 90 % and 5/8 is not
    assert validity._about(6, 8)
    assert not validity._about(5, 8)


def test_default_preset_is_the_scene_spec_defaults(validity: ModuleType) -> None:
    pre = validity.PRESETS["default"]
    spec = SceneSpec()
    assert (pre.size_px, pre.fields, pre.fields * pre.sites_per_field, pre.n_crowd) == (
        spec.width_px, spec.n_fields, spec.n_lab_sites, spec.n_crowd,
    )  # fmt: skip
    assert len(pre.seeds.split(",")) >= 5
    assert len(validity.PRESETS["small"].seeds.split(",")) >= 20


def test_estimators_alone_against_generated_truth(validity: ModuleType) -> None:
    # the stratified stock and change estimators on 30 small generated regions: when their variance is right the
    # mean z^2 is chi2_30 / 30, inside [chi2_30(0.0005), chi2_30(0.9995)] / 30 = [0.39, 2.1] with probability 0.999
    from scipy.stats import chi2

    spec = SceneSpec(width_px=120, height_px=120, n_fields=6, n_lab_sites=36, n_crowd=10)
    out = validity.estimators_alone(list(range(500, 530)), spec)
    lo, hi = chi2.ppf([0.0005, 0.9995], 30) / 30
    for q in ("stock", "change"):
        assert out[q]["n"] == 30
        assert lo <= out[q]["mean_z2"] <= hi, (q, out[q])
