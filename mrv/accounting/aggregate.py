"""Field and project SOC stocks, totals and change with Monte Carlo intervals.

Pixel prediction errors are spatially correlated; treating pixels as independent makes the
uncertainty of an areal mean shrink like 1/sqrt(n_pixels), which is absurdly narrow. Following
Wadoux & Heuvelink (2023, Geoderma 437:116588) and Verra VT0014 Appendix 6, each simulation draws
an error field e = sd(x) * z(x) with z a unit Gaussian random field of exponential correlation
(range ``range_m``) and aggregates mean + e over each field. A second round reuses z with
correlation ``round_correlation`` so the change is drawn jointly.
tCO2e = 44/12 x t C (IPCC 2006 GL Vol. 4 Ch. 2; ratio of molecular weights of CO2 and C).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mrv.accounting.simulate import exponential_grf
from mrv.errors import AccountingError

CO2_PER_C = 44.0 / 12.0


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
    """Fraction of each zone's pixels with a prediction in every round."""


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
) -> Simulation:
    """Monte Carlo draws of zone-mean stocks for every round.

    ``zones`` is an int raster (-1 outside any zone). ``range_m=None`` treats pixel errors as
    independent (only for comparison: it understates uncertainty).
    """
    if not -1 <= round_correlation <= 1:
        raise AccountingError(f"round_error_correlation must be in [-1, 1], got {round_correlation}.")
    valid = np.ones(zones.shape, bool)
    for m in maps:
        valid &= np.isfinite(m.mean) & np.isfinite(m.sd)
    inzone = (zones >= 0) & valid
    if not inzone.any():
        raise AccountingError("No field pixel has a prediction; check that the maps overlap the fields.")
    # Project = an extra zone containing every field pixel.
    z_idx = zones[inzone]
    counts = np.bincount(z_idx, minlength=n_zones).astype(float)
    all_counts = np.bincount(zones[zones >= 0], minlength=n_zones).astype(float)
    coverage = np.divide(counts, all_counts, out=np.zeros(n_zones), where=all_counts > 0)
    counts_p = np.append(counts, counts.sum())
    pixel_ha = pixel_m**2 / 10_000

    rng = np.random.default_rng(seed)
    cell = pixel_m if range_m is None else max(pixel_m, range_m / 5.0)
    factor = max(1, int(round(cell / pixel_m)))
    coarse = (-(-zones.shape[0] // factor), -(-zones.shape[1] // factor))

    def draw_z(n: int) -> np.ndarray:
        if range_m is None:
            return rng.standard_normal((n, int(inzone.sum())))
        g = exponential_grf(coarse, cell_m=factor * pixel_m, range_m=range_m, n=n, rng=rng)
        full = np.repeat(np.repeat(g, factor, axis=1), factor, axis=2)[:, : zones.shape[0], : zones.shape[1]]
        return full[:, inzone]

    def zone_means(values: np.ndarray) -> np.ndarray:
        """values: (n, n_pixels_inzone) -> (n, n_zones + 1) means."""
        sums = np.stack([np.bincount(z_idx, weights=v, minlength=n_zones) for v in values])
        sums = np.column_stack([sums, sums.sum(axis=1)])
        return np.divide(sums, counts_p, out=np.full_like(sums, np.nan), where=counts_p > 0)

    estimate, stock = {}, {}
    z_prev: np.ndarray | None = None
    for m in maps:
        z = draw_z(n_sim)
        if z_prev is not None:
            z = round_correlation * z_prev + np.sqrt(1 - round_correlation**2) * z
        z_prev = z
        mu, sd = m.mean[inzone], m.sd[inzone]
        estimate[m.name] = zone_means(mu[None])[0]
        stock[m.name] = zone_means(mu[None] + sd[None] * z)
    return Simulation(
        rounds=tuple(m.name for m in maps),
        estimate=estimate,
        stock=stock,
        area_ha=counts_p * pixel_ha,
        coverage=coverage,
    )


def zone_summary(sim: Simulation, zone: int, *, confidence: float) -> dict[str, object]:
    """Per-round stock and total, and change/tCO2e between first and last round, for one zone column."""
    area = float(sim.area_ha[zone])
    out: dict[str, object] = {"mapped_area_ha": area, "rounds": {}}
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
