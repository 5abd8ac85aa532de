"""A generated region plus a run config for it, built from ``configs/demo.yaml`` (shared by the flow tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mrv.synthetic import RegionPaths, SceneSpec, build_region

REPO = Path(__file__).resolve().parents[1]


def region_config(
    root: Path, spec: SceneSpec, *, name: str, output_dir: Path, sections: dict[str, dict[str, Any]] | None = None
) -> tuple[Path, RegionPaths]:
    """Build ``spec`` under ``root/region`` and write ``root/<name>.yaml``: the demo config pointed at it,
    lab samples only, with ``sections`` merged into the top-level sections (e.g. ``{"model": {...}}``)."""
    region = build_region(root / "region", spec)
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(name=name, output_dir=str(output_dir))
    cfg["region"]["fields"] = str(region.fields)
    cfg["imagery"]["catalog"] = str(region.collection)
    for key, values in (sections or {}).items():
        cfg[key].update(values)
    for rnd in cfg["rounds"]:
        rnd["samples"] = [
            {"path": str(region.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide", "submitter": "agency"}
        ]
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, region
