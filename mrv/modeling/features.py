"""Covariates at sample locations (nearest pixel of the covariate stack on the project grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "NORMALISATION",
    "ExactQuartiles",
    "apply_normalisation",
    "center_scale",
    "extract_at_points",
    "normalise_stack",
    "round_normalisation",
]


def extract_at_points(stack: xr.DataArray, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Covariate values at points given in the stack's CRS; NaN where the pixel has no composite.

    Points outside the grid get NaN too, never the edge pixel.
    """
    xs, ys = stack["x"].to_numpy(), stack["y"].to_numpy()
    res_x, res_y = abs(xs[1] - xs[0]), abs(ys[1] - ys[0])
    col = np.rint((np.asarray(x) - xs[0]) / res_x).astype(int)
    row = np.rint((ys[0] - np.asarray(y)) / res_y).astype(int)
    inside = (col >= 0) & (col < xs.size) & (row >= 0) & (row < ys.size)
    values = np.full((len(col), stack.sizes["covariate"]), np.nan, dtype="float32")
    if inside.any():
        picked = stack.isel(
            x=xr.DataArray(col[inside], dims="point"), y=xr.DataArray(row[inside], dims="point")
        ).transpose("point", "covariate")
        values[inside] = np.asarray(picked.values)
    return pd.DataFrame(values, columns=[str(c) for c in stack["covariate"].to_numpy()])


#: Version of the round normalisation (recorded in the model card).
NORMALISATION = "per-round robust z-score over field pixels: (x - median) / IQR"


def round_normalisation(stack: np.ndarray, names: list[str], mask: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per covariate ``(median, IQR)`` of one round's composite over the field pixels ``mask``.

    Dividing each round's covariates by their own spread after removing their own median makes the
    model's inputs invariant to whole-scene multiplicative or additive differences between rounds
    (illumination, atmosphere, residue or moisture on the dates that happened to be bare): a
    multiplicative factor ``B`` gives ``(B x - B med) / (B IQR) = (x - med) / IQR``. Such differences
    otherwise turn into SOC "change" in a model pooled over rounds. Round-invariant covariates
    (terrain) get identical statistics in every round, so they are unaffected. The genuine regional
    change in SOC is removed from the maps too, by design: it is estimated from the re-measured sites
    (:mod:`mrv.accounting.change`). Relative radiometric normalisation in the sense of Schott et al.
    (1988, Remote Sens. Environ. 26:1-16), applied to the covariates rather than the bands.
    """
    out: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(names):
        v = np.asarray(stack[i])[mask]
        v = v[np.isfinite(v)]
        quartiles = tuple(float(q) for q in np.percentile(v, QUARTILES_PCT)) if v.size >= MIN_PIXELS else None
        out[name] = center_scale(quartiles)
    return out


#: Percentiles behind the round normalisation: the median and the two quartiles of the IQR.
QUARTILES_PCT = (25, 50, 75)
#: Fewer finite field pixels than this: the covariate is left as it is (median 0, IQR 1).
MIN_PIXELS = 10


def center_scale(quartiles: tuple[float, ...] | None) -> tuple[float, float]:
    """``(median, IQR)`` from the ``(q25, q50, q75)`` of :data:`QUARTILES_PCT`; ``(0, 1)`` for None (too few
    pixels) and an IQR of 1 where it is (nearly) zero, so the normalisation never divides by zero."""
    if quartiles is None:
        return (0.0, 1.0)
    q25, q50, q75 = quartiles
    iqr = q75 - q25
    return (q50, iqr if iqr > 1e-12 else 1.0)


_HALF = 16  # bits of the 32-bit keys resolved per pass
_BINS = 1 << _HALF


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of the finite float32 ``values`` (-0.0 taken as +0.0)."""
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)] + np.float32(0.0)  # -0.0 + 0.0 = +0.0: one key for the two zeros
    u = v.view(np.uint32)
    return np.where(u >> 31 == 1, ~u, u | np.uint32(0x80000000))


def _key_value(key: int) -> np.float32:
    """The float32 of one :func:`_keys` key."""
    u = key ^ 0x80000000 if key & 0x80000000 else ~key & 0xFFFFFFFF
    return np.array([u], dtype=np.uint32).view(np.float32)[0]


