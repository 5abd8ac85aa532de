"""Sample format profiles: the shipped ones load, and broken profiles fail with a message saying what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mrv.errors import ConfigError
from mrv.samples.formats import UNIT_FACTORS, load_format, parse_format

REPO = Path(__file__).resolve().parents[1]
FORMATS = REPO / "mrv" / "profiles" / "sample_formats"

LONG = {
    "layout": "long",
    "epsg": 25833,
    "columns": {"sample_id": "id", "x": "x", "y": "y", "sampling_date": "d", "top": "t", "bottom": "b"},
    "long": {
        "parameter": "Parameter",
        "value": "Wert",
        "unit": "Einheit",
        "parameters": {"Corg": "soc", "Lagerungsdichte": "bulk_density"},
        "units": {"soc": {"M%": "mass_percent"}, "bulk_density": {"g/cm3": "g_cm3"}},
    },
}


@pytest.mark.parametrize("path", sorted(FORMATS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_load(path: Path) -> None:
    fmt = load_format(path, search_dirs=())
    assert fmt.name == path.stem
    assert (fmt.long is not None) == (fmt.layout == "long")


def test_agency_long_de_profile() -> None:
    fmt = load_format("agency_long_de", search_dirs=(FORMATS,))
    assert (fmt.layout, fmt.epsg, fmt.delimiter, fmt.decimal, fmt.encoding) == ("long", 25833, ";", ",", "latin-1")
    assert fmt.date_pattern == "DD.MM.YYYY"
    assert fmt.long is not None
    assert fmt.long.role_of("organischer  KOHLENSTOFF") == "soc"  # case and spaces do not matter
    assert fmt.long.role_of("Glühverlust") == "som"
    assert fmt.long.unit_code("soc", " M% ") == "mass_percent"
    assert fmt.long.unit_code("bulk_density", "g/cm³") == "g_cm3"
    assert fmt.long.unit_code("soc", "m%") is None  # units are case-sensitive (Mg vs mg)
    assert fmt.long.is_ignored("ph")


def test_unit_factors_convert_to_canonical_units() -> None:
    assert 1.8 * UNIT_FACTORS["soc"]["mass_percent"] == pytest.approx(18.0)  # g/100 g -> g/kg
    assert 1450 * UNIT_FACTORS["bulk_density"]["kg_m3"] == pytest.approx(1.45)
    assert 0.05 * UNIT_FACTORS["coarse_fragments"]["vol_fraction"] == pytest.approx(5.0)


def _bad(change: dict, match: str) -> None:
    raw = yaml.safe_load(yaml.safe_dump(LONG))
    for key, value in change.items():
        target = raw
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    with pytest.raises(ConfigError, match=match):
        parse_format(raw, where="p.yaml", default_name="p")


def test_long_profile_parses() -> None:
    fmt = parse_format(LONG, where="p.yaml", default_name="p")
    assert fmt.long is not None
    assert fmt.long.parameters == {"Corg": "soc", "Lagerungsdichte": "bulk_density"}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"layout": "stacked"}, "layout must be"),
        ({"long": None}, "needs a 'long:' block"),
        ({"long.parameters": {"Corg": "carbon"}}, "unknown roles"),
        ({"long.parameters": {"Lagerungsdichte": "bulk_density"}}, "'soc' or 'som'"),
        ({"long.parameters": {"Corg": "soc", "CORG ": "soc"}}, "twice"),
        ({"long.units": {"soc": {"M%": "mass_percent"}}}, "long.units.bulk_density is missing"),
        ({"long.units.soc": {"M%": "ppm"}}, "unknown unit codes"),
        ({"long.value": None}, "long.value must name"),
        ({"long.extra": 1}, "unknown key"),
        ({"columns.soc": "Wert"}, "come from parameter rows"),
        ({"date_format": "%d.%m."}, "no year"),
        ({"delimiter": ";;"}, "single character"),
        ({"decimal": ";"}, "decimal must be"),
        ({"encoding": "klingon"}, "encoding"),
        ({"depth_unit": "inch"}, "depth_unit"),
    ],
)
def test_broken_long_profiles_are_refused(change: dict, match: str) -> None:
    _bad(change, match)


def test_wide_profile_needs_soc_or_som_and_no_long_block() -> None:
    wide = {"columns": {**LONG["columns"]}, "epsg": 32633}
    with pytest.raises(ConfigError, match="'soc'"):
        parse_format(wide, where="w.yaml", default_name="w")
    with pytest.raises(ConfigError, match="needs 'layout: long'"):
        parse_format(
            {**wide, "columns": {**wide["columns"], "soc": "c"}, "long": LONG["long"]}, where="w", default_name="w"
        )
    fmt = parse_format({**wide, "columns": {**wide["columns"], "som": "loi"}}, where="w", default_name="w")
    assert fmt.som_unit == "percent"


def test_unknown_profile_name_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_format("nope", search_dirs=(tmp_path,))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_format(bad, search_dirs=())


WIDE = {"columns": {"sample_id": "id", "x": "x", "y": "y", "sampling_date": "d", "top": "t", "bottom": "b", "soc": "c"},
        "epsg": 32633}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"constants": {"soc": 3}}, "cannot be constant"),
        ({"constants": {"sampling_date": "May 2019"}}, "YYYY-MM-DD"),
        ({"constants": {"top": "zero"}}, "a number >= 0"),
        ({"below_detection": "drop"}, "below_detection must be one of"),
        ({"missing_values": "NA"}, "missing_values must be a list"),
        ({"date_format": ["%d.%m.%Y", "%d.%m."]}, "no year"),
        ({"units": {"soc": {"column": "u"}}}, "needs 'column'"),
        ({"units": {"soc": {"column": "u", "map": {"%": "ppm"}}}}, "unknown unit codes"),
        ({"units": {"ph": {"column": "u", "map": {}}}}, "only measured roles"),
        ({"sites": {"columns": {"lon": "x"}}}, "sites.key"),
        ({"sites": {"key": "k", "columns": {"soc": "c"}}}, "cannot give"),
        ({"sites": {"key": "k", "columns": {"lon": "x"}}}, "sites.on is 'site_id'"),
        ({"epsg": 32633.9}, "whole EPSG code"),
        ({"columns": {**WIDE["columns"], "depth": "tiefe"}}, "not both"),
        ({"delimiter": ",", "decimal": ","}, "must differ"),
    ],
)
def test_broken_feature_profiles_are_refused(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_format({**WIDE, **change}, where="w.yaml", default_name="w")


def test_feature_profile_parses() -> None:
    fmt = parse_format(
        {**WIDE, "columns": {**WIDE["columns"], "soc": ["c1", "c2"], "site_id": "s"}, "date_format": ["%d.%m.%Y", "excel"],
         "constants": {"sampling_date": "2019-05-01"}, "below_detection": "limit", "missing_values": ["?"],
         "sites": {"key": "k", "columns": {"field_id": "f"}}},
        where="w.yaml", default_name="w",
    )  # fmt: skip
    assert fmt.columns["soc"] == "c1"
    assert fmt.alternatives == {"soc": ("c2",)}
    assert fmt.formats == ("%d.%m.%Y", "excel")
    assert fmt.date_pattern == "DD.MM.YYYY or an Excel date number"
    assert fmt.missing_codes == frozenset({"", "?"})
    assert fmt.sites is not None
    assert fmt.sites.columns == {"field_id": "f"}
