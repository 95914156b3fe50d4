"""A sweep's YAML file: the notebook chain, fixed parameters and a grid, expanded into checked runs.

Layout of ``configs/sweeps/NAME.yaml`` (UTF-8)::

    name: NAME                       # optional; default: the file's stem (runs go to runs/NAME/)
    notebook_dir: ../notebooks       # optional, relative to this file; default: the package's notebooks/
    notebooks: [01_build_datanet.ipynb, ...]   # optional; default: the batch's chain
    kernel: python3                  # optional Jupyter kernel name
    fixed: {dataset: wine, epochs: 5}
    grid:
      product: {model: [logreg, mlp], seed: [0, 1, 2]}        # every combination
      zip:                                                  # groups of equal-length lists, varied together
        - {n_contributors: [5, 10], scenario: ["honest:5", "honest:10"]}

Everything is checked before anything runs. The name is one path component (letters, digits,
``_``, ``.``, ``-``); the kernel is installed; the grid holds at most ``max_runs`` runs. Each
fixed and axis value is checked once: its name must be declared by the parameters cell of some
notebook of the chain, with the type of that cell's default, and a batch parameter must pass
:func:`datanet_lab.params.check_value`. Then each run's full parameters must pass
:func:`datanet_lab.params.resolve`, and fit its dataset (loaded once per dataset).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

import ledger
from datanet import DatanetError, load_table
from datanet_lab.params import DEFAULTS, RUN_DIR, ParameterError, check_fits, check_value, resolve, same_type, training_rows
from datanet_lab.batch.runner import NOTEBOOK_DIR, NOTEBOOKS, declared_parameters

KEYS = {"name", "notebook_dir", "notebooks", "kernel", "fixed", "grid"}
GRID_KEYS = {"product", "zip"}
MAX_RUNS = 10_000
"""The default limit on a sweep's runs (``--max-runs``)."""
SAFE_NAME = re.compile(r"\w[\w.-]*")
"""A sweep name is one path component under ``--out``: no separator, no leading dot."""


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


def load(path: str | Path, max_runs: int = MAX_RUNS) -> Sweep:
    """Read, expand and check the sweep file at ``path``.

    Raises:
        ParameterError: a malformed file, an unsafe name, an unknown kernel, more than
            ``max_runs`` runs, an unknown parameter, a wrong type or a bad value, naming the
            file, the key or parameter, its value and the notebook.
    """
    path = Path(path)
    spec = _read(path)
    name = _field(path, spec, "name", str, path.stem)
    if not SAFE_NAME.fullmatch(name):
        raise ParameterError(f"{path}: name {name!r} must be one path component: letters, digits, '_', '.' or '-', "
                             f"not starting with '.' or '-' (runs go to OUT/NAME/)")
    notebook_dir = NOTEBOOK_DIR
    if "notebook_dir" in spec:
        notebook_dir = (path.parent / _field(path, spec, "notebook_dir", str, "")).resolve()
    names = _field(path, spec, "notebooks", list, list(NOTEBOOKS))
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ParameterError(f"{path}: notebooks must be a non-empty list of notebook file names, got {names!r}")
    notebooks = tuple(notebook_dir / n for n in names)
    missing = [str(nb) for nb in notebooks if not nb.is_file()]
    if missing:
        raise ParameterError(f"{path}: notebook(s) not found: {missing}")
    kernel = _field(path, spec, "kernel", str, "python3")
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        installed = sorted(KernelSpecManager().find_kernel_specs())
        raise ParameterError(f"{path}: kernel {kernel!r} is not installed; installed: {installed}") from None
    fixed = _mapping(path, "fixed", spec.get("fixed"))
    grid = _mapping(path, "grid", spec.get("grid"))
    _no_unknown_keys(path, "grid.", grid, GRID_KEYS)
    axes = _axes(path, grid)
    size = math.prod(len(rows) for _, rows in axes)
    if size > max_runs:
        shape = " x ".join(f"{len(rows)} ({where})" for where, rows in axes)
        raise ParameterError(f"{path}: the grid has {size:,} runs ({shape}), more than --max-runs {max_runs:,}")
    defaults = _defaults(notebooks)
    columns = [("fixed", fixed), ("grid.product", grid.get("product") or {}),
               *((f"grid.zip[{i}]", group) for i, group in enumerate(grid.get("zip") or []))]
    for where, column in columns:
        for parameter, values in column.items():
            for value in [values] if where == "fixed" else values:
                _check_value(path, f"{where}.{parameter}", parameter, value, defaults)
    return Sweep(name, path, notebooks, kernel, _checked_runs(path, expand(path, fixed, axes), defaults))


