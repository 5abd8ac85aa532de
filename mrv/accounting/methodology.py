"""Methodology design requirements as data, and a checklist that tests evidence against them.

Each carbon-market methodology the pipeline supports is described by a YAML methodology profile in
``methodologies`` (shipped in ``mrv/profiles/methodologies/<id>.yaml``, looked up by
:func:`mrv.resources.find_profile`)::

    id: verra_vm0042_v2            # must equal the file name without .yaml
    name: ...                      # human-readable title
    version: "2.0"                 # a string (quote it in YAML)
    reference: ...                 # document title, publisher, year
    deduction: verra_vm0042_v2     # id accepted by mrv.accounting.deductions.deduction_for
    requirements:
      - id: min_sampling_depth     # unique within the profile
        description: ...
        section: ...               # where the requirement comes from in the document
        section_confirmed: false   # true only if the section number was checked
        evidence: sampling_depth_cm   # a field of Evidence
        op: ">="                   # one of >=, <=, >, <, ==, is_true
        threshold: 30              # number (or bool for == on a bool field); null for is_true

:func:`load_methodology` validates every key and type and raises :class:`ConfigError` naming the
file and the key. :func:`check_methodology` compares an :class:`Evidence` record with each
requirement and returns one :class:`CheckResult` per requirement; a requirement whose evidence is
``None`` is reported as not assessed (``passed=None``), never silently passed.

No file is read at import time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from mrv.accounting.deductions import DEDUCTION_METHODS
from mrv.errors import AccountingError, ConfigError
from mrv.resources import PACKAGE_PROFILES, find_profile

__all__ = [
    "DEFAULT_DIRECTORY",
    "OPS",
    "CheckResult",
    "Evidence",
    "MethodologyProfile",
    "Requirement",
    "available_methodologies",
    "check_methodology",
    "load_methodology",
]

#: ``<repo>/configs/methodologies``; computed, not read, at import time.
DEFAULT_DIRECTORY = PACKAGE_PROFILES / "methodologies"

Op = Literal[">=", "<=", ">", "<", "==", "is_true"]
#: Comparison operators a requirement may use.
OPS: tuple[str, ...] = (">=", "<=", ">", "<", "==", "is_true")
#: Evidence that may be negative (a model efficiency below 0 means worse than the mean).
_SIGNED_EVIDENCE = frozenset({"validation_r2"})
#: Evidence that is a fraction or probability in [0, 1].
_UNIT_INTERVAL_EVIDENCE = frozenset({"interval_coverage_90", "validation_picp", "validation_mean_error_p"})

_PROFILE_KEYS = ("id", "name", "version", "reference", "deduction", "requirements")
_REQUIREMENT_KEYS = (
    "id",
    "description",
    "section",
    "section_confirmed",
    "evidence",
    "op",
    "threshold",
)


@dataclass(frozen=True)
class Requirement:
    """One design requirement of a methodology.

    Attributes:
        id: Identifier unique within its profile (e.g. ``"min_sampling_depth"``).
        description: What the methodology requires, in words.
        section: Where it comes from in the methodology document.
        section_confirmed: ``True`` only if the section number was checked against the
            document; ``False`` flags a best-effort citation.
        evidence: Name of the :class:`Evidence` field compared with ``threshold``.
        op: ``">="``, ``"<="``, ``"=="`` or ``"is_true"``.
        threshold: Number for ``>=``/``<=``; number or bool for ``==``; ``None`` for
            ``is_true``.
    """

    id: str
    description: str
    section: str
    section_confirmed: bool
    evidence: str
    op: Op
    threshold: float | bool | None


@dataclass(frozen=True)
class MethodologyProfile:
    """A methodology's identity, its deduction rule id and its design requirements."""

    id: str
    name: str
    version: str
    reference: str
    deduction: str
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True)
class Evidence:
    """Facts about a project that the methodology requirements are checked against.

    Every field defaults to ``None``, meaning "not known"; requirements on an unknown field are
    reported as not assessed.

    Attributes:
        sampling_depth_cm: Depth of the soil sampling from the surface, in cm (the shallowest
            full-depth core if depths vary).
        uses_equivalent_soil_mass: Whether SOC stocks are compared on an equivalent-soil-mass
            basis rather than a fixed depth.
        remeasurement_interval_years: Longest interval between successive direct SOC
            measurements, in years.
        min_samples_per_stratum: Smallest number of soil samples in any stratum (count).
        n_samples: Total number of soil samples (count).
        uncertainty_fraction: Relative uncertainty of the credited estimate as a fraction
            (0.10 = 10 %), as computed by the applicable deduction rule.
        spatial_cross_validation: Whether the SOC model was validated with spatially blocked
            (or otherwise spatially independent) cross-validation.
        interval_coverage_90: Fraction (0-1) of validation observations falling inside their
            90 % prediction intervals.
        n_strata: Number of sampling strata (count).
        monitoring_period_years: Length of the monitoring (reporting) period, in years.
        n_depth_increments: Depth increments sampled at re-sampling (count; ESM needs >= 2).
        n_monte_carlo_draws: Monte Carlo draws of the uncertainty simulation (count).
        vt0014_validation_passed: Whether the VT0014 validation criteria passed on the run's validation data.
        validation_r2: Model efficiency 1 - SSE/SST on the VT0014 validation data (may be negative).
        validation_mean_error_p: p-value of the two-sided t-test of mean error = 0 on validation data.
        validation_picp: Coverage (0-1) of the 90 % intervals on the VT0014 validation data.
        min_pairs_per_lag: Fewest validation point pairs in any 0-500 m lag bin (count).
        validation_in_project_after_start: Whether validation data are inside the project and after its start.
        process_model_validated: Whether a biogeochemical model is validated per VMD0053 (None: no such model).
    """

    sampling_depth_cm: float | None = None
    uses_equivalent_soil_mass: bool | None = None
    remeasurement_interval_years: float | None = None
    min_samples_per_stratum: int | None = None
    n_samples: int | None = None
    uncertainty_fraction: float | None = None
    spatial_cross_validation: bool | None = None
    interval_coverage_90: float | None = None
    n_strata: int | None = None
    monitoring_period_years: float | None = None
    n_depth_increments: int | None = None
    n_monte_carlo_draws: int | None = None
    vt0014_validation_passed: bool | None = None
    validation_r2: float | None = None
    validation_mean_error_p: float | None = None
    validation_picp: float | None = None
    min_pairs_per_lag: int | None = None
    validation_in_project_after_start: bool | None = None
    process_model_validated: bool | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            kind = _evidence_kind(f.name)
            if kind == "bool":
                if not isinstance(value, bool):
                    raise AccountingError(
                        f"Evidence.{f.name} must be True, False or None, got {value!r}; "
                        "pass a bool."
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AccountingError(
                    f"Evidence.{f.name} must be a number or None, got {value!r}; pass the "
                    "value in the documented unit."
                )
            if kind == "int" and not isinstance(value, int):
                raise AccountingError(
                    f"Evidence.{f.name} is a count and must be an int, got {value!r}."
                )
            if not math.isfinite(value) or (value < 0 and f.name not in _SIGNED_EVIDENCE):
                raise AccountingError(
                    f"Evidence.{f.name} must be finite and >= 0, got {value!r}; pass None if "
                    "it is not known."
                )
            if f.name in _UNIT_INTERVAL_EVIDENCE and value > 1:
                raise AccountingError(
                    f"Evidence.{f.name} is a fraction in [0, 1], got {value!r}; "
                    "divide a percentage by 100."
                )


def _evidence_kind(name: str) -> str:
    """Return ``"bool"``, ``"int"`` or ``"float"`` for an :class:`Evidence` field."""
    annotation = _EVIDENCE_TYPES[name]
    if annotation.startswith("bool"):
        return "bool"
    if annotation.startswith("int"):
        return "int"
    return "float"


_EVIDENCE_TYPES: dict[str, str] = {
    f.name: str(f.type) for f in dataclasses.fields(Evidence)
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one requirement.

    ``passed`` is ``True``/``False`` when the evidence was available and ``None`` when it was
    not ("not assessed").
    """

    requirement_id: str
    description: str
    section: str
    evidence_name: str
    evidence_value: float | bool | None
    threshold: float | bool | None
    op: str
    passed: bool | None
    note: str
    section_confirmed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict of all fields."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def available_methodologies(directory: Path = DEFAULT_DIRECTORY) -> list[str]:
    """Return the sorted ids (file stems) of the ``*.yaml`` methodology profiles in ``directory``.

    Raises:
        ConfigError: if ``directory`` does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(
            f"methodology directory {directory} does not exist; create it or pass the "
            "directory that holds the <id>.yaml profiles."
        )
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file())


def _resolve(path_or_id: str | Path, directory: Path) -> tuple[Path, str | None]:
    """Return (file path, requested id or None when a path was given)."""
    if isinstance(path_or_id, Path):
        return path_or_id, None
    text = str(path_or_id)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return Path(text), None
    return Path(directory) / f"{text}.yaml", text


def load_methodology(
    path_or_id: str | Path, *, directory: Path | None = None, config_path: Path | None = None
) -> MethodologyProfile:
    """Load and validate a methodology profile.

    Args:
        path_or_id: A methodology id (``"verra_vm0042_v2"``) or a path to a YAML file.
        directory: Look ids up only here (tests); by default :func:`mrv.resources.find_profile`
            searches next to ``config_path``, the user profile directory and the package.

    Raises:
        ConfigError: if the file is missing or unreadable, is not valid YAML, or has a missing,
            unknown or wrongly typed key; the message names the file and the key.
    """
    path, requested_id = _resolve(path_or_id, directory or DEFAULT_DIRECTORY)
    if directory is None and requested_id is not None:
        path = find_profile("methodologies", requested_id, config_path=config_path)
    if not path.is_file():
        raise ConfigError(
            f"methodology profile {path} not found; pass an existing YAML path or a known "
            f"methodology id ({', '.join(available_methodologies(directory or DEFAULT_DIRECTORY))})."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax.") from exc
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc}); check permissions."
        ) from exc
    profile = _parse_profile(raw, path)
    expected = requested_id if requested_id is not None else path.stem
    if profile.id != expected:
        raise ConfigError(
            f"{path}: key 'id' is {profile.id!r} but the file is named {path.name!r}; make "
            f"them agree (id: {expected}) so profiles can be found by id."
        )
    return profile


