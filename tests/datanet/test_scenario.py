"""Tests for datanet.scenario.parse_scenario and contributor ids."""

from __future__ import annotations

import pytest

from datanet.errors import ScenarioError
from datanet.scenario import BEHAVIOURS, contributor_ids, parse_scenario, scaled_scenario, scenario_counts


def test_documented_example():
    got = parse_scenario("honest:6,noisy:2,duplicate:1,out_of_domain:1", 10)
    assert got == {
        "c00": "honest",
        "c01": "honest",
        "c02": "honest",
        "c03": "honest",
        "c04": "honest",
        "c05": "honest",
        "c06": "noisy",
        "c07": "noisy",
        "c08": "duplicate",
        "c09": "out_of_domain",
    }
    assert list(got) == [f"c{i:02d}" for i in range(10)]


def test_spec_order_is_kept():
    got = parse_scenario("malformed:1,honest:2", 3)
    assert list(got.items()) == [("c00", "malformed"), ("c01", "honest"), ("c02", "honest")]


def test_every_behaviour_is_accepted():
    spec = ",".join(f"{b}:1" for b in BEHAVIOURS)
    got = parse_scenario(spec, len(BEHAVIOURS))
    assert list(got.values()) == list(BEHAVIOURS)


def test_whitespace_and_zero_counts_are_tolerated():
    got = parse_scenario(" honest : 2 , noisy:0 , duplicate: 1 ", 3)
    assert got == {"c00": "honest", "c01": "honest", "c02": "duplicate"}


def test_single_contributor():
    assert parse_scenario("honest:1", 1) == {"c00": "honest"}


@pytest.mark.parametrize(
    "n, first, last",
    [(1, "c00", "c00"), (10, "c00", "c09"), (100, "c00", "c99"), (101, "c000", "c100"), (1001, "c0000", "c1000")],
)
def test_contributor_ids_are_fixed_width_and_sort_in_creation_order(n, first, last):
    ids = contributor_ids(n)
    assert len(ids) == n and len(set(ids)) == n
    assert ids[0] == first and ids[-1] == last
    assert sorted(ids) == ids
    assert len({len(i) for i in ids}) == 1


@pytest.mark.parametrize("spec", ["honest:2,sneaky:1", "Honest:3", "honest:2,:1"])
def test_unknown_behaviour(spec):
    with pytest.raises(ScenarioError, match="unknown behaviour"):
        parse_scenario(spec, 3)


def test_unknown_behaviour_names_the_value():
    with pytest.raises(ScenarioError, match="'sneaky'"):
        parse_scenario("honest:2,sneaky:1", 3)


@pytest.mark.parametrize(
    "spec, bad_part",
    [
        ("honest", "honest"),
        ("honest:", "honest:"),
        ("honest:x", "honest:x"),
        ("honest:-1", "honest:-1"),
        ("honest:1.5", "honest:1.5"),
        ("honest:2:1", "honest:2:1"),
        ("honest:3,", ""),
        ("", ""),
        ("honest=3", "honest=3"),
    ],
)
def test_bad_part(spec, bad_part):
    with pytest.raises(ScenarioError, match="behaviour:count") as info:
        parse_scenario(spec, 3)
    assert repr(bad_part) in str(info.value)


def test_superscript_count_is_a_bad_part():
    with pytest.raises(ScenarioError):
        parse_scenario("honest:²", 2)


def test_repeated_behaviour():
    with pytest.raises(ScenarioError, match="'honest' appears twice"):
        parse_scenario("honest:1,noisy:1,honest:1", 3)


@pytest.mark.parametrize("spec, n", [("honest:6,noisy:2", 10), ("honest:6,noisy:5", 10), ("honest:0", 1)])
def test_counts_not_summing(spec, n):
    with pytest.raises(ScenarioError, match=f"n_contributors is {n}"):
        parse_scenario(spec, n)


