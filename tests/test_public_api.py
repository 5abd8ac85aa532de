"""The stage packages' public names: lazy re-exports in ``__init__`` and ``__all__`` in every module."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mrv.imagery", "mrv.samples", "mrv.accounting", "mrv.modeling")
HEAVY = ("sklearn", "rasterio", "pandas", "pystac", "sqlalchemy", "xarray", "odc.stac", "sentinelhub", "pyogrio")


def test_importing_the_packages_loads_no_heavy_library() -> None:
    code = f"import sys, {', '.join(PACKAGES)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_reexported_name_resolves_to_its_definition(package: str) -> None:
    pkg = importlib.import_module(package)
    submodules = {p.stem for p in Path(pkg.__file__ or "").parent.glob("*.py")}
    assert not set(pkg.__all__) & submodules  # a name shadowing a submodule would break `from pkg import mod`
    for name in pkg.__all__:
        value = getattr(pkg, name)
        home = getattr(value, "__module__", None)
        if home is not None and callable(value):
            assert home.startswith(package), (name, home)
    assert set(pkg.__all__) <= set(dir(pkg))


def _all_of(path: Path) -> set[str] | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_lists_its_public_functions_and_classes(package: str) -> None:
    folder = REPO / package.replace(".", "/")
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        names = _all_of(path)
        if names is None:
            continue  # modules of other stages' helpers not yet listed are checked when they get one
        module = importlib.import_module(f"{package}.{path.stem}")
        assert all(hasattr(module, n) for n in names), path
        tree = ast.parse(path.read_text(encoding="utf-8"))
        public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")}
        assert public <= names, (path.name, sorted(public - names))