def _read(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read sweep file {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParameterError(f"cannot read sweep file {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                             f"at offset {exc.start})") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"cannot read sweep file {path}: {exc}") from None
    if not isinstance(spec, dict):
        raise ParameterError(f"{path}: a sweep file is a mapping with keys {sorted(KEYS)}, got {type(spec).__name__}")
    _no_unknown_keys(path, "", spec, KEYS)
    return spec


def _field(path: Path, spec: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``spec[key]`` when it is a ``kind``, ``default`` when absent."""
    value = spec.get(key, default)
    if not isinstance(value, kind):
        raise ParameterError(f"{path}: {key} must be a {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _mapping(path: Path, where: str, value: Any) -> dict[str, Any]:
    """``value`` as a mapping of parameter names (an empty YAML value is an empty mapping)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{path}: {where} must be a mapping (name: value), got {value!r} ({type(value).__name__})")
    odd = [k for k in value if not isinstance(k, str)]
    if odd:
        raise ParameterError(f"{path}: {where} has key(s) {odd} that are not names")
    return value


def _axes(path: Path, grid: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The grid's axes in order, each ``(where, rows)``: a ``product`` axis per parameter, then
    one per ``zip`` group whose rows set all of the group's parameters."""
    product = _mapping(path, "grid.product", grid.get("product"))
    axes = [(f"grid.product.{name}", [{name: v} for v in _values(path, f"grid.product.{name}", values)])
            for name, values in product.items()]
    groups = grid.get("zip") or []
    if not isinstance(groups, list):
        raise ParameterError(f"{path}: grid.zip must be a list of mappings, got {groups!r} ({type(groups).__name__})")
    for index, group in enumerate(groups):
        where = f"grid.zip[{index}]"
        if not isinstance(group, dict) or not group:
            raise ParameterError(f"{path}: {where} must be a mapping of parameter -> list of values")
        columns = {name: _values(path, f"{where}.{name}", values) for name, values in _mapping(path, where, group).items()}
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ParameterError(f"{path}: {where} zips lists of different lengths {lengths}")
        axes.append((where, [dict(zip(columns, row)) for row in zip(*columns.values())]))
    return axes


def expand(path: Path, fixed: dict[str, Any], axes: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The grid's points in order (the last axis varies fastest), each merged over ``fixed``."""
    names = [*fixed, *(name for _, rows in axes for name in rows[0])]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ParameterError(f"{path}: parameter(s) {repeated} set in more than one place of fixed/grid")
    return [{**fixed, **{k: v for row in combo for k, v in row.items()}}
            for combo in itertools.product(*(rows for _, rows in axes))]


def _values(path: Path, where: str, values: Any) -> list[Any]:
    """``values`` when it is a non-empty list without repeats (in linear time: axes may be long)."""
    if not isinstance(values, list) or not values:
        raise ParameterError(f"{path}: {where} must be a non-empty list of values, got {values!r}")
    seen = set()
    for value in values:
        try:
            key = (hash(value), value)  # equal values (1 and 1.0) are one value
        except TypeError:  # a list or mapping (YAML gives no tuples)
            key = (repr(value),)
        if key in seen:
            raise ParameterError(f"{path}: {where} lists {value!r} more than once")
        seen.add(key)
    return values


def _no_unknown_keys(path: Path, prefix: str, spec: dict[str, Any], known: set[str]) -> None:
    unknown = sorted((k for k in spec if k not in known), key=str)
    if unknown:
        raise ParameterError(f"{path}: unknown key(s) {[prefix + str(k) for k in unknown]}; expected {sorted(known)}")


def _defaults(notebooks: tuple[Path, ...]) -> dict[Path, dict[str, Any]]:
    """Each notebook's parameters cell: the literal defaults (``run_dir`` excluded)."""
    return {nb: {name: ast.literal_eval(text) for name, text in declared_parameters(nb).items() if name != RUN_DIR}
            for nb in notebooks}


def _check_value(path: Path, where: str, name: str, value: Any, defaults: dict[Path, dict[str, Any]]) -> None:
    """Check ``value`` of parameter ``name`` alone against every notebook's parameters cell and
    :func:`check_value` (an int for a float parameter is checked as the float it becomes)."""
    known = _known(defaults)
    if name not in known:
        raise ParameterError(f"{path}: {where}: unknown parameter {name!r} (value {value!r}): declared by no notebook of "
                             f"{[nb.name for nb in defaults]}; known: {sorted(known)}")
    for notebook, cell in defaults.items():
        if name in cell and not same_type(value, cell[name]):
            raise ParameterError(f"{path}: {where}: parameter {name!r} = {value!r} is {type(value).__name__}, but "
                                 f"{notebook.name} declares {type(cell[name]).__name__} (default {cell[name]!r})")
    try:
        check_value(name, _as_declared(value, known[name]))
    except DatanetError as exc:
        raise ParameterError(f"{path}: {where}: {exc}") from None


def _checked_runs(path: Path, points: list[dict[str, Any]], defaults: dict[Path, dict[str, Any]]) -> tuple[Run, ...]:
    """Each point's full parameters: the chain's defaults, the batch parameters :func:`resolve`
    completes (the default scenario scaled to ``n_contributors``), then the point, each run
    checked to fit its dataset (loaded once per dataset)."""
    known = _known(defaults)
    training: dict[tuple[str, str], int] = {}
    runs = []
    for point in points:
        point = {name: _as_declared(value, known[name]) for name, value in point.items()}
        try:
            full = resolve({k: v for k, v in point.items() if k in DEFAULTS})
            source = (full["dataset"], full["label_column"])
            if source not in training:
                training[source] = training_rows(load_table(*source))
            check_fits(full, training[source])
        except DatanetError as exc:
            raise ParameterError(f"{path}: run {point}: {exc}") from None
        params = {**known, **{k: v for k, v in full.items() if k in known}, **point}
        runs.append(Run(run_id(params), params))
    return tuple(runs)


def _known(defaults: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """Every parameter the chain declares, with its default."""
    return {name: value for cell in defaults.values() for name, value in cell.items()}


def _as_declared(value: Any, default: Any) -> Any:
    """An int given for a float parameter as a float, so that 1 and 1.0 get one run id."""
    return float(value) if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool) else value
