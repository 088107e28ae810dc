"""The rules file: schema, defaults, and every problem reported at its line."""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest

from config.rules_conditions import AttributeCondition, CallingAECondition, OrientationCondition
from config.rules_file import RulesError, RuleSet, default_rules_path, load_rules, parse_rules
from config.rules_schema import SegSettings
from config.settings import Settings
from dicom_io.nifti3d import NiftiLayout, VolumeIntensity
from dicom_io.seg import SegmentationType
from workers.jobs import Priority, Route

# A valid two-rule file; tests break one line of it at a time.
GOOD = """\
version: 1
rules:
  - name: ct-organs
    match:
      all:
        - {attribute: Modality, equals: CT}
        - {attribute: SliceThickness, range: {max: 5}}
    action:
      endpoint: mip3d
      model: 3d
      prompts: [liver, spleen]
      window: soft_tissue
      destinations: [pacs]
  - name: cr-lungs
    match: {attribute: Modality, in: [CR, DX]}
    action:
      endpoint: mip2d
      model: 2d
      prompts:
        - left lung
        - right lung
      window: voi
      destinations: [pacs]
"""


def parse(text: str) -> RuleSet:
    return parse_rules(textwrap.dedent(text), source="rules.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_a_good_file_loads_with_defaults_filled_in() -> None:
    rules = parse(GOOD)
    assert [r.name for r in rules.rules] == ["ct-organs", "cr-lungs"]
    organs, lungs = rules.rules
    assert organs.enabled
    assert not organs.stop
    assert organs.priority is Priority.ROUTINE
    assert organs.action.seg.type == SegmentationType.BINARY
    assert organs.action.seg.series_description == "ct-organs (MedImageParse 3D)"
    assert (organs.action.seg.series_number, lungs.action.seg.series_number) == (9901, 9902)
    assert organs.action.nifti_options is not None
    assert organs.action.nifti_options.intensity is VolumeIntensity.UINT8
    assert organs.action.nifti_options.layout is NiftiLayout.SLICES_FIRST
    assert lungs.action.nifti_options is None
    (group,) = lungs.action.groups
    assert group.prompts == ("left lung", "right lung")
    assert group.window == "voi"
    assert len(rules.sha256) == 64
    assert rules.size == len(GOOD)


def test_seg_types_are_those_of_the_seg_builder() -> None:
    field = SegSettings.model_fields["type"].annotation
    assert set(typing.get_args(field)) == {t.value for t in SegmentationType}
    rules = parse(edit("      window: voi\n", "      window: voi\n      seg: {type: fractional}\n"))
    assert SegmentationType(rules.rules[1].action.seg.type) is SegmentationType.FRACTIONAL


def test_the_packaged_default_loads_with_zero_errors() -> None:
    rules = load_rules(default_rules_path())
    names = [r.name for r in rules.rules]
    assert len(names) == len(set(names)) >= 8
    enabled = {r.name for r in rules.enabled}
    assert {"ct-abdomen-organs-3d", "ct-chest-2d", "cr-dx-chest-lungs", "mr-brain-flair-2d"} <= enabled
    assert {"ct-chest-lungs-3d", "sm-pathology-neoplastic-cells"}.isdisjoint(enabled)
    chest = rules.get("ct-chest-2d").action.groups
    assert [g.window for g in chest] == ["lung", "abdomen"]
    assert rules.mtime_ns is not None


def test_an_unknown_keyword_names_rule_line_and_a_suggestion() -> None:
    message = one_problem(edit("{attribute: SliceThickness,", "{attribute: SliceThicknes,"))
    assert message.startswith("rules.yaml:7: rule 'ct-organs': match.all[1].attribute:")
    assert "unknown DICOM keyword 'SliceThicknes' (did you mean SliceThickness?)" in message


def test_two_tests_in_one_leaf() -> None:
    message = one_problem(
        edit("{attribute: Modality, equals: CT}", "{attribute: Modality, equals: CT, regex: C}")
    )
    assert message.startswith("rules.yaml:6: rule 'ct-organs': match.all[0]:")
    assert "equals and regex" in message


def test_a_leaf_without_a_test_and_a_mapping_that_is_no_condition() -> None:
    found = problems(edit("{attribute: Modality, equals: CT}", "{attribute: Modality}"))
    assert found == [
        "rules.yaml:6: rule 'ct-organs': match.all[0]: attribute Modality: add one test of "
        "equals, in, regex, range, present, absent"
    ]
    message = one_problem(edit("{attribute: Modality, equals: CT}", "{modality: CT}"))
    assert message.startswith("rules.yaml:6:")
    assert "a condition has exactly one of" in message


def test_an_ampersand_in_a_prompt_is_reported_at_its_own_line() -> None:
    message = one_problem(edit("- right lung", "- right lung & heart"))
    assert message.startswith("rules.yaml:21: rule 'cr-lungs': action.prompts[1]:")
    assert "'&'" in message


def test_an_empty_prompt() -> None:
    assert "empty prompt" in one_problem(edit("[liver, spleen]", "[liver, '  ']"))


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        ("window: soft_tissue", "window: abdomen", 12, "window 'abdomen' is not a 3D choice"),
        ("window: soft_tissue", "window: voi", 12, "'voi' is a 2D notion"),
        ("window: voi", "window: brain", 22, "window 'brain' is not a 2D choice"),
    ],
)
def test_windows_are_checked_against_the_model(old: str, new: str, line: int, expected: str) -> None:
    message = one_problem(edit(old, new))
    assert message.startswith(f"rules.yaml:{line}:")
    assert expected in message