@pytest.mark.parametrize("n", [0, -3])
def test_no_contributors(n):
    with pytest.raises(ScenarioError, match=str(n)):
        parse_scenario("honest:1", n)


@pytest.mark.parametrize("spec, n", [("duplicate:3", 3), ("duplicate:2,honest:0", 2)])
def test_only_duplicates(spec, n):
    with pytest.raises(ScenarioError, match="only duplicate"):
        parse_scenario(spec, n)


def test_counts_of_a_huge_scenario_build_nothing():
    assert scenario_counts("honest:99999999999999999999,duplicate:1", 10**20) == {"honest": 10**20 - 1, "duplicate": 1}


DEFAULT = "honest:6,noisy:2,duplicate:1,out_of_domain:1"


@pytest.mark.parametrize("n, expected", [
    (10, DEFAULT),
    (20, "honest:12,noisy:4,duplicate:2,out_of_domain:2"),
    (2, "honest:1,noisy:1"),  # shares 1.2 / 0.4 / 0.2 / 0.2: the spare contributor goes to noisy's 0.4
    (4, "honest:3,noisy:1"),  # 2.4 / 0.8 / 0.4 / 0.4: spares to noisy (0.8), then honest (0.4, named first)
    (5, "honest:3,noisy:1,duplicate:1"),  # 3 / 1 / 0.5 / 0.5: the tie goes to duplicate, named first
    (15, "honest:9,noisy:3,duplicate:2,out_of_domain:1"),
])
def test_scaled_scenario_apportions_by_largest_remainder(n, expected):
    assert scaled_scenario(DEFAULT, n) == expected


def test_scaled_scenario_refuses_a_bad_spec():
    with pytest.raises(ScenarioError, match="unknown behaviour 'lazy'"):
        scaled_scenario("honest:1,lazy:1", 4)
    with pytest.raises(ScenarioError, match="names no contributor"):
        scaled_scenario("honest:0", 4)
    with pytest.raises(ScenarioError, match="only duplicate"):
        scaled_scenario("duplicate:3,honest:1", 1)


def test_text_specs_parse_against_the_text_behaviours():
    from datanet.text.behaviours import DEFAULT_TEXT_SCENARIO, TEXT_BEHAVIOURS

    got = parse_scenario(DEFAULT_TEXT_SCENARIO, 9, TEXT_BEHAVIOURS)
    assert list(got.values()) == ["honest"] * 4 + ["noisy", "duplicate", "paraphrase_sybil", "off_topic", "backdoor"]
    assert list(got) == contributor_ids(9)
    with pytest.raises(ScenarioError, match="unknown behaviour 'paraphrase_sybil'"):
        parse_scenario(DEFAULT_TEXT_SCENARIO, 9)  # the tabular default does not know it
    with pytest.raises(ScenarioError, match=r"unknown behaviour 'malformed' .*'backdoor'\]"):
        parse_scenario("honest:1,malformed:1", 2, TEXT_BEHAVIOURS)
    with pytest.raises(ScenarioError, match="only duplicate/paraphrase_sybil contributors: nobody to copy from"):
        parse_scenario("paraphrase_sybil:2,duplicate:1,honest:0", 3, TEXT_BEHAVIOURS)
    with pytest.raises(ScenarioError, match="only paraphrase_sybil contributors"):
        scenario_counts("paraphrase_sybil:2", 2, TEXT_BEHAVIOURS)
    assert scaled_scenario(DEFAULT_TEXT_SCENARIO, 18, TEXT_BEHAVIOURS) == (
        "honest:8,noisy:2,duplicate:2,paraphrase_sybil:2,off_topic:2,backdoor:2")


def test_a_spec_without_a_count_names_its_own_contributors():
    assert parse_scenario("honest:2,noisy:1", None) == {"c00": "honest", "c01": "honest", "c02": "noisy"}
    with pytest.raises(ScenarioError, match="names no contributor"):
        parse_scenario("honest:0", None)
