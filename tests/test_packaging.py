"""The project's metadata agrees with itself: pyproject vs environment.yml, CI vs README."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["peers"]]


def _locked() -> dict[str, str]:
    """``{canonical name: exact version}`` of requirements.lock; a name pinned twice fails."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    names = [canonicalize_name(name) for name, _ in pins]
    assert len(names) == len(set(names)), "requirements.lock pins a package twice"
    return {canonicalize_name(name): version for name, version in pins}


def _makefile_torch() -> Requirement:
    return Requirement(re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1))


def test_the_lock_pins_every_declared_dependency_within_its_range():
    locked = _locked()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        if name == "torch":  # installed first, from the Makefile's TORCH, and left out of the lock
            assert name not in locked
            (pinned,) = _makefile_torch().specifier
            assert requirement.specifier.contains(pinned.version), f"TORCH {pinned} is outside {requirement}"
            continue
        assert name in locked, f"requirements.lock does not pin {name}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject's {requirement}"


def test_the_lock_is_complete_only_the_pins_and_their_sources():
    lines = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith(" ")]
    loose = [line for line in lines if not line.startswith("#") and not re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line)]
    assert loose == [], "every requirement in requirements.lock is an exact pin"


def test_the_installed_environment_is_the_locked_one():
    from importlib import metadata
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differing = {name: (version, installed.get(name)) for name, version in _locked().items() if installed.get(name) != version}
    assert differing == {}, f"installed versions differ from requirements.lock (locked, installed): {differing}"


def test_environment_yml_installs_the_makefile_torch_then_the_lock():
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(item["pip"] for item in conda if isinstance(item, dict))
    assert pip_section == [str(_makefile_torch()), "-r requirements.lock"]


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
