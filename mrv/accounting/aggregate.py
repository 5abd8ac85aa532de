"""Field and project SOC stocks, totals and change with Monte Carlo intervals.

Pixel prediction errors are spatially correlated; treating pixels as independent makes the
uncertainty of an areal mean shrink like 1/sqrt(n_pixels), which is absurdly narrow. Following
Wadoux & Heuvelink (2023, Geoderma 437:116588) and Verra VT0014 Appendix 6, each simulation draws
an error field e = sd(x) * z(x) and aggregates mean + e over each field, with

    z = sqrt(nu) * w + sqrt(1 - nu) * g,

w white noise (the nugget share ``nu`` of the error variance, spatially uncorrelated) and g a unit
Gaussian random field of exponential correlation exp(-h / range_m); ``nu`` and ``range_m`` come from
the variogram of the cross-validation errors (:mod:`mrv.accounting.variogram`) or the config. The
next round's g is ``rho * g_prev + sqrt(1 - rho^2) * g_new`` with rho = ``round_correlation`` (the
correlated part of the error of the same model at the same place); its w is drawn afresh, so the
change is drawn jointly.
tCO2e = 44/12 x t C (IPCC 2006 GL Vol. 4 Ch. 2; ratio of molecular weights of CO2 and C).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from mrv.accounting.simulate import exponential_grf
from mrv.errors import AccountingError

__all__ = ["CO2_PER_C", "Interval", "RoundMaps", "Simulation", "simulate_zone_means", "summarize", "zone_summary"]

CO2_PER_C = 44.0 / 12.0
#: Simulations drawn at once (bounds memory: one batch of correlated fields per round).
_BATCH = 50


@dataclass(frozen=True)
class RoundMaps:
    """One round's prediction on the project grid: ``mean`` and ``sd`` (t C/ha), NaN where unknown."""

    name: str
    mean: np.ndarray
    sd: np.ndarray


@dataclass(frozen=True)
class Interval:
    mean: float
    lower: float
    upper: float
    sd: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lower_90": self.lower, "upper_90": self.upper, "sd": self.sd}


def summarize(draws: np.ndarray, estimate: float, confidence: float) -> Interval:
    a = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Interval(mean=float(estimate), lower=float(lo), upper=float(hi), sd=float(np.std(draws, ddof=1)))


@dataclass(frozen=True)
class Simulation:
    """Draws of each zone's mean stock (t C/ha) per round: ``stock[round]`` is ``(n_sim, n_zones + 1)``,
    the last column being the project (all zones together)."""

    rounds: tuple[str, ...]
    estimate: dict[str, np.ndarray]
    stock: dict[str, np.ndarray]
    area_ha: np.ndarray
    coverage: np.ndarray
    """Fraction of each zone's (weighted) pixels with a prediction in every round."""
    mapped_area_ha: np.ndarray | None = None
    """Area (ha) of each zone (and the project, last) with a prediction in every round; ``area_ha`` is the
    whole zone's area, which the totals use."""