def _check_keys(
    mapping: Any, expected: tuple[str, ...], path: Path, where: str
) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"{path}: {where} must be a mapping with keys {', '.join(expected)}, got "
            f"{type(mapping).__name__}; fix the file's structure."
        )
    unknown = [k for k in mapping if k not in expected]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} in {where}; allowed keys are "
            f"{', '.join(expected)}. Remove or rename it."
        )
    missing = [k for k in expected if k not in mapping]
    if missing:
        raise ConfigError(
            f"{path}: missing key {missing[0]!r} in {where}; add it (required keys: "
            f"{', '.join(expected)})."
        )


def _string(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}: key {key!r} must be a non-empty string, got {value!r}; quote it in YAML "
            '(e.g. version: "2.0").'
        )
    return value


def _parse_profile(raw: Any, path: Path) -> MethodologyProfile:
    _check_keys(raw, _PROFILE_KEYS, path, "the profile")
    ident = _string(raw["id"], path, "id")
    name = _string(raw["name"], path, "name")
    version = _string(raw["version"], path, "version")
    reference = _string(raw["reference"], path, "reference")
    deduction = _string(raw["deduction"], path, "deduction")
    if deduction not in DEDUCTION_METHODS:
        raise ConfigError(
            f"{path}: key 'deduction' is {deduction!r}; use one of "
            f"{', '.join(sorted(DEDUCTION_METHODS))}."
        )
    items = raw["requirements"]
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{path}: key 'requirements' must be a non-empty list of requirements, got "
            f"{items!r}; list at least one requirement."
        )
    requirements = tuple(
        _parse_requirement(item, path, i) for i, item in enumerate(items)
    )
    seen: set[str] = set()
    for i, req in enumerate(requirements):
        if req.id in seen:
            raise ConfigError(
                f"{path}: key 'requirements[{i}].id' repeats {req.id!r}; give every "
                "requirement a unique id."
            )
        seen.add(req.id)
    return MethodologyProfile(
        id=ident,
        name=name,
        version=version,
        reference=reference,
        deduction=deduction,
        requirements=requirements,
    )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _parse_requirement(item: Any, path: Path, index: int) -> Requirement:
    where = f"requirements[{index}]"
    _check_keys(item, _REQUIREMENT_KEYS, path, where)
    ident = _string(item["id"], path, f"{where}.id")
    description = _string(item["description"], path, f"{where}.description")
    section = _string(item["section"], path, f"{where}.section")
    confirmed = item["section_confirmed"]
    if not isinstance(confirmed, bool):
        raise ConfigError(
            f"{path}: key '{where}.section_confirmed' must be true or false, got "
            f"{confirmed!r}."
        )
    evidence = _string(item["evidence"], path, f"{where}.evidence")
    if evidence not in _EVIDENCE_TYPES:
        raise ConfigError(
            f"{path}: key '{where}.evidence' is {evidence!r}, which is not an Evidence field; "
            f"use one of {', '.join(_EVIDENCE_TYPES)}."
        )
    op = item["op"]
    if op not in OPS:
        raise ConfigError(
            f"{path}: key '{where}.op' is {op!r}; use one of {', '.join(OPS)} (quote them in "
            "YAML)."
        )
    threshold = item["threshold"]
    kind = _evidence_kind(evidence)
    if op == "is_true":
        if kind != "bool":
            raise ConfigError(
                f"{path}: key '{where}.op' is 'is_true' but evidence {evidence!r} is not a "
                "yes/no field; use >=, <= or == with a numeric threshold."
            )
        if threshold is not None:
            raise ConfigError(
                f"{path}: key '{where}.threshold' must be null when op is 'is_true', got "
                f"{threshold!r}."
            )
    elif kind == "bool":
        if op != "==" or not isinstance(threshold, bool):
            raise ConfigError(
                f"{path}: key '{where}.op'/'threshold': evidence {evidence!r} is yes/no, so "
                "use op 'is_true' with threshold null, or op '==' with threshold true/false."
            )
    elif not _is_number(threshold):
        raise ConfigError(
            f"{path}: key '{where}.threshold' must be a finite number for op {op!r} on "
            f"{evidence!r}, got {threshold!r}."
        )
    if _is_number(threshold):
        threshold = float(threshold)
    return Requirement(
        id=ident,
        description=description,
        section=section,
        section_confirmed=confirmed,
        evidence=evidence,
        op=cast(Op, op),
        threshold=threshold,
    )


