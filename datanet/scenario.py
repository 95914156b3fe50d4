"""Contributor scenarios: which contributor behaves how, from a spec such as ``honest:6,noisy:2``."""

from __future__ import annotations

from collections.abc import Sequence

from datanet.errors import ScenarioError

BEHAVIOURS = ("honest", "noisy", "duplicate", "out_of_domain", "malformed")
"""honest: submits its share as is; noisy: flips labels at ``noise_rate``; duplicate: resubmits
another contributor's samples under its own id (a sybil); out_of_domain: submits its share
reflected across the feature range; malformed: submits rows that break the schema.
Text Datanets parse their specs against ``datanet.text.behaviours.TEXT_BEHAVIOURS`` instead."""
COPYING = ("duplicate", "paraphrase_sybil")
"""Behaviours that resubmit another contributor's samples (tabular and text): a scenario needs
someone else to copy from."""


def contributor_ids(n_contributors: int) -> list[str]:
    """Stable ids ``c00``, ``c01``, ...; they sort in creation order."""
    width = max(2, len(str(n_contributors - 1)))
    return [f"c{i:0{width}d}" for i in range(n_contributors)]


def scenario_counts(spec: str, n_contributors: int | None, behaviours: Sequence[str] = BEHAVIOURS) -> dict[str, int]:
    """How many contributors of each behaviour ``spec`` names, in the spec's order (nothing is
    built per contributor, so a huge ``n_contributors`` costs nothing here; ``None``: as many as
    the spec names). ``behaviours`` are the known names (default: the tabular ones).

    Raises:
        ScenarioError: an unknown behaviour, a malformed or repeated part, counts that do not sum
            to ``n_contributors``, or only copying contributors (they need someone to copy).
    """
    if n_contributors is not None and n_contributors < 1:
        raise ScenarioError(f"n_contributors must be >= 1, got {n_contributors}")
    counts = _spec_counts(spec, behaviours)
    total = sum(counts.values())
    if n_contributors is None and total < 1:
        raise ScenarioError(f"scenario {spec!r} names no contributor")
    if n_contributors is not None and total != n_contributors:
        raise ScenarioError(f"scenario {spec!r} names {total} contributors but n_contributors is {n_contributors}")
    copiers = [name for name in COPYING if counts.get(name, 0)]
    if sum(counts.get(name, 0) for name in COPYING) == total:
        raise ScenarioError(f"scenario {spec!r} has only {'/'.join(copiers)} contributors: nobody to copy from")
    return counts


def _spec_counts(spec: str, behaviours: Sequence[str]) -> dict[str, int]:
    """The ``behaviour: count`` parts of ``spec``, each checked alone."""
    counts: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        name, sep, count = part.partition(":")
        if not sep or not count.strip().isdecimal():
            raise ScenarioError(f"scenario part {part!r} in {spec!r} is not of the form behaviour:count")
        name = name.strip()
        if name not in behaviours:
            raise ScenarioError(f"unknown behaviour {name!r} in scenario {spec!r}; expected one of {list(behaviours)}")
        if name in counts:
            raise ScenarioError(f"behaviour {name!r} appears twice in scenario {spec!r}")
        counts[name] = int(count)
    return counts


def parse_scenario(spec: str, n_contributors: int | None, behaviours: Sequence[str] = BEHAVIOURS) -> dict[str, str]:
    """Map each contributor id to its behaviour, in the spec's order (names from ``behaviours``).

    ``"honest:6,noisy:2,duplicate:1,out_of_domain:1"`` with ``n_contributors=10`` gives
    ``c00``-``c05`` honest, ``c06``-``c07`` noisy, ``c08`` duplicate, ``c09`` out_of_domain.

    Raises:
        ScenarioError: as :func:`scenario_counts`.
    """
    counts = scenario_counts(spec, n_contributors, behaviours)
    return dict(zip(contributor_ids(sum(counts.values())), [name for name, count in counts.items() for _ in range(count)]))


def scaled_scenario(spec: str, n_contributors: int, behaviours: Sequence[str] = BEHAVIOURS) -> str:
    """``spec``'s behaviour mix apportioned to ``n_contributors`` (largest remainders).

    Each behaviour first gets the whole part of its share of ``n_contributors``; the contributors
    left over go one each to the largest fractional parts, ties to the behaviour named first.
    Behaviours that get none are left out. ``"honest:6,noisy:2,duplicate:1,out_of_domain:1"``
    gives ``"honest:3,noisy:1,duplicate:1"`` for 5 and ``"honest:1,noisy:1"`` for 2.

    Raises:
        ScenarioError: ``spec`` is malformed (see :func:`scenario_counts`), ``n_contributors`` < 1,
            or the result would hold only duplicates.
    """
    if n_contributors < 1:
        raise ScenarioError(f"n_contributors must be >= 1, got {n_contributors}")
    counts = _spec_counts(spec, behaviours)
    total = sum(counts.values())
    if total == 0:
        raise ScenarioError(f"scenario {spec!r} names no contributor: no mix to scale")
    scaled = {name: count * n_contributors // total for name, count in counts.items()}
    remainders = sorted(counts, key=lambda name: -(counts[name] * n_contributors % total))  # stable: ties keep spec order
    for name in remainders[: n_contributors - sum(scaled.values())]:
        scaled[name] += 1
    result = ",".join(f"{name}:{count}" for name, count in scaled.items() if count)
    scenario_counts(result, n_contributors, behaviours)
    return result