def _zone_entries(zones: np.ndarray, n_zones: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, zone, weight) of every pixel-zone pair: exact fractions when ``zones`` knows its fields
    (:class:`mrv.fields.ZoneRaster`), else weight 1 for every pixel whose centre lies in the zone."""
    coverage = getattr(zones, "coverage", None)
    if callable(coverage):
        cov = coverage()
        ok = cov.zone < n_zones
        return cov.row[ok], cov.col[ok], cov.zone[ok], cov.fraction[ok]
    rows, cols = np.nonzero(np.asarray(zones) >= 0)
    return rows, cols, np.asarray(zones)[rows, cols].astype(np.int64), np.ones(rows.size)


def simulate_zone_means(
    maps: Sequence[RoundMaps],
    zones: np.ndarray,
    n_zones: int,
    *,
    pixel_m: float,
    range_m: float | None,
    round_correlation: float,
    n_sim: int,
    seed: int,
    nugget_share: float = 0.0,
) -> Simulation:
    """Monte Carlo draws of zone-mean stocks for every round (see the module docstring for z).

    ``zones`` is an int raster (-1 outside any zone). When it is a :class:`mrv.fields.ZoneRaster` each pixel
    counts with the exact fraction of it inside the field (pixel-fraction weights: a zone mean is
    sum(f_p mu_p) / sum(f_p) over its mapped pixels, its error sum(f_p sd_p z_p)), otherwise with 1 where its
    centre is inside. ``area_ha`` is the zone area from the same weights (the polygon area for a ZoneRaster,
    mapped or not), the area the totals use. ``range_m=None`` treats pixel errors as independent (only for
    comparison: it understates uncertainty). ``nugget_share`` in [0, 1] is the uncorrelated share of the error
    variance (a boundary pixel shared by two fields gets independent nugget draws in each, a negligible
    approximation).
    """
    if not -1 <= round_correlation <= 1:
        raise AccountingError(f"round_error_correlation must be in [-1, 1], got {round_correlation}.")
    if not 0 <= nugget_share <= 1:
        raise AccountingError(f"The nugget share must be in [0, 1], got {nugget_share}; check the error variogram.")
    shape = np.asarray(zones).shape
    rows_all, cols_all, z_all, w_all = _zone_entries(zones, n_zones)
    all_counts = np.bincount(z_all, weights=w_all, minlength=n_zones).astype(float)
    # Mapped in every round, tested at the zones' pixels only: no region-sized temporaries.
    ok = np.ones(rows_all.size, bool)
    for m in maps:
        ok &= np.isfinite(m.mean[rows_all, cols_all]) & np.isfinite(m.sd[rows_all, cols_all])
    if not ok.any():
        raise AccountingError("No field pixel has a prediction; check that the maps overlap the fields.")
    rows, cols, z_idx, wt = rows_all[ok], cols_all[ok], z_all[ok], w_all[ok]
    # Project = an extra zone containing every field pixel.
    counts = np.bincount(z_idx, weights=wt, minlength=n_zones).astype(float)
    coverage = np.divide(counts, all_counts, out=np.zeros(n_zones), where=all_counts > 0)
    counts_p = np.append(counts, counts.sum())
    pixel_ha = pixel_m**2 / 10_000

    rng = np.random.default_rng(seed)
    # The correlated field is drawn on cells of about range/5 (one pixel when independent) and is
    # constant within a cell, so a zone's error sum is sum_cells g_c * W[c, zone] with W[c, zone] the
    # weighted sum of sd over the zone's pixels in cell c: no pixel-resolution field is ever built. The
    # nugget part, independent between pixels, sums exactly to N(0, nu * sum_zone w^2 sd^2) per zone.
    cell = pixel_m if range_m is None else max(pixel_m, range_m / 5.0)
    factor = max(1, int(round(cell / pixel_m)))
    coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
    cell_idx = (rows // factor) * coarse[1] + cols // factor
    n_cells = coarse[0] * coarse[1]

    def draw_g(n: int) -> np.ndarray:
        if range_m is None:
            return rng.standard_normal((n, n_cells))
        return exponential_grf(coarse, cell_m=factor * pixel_m, range_m=range_m, n=n, rng=rng).reshape(n, n_cells)

    def with_project(sums: np.ndarray) -> np.ndarray:
        """(n, n_zones) sums -> (n, n_zones + 1) means, the last column being all zones together."""
        sums = np.column_stack([sums, sums.sum(axis=1)])
        return np.divide(sums, counts_p, out=np.full_like(sums, np.nan), where=counts_p > 0)

    estimate, stock = {}, {}
    weights, nugget_sd, mu_sums = [], [], []
    for m in maps:
        mu, sd = m.mean[rows, cols], m.sd[rows, cols]
        w = sparse.coo_matrix((wt * sd, (cell_idx, z_idx)), shape=(n_cells, n_zones)).tocsr()
        weights.append(w)
        nugget_sd.append(np.sqrt(nugget_share * np.bincount(z_idx, weights=(wt * sd) ** 2, minlength=n_zones)))
        mu_sums.append(np.bincount(z_idx, weights=wt * mu, minlength=n_zones))
        estimate[m.name] = with_project(mu_sums[-1][None])[0]
        stock[m.name] = np.empty((n_sim, n_zones + 1))
    for start in range(0, n_sim, _BATCH):
        n = min(_BATCH, n_sim - start)
        g_prev: np.ndarray | None = None
        for k, m in enumerate(maps):
            g = draw_g(n)
            if g_prev is not None:
                g = round_correlation * g_prev + np.sqrt(1 - round_correlation**2) * g
            g_prev = g
            err = np.sqrt(1 - nugget_share) * np.asarray(weights[k].T @ g.T).T
            if nugget_share > 0:
                err = err + nugget_sd[k] * rng.standard_normal((n, n_zones))
            stock[m.name][start : start + n] = with_project(mu_sums[k][None] + err)
    return Simulation(
        rounds=tuple(m.name for m in maps),
        estimate=estimate,
        stock=stock,
        area_ha=np.append(all_counts, all_counts.sum()) * pixel_ha,
        coverage=coverage,
        mapped_area_ha=counts_p * pixel_ha,
    )


def zone_summary(sim: Simulation, zone: int, *, confidence: float) -> dict[str, object]:
    """Per-round stock and total, and change/tCO2e between first and last round, for one zone column."""
    area = float(sim.area_ha[zone])
    mapped = float(sim.mapped_area_ha[zone]) if sim.mapped_area_ha is not None else area
    out: dict[str, object] = {"mapped_area_ha": mapped, "total_area_ha": area, "rounds": {}}
    rounds: dict[str, object] = {}
    for r in sim.rounds:
        draws = sim.stock[r][:, zone]
        est = float(sim.estimate[r][zone])
        rounds[r] = {
            "soc_stock_t_ha": summarize(draws, est, confidence).to_dict(),
            "soc_total_t": summarize(draws * area, est * area, confidence).to_dict(),
        }
    out["rounds"] = rounds
    last = sim.rounds[-1]
    out["soc_stock_t_ha"] = rounds[last]["soc_stock_t_ha"]  # type: ignore[index]
    out["soc_total_t"] = rounds[last]["soc_total_t"]  # type: ignore[index]
    if len(sim.rounds) > 1:
        first = sim.rounds[0]
        d = sim.stock[last][:, zone] - sim.stock[first][:, zone]
        d_est = float(sim.estimate[last][zone] - sim.estimate[first][zone])
        out["change"] = {
            "from_round": first,
            "to_round": last,
            "delta_soc_stock_t_ha": summarize(d, d_est, confidence).to_dict(),
            "delta_soc_total_t": summarize(d * area, d_est * area, confidence).to_dict(),
            "co2e_t": summarize(d * area * CO2_PER_C, d_est * area * CO2_PER_C, confidence).to_dict(),
        }
    return out
