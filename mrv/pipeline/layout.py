"""Where each artefact of a run lives inside its run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrv.modeling.model import OUTPUTS


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def work(self, round_name: str) -> Path:
        return self.root / "work" / round_name

    def covariates(self, round_name: str) -> Path:
        return self.work(round_name) / "covariates.tif"

    def imagery_tile(self, round_name: str, tile_name: str) -> Path:
        """One tile's covariates (and ``.json`` summary beside it), mosaicked into :meth:`covariates`."""
        return self.work(round_name) / "tiles" / f"{tile_name}.tif"

    def imagery_items(self, round_name: str, tile_name: str) -> Path:
        """The STAC items of one tile's search as fetched (live sources only; :mod:`mrv.imagery.provenance`)."""
        return self.work(round_name) / "tiles" / f"{tile_name}.items.json"

    def imagery_summary(self, round_name: str) -> Path:
        return self.work(round_name) / "imagery.json"

    def sites(self, round_name: str) -> Path:
        return self.work(round_name) / "sites.csv"

    def samples_summary(self, round_name: str) -> Path:
        return self.work(round_name) / "samples.json"

    def rejected(self, round_name: str) -> Path:
        return self.work(round_name) / "samples_rejected.csv"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def round_maps(self, round_name: str) -> dict[str, Path]:
        return {o: self.root / "maps" / round_name / f"soc_stock_{o}.tif" for o in OUTPUTS}

    def latest_maps(self) -> dict[str, Path]:
        return {o: self.root / "maps" / f"soc_stock_{o}.tif" for o in OUTPUTS}

    @property
    def accounting(self) -> Path:
        return self.root / "accounting.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"
