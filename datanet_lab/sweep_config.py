"""A sweep's YAML file: the notebook chain, fixed parameters and a grid, expanded into checked runs.

Layout of ``configs/sweeps/NAME.yaml``::

    name: NAME                       # optional; default: the file's stem (runs go to runs/NAME/)
    notebook_dir: ../notebooks       # optional, relative to this file; default: the package's notebooks/
    notebooks: [01_build_datanet.ipynb, ...]   # optional; default: the batch's chain
    kernel: python3                  # optional Jupyter kernel name
    fixed: {dataset: wine, epochs: 5}
    grid:
      product: {model: [logreg, mlp], seed: [0, 1, 2]}        # every combination
      zip:                                                  # groups of equal-length lists, varied together
        - {n_contributors: [5, 10], scenario: ["honest:5", "honest:10"]}

Every run's parameters are checked before anything runs: each name must be declared by the
parameters cell of some notebook of the chain, with the type of that cell's default, and the
batch's value checks (:func:`datanet_lab.params.check`) must pass.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import ledger
from datanet import DatanetError
from datanet_lab.params import DEFAULTS, RUN_DIR, ParameterError, check
from datanet_lab.runner import NOTEBOOK_DIR, NOTEBOOKS, declared_parameters

KEYS = {"name", "notebook_dir", "notebooks", "kernel", "fixed", "grid"}
GRID_KEYS = {"product", "zip"}


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id and its full parameters (every parameter the chain declares)."""

    run_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: ``runs`` in grid order, all checked."""

    name: str
    source: Path
    notebooks: tuple[Path, ...]
    kernel: str
    runs: tuple[Run, ...]


def run_id(params: dict[str, Any]) -> str:
    """A stable id: the first 12 hex digits of SHA-256 over the RFC 8785 JSON of ``params``."""
    return hashlib.sha256(ledger.canonical_json(params)).hexdigest()[:12]


def load(path: str | Path) -> Sweep:
    """Read, expand and check the sweep file at ``path``.

    Raises:
        ParameterError: a malformed file, an unknown parameter, a wrong type or a bad value,
            naming the file, the parameter, its value and the notebook.
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read sweep file {path}: {exc}") from None
    if not isinstance(spec, dict):
        raise ParameterError(f"{path}: a sweep file is a mapping with keys {sorted(KEYS)}")
    _no_unknown_keys(path, "", spec, KEYS)
    notebook_dir = (path.parent / spec["notebook_dir"]).resolve() if "notebook_dir" in spec else NOTEBOOK_DIR
    notebooks = tuple(notebook_dir / name for name in spec.get("notebooks", NOTEBOOKS))
    missing = [str(nb) for nb in notebooks if not nb.is_file()]
    if missing:
        raise ParameterError(f"{path}: notebook(s) not found: {missing}")
    defaults = {nb: _typed_defaults(nb) for nb in notebooks}
    points = expand(spec.get("fixed") or {}, spec.get("grid") or {}, path)
    runs = tuple(_checked_run(point, defaults, path) for point in points)
    return Sweep(spec.get("name", path.stem), path, notebooks, spec.get("kernel", "python3"), runs)


def expand(fixed: dict[str, Any], grid: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The grid's points in order (the last ``product`` axis varies fastest; zip groups follow),
    each merged over ``fixed``."""
    _no_unknown_keys(path, "grid.", grid, GRID_KEYS)
    product = grid.get("product") or {}
    groups = [product] if product else []
    axes: list[list[dict[str, Any]]] = [[{name: v} for v in _values(path, f"grid.product.{name}", values)]
                                        for name, values in product.items()]
    for index, group in enumerate(grid.get("zip") or []):
        where = f"grid.zip[{index}]"
        if not isinstance(group, dict) or not group:
            raise ParameterError(f"{path}: {where} must be a mapping of parameter -> list of values")
        columns = {name: _values(path, f"{where}.{name}", values) for name, values in group.items()}
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ParameterError(f"{path}: {where} zips lists of different lengths {lengths}")
        axes.append([dict(zip(columns, row)) for row in zip(*columns.values())])
        groups.append(group)
    names = [*fixed, *(name for group in groups for name in group)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ParameterError(f"{path}: parameter(s) {repeated} set in more than one place of fixed/grid")
    return [{**fixed, **{k: v for part in combo for k, v in part.items()}} for combo in itertools.product(*axes)]


def _values(path: Path, where: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise ParameterError(f"{path}: {where} must be a non-empty list of values, got {values!r}")
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ParameterError(f"{path}: {where} lists {repeated[0]!r} more than once")
    return values


def _no_unknown_keys(path: Path, prefix: str, spec: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ParameterError(f"{path}: unknown key(s) {[prefix + k for k in unknown]}; expected {sorted(known)}")


def _typed_defaults(notebook: Path) -> dict[str, Any]:
    """The literal defaults of ``notebook``'s parameters cell (``run_dir`` excluded)."""
    return {name: ast.literal_eval(text) for name, text in declared_parameters(notebook).items() if name != RUN_DIR}


def _checked_run(point: dict[str, Any], defaults: dict[Path, dict[str, Any]], path: Path) -> Run:
    """Check ``point`` against every notebook's parameters cell and the batch's value checks."""
    declared = {name: value for d in defaults.values() for name, value in d.items()}
    for name, value in point.items():
        if name not in declared:
            raise ParameterError(f"{path}: unknown parameter {name!r} (value {value!r}): declared by no notebook of "
                                 f"{[nb.name for nb in defaults]}; known: {sorted(declared)}")
        for notebook, cell in defaults.items():
            if name in cell and not _same_type(value, cell[name]):
                raise ParameterError(f"{path}: parameter {name!r} = {value!r} is {type(value).__name__}, but "
                                     f"{notebook.name} declares {type(cell[name]).__name__} "
                                     f"(default {cell[name]!r})")
    # an int given for a float parameter is stored as float, so that 1 and 1.0 get one run id
    params = {**declared, **{k: float(v) if isinstance(declared[k], float) else v for k, v in point.items()}}
    try:
        check({k: v for k, v in params.items() if k in DEFAULTS})
    except DatanetError as exc:
        raise ParameterError(f"{path}: run {point}: {exc}") from None
    return Run(run_id(params), params)


def _same_type(value: Any, default: Any) -> bool:
    """``value`` has the type of ``default``; an int passes for a float, a bool never for an int."""
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    return isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