def test_window_spellings_are_normalised() -> None:
    rules = parse(edit("window: soft_tissue", "window: Soft Tissue"))
    assert rules.rules[0].action.window == "soft_tissue"


def test_nifti_on_a_2d_rule() -> None:
    message = one_problem(edit("      window: voi\n", "      window: voi\n      nifti: {layout: xyz}\n"))
    assert message == "rules.yaml:23: rule 'cr-lungs': action.nifti: nifti options apply to the 3D model only"


def test_raw_intensities_with_a_window() -> None:
    message = one_problem(
        edit("      window: soft_tissue\n", "      window: soft_tissue\n      nifti: {intensity: raw}\n")
    )
    assert "rules.yaml:13:" in message
    assert "no effect" in message


def test_duplicate_rule_names_point_at_the_second_and_the_first() -> None:
    message = one_problem(edit("name: cr-lungs", "name: ct-organs"))
    assert message == "rules.yaml:14: rule 'ct-organs': duplicate rule name (first on line 3)"


def test_an_invalid_regex_is_a_load_error() -> None:
    message = one_problem(edit("in: [CR, DX]", "regex: '(CR'"))
    assert message.startswith("rules.yaml:15: rule 'cr-lungs': match.regex: invalid regex '(CR'")


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = edit("SliceThickness", "Thickness")
    text = edit("[liver, spleen]", "[liver, 'a & b']", text)
    text = edit("name: cr-lungs", "name: ct-organs", text)
    text = edit("window: voi", "window: lung\n      nifti: {layout: xyz}", text)
    lines = [int(p.split(":")[1]) for p in problems(text)]
    assert lines == [7, 11, 14, 23]


def test_structure_errors_name_the_key() -> None:
    assert "unknown key 'prompt' (did you mean 'prompts'?)" in one_problem(
        edit("prompts: [liver", "prompt: [liver")
    )
    message = one_problem(edit("      endpoint: mip2d\n", ""))
    assert message == "rules.yaml:16: rule 'cr-lungs': missing 'endpoint'"
    message = one_problem(edit("range: {max: 5}", "range: {min: 6, max: 5}"))
    assert message.startswith("rules.yaml:7:")
    assert "min 6 is above max 5" in message
    assert "lower-case" in one_problem(edit("name: cr-lungs", "name: CR Lungs"))
    assert one_problem(edit("  - name: cr-lungs\n", "  - description: no name\n")) == (
        "rules.yaml:14: rule #2: missing 'name'"
    )
    assert "not both" in one_problem(
        edit("      window: voi\n", "      window: voi\n      prompt_groups: [{prompts: [x]}]\n")
    )


def test_yaml_booleans_must_be_quoted() -> None:
    message = one_problem(edit("equals: CT}", "equals: NO}"))
    assert message.startswith("rules.yaml:6:")
    assert "put it in quotes" in message
    assert parse(edit("equals: CT}", "equals: 'NO'}")).rules[0]