# --------------------------------------------------------------------------- checking


def _compare(value: float | bool, op: str, threshold: float | bool | None) -> bool:
    if op == "is_true":
        return value is True
    if isinstance(threshold, bool) or isinstance(value, bool):
        return value is threshold
    assert threshold is not None  # guaranteed by profile validation
    if op == ">=":
        return value >= threshold or math.isclose(value, threshold, rel_tol=1e-9)
    if op == "<=":
        return value <= threshold or math.isclose(value, threshold, rel_tol=1e-9)
    if op == ">":
        return value > threshold
    if op == "<":
        return value < threshold
    return math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def _describe(op: str, threshold: float | bool | None) -> str:
    if op == "is_true":
        return "is true"
    return f"{op} {threshold:g}" if _is_number(threshold) else f"{op} {threshold}"


def check_methodology(
    profile: MethodologyProfile, evidence: Evidence
) -> tuple[CheckResult, ...]:
    """Check ``evidence`` against every requirement of ``profile``, in profile order.

    Each :class:`CheckResult` carries the requirement's description and section, the evidence
    value and the verdict: ``True`` (met), ``False`` (not met) or ``None`` (evidence is
    ``None``: not assessed).
    """
    results: list[CheckResult] = []
    for req in profile.requirements:
        value = getattr(evidence, req.evidence)
        wanted = _describe(req.op, req.threshold)
        passed: bool | None
        if value is None:
            passed = None
            note = f"not assessed: no evidence for {req.evidence} (required {wanted})."
        else:
            passed = _compare(value, req.op, req.threshold)
            verdict = "met" if passed else "NOT met"
            note = f"{verdict}: {req.evidence} = {value!r}, required {wanted}."
        if not req.section_confirmed:
            note += " Section reference not confirmed against the methodology document."
        results.append(
            CheckResult(
                requirement_id=req.id,
                description=req.description,
                section=req.section,
                evidence_name=req.evidence,
                evidence_value=value,
                threshold=req.threshold,
                op=req.op,
                passed=passed,
                note=note,
                section_confirmed=req.section_confirmed,
            )
        )
    return tuple(results)
