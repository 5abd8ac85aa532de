"""Gaussian random fields with exponential correlation, for Monte Carlo error simulation.

Circulant embedding (Dietrich & Newsam 1997, SIAM J. Sci. Comput. 18:1088-1107; Wood & Chan 1994):
the covariance on a periodic grid twice the size of the target is diagonalised by the 2-D FFT, so
a complex white-noise FFT gives two independent fields (real and imaginary parts). Negative
eigenvalues from the embedding are clipped to zero and the variance is rescaled to exactly 1.

:class:`ExponentialGRF` computes the spectrum once and draws the fields one pair at a time, so memory is
one embedding grid (complex, 4 x the target's cells) whatever the number of fields;
:func:`exponential_grf` stacks its fields and draws the same numbers from the same generator state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["ExponentialGRF", "exponential_grf"]

#: Normal deviates drawn at once when filling a noise grid (bounds the temporary, not the numbers drawn).
_NOISE_BLOCK = 1 << 20


@dataclass(frozen=True, eq=False)
class ExponentialGRF:
    """Unit-variance fields of correlation exp(-h / range_m) on a ``shape`` grid of ``cell_m`` cells."""

    shape: tuple[int, int]
    """``(ny, nx)`` cells of the fields."""
    sqrt_eig: np.ndarray
    """Square roots of the clipped eigenvalues of the embedding (``(2 ny, 2 nx)``), divided by its cell count."""
    scale: float
    """The fields' standard deviation before rescaling (1 without clipped eigenvalues)."""

    @classmethod
    def build(cls, shape: tuple[int, int], *, cell_m: float, range_m: float) -> ExponentialGRF:
        ny, nx = shape
        py, px = 2 * ny, 2 * nx
        dy = np.minimum(np.arange(py), py - np.arange(py)) * cell_m
        dx = np.minimum(np.arange(px), px - np.arange(px)) * cell_m
        # exp(-h / range_m) built in the real part of the FFT's own buffer (the FFT of a real array equals that of
        # the complex array with zero imaginary part): peak memory 3 embedding grids of float64, not 5.
        spec = np.zeros((py, px), dtype=np.complex128)
        cov = spec.real
        np.hypot(dy[:, None], dx[None, :], out=cov)
        np.divide(cov, -range_m, out=cov)
        np.exp(cov, out=cov)
        eig = np.clip(np.fft.fft2(spec, out=spec).real, 0.0, None)
        del spec, cov
        # Each field's variance is sum(eig) / (py * px) = cov(0) = 1 without clipping; clipping negative
        # eigenvalues raises it slightly. Rescale by the exact value (deterministic, valid for any n).
        scale = float(np.sqrt(eig.sum() / (py * px)))
        np.divide(eig, py * px, out=eig)
        return cls(shape=(ny, nx), sqrt_eig=np.sqrt(eig, out=eig), scale=scale)

    def pairs(self, n: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``n`` fields as ``(ny, nx)`` arrays, two per complex draw (the second ``None`` for the last of an odd ``n``).

        Draws lazily from ``rng``: consume every pair before drawing anything else from it. The white noise is drawn in
        blocks of rows (the same numbers, in the same order, as one draw of the whole grid) and the FFT is done in
        place: memory is the spectrum and one complex grid.
        """
        ny, nx = self.shape
        py, px = self.sqrt_eig.shape
        rows = max(1, _NOISE_BLOCK // px)
        for k in range(0, n, 2):
            w = np.empty((py, px), dtype=np.complex128)
            for part in (w.real, w.imag):  # sqrt_eig * (a + i b): the same values as the complex product
                for r0 in range(0, py, rows):
                    block = rng.standard_normal((min(rows, py - r0), px))
                    np.multiply(block, self.sqrt_eig[r0 : r0 + rows], out=part[r0 : r0 + rows])
            np.fft.fft2(w, out=w)
            yield w.real[:ny, :nx] / self.scale, (w.imag[:ny, :nx] / self.scale if k + 1 < n else None)
            del w


def exponential_grf(
    shape: tuple[int, int], *, cell_m: float, range_m: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` standard-normal fields of ``shape`` with correlation exp(-h / range_m); ``(n, ny, nx)``."""
    out = np.empty((n, *shape))
    grf = ExponentialGRF.build(shape, cell_m=cell_m, range_m=range_m)
    for k, (a, b) in enumerate(grf.pairs(n, rng)):
        out[2 * k] = a
        if b is not None:
            out[2 * k + 1] = b
    return out