def test_sequences_take_present_and_absent_only() -> None:
    message = one_problem(
        edit("{attribute: Modality, equals: CT}", "{attribute: ReferencedImageSequence, equals: x}")
    )
    assert "sequence" in message
    assert parse(
        edit("{attribute: Modality, equals: CT}", "{attribute: ReferencedImageSequence, present: true}")
    )


def test_yaml_syntax_errors_and_duplicate_keys_have_lines() -> None:
    message = one_problem(edit("prompts: [liver, spleen]", "prompts: [liver, spleen"))
    assert message.startswith("rules.yaml:")
    assert "not valid YAML" in message
    message = one_problem(edit("      model: 3d\n", "      model: 3d\n      model: 3d\n"))
    assert message == "rules.yaml:11: duplicate key 'model' (first on line 10)"


def test_file_level_problems() -> None:
    assert one_problem("rules: []\n") == "rules.yaml:1: version must be 1"
    assert one_problem("version: 2\nrules: []\n") == "rules.yaml:1: version must be 1"
    assert "unknown key 'rule'" in one_problem("version: 1\nrule: []\n")
    assert "a rules file is a mapping" in one_problem("")
    assert parse("version: 1\nrules: []\n").rules == ()


def test_condition_grammar_shorthands() -> None:
    text = edit(
        "{attribute: Modality, in: [CR, DX]}",
        "{all: [{orientation: axial}, {route: dimse}, {kind: [images]}, {calling_ae: CR1},"
        " {calling_ae: [CR1, CR2]}, {calling_ae: {regex: '^CR'}}, {instances: {min: 1}}]}",
    )
    conditions = parse(text).rules[1].match.all  # type: ignore[union-attr]
    assert isinstance(conditions[0], OrientationCondition)
    assert conditions[0].orientation == ("axial",)
    assert conditions[1].route == (Route.DIMSE,)  # type: ignore[union-attr]
    ae = [c for c in conditions if isinstance(c, CallingAECondition)]
    assert [c.calling_ae.titles for c in ae[:2]] == [frozenset({"CR1"}), frozenset({"CR1", "CR2"})]
    assert ae[2].calling_ae.pattern is not None
    assert "AE title" in one_problem(edit("{attribute: Modality, in: [CR, DX]}", "{calling_ae: {}}"))


def test_regexes_are_compiled_at_load() -> None:
    rules = parse(edit("in: [CR, DX]", "regex: '(?i)^c[rx]$'"))
    condition = rules.rules[1].match
    assert isinstance(condition, AttributeCondition)
    assert condition.pattern is not None
    assert condition.pattern.search("cr")


def _settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "endpoints": {
            "mip2d": {"url": "http://127.0.0.1:1/score", "model": "2d"},
            "mip3d": {"url": "http://127.0.0.1:2/score", "model": "3d"},
        },
        "destinations": {"pacs": {"kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}},
    }
    values.update(changes)
    return Settings(**values)


def test_validate_against_settings() -> None:
    rules = parse(GOOD)
    rules.validate_against(_settings())
    with pytest.raises(RulesError) as caught:
        rules.validate_against(_settings(destinations={}))
    assert [str(p) for p in caught.value.problems] == [
        "rules.yaml:13: rule 'ct-organs': destination 'pacs' is not configured (none configured)",
        "rules.yaml:23: rule 'cr-lungs': destination 'pacs' is not configured (none configured)",
    ]
    swapped = parse(edit("endpoint: mip2d", "endpoint: mip3d"))
    with pytest.raises(
        RulesError, match=r"rules.yaml:18: rule 'cr-lungs': model 2d, but endpoint 'mip3d' serves 3d"
    ):
        swapped.validate_against(_settings())
    unknown = parse(edit("endpoint: mip3d", "endpoint: mip9"))
    with pytest.raises(
        RulesError, match=r"rules.yaml:9: .*endpoint 'mip9' is not configured \(mip2d, mip3d\)"
    ):
        unknown.validate_against(_settings())
    disabled = parse(
        edit(
            "endpoint: mip3d",
            "endpoint: mip9",
            edit("  - name: ct-organs\n", "  - name: ct-organs\n    enabled: false\n"),
        )
    )
    disabled.validate_against(_settings())


def test_load_rules_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"version: 1\nrules: [\xff]\n")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(path)
