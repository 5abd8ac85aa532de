"""``mrv models list | show | schema``: the model registry from the command line.

``--registry DIR`` names the registry; without it ``$MRV_MODEL_REGISTRY``, the checkout's ``models/``
or ``~/.local/share/mrv/models`` (:func:`mrv.config.default_model_registry`). Nothing is unpickled:
both commands read model cards only. Card values are printed through :func:`mrv.textsafe.for_terminal`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mrv.textsafe import for_terminal

__all__ = ["add_commands"]


def _section(card: dict[str, Any], key: str) -> dict[str, Any]:
    value = card.get(key)
    return value if isinstance(value, dict) else {}


def _num(value: Any, fmt: str = ".2f") -> str:
    return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from mrv.modeling.registry import list_models, read_card, resolve_registry

    root = resolve_registry(args.registry)
    ids = list_models(root)
    if args.json:
        sys.stdout.write(json.dumps({"registry_dir": str(root), "models": ids}, indent=2) + "\n")
        return 0
    if not ids:
        sys.stdout.write(f"no models registered in {for_terminal(str(root))}\n")
        return 0
    rows = [("model_id", "kind", "created (UTC)", "n_train", "covariates", "cv_rmse_t_ha", "cv_picp_90")]
    for model_id in ids:
        card = read_card(model_id, root)
        cv = _section(card, "cv")
        covariates = card.get("covariates")
        rows.append(
            (
                model_id,
                str(card.get("model_kind", "?")),
                str(card.get("created", "?")).replace("+00:00", ""),
                str(card.get("n_train", "-")),
                str(len(covariates)) if isinstance(covariates, list) else "-",
                _num(cv.get("rmse")),
                _num(cv.get("picp_90"), ".3f"),
            )
        )
    widths = [max(len(for_terminal(r[i])) for r in rows) for i in range(len(rows[0]))]
    sys.stdout.write(f"{len(ids)} model(s) in {for_terminal(str(root))}\n")
    for r in rows:
        sys.stdout.write("  ".join(for_terminal(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from mrv.modeling.registry import read_card, reference, resolve_registry

    root = resolve_registry(args.registry)
    card = read_card(args.model_id, root)
    ref = reference(args.model_id, root)
    if args.json:
        sys.stdout.write(json.dumps(card, indent=2, sort_keys=True) + "\n")
        return 0
    cv, cal = _section(card, "cv"), _section(card, "calibration")
    lines = [
        f"model {card.get('model_id')} ({card.get('kind', card.get('model_kind'))}), card_version {card.get('card_version')}",
        f"  entry        {ref.entry_dir}",
        f"  model.pkl    SHA-256 {ref.model_sha256} "
        + ("(matches the card)" if ref.model_sha256 == card.get("model_sha256") else "(DOES NOT match the card)"),
        f"  card         SHA-256 {ref.card_sha256}",
        f"  created      {card.get('created')}",
        f"  training     {card.get('n_train', '-')} sites, table SHA-256 {card.get('training_sha256')}",
        f"  covariates   {', '.join(map(str, card.get('covariates') or []))}",
        f"  interval     {_num(card.get('confidence'))} nominal, CQR margin {_num(card.get('calibration_margin_t_ha'), '.3f')} "
        f"t C/ha ({cal.get('calibration_sites', '-')} sites)",
        f"  spatial CV   block {_num(card.get('cv_block_size_m'), '.0f')} m: RMSE {_num(cv.get('rmse'))} t C/ha, "
        f"R2 {_num(cv.get('r2'), '.3f')}, PICP90 {_num(cv.get('picp_90'), '.3f')}, "
        f"width90 {_num(cv.get('mean_width_90'))} t C/ha",
        f"  versions     {', '.join(f'{k} {v}' for k, v in _section(card, 'package_versions').items())}",
    ]
    sys.stdout.write("\n".join(for_terminal(line) for line in lines) + "\n")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from mrv.fsio import write_json
    from mrv.modeling.registry import card_json_schema

    if args.output:
        write_json(args.output, card_json_schema())
        sys.stdout.write(f"JSON Schema of the model card written to {for_terminal(str(args.output))}\n")
    else:
        sys.stdout.write(json.dumps(card_json_schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``mrv models ...`` on the top-level subparsers ``sub``."""
    models = sub.add_parser("models", help="model registry: list, show, card schema").add_subparsers(
        dest="models_command", required=True
    )
    registry_help = (
        "registry directory (default: $MRV_MODEL_REGISTRY, the checkout's models/ or ~/.local/share/mrv/models)"
    )
    ls = models.add_parser("list", help="the registered models, with their spatial-CV accuracy")
    ls.add_argument("--registry", type=Path, default=None, help=registry_help)
    ls.add_argument("--json", action="store_true", help="print the ids as JSON")
    ls.set_defaults(func=_cmd_list)
    show = models.add_parser("show", help="one model's card (no pickle is loaded)")
    show.add_argument("model_id", metavar="ID")
    show.add_argument("--registry", type=Path, default=None, help=registry_help)
    show.add_argument("--json", action="store_true", help="print the whole card as JSON")
    show.set_defaults(func=_cmd_show)
    sch = models.add_parser("schema", help="print the JSON Schema of the model card (models/card.schema.json)")
    sch.add_argument("-o", "--output", type=Path, default=None, help="write it to a file instead of stdout")
    sch.set_defaults(func=_cmd_schema)
