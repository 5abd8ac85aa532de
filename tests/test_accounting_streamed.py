"""Accounting streamed strip by strip (issue 19.3): the same sums and the same Monte Carlo as the whole-grid arrays.

The references here are written out independently of :mod:`mrv.accounting.aggregate`: dense numpy sums over the
whole grid, and the whole-array Monte Carlo of the accounting stage before streaming (every field pixel's index
and weight held at once, a batch of correlated fields per round), with the GRF generator of that version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import sparse
from shapely import affinity
from shapely.geometry import Polygon, box

from mrv.accounting.aggregate import coarse_factor, simulate_zone_means, zone_summary
from mrv.accounting.recompute import AccountingSettings, compute_accounting, stream_zone_sums, strip_rows
from mrv.accounting.simulate import exponential_grf
from mrv.fields import Field, field_coverage, field_index_at, field_index_raster, fields_bounds, read_fields
from mrv.grid import Grid

REPO = Path(__file__).resolve().parents[1]
DEMO_FIELDS = REPO / "sample_data" / "demo" / "fields.geojson"
UTM = "EPSG:32633"


def _write_map(path: Path, data: np.ndarray, grid: Grid) -> Path:
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "float32",
        "nodata": float("nan"), "crs": CRS.from_user_input(grid.crs), "transform": grid.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("float32"), 1)
    return path


def _smooth(grid: Grid, rng: np.random.Generator, base: float, amp: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : grid.height, 0 : grid.width] / max(grid.shape)
    a, b, c = rng.uniform(2, 9, 3)
    return base + amp * (np.sin(a * xx + c) * np.cos(b * yy) + 0.1 * rng.standard_normal(grid.shape))


def _maps(grid: Grid, tmp: Path, rounds: Sequence[str], seed: int) -> dict[str, dict[str, Path]]:
    """Mean and sd GeoTIFFs (t C/ha) per round, with NaN holes (a different one per round, and in sd only)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, r in enumerate(rounds):
        mean = _smooth(grid, rng, 45.0 + k, 8.0)
        sd = np.abs(_smooth(grid, rng, 5.0, 1.5)) + 0.5
        h, w = grid.shape
        mean[h // 3 + k : h // 3 + k + h // 10, w // 4 : w // 2] = np.nan
        sd[2 * h // 3 : 2 * h // 3 + 3, w // 3 + 5 * k : w // 3 + 5 * k + w // 5] = np.nan
        out[r] = {
            "mean": _write_map(tmp / f"mean_{r}.tif", mean, grid),
            "sd": _write_map(tmp / f"sd_{r}.tif", sd, grid),
        }
    return out


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read(1, masked=True).astype("float32").filled(np.nan))


def _random_fields(grid: Grid, n: int, seed: int) -> tuple[Field, ...]:
    """Rotated rectangles, one with a hole, some overlapping each other and the grid's edge."""
    rng = np.random.default_rng(seed)
    left, bottom, right, top = grid.bounds
    out = []
    for i in range(n):
        cx, cy = rng.uniform(left, right), rng.uniform(bottom, top)
        w, h = rng.uniform(40, 260, 2)
        poly = affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), rng.uniform(0, 90))
        if i == 0:
            poly = Polygon(poly.exterior, [box(cx - w / 8, cy - h / 8, cx + w / 8, cy + h / 8).exterior.coords])
        out.append(Field(f"f{i}", {}, poly))
    return tuple(out)


