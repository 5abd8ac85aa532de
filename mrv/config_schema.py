"""The JSON Schema (draft 2020-12) of a run config, generated from the frozen config types in :mod:`mrv.config`.

Nothing is written twice: keys, types, defaults, allowed values and descriptions come from the
dataclasses (field types, defaults, ``Literal`` choices and the docstring under each field). Field
metadata adjusts the mapping where the YAML differs from the attribute: ``resolved`` fields are
filled in by the loader (parsed profiles) and are no YAML keys, ``yaml`` gives a dotted YAML path
(``outliers.radius_m``), ``optional`` marks a key the loader defaults. Publish it with
``mrv config schema -o run-config.schema.json`` for editors and CI checks of config files.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import inspect
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

from mrv import config as config_module

__all__ = [
    "field_docs",
    "run_config_schema",
    "SCHEMA_ID",
]

SCHEMA_ID = "https://soilcarbon-mrv.org/schemas/run-config.schema.json"

#: YAML shorthands the loader accepts besides the mapping form (field name -> extra schema).
_SHORTHANDS: dict[tuple[str, str], dict[str, Any]] = {
    ("ImageryConfig", "dem"): {"type": "string", "description": "a GeoTIFF path (.tif/.vrt) or a STAC DEM collection id"},
}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of ``cls`` (attribute docstrings, read with ``ast``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_of(annotation: str) -> Any:
    namespace = {**vars(typing), **vars(config_module), "Path": Path, "dt": dt}
    return eval(annotation, namespace)


def _schema_for(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _object_schema(tp)
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"enum": values} if len(values) > 1 else {"const": values[0]}
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        options = [_schema_for(a) for a in args]
        if nullable:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": _schema_for(args[0]) if args else {}}
    if origin is dict:
        _, value = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _schema_for(value)}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is Path:
        return {"type": "string", "description": "a path, relative to the config file"}
    if tp is dt.date:
        return {"type": "string", "format": "date"}
    raise TypeError(f"no JSON Schema mapping for config type {tp!r}")


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.metadata.get("resolved_default"):
        return dataclasses.MISSING  # machine-specific, resolved by the loader: described in the docstring
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    if dataclasses.is_dataclass(value) or isinstance(value, dict) and any(dataclasses.is_dataclass(v) for v in value.values()):
        return dataclasses.MISSING  # nested defaults are documented by the nested schema
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _object_schema(cls: type) -> dict[str, Any]:
    docs = field_docs(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata.get("resolved"):
            continue
        schema = dict(_schema_for(_type_of(f.type) if isinstance(f.type, str) else f.type))
        if f.name in docs:
            schema["description"] = docs[f.name]
        if f.metadata.get("resolved_default"):  # null, like a missing key, asks for the loader's default
            schema = {"anyOf": [{k: v for k, v in schema.items() if k != "description"}, {"type": "null"}],
                      **({"description": schema["description"]} if "description" in schema else {})}  # fmt: skip
        default = _default_of(f)
        if default is not dataclasses.MISSING and default is not None:
            schema["default"] = default
        extra = _SHORTHANDS.get((cls.__name__, f.name))
        if extra is not None:
            schema = {"anyOf": [extra, schema], **({"description": schema["description"]} if "description" in schema else {})}
        path = str(f.metadata.get("yaml", f.name)).split(".")
        target = properties
        for part in path[:-1]:
            target = target.setdefault(part, {"type": "object", "additionalProperties": False, "properties": {}})["properties"]
        target[path[-1]] = schema
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if len(path) == 1 and not has_default and not f.metadata.get("optional"):
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema of a run config YAML file (see :func:`mrv.config.load_config`)."""
    schema = _object_schema(config_module.RunConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "soilcarbon-mrv run config",
        **schema,
    }
