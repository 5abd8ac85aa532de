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

The Monte Carlo needs the maps only through sums (:class:`ZoneSums`): per (coarse cell, zone) the weighted sum of
sd, per zone the weighted sums of the mean, of the weights and of (w sd)^2. :class:`ZoneSumAccumulator` builds
them strip by strip (:func:`mrv.accounting.recompute.stream_zone_sums` reads the map files in strips), so memory
is bounded by a strip and the coarse grid, not the region; :func:`simulate_zone_means` is the same computation
on in-memory maps.
tCO2e = 44/12 x t C (IPCC 2006 GL Vol. 4 Ch. 2; ratio of molecular weights of CO2 and C).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from mrv.accounting.simulate import ExponentialGRF
from mrv.errors import AccountingError
from mrv.fields import FieldCoverage

__all__ = [
    "CO2_PER_C",
    "Interval",
    "RoundMaps",
    "Simulation",
    "ZoneSumAccumulator",
    "ZoneSums",
    "coarse_factor",
    "simulate_from_sums",
    "simulate_zone_means",
    "summarize",
    "zone_sums",
    "zone_summary",
]

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


def coarse_factor(pixel_m: float, range_m: float | None) -> int:
    """Pixels per side of the cells the correlated error field is drawn on: about range/5 (one pixel when
    independent)."""
    cell = pixel_m if range_m is None else max(pixel_m, range_m / 5.0)
    return max(1, int(round(cell / pixel_m)))


@dataclass(frozen=True, eq=False)
class ZoneSums:
    """What the Monte Carlo needs of every round's maps, summed per zone and per (coarse cell, zone).

    Pixel ``p`` of zone ``z`` counts with weight ``w_p`` (its fraction inside the field, or 1) where every round has a
    finite mean and sd ("mapped"). Per round ``k``: ``sd_cells[k][c, z]`` = sum of w sd over the mapped pixels of
    ``z`` in coarse cell ``c`` (``factor`` x ``factor`` pixels, row-major on ``coarse_shape``), ``mu_sum[k][z]`` = sum
    of w mu, ``sd2_sum[k][z]`` = sum of (w sd)^2. ``centre_sum``/``centre_count`` are the plain pixel-centre sums of
    the mean map (every pixel whose centre is in ``z`` and whose mean is finite, weight 1), for the design-based
    estimates' zone means.
    """

    rounds: tuple[str, ...]
    n_zones: int
    pixel_m: float
    factor: int
    coarse_shape: tuple[int, int]
    sd_cells: tuple[sparse.csr_matrix, ...]
    mu_sum: tuple[np.ndarray, ...]
    sd2_sum: tuple[np.ndarray, ...]
    weight_all: np.ndarray
    """Sum of weights over all the zone's pixels, mapped or not (x pixel area = the zone's area)."""
    weight_mapped: np.ndarray
    n_mapped: int
    """Pixel-zone pairs mapped in every round."""
    centre_sum: tuple[np.ndarray, ...]
    centre_count: tuple[np.ndarray, ...]

    def centre_means(self) -> dict[str, np.ndarray]:
        """Each round's mean of the mean map over the pixel centres of each zone (NaN for an unmapped zone)."""
        return {
            r: np.divide(s, c, out=np.full(self.n_zones, np.nan), where=c > 0)
            for r, s, c in zip(self.rounds, self.centre_sum, self.centre_count, strict=True)
        }


