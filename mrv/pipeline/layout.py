"""Where each artefact of a run lives inside its run directory: the only place run-directory names are spelled.

Every cached step writes into its own **content-keyed directory**, named after the step's key
(:mod:`mrv.pipeline.cache`), and never into a directory another key owns::

    <run>/work/<round>/samples-<key>/       sites.csv, samples_rejected.csv, samples.json, step.json
    <run>/work/<round>/tiles/<tile>-<key>/  tile.tif, tile.json, [items.json], step.json
    <run>/work/<round>/imagery-<key>/       covariates.tif, imagery.json, covariate_norm.json, step.json
    <run>/work/model-<key>/                 model_card.json, model.pkl, features.csv, cv_predictions.csv, step.json
    <run>/maps/<round>/maps-<key>/          soc_stock_{mean,p05,p50,p95,sd,width90}.tif, step.json
    <run>/work/accounting-<key>/            accounting.json, step.json

A directory, once complete, is never written again: a re-run with other inputs writes a new one
beside it, so a ``report.json`` kept from an earlier run still points at the files it cites. Each
step's **current** directory is named by a small pointer file beside it (``<slug>.current``),
written last, atomically; the report step gathers all pointers into ``index.json`` at the run root
for users and verifiers. The run root itself holds the entry points rebuilt by every run
(``report.json``, ``report.html``, ``report/``, ``figures/``, ``index.json``, ``manifest.json``).

A layout can **place** a step elsewhere (:meth:`RunLayout.placed`): the cache writes a step into a
staging directory that is renamed to the keyed one when complete, and ``mrv report verify``
re-derives a step into scratch while reading every other step from the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from mrv.errors import MRVError

__all__ = [
    "MAP_LAYERS",
    "POINTER_SUFFIX",
    "STEP_RECORD",
    "RunLayout",
    "StepPlace",
]

#: The map layers of a round, in band-file order: the model's outputs (``mrv.modeling.model.OUTPUTS``) and the
#: width of the 90 % interval (p95 - p05).
MAP_LAYERS = ("mean", "p05", "p50", "p95", "sd", "width90")
#: The step record inside every keyed directory (key, inputs, config, output hashes).
STEP_RECORD = "step.json"
POINTER_SUFFIX = ".current"
#: The run's reference to its model in the registry (:func:`mrv.modeling.registry.write_reference`).
MODEL_REF = "model_ref.json"
#: Where the report step writes what every run rebuilds (relative to the run root).
REPORT_JSON = "report.json"
INDEX_JSON = "index.json"


@dataclass(frozen=True)
class StepPlace:
    """A step of a run: its ``slug`` (directory prefix) and, for per-round steps, the round and tile."""

    slug: str
    """``samples``, ``tile``, ``imagery``, ``model``, ``maps`` or ``accounting``."""
    round: str | None = None
    tile: str | None = None

    @property
    def label(self) -> str:
        parts = [p for p in (self.round, self.tile) if p]
        return f"{self.slug}[{'/'.join(parts)}]" if parts else self.slug


@dataclass(frozen=True)
class RunLayout:
    root: Path
    placed_at: Mapping[StepPlace, Path] = field(default_factory=lambda: MappingProxyType({}))
    """Steps placed in a directory other than their current keyed one (staging, verification scratch)."""

    # ------------------------------------------------------------------ keyed step directories

    def base(self, place: StepPlace) -> Path:
        """The directory holding a step's keyed directories and its pointer."""
        if place.slug == "maps":
            return self.root / "maps" / str(place.round)
        if place.slug == "tile":
            return self.root / "work" / str(place.round) / "tiles"
        if place.round is None:
            return self.root / "work"
        return self.root / "work" / place.round

    def _prefix(self, place: StepPlace) -> str:
        return str(place.tile) if place.slug == "tile" else place.slug

    def keyed_dir(self, place: StepPlace, digest: str) -> Path:
        """The directory a step with key ``digest`` owns (16 hex digits of the key name it)."""
        return self.base(place) / f"{self._prefix(place)}-{digest[:16]}"

    def pointer(self, place: StepPlace) -> Path:
        return self.base(place) / f"{self._prefix(place)}{POINTER_SUFFIX}"

    def step_dir(self, place: StepPlace) -> Path:
        """The step's directory: where it is placed, else the current keyed directory its pointer names."""
        placed = self.placed_at.get(place)
        if placed is not None:
            return placed
        pointer = self.pointer(place)
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise MRVError(
                f"Step {place.label} has not finished in {self.root} (no {pointer.relative_to(self.root)}); "
                "run the pipeline (mrv run CONFIG) so that it writes its outputs."
            ) from None
        if not name or "/" in name or name.startswith("."):
            raise MRVError(f"{pointer} does not name a step directory ({name!r}); re-run the pipeline to rewrite it.")
        return self.base(place) / name

    def placed(self, place: StepPlace, directory: Path) -> RunLayout:
        """This layout with ``place`` in ``directory`` (every other step where it was)."""
        return replace(self, placed_at=MappingProxyType({**self.placed_at, place: Path(directory)}))

    def step_record(self, place: StepPlace) -> Path:
        return self.step_dir(place) / STEP_RECORD

    # ------------------------------------------------------------------ the artefacts, by step

    def work(self, round_name: str) -> Path:
        """A round's working directory (keyed step directories and caches beside them)."""
        return self.root / "work" / round_name

    def covariates(self, round_name: str) -> Path:
        return self.step_dir(StepPlace("imagery", round_name)) / "covariates.tif"

    def imagery_summary(self, round_name: str) -> Path:
        return self.step_dir(StepPlace("imagery", round_name)) / "imagery.json"

    def covariate_norm(self, round_name: str) -> Path:
        """Per-covariate (median, IQR) over the field pixels of the round's composite (round normalisation)."""
        return self.step_dir(StepPlace("imagery", round_name)) / "covariate_norm.json"

    def imagery_tile(self, round_name: str, tile_name: str) -> Path:
        """One tile's covariates (and ``tile.json`` summary beside it), mosaicked into :meth:`covariates`."""
        return self.step_dir(StepPlace("tile", round_name, tile_name)) / "tile.tif"

    def imagery_tile_summary(self, round_name: str, tile_name: str) -> Path:
        return self.step_dir(StepPlace("tile", round_name, tile_name)) / "tile.json"

    def imagery_items(self, round_name: str, tile_name: str) -> Path:
        """The STAC items of one tile's search as fetched (live sources only; :mod:`mrv.imagery.provenance`)."""
        return self.step_dir(StepPlace("tile", round_name, tile_name)) / "items.json"

    def sites(self, round_name: str) -> Path:
        return self.step_dir(StepPlace("samples", round_name)) / "sites.csv"

    def samples_summary(self, round_name: str) -> Path:
        return self.step_dir(StepPlace("samples", round_name)) / "samples.json"

    def rejected(self, round_name: str) -> Path:
        return self.step_dir(StepPlace("samples", round_name)) / "samples_rejected.csv"

    @property
    def model_dir(self) -> Path:
        return self.step_dir(StepPlace("model"))

    @property
    def model_ref(self) -> Path:
        """``model_ref.json``: the registry entry the run's model is (id, SHA-256 of pickle and card)."""
        return self.model_dir / MODEL_REF

    @property
    def model_card(self) -> Path:
        return self.model_dir / "model_card.json"

    @property
    def features(self) -> Path:
        """The training table: every round's sites with their covariates."""
        return self.model_dir / "features.csv"

    @property
    def cv_predictions(self) -> Path:
        """Out-of-fold predictions of the spatial cross-validation (observed, predicted, quantiles, round)."""
        return self.model_dir / "cv_predictions.csv"

    def round_maps(self, round_name: str) -> dict[str, Path]:
        """The round's maps by layer (:data:`MAP_LAYERS`), t C/ha."""
        d = self.step_dir(StepPlace("maps", round_name))
        return {o: d / f"soc_stock_{o}.tif" for o in MAP_LAYERS}

    @property
    def accounting(self) -> Path:
        return self.step_dir(StepPlace("accounting")) / "accounting.json"

    # ------------------------------------------------------------------ rebuilt by every run

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_dir(self) -> Path:
        """``report/``: fields.gpkg and report.pdf."""
        return self.root / "report"

    @property
    def report_gpkg(self) -> Path:
        """Per-field results for GIS (:mod:`mrv.report.gpkg`)."""
        return self.report_dir / "fields.gpkg"

    @property
    def report_pdf(self) -> Path:
        return self.report_dir / "report.pdf"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def index(self) -> Path:
        """``index.json``: every step's current directory, for users and verifiers."""
        return self.root / INDEX_JSON

    @property
    def registry_in_run(self) -> Path:
        """``models/``: the model registry when it is kept inside the run directory."""
        return self.root / "models"
