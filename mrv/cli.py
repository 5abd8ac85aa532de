"""``mrv`` command line: run the pipeline, generate synthetic regions, compute stocks, verify runs.

Expected mistakes (bad config, bad files) print one clear message and exit with status 2; they
never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mrv import logs, progress
from mrv.errors import MRVError
from mrv.modeling.cli import add_commands as add_model_commands
from mrv.pipeline.layout import RunLayout
from mrv.samples.cli import add_commands as add_sample_commands
from mrv.textsafe import for_terminal, for_terminal_lines

log = logging.getLogger("mrv")


def _cmd_run(args: argparse.Namespace) -> int:
    from mrv.api import run

    if args.progress if args.progress is not None else sys.stderr.isatty():
        progress.show_bars(sys.stderr)
    result = run(args.config, output_dir=args.output)  # validates first: every expected mistake, before any work
    _print_summary(RunLayout(result.run_dir).report_json)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mrv.validate import validate_path

    checked = validate_path(args.config, output_dir=args.output)
    cfg = checked.config
    sys.stdout.write(
        f"OK: {args.config} is valid: {len(cfg.rounds)} round(s), {checked.sample_files} sample file(s), "
        f"{checked.pixels:,} pixels at {cfg.region.resolution_m:g} m in {cfg.region.crs} "
        f"(~{checked.estimated_gb:.2f} GB of covariates), imagery from {cfg.imagery.source}"
        f"{' (' + cfg.imagery.provider + ')' if cfg.imagery.provider else ''}, methodology {cfg.accounting.methodology}; "
        f"output in {cfg.output_dir}\n"
    )
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from mrv.config_schema import run_config_schema

    text = json.dumps(run_config_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        sys.stdout.write(f"JSON Schema of the run config written to {args.output}\n")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_report_schema(args: argparse.Namespace) -> int:
    from mrv.report.schema import schema_text

    if args.output:
        Path(args.output).write_text(schema_text(), encoding="utf-8")
        sys.stdout.write(f"JSON Schema of report.json written to {args.output}\n")
    else:
        sys.stdout.write(schema_text())
    return 0


def _print_summary(report_path: Path) -> None:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    run = report["run"]
    out = sys.stdout
    out.write(f"\nReport: {report_path.parent / 'report.html'}\n")
    out.write(f"Data:   {report_path}  (manifest: {report_path.parent / 'manifest.json'})\n\n")
    hdr = f"{'field':<8} {'name':<26} {'stock ' + run['latest_round'] + ' t C/ha [90% interval]':<36} {'change t C/ha':>14}"
    out.write(hdr + "\n" + "-" * len(hdr) + "\n")
    for f in report["fields"]:
        s = f["soc_stock_t_ha"]
        ch = f.get("change", {}).get("delta_soc_stock_t_ha", {})
        out.write(
            f"{for_terminal(f['field_id']):<8} {for_terminal(f['name'])[:26]:<26} "
            f"{s['mean']:6.1f} [{s['lower_90']:5.1f}, {s['upper_90']:5.1f}]{'':<16} "
            f"{ch.get('mean', float('nan')):+8.2f}\n"
        )
    p = report["project"]
    s, c = p["soc_stock_t_ha"], p.get("change", {})
    out.write("-" * len(hdr) + "\n")
    out.write(f"Project ({p['n_fields']} fields, {p['area_ha']:.0f} ha): {s['mean']:.1f} t C/ha [{s['lower_90']:.1f}, {s['upper_90']:.1f}]\n")
    design = ((report.get("design_based") or {}).get("change") or {}).get("project")
    if design:  # the credited change: design-based, from the re-measured sites
        dc = report["design_based"]["change"]
        ha, co2 = design["per_ha"], design["co2e"]
        verdict = (
            "significant gain" if co2["lower_90"] > 0 else "significant loss" if co2["upper_90"] < 0
            else "NOT significant: the 90% interval spans zero"
        )  # fmt: skip
        out.write(
            f"Change {dc['from_round']} -> {dc['to_round']} ({dc['n_pairs']} re-measured sites, design-based): "
            f"{ha['mean']:+.2f} t C/ha [{ha['lower_90']:+.2f}, {ha['upper_90']:+.2f}], "
            f"{co2['mean']:+,.0f} t CO2e [{co2['lower_90']:+,.0f}, {co2['upper_90']:+,.0f}]; {verdict}\n"
        )
    elif c:
        co2 = c["co2e_t"]
        out.write(
            f"Change {c['from_round']} -> {c['to_round']} (maps only, not design-based): "
            f"{c['delta_soc_stock_t_ha']['mean']:+.2f} t C/ha, "
            f"{co2['mean']:+,.0f} t CO2e [{co2['lower_90']:+,.0f}, {co2['upper_90']:+,.0f}]\n"
        )
    for d in report.get("deductions") or []:
        what = "reports an emission of" if d.get("reported_as") == "emission" else "credits"
        out.write(
            f"  {for_terminal(str(d.get('methodology')))} {what} {d['credited']:+,.0f} {d.get('units', 't CO2e')} "
            f"(uncertainty deduction {100 * (d.get('deduction_fraction') or 0.0):.1f}%)\n"
        )
    cv = report["model"]["cv"]
    out.write(
        f"Model (spatial CV): RMSE {cv['rmse']:.2f} t C/ha (mean-only {cv['baseline_rmse']:.2f}), "
        f"R2 {cv['r2']:.2f}, 90% interval coverage {cv['picp_90']:.0%}\n"
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    from mrv.synthetic import SceneSpec, build_region

    spec = SceneSpec(seed=args.seed, width_px=args.size, height_px=args.size)
    paths = build_region(Path(args.out), spec, overwrite=args.overwrite)
    sys.stdout.write(f"Synthetic region written to {paths.root} (STAC collection {paths.collection})\n")
    return 0


def _cmd_stocks(args: argparse.Namespace) -> int:
    from mrv.samples.profile_stocks import stocks_command

    ref: float | str | None = args.reference_mass
    if ref is not None and ref not in ("lightest", "baseline_mean"):
        try:
            ref = float(ref)
        except ValueError:
            raise MRVError(f"--reference-mass must be a number (Mg/ha), 'lightest' or 'baseline_mean'; got {ref!r}.") from None
    _, text = stocks_command(Path(args.file), args.output, method=args.method, depth_cm=args.depth,
                             reference_mass_mg_ha=ref)  # type: ignore[arg-type]  # fmt: skip
    sys.stdout.write(text)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from mrv.report.verify import format_verification, verify

    result = verify(Path(args.path), public_key=args.key, rederive=not args.hash_only)
    sys.stdout.write(for_terminal_lines(format_verification(result)) + "\n")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from mrv.report.verify import rebuild_checked

    rendered, changed = rebuild_checked(Path(args.run_dir))
    sys.stdout.write(f"Rendered {', '.join(str(p) for p in rendered)} from report.json\n")
    if changed:
        sys.stdout.write(f"Updated manifest.json entries of re-rendered files: {', '.join(changed)}\n")
    return 0


def _passphrase(env_name: str | None) -> bytes | None:
    import os

    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise MRVError(f"--passphrase-env {env_name}: that environment variable is not set or empty; export it first.")
    return value.encode()


def _cmd_bundle(args: argparse.Namespace) -> int:
    from mrv.report.bundle import make_bundle

    out = make_bundle(Path(args.run_dir), Path(args.output), sign_key=args.sign_key, passphrase=_passphrase(args.passphrase_env))
    signed = "signed" if args.sign_key else "unsigned (pass --sign-key to sign)"
    sys.stdout.write(f"Bundle written to {for_terminal_lines(str(out))}, {signed}; check it with 'mrv report verify {for_terminal_lines(str(out))}'\n")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from mrv.report.signing import generate_keypair

    prefix = Path(args.output)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    fp = generate_keypair(private, public, passphrase=_passphrase(args.passphrase_env))
    sys.stdout.write(
        f"Private key {for_terminal_lines(str(private))} (keep it secret, mode 0600), public key "
        f"{for_terminal_lines(str(public))} (give it to verifiers); fingerprint {fp}\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrv", description="Soil organic carbon MRV pipeline")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the regional monitoring flow for a config")
    run.add_argument("config", type=Path)
    run.add_argument("-o", "--output", type=Path, default=None, help="run directory (default: out/<name>)")
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bars on stderr for imagery tiles and prediction (default: when stderr is a terminal)",
    )  # fmt: skip
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a run config, its files and credentials before running it")
    val.add_argument("config", type=Path)
    val.add_argument("-o", "--output", type=Path, default=None, help="run directory (default: out/<name>)")
    val.set_defaults(func=_cmd_validate)

    conf = sub.add_parser("config", help="run-config tools").add_subparsers(dest="config_command", required=True)
    sch = conf.add_parser("schema", help="print the JSON Schema of the run config (generated from the config types)")
    sch.add_argument("-o", "--output", type=Path, default=None, help="write it to a file instead of stdout")
    sch.set_defaults(func=_cmd_config_schema)

    syn = sub.add_parser("synth", help="generate a seeded synthetic region (imagery, fields, samples)")
    syn.add_argument("out", type=Path)
    syn.add_argument("--seed", type=int, default=42)
    syn.add_argument("--size", type=int, default=500, help="width and height in pixels (even)")
    syn.add_argument("--overwrite", action="store_true")
    syn.set_defaults(func=_cmd_synth)

    samples = sub.add_parser("samples", help="soil sample tools").add_subparsers(dest="samples_command", required=True)
    add_sample_commands(samples)
    st = samples.add_parser("stocks", help="fixed-depth or equivalent-soil-mass stocks of a soil-profile (layer) CSV")
    st.add_argument("file", type=Path)
    st.add_argument("--method", choices=["fixed", "esm"], default="fixed")
    st.add_argument("--depth", type=float, default=30.0, help="fixed depth in cm (default 30)")
    st.add_argument("--reference-mass", default=None, help="ESM reference soil mass in Mg/ha, 'lightest' or 'baseline_mean'")
    st.add_argument("-o", "--output", type=Path, required=True)
    st.set_defaults(func=_cmd_stocks)

    add_model_commands(sub)

    rep = sub.add_parser("report", help="verifier report tools").add_subparsers(dest="report_command", required=True)
    ver = rep.add_parser(
        "verify",
        help="check a run directory or bundle: signature, hashes, completeness, step chain, and re-derive every artefact",
    )
    ver.add_argument("path", type=Path, metavar="RUN_OR_BUNDLE", help="run directory, bundle directory or bundle .zip")
    ver.add_argument("--key", type=Path, default=None, help="operator's public key (PEM): the bundle must be signed by it")
    ver.add_argument("--hash-only", action="store_true", help="skip the re-derivation (hashes, completeness and step chain only)")
    ver.set_defaults(func=_cmd_verify)
    bun = rep.add_parser("bundle", help="write a portable (optionally signed) bundle of RUN_DIR for a verifier")
    bun.add_argument("run_dir", type=Path)
    bun.add_argument("-o", "--output", type=Path, required=True, help="OUT.zip, or a new directory")
    bun.add_argument("--sign-key", type=Path, default=None, help="Ed25519 private key (PEM) from 'mrv report keygen'")
    bun.add_argument("--passphrase-env", default=None, help="name of the environment variable holding the key's passphrase")
    bun.set_defaults(func=_cmd_bundle)
    kg = rep.add_parser("keygen", help="create an Ed25519 key pair PREFIX.key / PREFIX.pub for signing bundles")
    kg.add_argument("-o", "--output", type=Path, required=True, metavar="PREFIX")
    kg.add_argument("--passphrase-env", default=None, help="encrypt the private key with the passphrase in this environment variable")
    kg.set_defaults(func=_cmd_keygen)
    bld = rep.add_parser("build", help="re-render RUN_DIR/report.html and report/fields.gpkg from report.json")
    bld.add_argument("run_dir", type=Path)
    bld.set_defaults(func=_cmd_build)
    rsch = rep.add_parser("schema", help="print the JSON Schema of report.json (generated from mrv.report.schema)")
    rsch.add_argument("-o", "--output", type=Path, default=None, help="write it to a file instead of stdout")
    rsch.set_defaults(func=_cmd_report_schema)
    return p


def expected_error(exc: BaseException) -> MRVError | None:
    """The :class:`MRVError` behind ``exc``: itself, or one in its cause/context chain (Prefect and Dask
    re-raise task failures wrapped in their own exceptions)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MRVError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished steps are kept; run the same command again to resume.\n")
        return 130
    except Exception as exc:
        err = expected_error(exc)
        if err is None:
            raise
        sys.stderr.write(f"error: {for_terminal_lines(str(err))}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
