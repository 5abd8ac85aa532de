"""kNNDM fold design (Linnenbrink et al. 2024, GMD 17:5897-5912) on generated point patterns.

Known behaviour the paper reports (Sect. 3.1, Fig. 4): prediction points spread like the samples give a
random-CV-like design; clustered samples predicting a much larger area give few, large clusters whose
held-out distances are far longer than random CV's. Distances are checked against hand-computed values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from mrv.config import ModelConfig
from mrv.errors import ModelError
from mrv.modeling.train import spatial_folds, train
from mrv.modeling.validation import (
    cv_nn_distances,
    domain_points,
    fold_indices,
    knndm_folds,
    nn_distances,
    sample_locations,
)
from mrv.modeling.variogram import BlockSizeChoice


def test_nn_distances_hand_example() -> None:
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0], [31.0, 0.0]])
    fold = np.array([0, 1, 0, 1])
    # 0 -> nearest of fold 1 is (10,0): 10; 10 -> (0,0): 10; 30 -> (31,0): 1; 31 -> (30,0): 1
    assert cv_nn_distances(pts, fold) == pytest.approx([10.0, 10.0, 1.0, 1.0])
    assert nn_distances(np.array([[5.0, 0.0], [29.0, 0.0]]), pts) == pytest.approx([5.0, 1.0])


def test_revisits_are_one_location_and_share_a_fold() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 2000, (80, 2))
    xy = np.concatenate([base, base + rng.normal(0, 1.0, base.shape)])  # each site re-measured, ~1 m GPS error
    loc = sample_locations(xy)
    assert loc.max() + 1 == 80
    assert np.array_equal(loc[:80], loc[80:])
    fold, choice = knndm_folds(xy[:, 0], xy[:, 1], rng.uniform(0, 2000, (1000, 2)), n_folds=5, seed=0)
    assert np.array_equal(fold[:80], fold[80:])  # a revisit never sits in the training folds of its twin
    assert choice.n_locations == 80
    assert min(cv_nn_distances(xy, fold)) > 5.0  # no distance-0 neighbour across folds


def test_random_samples_predicting_their_own_area_give_random_cv() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 2000, (150, 2))
    pred = rng.uniform(0, 2000, (2000, 2))
    fold, choice = knndm_folds(xy[:, 0], xy[:, 1], pred, n_folds=5, seed=0)
    assert choice.random  # every location its own cluster: random K-fold
    assert np.bincount(fold).min() == np.bincount(fold).max() == 30
    # the chosen design is the candidate closest to the prediction distances, and random CV is closer than blocks
    assert choice.wasserstein_m == min(w for _, w in choice.candidates)
    blocks = np.full(len(xy), -1)
    for k, (_, te) in enumerate(fold_indices(xy[:, 0], xy[:, 1], n_folds=5, block_size_m=500, seed=0)):
        blocks[te] = k
    g_ij = nn_distances(pred, xy)
    assert wasserstein_distance(cv_nn_distances(xy, blocks), g_ij) > 4 * choice.wasserstein_m
    # Poisson process of density n/A: the NN distance has median sqrt(ln 2 / (pi n / A)) = 76 m here
    assert choice.prediction_nnd_m[2] == pytest.approx(np.sqrt(np.log(2) / (np.pi * 150 / 2000**2)), rel=0.15)


def test_clustered_samples_predicting_far_give_large_clusters() -> None:
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 20_000, (10, 2))
    xy = np.concatenate([c + rng.normal(0, 150, (15, 2)) for c in centres])
    pred = rng.uniform(0, 20_000, (3000, 2))  # the whole 20 km square: far from most clusters
    fold, choice = knndm_folds(xy[:, 0], xy[:, 1], pred, n_folds=5, seed=0)
    assert not choice.random
    assert choice.n_clusters <= 20  # about the ten natural clusters, not one per site
    random_w = dict(choice.candidates)[choice.n_locations]
    assert choice.wasserstein_m < 0.5 * random_w
    assert choice.cv_nnd_m[2] > 5 * np.median(cv_nn_distances(xy, np.arange(len(xy)) % 5))
    # each natural cluster is held out (almost) whole
    whole = [np.bincount(fold[i * 15 : (i + 1) * 15]).max() for i in range(10)]
    assert np.mean(whole) >= 13


def test_knndm_errors_say_what_to_do() -> None:
    xy = np.random.default_rng(2).uniform(0, 1000, (40, 2))
    with pytest.raises(ModelError, match="cv_design: blocks"):
        knndm_folds(xy[:, 0], xy[:, 1], np.empty((0, 2)), n_folds=5, seed=0)
    with pytest.raises(ModelError, match="distinct sample locations"):
        knndm_folds(np.zeros(30), np.zeros(30), xy, n_folds=5, seed=0)


def test_spatial_folds_record_both_designs() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 2000, (120, 2))
    pred = rng.uniform(0, 2000, (1000, 2))
    block = BlockSizeChoice(block_size_m=500.0, rule="test", variogram=None)
    folds, rec = spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="knndm"), pred)
    assert rec["design"] == "knndm"
    assert rec["knndm"]["wasserstein_m"] < rec["blocks_wasserstein_m"]  # type: ignore[index]
    assert sorted(np.concatenate([te for _, te in folds])) == list(range(120))
    _, rec = spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="blocks"), None)
    assert rec == {"design": "blocks"}
    _, rec = spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="blocks"), np.empty((0, 2)))
    assert rec == {"design": "blocks"}  # a region whose fields cover no pixel: nothing to compare with
    with pytest.raises(ModelError, match="cv_design: blocks"):
        spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="knndm"), np.empty((0, 2)))


def test_train_with_knndm_records_its_prediction_points() -> None:
    rng = np.random.default_rng(4)
    n = 60
    table = pd.DataFrame({"x": rng.uniform(0, 2000, n), "y": rng.uniform(0, 2000, n), "c0": rng.normal(size=n)})
    table["soc_stock_t_ha"] = 50 + 5 * table["c0"] + rng.normal(0, 1, n)
    table["soc_stock_sd_t_ha"] = 1.0
    cfg = ModelConfig(n_estimators=10, cv_folds=3, cv_block_size_m=500.0, cv_design="knndm")
    res = train(table, ["c0"], cfg, prediction_xy=rng.uniform(0, 2000, (500, 2)))
    design = res.calibration["cv_design"]
    assert design["design"] == "knndm"  # type: ignore[index]
    assert design["knndm"]["random_cv"]  # type: ignore[index]
    assert design["prediction_points"].startswith("given")  # type: ignore[index]
    assert sum(res.fold_sizes) == n
    assert "recorded only" in res.block.rule
    alone = train(table, ["c0"], cfg).calibration["cv_design"]  # no prediction points: the sites' convex hull
    assert alone["prediction_points"].startswith("regular grid over the convex hull")  # type: ignore[index]
    knn = alone["knndm"]  # type: ignore[index]
    assert knn["n_clusters"] >= 0.75 * knn["n_locations"]  # near-random CV: the hull is sampled like the sites


def test_domain_points_cover_the_hull_regularly() -> None:
    square = np.array([[0.0, 0.0], [1000.0, 0.0], [1000.0, 1000.0], [0.0, 1000.0], [500.0, 500.0]])
    pts = domain_points(square, n=400)
    assert len(pts) == 400  # 20 x 20 cells of 50 m
    assert pts.min() == pytest.approx(25.0)
    assert pts.max() == pytest.approx(975.0)


def test_two_folds_of_an_odd_number_of_sites() -> None:
    xy = np.random.default_rng(6).uniform(0, 1000, (41, 2))
    fold, choice = knndm_folds(xy[:, 0], xy[:, 1], xy + 20.0, n_folds=2, seed=0)
    assert sorted(np.bincount(fold)) == [20, 21]  # a balanced deal is never refused as too unequal
    assert choice.n_clusters >= 2


def test_knndm_works_where_blocks_are_too_few_for_the_folds() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, [1500, 900], (60, 2))  # 2 x 1 blocks of 1000 m: too few for 5 folds
    block = BlockSizeChoice(block_size_m=1000.0, rule="test", variogram=None)
    with pytest.raises(ModelError, match="at least 5 occupied blocks"):
        spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="blocks"), xy)
    folds, rec = spatial_folds(xy[:, 0], xy[:, 1], block, ModelConfig(cv_design="knndm"), xy + 30.0)
    assert len(folds) == 5
    assert rec["blocks_wasserstein_m"] is None