class ZoneSumAccumulator:
    """Builds :class:`ZoneSums` strip by strip (rows ``row0`` to ``row0 + height`` of the grid, full width).

    Strips of a multiple of ``factor`` rows keep each coarse cell in one strip, so what is kept between strips is
    the (cell, zone) sums only, never pixels.
    """

    def __init__(self, rounds: Sequence[str], n_zones: int, shape: tuple[int, int], *, pixel_m: float, factor: int):
        self.rounds, self.n_zones, self.shape = tuple(rounds), n_zones, shape
        self.pixel_m, self.factor = pixel_m, factor
        self.coarse_shape = (-(-shape[0] // factor), -(-shape[1] // factor))
        k = len(self.rounds)
        self._cells: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(k)]
        self._mu = [np.zeros(n_zones) for _ in range(k)]
        self._sd2 = [np.zeros(n_zones) for _ in range(k)]
        self._centre_sum = [np.zeros(n_zones) for _ in range(k)]
        self._centre_n = [np.zeros(n_zones) for _ in range(k)]
        self._w_all, self._w_mapped, self._n_mapped = np.zeros(n_zones), np.zeros(n_zones), 0

    def add(
        self,
        row0: int,
        entries: FieldCoverage,
        means: Sequence[np.ndarray],
        sds: Sequence[np.ndarray],
        centre: np.ndarray,
    ) -> None:
        """Add one strip: pixel-zone ``entries`` (rows relative to the strip), each round's ``mean``/``sd`` rows of
        the strip (t C/ha, NaN unknown) and the strip's pixel-centre zone raster (-1 outside every zone)."""
        n = self.n_zones
        rows, cols, z, wt = entries.row, entries.col, entries.zone, entries.fraction
        if (z >= n).any():
            keep = z < n
            rows, cols, z, wt = rows[keep], cols[keep], z[keep], wt[keep]
        self._w_all += np.bincount(z, weights=wt, minlength=n)
        ok = np.ones(rows.size, bool)
        for mean, sd in zip(means, sds, strict=True):
            ok &= np.isfinite(mean[rows, cols]) & np.isfinite(sd[rows, cols])
        if not ok.all():
            rows, cols, z, wt = rows[ok], cols[ok], z[ok], wt[ok]
        del ok
        self._n_mapped += int(rows.size)
        self._w_mapped += np.bincount(z, weights=wt, minlength=n)
        cell = ((row0 + rows) // self.factor) * self.coarse_shape[1] + cols // self.factor
        n_cells = self.coarse_shape[0] * self.coarse_shape[1]
        inside = centre >= 0
        for k, (mean, sd) in enumerate(zip(means, sds, strict=True)):
            mu, s = mean[rows, cols], sd[rows, cols]
            w = sparse.coo_matrix((wt * s, (cell, z)), shape=(n_cells, n)).tocsr().tocoo()  # duplicates summed
            self._cells[k].append((w.row.astype(np.int64), w.col.astype(np.int64), w.data))
            self._sd2[k] += np.bincount(z, weights=(wt * s) ** 2, minlength=n)
            self._mu[k] += np.bincount(z, weights=wt * mu, minlength=n)
            c_ok = inside & np.isfinite(mean)
            self._centre_sum[k] += np.bincount(centre[c_ok], weights=mean[c_ok], minlength=n)[:n]
            self._centre_n[k] += np.bincount(centre[c_ok], minlength=n)[:n]

    def result(self) -> ZoneSums:
        n_cells = self.coarse_shape[0] * self.coarse_shape[1]

        def matrix(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> sparse.csr_matrix:
            if not parts:
                return sparse.csr_matrix((n_cells, self.n_zones))
            r, c, v = (np.concatenate(x) for x in zip(*parts, strict=True))
            return sparse.coo_matrix((v, (r, c)), shape=(n_cells, self.n_zones)).tocsr()

        return ZoneSums(
            rounds=self.rounds, n_zones=self.n_zones, pixel_m=self.pixel_m, factor=self.factor,
            coarse_shape=self.coarse_shape, sd_cells=tuple(matrix(p) for p in self._cells), mu_sum=tuple(self._mu),
            sd2_sum=tuple(self._sd2), weight_all=self._w_all, weight_mapped=self._w_mapped, n_mapped=self._n_mapped,
            centre_sum=tuple(self._centre_sum), centre_count=tuple(self._centre_n),
        )  # fmt: skip


def _entries(zones: np.ndarray, n_zones: int) -> FieldCoverage:
    """Pixel-zone pairs of an in-memory zone raster: exact fractions when ``zones`` knows its fields
    (:class:`mrv.fields.ZoneRaster`), else weight 1 for every pixel whose centre lies in the zone."""
    coverage = getattr(zones, "coverage", None)
    if callable(coverage):
        cov: FieldCoverage = coverage()
        return cov
    rows, cols = np.nonzero(np.asarray(zones) >= 0)
    z = np.asarray(zones)[rows, cols].astype(np.int64)
    return FieldCoverage(row=rows, col=cols, zone=z, fraction=np.ones(rows.size), n_zones=n_zones)


def zone_sums(maps: Sequence[RoundMaps], zones: np.ndarray, n_zones: int, *, pixel_m: float, factor: int) -> ZoneSums:
    """:class:`ZoneSums` of in-memory maps: the whole grid as one strip."""
    shape = np.asarray(zones).shape
    acc = ZoneSumAccumulator([m.name for m in maps], n_zones, shape, pixel_m=pixel_m, factor=factor)
    acc.add(0, _entries(zones, n_zones), [m.mean for m in maps], [m.sd for m in maps], np.asarray(zones))
    return acc.result()


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
    """Monte Carlo draws of zone-mean stocks for every round (see the module docstring for z), from in-memory maps.

    ``zones`` is an int raster (-1 outside any zone). When it is a :class:`mrv.fields.ZoneRaster` each pixel
    counts with the exact fraction of it inside the field (pixel-fraction weights: a zone mean is
    sum(f_p mu_p) / sum(f_p) over its mapped pixels, its error sum(f_p sd_p z_p)), otherwise with 1 where its
    centre is inside. The same computation as the streamed one (:func:`mrv.accounting.recompute.stream_zone_sums`
    then :func:`simulate_from_sums`), over the grid as one strip.
    """
    sums = zone_sums(maps, zones, n_zones, pixel_m=pixel_m, factor=coarse_factor(pixel_m, range_m))
    return simulate_from_sums(
        sums, range_m=range_m, round_correlation=round_correlation, n_sim=n_sim, seed=seed, nugget_share=nugget_share
    )


def simulate_from_sums(
    sums: ZoneSums,
    *,
    range_m: float | None,
    round_correlation: float,
    n_sim: int,
    seed: int,
    nugget_share: float = 0.0,
) -> Simulation:
    """Monte Carlo draws of zone-mean stocks for every round from the zone sums of the maps.

    ``area_ha`` is the zone area from the weights (the polygon area for exact fractions, mapped or not), the area
    the totals use. ``range_m=None`` treats pixel errors as independent (only for comparison: it understates
    uncertainty). ``nugget_share`` in [0, 1] is the uncorrelated share of the error variance (a boundary pixel
    shared by two fields gets independent nugget draws in each, a negligible approximation).

    The correlated field g is drawn on the coarse cells and is constant within a cell, so a zone's error sum is
    sum_cells g_c * W[c, zone] (``sums.sd_cells``): no pixel-resolution field is ever built. The nugget part,
    independent between pixels, sums exactly to N(0, nu * sum_zone w^2 sd^2) per zone. Fields are drawn one (pair) at
    a time and projected on every round's W at once (W_k^T g_k = rho W_k^T g_(k-1) + sqrt(1 - rho^2) W_k^T h_k, h_k
    the fresh field of round k), so memory is one field, not a batch.
    """
    if not -1 <= round_correlation <= 1:
        raise AccountingError(f"round_error_correlation must be in [-1, 1], got {round_correlation}.")
    if not 0 <= nugget_share <= 1:
        raise AccountingError(f"The nugget share must be in [0, 1], got {nugget_share}; check the error variogram.")
    if sums.factor != coarse_factor(sums.pixel_m, range_m):
        raise AccountingError(
            f"The zone sums were accumulated on cells of {sums.factor} pixels, but an error range of {range_m} m needs "
            f"{coarse_factor(sums.pixel_m, range_m)}; accumulate them with coarse_factor(pixel_m, range_m)."
        )
    if sums.n_mapped == 0:
        raise AccountingError("No field pixel has a prediction; check that the maps overlap the fields.")
    n_zones = sums.n_zones
    counts = sums.weight_mapped
    coverage = np.divide(counts, sums.weight_all, out=np.zeros(n_zones), where=sums.weight_all > 0)
    counts_p = np.append(counts, counts.sum())
    pixel_ha = sums.pixel_m**2 / 10_000
    n_cells = sums.coarse_shape[0] * sums.coarse_shape[1]
    rng = np.random.default_rng(seed)
    grf = None
    if range_m is not None:
        grf = ExponentialGRF.build(sums.coarse_shape, cell_m=sums.factor * sums.pixel_m, range_m=range_m)

    def fresh(n: int) -> Iterator[np.ndarray]:
        """The ``n`` unit fields of one round and batch, flat over the cells, in the order the generator draws them."""
        if grf is None:
            for _ in range(n):
                yield rng.standard_normal(n_cells)
            return
        for a, b in grf.pairs(n, rng):
            yield a.reshape(n_cells)
            if b is not None:
                yield b.reshape(n_cells)

    def with_project(s: np.ndarray) -> np.ndarray:
        """(n, n_zones) sums -> (n, n_zones + 1) means, the last column being all zones together."""
        s = np.column_stack([s, s.sum(axis=1)])
        return np.divide(s, counts_p, out=np.full_like(s, np.nan), where=counts_p > 0)

    k_rounds = len(sums.rounds)
    w_t = [w.T.tocsr() for w in sums.sd_cells]  # (n_zones, n_cells)
    nugget_sd = [np.sqrt(nugget_share * s2) for s2 in sums.sd2_sum]
    estimate = {r: with_project(mu[None])[0] for r, mu in zip(sums.rounds, sums.mu_sum, strict=True)}
    stock = {r: np.empty((n_sim, n_zones + 1)) for r in sums.rounds}
    keep = np.sqrt(1 - round_correlation**2)
    for start in range(0, n_sim, _BATCH):
        n = min(_BATCH, n_sim - start)
        # proj[k] = W_k^T g_j for the latest round j drawn, for every round k >= j
        proj = [np.zeros((n, n_zones)) for _ in range(k_rounds)]
        for j, name in enumerate(sums.rounds):
            for i, h in enumerate(fresh(n)):
                for k in range(j, k_rounds):
                    p = w_t[k] @ h
                    proj[k][i] = p if j == 0 else round_correlation * proj[k][i] + keep * p
            err = np.sqrt(1 - nugget_share) * proj[j]
            if nugget_share > 0:
                err = err + nugget_sd[j] * rng.standard_normal((n, n_zones))
            stock[name][start : start + n] = with_project(sums.mu_sum[j][None] + err)
    return Simulation(
        rounds=sums.rounds,
        estimate=estimate,
        stock=stock,
        area_ha=np.append(sums.weight_all, sums.weight_all.sum()) * pixel_ha,
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