def test_streamed_sums_equal_whole_grid_sums(tmp_path: Path) -> None:
    """Every sum the Monte Carlo uses, accumulated over strips of 6 rows, against dense whole-grid numpy sums."""
    grid = Grid(crs=UTM, bounds=(600_000.0, 5_360_000.0, 600_830.0, 5_360_610.0), resolution_m=10.0)  # 61 x 83
    fields = _random_fields(grid, 9, seed=3)
    paths = _maps(grid, tmp_path, ["2021", "2024"], seed=1)
    range_m = 150.0
    f = coarse_factor(grid.resolution_m, range_m)
    assert f == 3
    sums = stream_zone_sums(fields, paths, grid, range_m=range_m, strip_px=6 * grid.width)
    assert strip_rows(grid, f, strip_px=6 * grid.width) == 6  # 11 strips, the last one partial

    n, (h, w) = len(fields), grid.shape
    cov = field_coverage(fields, grid)  # the whole grid as one window
    frac = np.zeros((n, h, w))
    np.add.at(frac, (cov.zone, cov.row, cov.col), cov.fraction)
    maps = {r: (_read(p["mean"]), _read(p["sd"])) for r, p in paths.items()}
    mapped = np.logical_and.reduce([np.isfinite(m) & np.isfinite(s) for m, s in maps.values()])
    np.testing.assert_allclose(sums.weight_all, frac.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(sums.weight_mapped, (frac * mapped).sum(axis=(1, 2)), rtol=1e-12)
    assert sums.n_mapped == int(((frac > 0) & mapped).sum())
    centre = rasterize(((fl.geometry, i) for i, fl in enumerate(fields)), out_shape=grid.shape,
                       transform=grid.transform, fill=-1, dtype="int32")  # fmt: skip
    cells = (np.arange(h)[:, None] // f) * (-(-w // f)) + np.arange(w)[None, :] // f
    for k, (mean, sd) in enumerate(maps.values()):
        fw = frac * mapped
        mu, s = np.where(mapped, mean, 0.0), np.where(mapped, sd, 0.0)
        np.testing.assert_allclose(sums.mu_sum[k], (fw * mu).sum(axis=(1, 2)), rtol=1e-12)
        np.testing.assert_allclose(sums.sd2_sum[k], ((fw * s) ** 2).sum(axis=(1, 2)), rtol=1e-12)
        dense = np.zeros((sums.coarse_shape[0] * sums.coarse_shape[1], n))
        for z in range(n):
            np.add.at(dense[:, z], cells.ravel(), (fw[z] * s).ravel())
        np.testing.assert_allclose(sums.sd_cells[k].toarray(), dense, rtol=1e-12, atol=1e-12)
        ok = (centre >= 0) & np.isfinite(mean)
        want = [
            mean[ok & (centre == z)].astype(float).mean() if (ok & (centre == z)).any() else np.nan for z in range(n)
        ]
        np.testing.assert_allclose(sums.centre_means()[sums.rounds[k]], want, rtol=1e-12)


def test_coverage_and_index_raster_of_strips_are_those_of_the_whole_grid() -> None:
    grid = Grid(crs=UTM, bounds=(600_000.0, 5_360_000.0, 600_830.0, 5_360_610.0), resolution_m=10.0)
    fields = _random_fields(grid, 9, seed=5)
    whole = field_coverage(fields, grid)
    index = np.asarray(field_index_raster(fields, grid))
    parts, rows = [], []
    for r0 in range(0, grid.height, 7):
        hh = min(7, grid.height - r0)
        win = grid.window(r0, 0, hh, grid.width)
        c = field_coverage(fields, win)
        parts.append(np.column_stack([c.zone, c.row + r0, c.col, c.fraction]))
        rows.append(np.asarray(field_index_raster(fields, win)))
    strips = np.concatenate(parts)

    def ordered(a: np.ndarray) -> np.ndarray:
        return a[np.lexsort((a[:, 2], a[:, 1], a[:, 0]))]

    got, want = ordered(strips), ordered(np.column_stack([whole.zone, whole.row, whole.col, whole.fraction]))
    np.testing.assert_array_equal(got[:, :3], want[:, :3])
    np.testing.assert_allclose(got[:, 3], want[:, 3], rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate(rows), index)
    rr, cc = np.array([0, 5, 30, 60, -1, 61]), np.array([0, 40, 41, 82, 3, 3])
    at = field_index_at(fields, grid, rr, cc)
    assert at[:4].tolist() == index[rr[:4], cc[:4]].tolist()
    assert at[4:].tolist() == [-1, -1]


def test_strip_height_comes_from_a_pixel_budget() -> None:
    wide = Grid(crs=UTM, bounds=(0.0, 0.0, 100_000.0, 20_000.0), resolution_m=10.0)  # 10000 px wide
    assert strip_rows(wide, 6) == 96  # 1 Mpx / 10000 px = 100 rows, down to a multiple of 6
    assert strip_rows(wide, 6, strip_px=4_000_000) == 396
    assert strip_rows(wide, 6, strip_px=1_000) == 6  # never less than one coarse cell
    narrow = Grid(crs=UTM, bounds=(0.0, 0.0, 5_000.0, 5_000.0), resolution_m=10.0)
    assert strip_rows(narrow, 1) == 2_000  # more rows than the 500-row grid: one strip


# --- the whole-array Monte Carlo of the accounting stage before streaming (reference) -------------------------


def _reference_grf(
    shape: tuple[int, int], cell_m: float, range_m: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    ny, nx = shape
    py, px = 2 * ny, 2 * nx
    dy = np.minimum(np.arange(py), py - np.arange(py)) * cell_m
    dx = np.minimum(np.arange(px), px - np.arange(px)) * cell_m
    eig = np.clip(np.fft.fft2(np.exp(-np.hypot(dy[:, None], dx[None, :]) / range_m)).real, 0.0, None)
    sqrt_eig = np.sqrt(eig / (py * px))
    out = np.empty((n, ny, nx))
    for k in range(0, n, 2):
        f = np.fft.fft2(sqrt_eig * (rng.standard_normal((py, px)) + 1j * rng.standard_normal((py, px))))
        out[k] = f.real[:ny, :nx]
        if k + 1 < n:
            out[k + 1] = f.imag[:ny, :nx]
    return out / np.sqrt(eig.sum() / (py * px))


def _reference_simulation(
    means: list[np.ndarray],
    sds: list[np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray,
    z: np.ndarray,
    wt: np.ndarray,
    n_zones: int,
    shape: tuple[int, int],
    *,
    pixel_m: float,
    range_m: float,
    rho: float,
    n_sim: int,
    seed: int,
    nu: float,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(area weights, estimate per round, draws per round) as the accounting computed them on whole arrays."""
    all_counts = np.bincount(z, weights=wt, minlength=n_zones)
    ok = np.logical_and.reduce(
        [np.isfinite(m[rows, cols]) & np.isfinite(s[rows, cols]) for m, s in zip(means, sds, strict=True)]
    )
    rows, cols, z, wt = rows[ok], cols[ok], z[ok], wt[ok]
    counts_p = np.append(c := np.bincount(z, weights=wt, minlength=n_zones), c.sum())
    rng = np.random.default_rng(seed)
    factor = max(1, int(round(max(pixel_m, range_m / 5.0) / pixel_m)))
    coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
    cell_idx, n_cells = (rows // factor) * coarse[1] + cols // factor, coarse[0] * coarse[1]

    def means_of(sums: np.ndarray) -> np.ndarray:
        sums = np.column_stack([sums, sums.sum(axis=1)])
        return np.divide(sums, counts_p, out=np.full_like(sums, np.nan), where=counts_p > 0)

    ws, nug, mus = [], [], []
    for m, s in zip(means, sds, strict=True):
        mu, sd = m[rows, cols], s[rows, cols]
        ws.append(sparse.coo_matrix((wt * sd, (cell_idx, z)), shape=(n_cells, n_zones)).tocsr())
        nug.append(np.sqrt(nu * np.bincount(z, weights=(wt * sd) ** 2, minlength=n_zones)))
        mus.append(np.bincount(z, weights=wt * mu, minlength=n_zones))
    draws = [np.empty((n_sim, n_zones + 1)) for _ in means]
    for start in range(0, n_sim, 50):
        n, g_prev = min(50, n_sim - start), None
        for k in range(len(means)):
            g = _reference_grf(coarse, factor * pixel_m, range_m, n, rng).reshape(n, n_cells)
            if g_prev is not None:
                g = rho * g_prev + np.sqrt(1 - rho**2) * g
            g_prev = g
            err = np.sqrt(1 - nu) * np.asarray(ws[k].T @ g.T).T
            if nu > 0:
                err = err + nug[k] * rng.standard_normal((n, n_zones))
            draws[k][start : start + n] = means_of(mus[k][None] + err)
    return all_counts, [means_of(mu[None])[0] for mu in mus], draws


@pytest.mark.parametrize("noise_block", [1 << 20, 100])
def test_grf_drawn_pair_by_pair_equals_the_batch_draw(monkeypatch: pytest.MonkeyPatch, noise_block: int) -> None:
    """Bit for bit the fields of one batch draw, also when the white noise is drawn a row (of 82 values) at a time."""
    from mrv.accounting import simulate

    monkeypatch.setattr(simulate, "_NOISE_BLOCK", noise_block)
    for shape, n in (((30, 41), 5), ((16, 16), 4), ((9, 17), 1)):
        want = _reference_grf(shape, 60.0, 300.0, n, np.random.default_rng(2))
        got = exponential_grf(shape, cell_m=60.0, range_m=300.0, n=n, rng=np.random.default_rng(2))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("rho", "nu"), [(0.6, 0.25), (1.0, 0.0)])
def test_streamed_accounting_equals_the_whole_array_monte_carlo_on_the_demo_fields(
    tmp_path: Path, rho: float, nu: float
) -> None:
    """The 36 demo fields on their 10 m grid, two rounds of generated maps read in strips of 36 rows: every field's and
    the project's stock, total, change and t CO2e agree with the whole-array computation to 1e-9 (relative)."""
    fields = read_fields(DEMO_FIELDS, crs=UTM)
    grid = Grid.covering(fields_bounds(fields), crs=UTM, resolution_m=10.0, buffer_m=50.0)
    paths = _maps(grid, tmp_path, ["2021", "2024"], seed=7)
    settings = AccountingSettings(n_simulations=120, seed=3, confidence=0.9, range_m=300.0, nugget_share=nu,
                                  round_correlation=rho)  # fmt: skip
    sums = stream_zone_sums(fields, paths, grid, range_m=300.0, strip_px=36 * grid.width)
    project, out_fields = compute_accounting(fields, sums, settings=settings)

    cov = field_coverage(fields, grid)
    means = [_read(p["mean"]) for p in paths.values()]
    sds = [_read(p["sd"]) for p in paths.values()]
    n = len(fields)
    all_w, est, draws = _reference_simulation(
        means, sds, cov.row, cov.col, cov.zone, cov.fraction, n, grid.shape, pixel_m=10.0, range_m=300.0, rho=rho,
        n_sim=120, seed=3, nu=nu,
    )  # fmt: skip
    area = np.append(all_w, all_w.sum()) * grid.pixel_area_ha
    for zone, got in [*enumerate(out_fields), (n, project)]:
        for k, r in enumerate(("2021", "2024")):
            s = got["rounds"][r]["soc_stock_t_ha"]
            d = draws[k][:, zone]
            assert s["mean"] == pytest.approx(est[k][zone], rel=1e-9)
            assert s["sd"] == pytest.approx(np.std(d, ddof=1), rel=1e-9)
            assert [s["lower_90"], s["upper_90"]] == pytest.approx(np.quantile(d, [0.05, 0.95]).tolist(), rel=1e-9)
            assert got["rounds"][r]["soc_total_t"]["mean"] == pytest.approx(est[k][zone] * area[zone], rel=1e-9)
        dd = (draws[1][:, zone] - draws[0][:, zone]) * area[zone] * 44 / 12
        co2 = got["change"]["co2e_t"]
        assert [co2["lower_90"], co2["upper_90"]] == pytest.approx(np.quantile(dd, [0.05, 0.95]).tolist(), rel=1e-9)
        assert co2["sd"] == pytest.approx(np.std(dd, ddof=1), rel=1e-9)
    # the in-memory entry point is the same computation over one strip
    zones = field_index_raster(fields, grid)
    from mrv.accounting.aggregate import RoundMaps

    sim = simulate_zone_means(
        [RoundMaps(r, m, s) for r, m, s in zip(paths, means, sds, strict=True)], zones, n, pixel_m=10.0, range_m=300.0,
        round_correlation=rho, n_sim=120, seed=3, nugget_share=nu,
    )  # fmt: skip
    whole = zone_summary(sim, n, confidence=0.9)
    assert whole["soc_total_t"]["lower_90"] == pytest.approx(project["soc_total_t"]["lower_90"], rel=1e-9)
