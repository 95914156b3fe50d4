"""The project's metadata agrees with itself: pyproject vs environment.yml, CI vs README."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(item["pip"] for item in conda if isinstance(item, dict))
    assert {_name(r) for r in pip_section} == declared


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def test_metadata_builds_without_warnings_and_declares_the_spdx_license(tmp_path):
    # Setuptools warns at every install about a TOML-table `license`; -W error turns that into a failure.
    build = ("import sys, setuptools.build_meta as b; "
             "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "error", "-W", "ignore::ResourceWarning", "-c", build, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = (tmp_path / done.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_ledger_imports_nothing_from_the_ml_stack():
    banned = re.compile(r"^\s*(from|import)\s+(datanet|attribution|datanet_lab|torch|numpy|pandas)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ledger").rglob("*.py") if banned.search(p.read_text())]
    assert offenders == []


def test_datanet_knows_nothing_of_attribution_or_the_ledger():
    banned = re.compile(r"^\s*(from|import)\s+(attribution|ledger|datanet_lab)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "datanet").rglob("*.py") if banned.search(p.read_text())]
    offenders += [str(p.relative_to(ROOT)) for p in (ROOT / "attribution").rglob("*.py") if re.search(r"^\s*(from|import)\s+(ledger|datanet_lab)\b", p.read_text(), re.MULTILINE)]
    assert offenders == []