class ExactQuartiles:
    """``numpy.percentile(v, [25, 50, 75])`` of float32 values ``v`` seen chunk by chunk, exactly, in O(1) memory.

    For covariates of regions too large to hold one band's field pixels (a 100 Mpx region). Radix selection
    on order-preserving 32-bit keys of the values, in two passes over the same chunks: :meth:`count` builds a
    histogram of the keys' high 16 bits, which locates the bins of the order statistics the percentiles need
    (ranks ``floor((n - 1) q)`` and the next, numpy's default ``linear`` method, Hyndman and Fan 1996 type 7);
    :meth:`refine` then histograms the low 16 bits inside those bins only, which pins each order statistic
    to one float32. :meth:`quartiles` interpolates between them with numpy itself (on a small array with the
    same order statistics and the same interpolation weight), so the result is bit for bit that of
    ``numpy.percentile`` on all the values. Non-finite values are left out, as in :func:`round_normalisation`;
    the two zeros are one value (numpy would return the sign of whichever it met).
    Memory: two 65,536-bin histograms, plus one per bin holding an order statistic (at most six).
    """

    def __init__(self) -> None:
        self._coarse = np.zeros(_BINS, dtype=np.int64)
        self._fine: dict[int, np.ndarray] = {}

    @property
    def n(self) -> int:
        """Finite values counted by :meth:`count`."""
        return int(self._coarse.sum())

    def count(self, values: np.ndarray) -> None:
        """First pass: add one chunk of values."""
        self._coarse += np.bincount(_keys(values) >> _HALF, minlength=_BINS)

    def _ranks(self) -> list[int]:
        n = self.n
        lows = [int(np.floor((n - 1) * (q / 100))) for q in QUARTILES_PCT]
        return sorted({r for lo in lows for r in (lo, min(lo + 1, n - 1))})

    def _bin_of(self, rank: int) -> tuple[int, int]:
        """(high-bits bin, rank inside the bin) of the value of 0-based ``rank``."""
        cum = np.cumsum(self._coarse)
        h = int(np.searchsorted(cum, rank, side="right"))
        return h, rank - (int(cum[h - 1]) if h else 0)

    def refine(self, values: np.ndarray) -> None:
        """Second pass (after every chunk went through :meth:`count`): add the same chunk again."""
        if self.n < MIN_PIXELS:
            return  # no percentiles to pin down (quartiles() is None)
        if not self._fine:
            self._fine = {h: np.zeros(_BINS, dtype=np.int64) for h, _ in map(self._bin_of, self._ranks())}
        keys = _keys(values)
        high = keys >> _HALF
        for h, hist in self._fine.items():
            hist += np.bincount(keys[high == h] & (_BINS - 1), minlength=_BINS)

    def _value(self, rank: int) -> np.float32:
        h, inside = self._bin_of(rank)
        low = int(np.searchsorted(np.cumsum(self._fine[h]), inside, side="right"))
        return _key_value((h << _HALF) | low)

    def quartiles(self) -> tuple[float, float, float] | None:
        """``(q25, q50, q75)`` as ``numpy.percentile`` gives them; None below :data:`MIN_PIXELS` values."""
        n = self.n
        if n < MIN_PIXELS:
            return None
        out = []
        for i, q in enumerate(QUARTILES_PCT):
            lo = int(np.floor((n - 1) * (q / 100)))
            pair = (self._value(lo), self._value(min(lo + 1, n - 1)))
            out.append(float(np.percentile(_same_weight(n, q, *pair), QUARTILES_PCT)[i]))
        return (out[0], out[1], out[2])


def _same_weight(n: int, q: int, lo: np.float32, hi: np.float32) -> np.ndarray:
    """A sorted float32 array whose ``q``-th percentile interpolates between ``lo`` and ``hi`` with the weight
    it has among ``n`` values: ``m - 1 = 4 + (n - 1) mod 4`` keeps the fractional part of ``(m - 1) q / 100``
    (``q`` a multiple of 25), and ``lo`` fills the ranks up to ``floor((m - 1) q / 100)``."""
    m = 5 + (n - 1) % 4
    k = int(np.floor((m - 1) * (q / 100)))
    out = np.full(m, hi, dtype=np.float32)
    out[: k + 1] = lo
    return out


def apply_normalisation(values: pd.DataFrame, stats: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Covariate table (columns = covariates) normalised with :func:`round_normalisation` statistics."""
    out = values.copy()
    for name, (center, scale) in stats.items():
        if name in out.columns:
            out[name] = ((out[name].astype("float64") - center) / scale).astype("float32")
    return out


def normalise_stack(stack: xr.DataArray, stats: dict[str, tuple[float, float]]) -> xr.DataArray:
    """``(covariate, y, x)`` stack normalised lazily (Dask-backed stays Dask-backed)."""
    names = [str(c) for c in stack["covariate"].to_numpy()]
    center = xr.DataArray(np.array([stats.get(n, (0.0, 1.0))[0] for n in names], "float32"), dims="covariate")
    scale = xr.DataArray(np.array([stats.get(n, (0.0, 1.0))[1] for n in names], "float32"), dims="covariate")
    return ((stack - center.assign_coords(covariate=stack["covariate"])) / scale.assign_coords(covariate=stack["covariate"])).astype("float32")
