"""Rule evaluation (operators, combinators, stop, explanations), the default rules on phantoms, and
hot reload."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.dataset import Dataset
from structlog.testing import capture_logs

from config.rules_file import RulesError, RuleSet, default_rules_path, load_rules, parse_rules
from dicom_io.geometry import Plane
from dicom_io.series import SeriesKind
from dicom_io.testing import cr_dx_image, us_rgb, volume_phantom
from tests.helpers import written_series
from workers.jobs import Route
from workers.rules import MatchReport, Outcome, SeriesFacts, evaluate, facts_for
from workers.rules_loader import RulesSource

ACTION = {"endpoint": "mip2d", "model": "2d", "prompts": ["liver"], "destinations": ["pacs"]}


def facts(
    *,
    kind: SeriesKind = SeriesKind.VOLUME,
    instances: int = 40,
    frames: int | None = None,
    plane: Plane | None = Plane.AXIAL,
    route: Route = Route.DIMSE,
    calling_ae: str | None = "CT1",
    **attributes: Any,
) -> SeriesFacts:
    header = Dataset()
    for keyword, value in attributes.items():
        setattr(header, keyword, value)
    return SeriesFacts("1.2.3", header, instances, frames or instances, plane, kind, route, calling_ae)


def rules(*specs: dict[str, Any]) -> RuleSet:
    """Rules named r0, r1, ... unless named, each with a trivial 2D action."""
    listed = [{"name": f"r{i}", **spec, "action": ACTION} for i, spec in enumerate(specs)]
    return parse_rules(yaml.safe_dump({"version": 1, "rules": listed}, sort_keys=False))


def check(condition: dict[str, Any], series: SeriesFacts) -> tuple[bool, str]:
    (result,) = evaluate(rules({"match": condition}), series).results
    return result.fired, result.reason


def test_equals_ignores_case_and_padding() -> None:
    assert check({"attribute": "Modality", "equals": "ct"}, facts(Modality="CT"))[0]
    assert check({"attribute": "BodyPartExamined", "equals": "Abdomen"}, facts(BodyPartExamined="ABDOMEN "))[
        0
    ]
    assert check({"attribute": "Modality", "equals": "CT"}, facts(Modality="MR")) == (
        False,
        "Modality 'MR' is not 'CT'",
    )


def test_equals_compares_numbers_numerically_and_text_as_text() -> None:
    assert check({"attribute": "SliceThickness", "equals": 5}, facts(SliceThickness="5.0"))[0]
    assert check({"attribute": "SeriesNumber", "equals": 3}, facts(SeriesNumber=3))[0]
    assert not check({"attribute": "SliceThickness", "equals": "5"}, facts(SliceThickness="5.0"))[0]
    assert check({"attribute": "SliceThickness", "equals": 5}, facts(SliceThickness="5.5")) == (
        False,
        "SliceThickness 5.5 is not 5",
    )


def test_multi_valued_attributes_match_on_any_value() -> None:
    localizer = facts(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    axial = facts(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    assert check({"attribute": "ImageType", "equals": "localizer"}, localizer)[0]
    assert check({"attribute": "ImageType", "in": ["SCOUT", "LOCALIZER"]}, localizer)[0]
    assert check({"attribute": "ImageType", "regex": "^LOCAL"}, localizer)[0]
    assert check({"attribute": "ImageType", "equals": "LOCALIZER"}, axial) == (
        False,
        "ImageType [ORIGINAL, PRIMARY, AXIAL] has no value 'LOCALIZER'",
    )
    excluded = {"not": {"attribute": "ImageType", "regex": "LOCALIZER|SCOUT"}}
    assert check(excluded, localizer) == (False, "ImageType 'LOCALIZER' matches /LOCALIZER|SCOUT/")
    assert check(excluded, axial)[0]
    assert check(excluded, facts())[0]  # absent: not a localizer


def test_in_lists_and_its_explanation() -> None:
    condition = {"attribute": "BodyPartExamined", "in": ["ABDOMEN", "PELVIS"]}
    assert check(condition, facts(BodyPartExamined="PELVIS"))[0]
    assert check(condition, facts(BodyPartExamined="HEAD")) == (
        False,
        "BodyPartExamined 'HEAD' not in [ABDOMEN, PELVIS]",
    )
    assert check(condition, facts()) == (False, "BodyPartExamined is absent")


def test_regex_searches_and_is_case_sensitive_unless_told() -> None:
    series = facts(StudyDescription="CT Abd/Pelvis w/o")
    assert check({"attribute": "StudyDescription", "regex": "(?i)abd"}, series)[0]
    assert check({"attribute": "StudyDescription", "regex": "ABD"}, series) == (
        False,
        "StudyDescription 'CT Abd/Pelvis w/o' does not match /ABD/",
    )


def test_range_is_inclusive_and_numeric() -> None:
    condition = {"attribute": "SliceThickness", "range": {"min": 1, "max": 5}}
    assert check(condition, facts(SliceThickness="5"))[0]
    assert check(condition, facts(SliceThickness="1.0"))[0]
    assert check(condition, facts(SliceThickness="7.5")) == (False, "SliceThickness 7.5 is above 5")
    assert check(condition, facts(SliceThickness="0.625")) == (False, "SliceThickness 0.625 is below 1")
    assert check(condition, facts()) == (False, "SliceThickness is absent")
    assert check(condition, facts(SliceThickness="")) == (False, "SliceThickness is absent")
    assert check({"attribute": "StudyID", "range": {"max": 9}}, facts(StudyID="A12")) == (
        False,
        "StudyID 'A12' is not a number",
    )
    assert check({"attribute": "PixelSpacing", "range": {"max": 0.6}}, facts(PixelSpacing=[0.7, 0.5]))[0]


def test_present_and_absent_treat_an_empty_value_as_absent() -> None:
    present = {"attribute": "ContrastBolusAgent", "present": True}
    absent = {"attribute": "ContrastBolusAgent", "absent": True}
    assert check(present, facts(ContrastBolusAgent="IODINE")) == (True, "")
    assert check(present, facts(ContrastBolusAgent="")) == (False, "ContrastBolusAgent is absent or empty")
    assert check(absent, facts()) == (True, "")
    assert check(absent, facts(ContrastBolusAgent="IODINE")) == (False, "ContrastBolusAgent is present")


def test_counts() -> None:
    assert check({"instances": {"min": 20}}, facts(instances=40))[0]
    assert check({"instances": {"min": 20}}, facts(instances=7)) == (False, "7 instances, fewer than 20")
    enhanced = facts(instances=1, frames=120)
    assert check({"frames": {"min": 20, "max": 500}}, enhanced)[0]
    assert check({"frames": {"max": 100}}, enhanced) == (False, "120 frames, more than 100")


def test_orientation_kind_and_route() -> None:
    assert check({"orientation": ["axial", "coronal"]}, facts(plane=Plane.CORONAL))[0]
    assert check({"orientation": "axial"}, facts(plane=Plane.SAGITTAL)) == (
        False,
        "plane sagittal not in [axial]",
    )
    assert check({"orientation": "axial"}, facts(plane=None)) == (
        False,
        "plane unknown (no single image orientation)",
    )
    assert check({"kind": "volume"}, facts(kind=SeriesKind.IMAGES)) == (
        False,
        "series is images, not [volume]",
    )
    assert check({"kind": ["volume", "images"]}, facts(kind=SeriesKind.IMAGES))[0]
    # a 4D series is neither one volume nor a set of images: a rule takes it by saying so
    assert check({"kind": "volume"}, facts(kind=SeriesKind.PHASES)) == (
        False,
        "series is phases, not [volume]",
    )
    assert check({"kind": ["volume", "phases"]}, facts(kind=SeriesKind.PHASES))[0]
    assert check({"route": ["stow", "api"]}, facts(route=Route.API))[0]
    assert check({"route": "dimse"}, facts(route=Route.STOW)) == (False, "route stow not in [dimse]")


def test_calling_ae_forms() -> None:
    assert check({"calling_ae": "CT1"}, facts(calling_ae="CT1"))[0]
    assert check({"calling_ae": "CT1"}, facts(calling_ae="ct1")) == (False, "calling AE 'ct1' is not 'CT1'")
    assert check({"calling_ae": ["CT1", "CT2"]}, facts(calling_ae="CT2"))[0]
    assert check({"calling_ae": {"regex": "^CT\\d$"}}, facts(calling_ae="CT7"))[0]
    assert check({"calling_ae": {"regex": "^CT\\d$"}}, facts(calling_ae="MR1")) == (
        False,
        "calling AE 'MR1' does not match /^CT\\d$/",
    )
    assert check({"calling_ae": "CT1"}, facts(route=Route.STOW, calling_ae=None)) == (
        False,
        "no calling AE (route stow)",
    )


def test_combinators_and_the_first_failing_condition() -> None:
    condition = {
        "all": [
            {"attribute": "Modality", "equals": "CT"},
            {
                "any": [
                    {"attribute": "BodyPartExamined", "in": ["ABDOMEN"]},
                    {"attribute": "StudyDescription", "regex": "(?i)abd"},
                ]
            },
            {"attribute": "SliceThickness", "range": {"max": 5}},
        ]
    }
    good: dict[str, Any] = {
        "Modality": "CT",
        "BodyPartExamined": "HEAD",
        "StudyDescription": "CT ABD",
        "SliceThickness": "2",
    }
    assert check(condition, facts(**good))[0]
    assert check(condition, facts(**{**good, "SliceThickness": "7.5"})) == (
        False,
        "SliceThickness 7.5 is above 5",
    )
    assert check(condition, facts(**{**good, "StudyDescription": "CT HEAD"})) == (
        False,
        "none of: BodyPartExamined 'HEAD' not in [ABDOMEN]; "
        "StudyDescription 'CT HEAD' does not match /(?i)abd/",
    )
    assert check({"not": {"not": {"attribute": "Modality", "equals": "CT"}}}, facts(Modality="CT"))[0]


def test_stop_disabled_and_the_report() -> None:
    ct = {"attribute": "Modality", "equals": "CT"}
    rule_set = rules(
        {"name": "first", "match": ct, "stop": True},
        {"name": "off", "match": ct, "enabled": False},
        {"name": "later", "match": ct},
    )
    report = evaluate(rule_set, facts(Modality="CT"))
    assert [r.name for r in report.fired] == ["first"]
    assert [r.describe() for r in report.results] == [
        "FIRES",
        "disabled",
        "not evaluated (stopped by rule first)",
    ]
    assert report.result("later").outcome is Outcome.NOT_EVALUATED
    report = evaluate(rule_set, facts(Modality="MR"))
    assert report.fired == []
    assert report.result("first").describe() == "no: Modality 'MR' is not 'CT'"
    assert report.result("later").outcome is Outcome.NOT_MATCHED
    without_stop = rules({"name": "a", "match": ct}, {"name": "b", "match": ct})
    assert [r.name for r in evaluate(without_stop, facts(Modality="CT")).fired] == ["a", "b"]


def test_a_non_image_series_fires_nothing_and_says_why() -> None:
    report = evaluate(
        rules({"match": {"attribute": "Modality", "equals": "SR"}}),
        facts(kind=SeriesKind.NON_IMAGE, Modality="SR"),
    )
    assert report.fired == []
    assert report.note is not None
    assert "non-image" in report.note
    assert report.results[0].describe().startswith("not evaluated (a non-image series")


def test_enhanced_headers_are_searched_in_the_functional_groups() -> None:
    measures = Dataset()
    measures.SliceThickness = "1.25"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    series = facts(instances=1, frames=200, SharedFunctionalGroupsSequence=[shared])
    assert check({"attribute": "SliceThickness", "range": {"max": 5}}, series)[0]
    assert check({"attribute": "KVP", "absent": True}, series)[0]


def test_evaluating_fifty_rules_is_fast() -> None:
    default = load_rules(default_rules_path())
    many = [
        r.model_copy(update={"name": f"{r.name}-{i}", "enabled": True})
        for i in range(5)
        for r in default.rules
    ]
    assert len(many) >= 50
    series = facts(
        Modality="CT",
        BodyPartExamined="ABDOMEN",
        StudyDescription="CT ABDOMEN",
        SeriesDescription="AX 2.5",
        SliceThickness="2.5",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
    )
    evaluate(many, series)
    best = min(_timed(lambda: evaluate(many, series)) for _ in range(30))
    assert best < 1e-3, f"{best * 1e6:.0f} µs for {len(many)} rules"


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# --- the packaged default on phantoms -------------------------------------------------------------


def fired(phantom: Any, folder: Path, **kwargs: Any) -> MatchReport:
    series = written_series(phantom, folder)
    return evaluate(load_rules(default_rules_path()), facts_for(series, route=Route.DIMSE, **kwargs))


@pytest.mark.parametrize(
    ("phantom", "expected"),
    [
        (lambda: volume_phantom(rows=24, columns=24, slices=22), ["ct-abdomen-organs-3d"]),
        (
            lambda: volume_phantom(
                rows=24, columns=24, slices=22, body_part_examined="CHEST", study_description="CT CHEST"
            ),
            ["ct-chest-2d"],
        ),
        (lambda: cr_dx_image(rows=64, columns=48), ["cr-dx-chest-lungs"]),
        (lambda: cr_dx_image(modality="DX", rows=64, columns=48), ["cr-dx-chest-lungs"]),
        (
            lambda: volume_phantom(
                rows=24,
                columns=24,
                slices=8,
                modality="MR",
                body_part_examined="HEAD",
                study_description="MR BRAIN",
                series_description="AX FLAIR",
            ),
            ["mr-brain-flair-2d"],
        ),
        (lambda: volume_phantom(modality="MR", rows=24, columns=24, slices=22), ["mr-abdomen-organs-3d"]),
        (lambda: us_rgb(body_part_examined="BREAST"), ["us-breast-tumor"]),
        (lambda: us_rgb(), []),
        (lambda: volume_phantom(rows=24, columns=24, slices=22, orientation="coronal"), []),
        (lambda: volume_phantom(rows=24, columns=24, slices=10), []),
    ],
)
def test_the_default_rules_fire_as_intended(phantom: Any, expected: list[str], tmp_path: Path) -> None:
    report = fired(phantom(), tmp_path)
    assert [r.name for r in report.fired] == expected, [(r.rule.name, r.describe()) for r in report.results]


def test_facts_for_a_real_series(tmp_path: Path) -> None:
    series = written_series(volume_phantom(slices=12), tmp_path)
    found = facts_for(series, route=Route.DIMSE, calling_ae=" CT1 ")
    assert (found.instances, found.frames, found.plane, found.kind) == (
        12,
        12,
        Plane.AXIAL,
        SeriesKind.VOLUME,
    )
    assert found.calling_ae == "CT1"
    assert found.attribute("Modality") == "CT"
    assert found.attribute("ContrastBolusAgent") is None


# --- hot reload -------------------------------------------------------------------------------------

GOOD = (
    "version: 1\nrules:\n  - name: {name}\n    match: {{attribute: Modality, equals: CT}}\n"
    "    action: {action}\n"
)
ACTION_FLOW = "{endpoint: mip2d, model: 2d, prompts: [liver], destinations: [pacs]}"


def write(path: Path, text: str, tick: list[int]) -> None:
    path.write_text(text)
    tick[0] += 1_000_000_000  # a distinct mtime, even on coarse clocks and same-size edits
    os.utime(path, ns=(tick[0], tick[0]))


def test_reload_on_change_keeps_the_last_good_rules_on_a_broken_edit(tmp_path: Path) -> None:
    path, tick = tmp_path / "rules.yaml", [time.time_ns()]
    write(path, GOOD.format(name="one", action=ACTION_FLOW), tick)
    source = RulesSource(path)
    first = source.current()
    assert [r.name for r in first.rules] == ["one"]
    assert source.current() is first  # unchanged: the same object

    write(path, GOOD.format(name="two", action=ACTION_FLOW), tick)
    assert [r.name for r in source.current().rules] == ["two"]

    broken = GOOD.format(name="two", action=ACTION_FLOW).replace("[liver]", "[liver & spleen]")
    with capture_logs() as logs:
        write(path, broken, tick)
        kept = source.current()
        assert source.current() is kept  # the refused version is not parsed (or logged) again
    assert [r.name for r in kept.rules] == ["two"]
    assert source.last_error is not None
    assert f"{path}:5: rule 'two': action.prompts[0]:" in str(source.last_error)
    refusals = [e for e in logs if e["event"] == "rules_reload_refused"]
    assert len(refusals) == 1
    assert refusals[0]["log_level"] == "error"
    assert "'&'" in refusals[0]["errors"][0]

    write(path, GOOD.format(name="three", action=ACTION_FLOW), tick)
    assert [r.name for r in source.current().rules] == ["three"]
    assert source.last_error is None


def test_a_touch_or_a_restore_of_the_same_content_keeps_the_rules(tmp_path: Path) -> None:
    path, tick = tmp_path / "rules.yaml", [time.time_ns()]
    good = GOOD.format(name="one", action=ACTION_FLOW)
    write(path, good, tick)
    source = RulesSource(path)
    first = source.current()
    write(path, "version: 1\nrules: [\n", tick)
    assert source.current() is first
    assert source.last_error is not None
    write(path, good, tick)
    assert source.current() is first
    assert source.last_error is None
    moved = path.rename(tmp_path / "aside.yaml")
    assert source.current() is first
    assert "cannot read" in str(source.last_error)
    moved.rename(path)  # back, mtime and all
    assert source.current() is first
    assert source.last_error is None


def test_starting_with_a_broken_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n  - name: x\n")
    with pytest.raises(RulesError, match="missing 'match'"):
        RulesSource(path)


def test_reload_checks_against_the_settings(tmp_path: Path) -> None:
    from config.settings import Settings

    values: dict[str, Any] = {"endpoints": {"mip2d": {"url": "http://127.0.0.1:1/score", "model": "2d"}}}
    settings = Settings(**values)
    path, tick = tmp_path / "rules.yaml", [time.time_ns()]
    write(path, GOOD.format(name="one", action=ACTION_FLOW), tick)
    with pytest.raises(RulesError, match="destination 'pacs' is not configured"):
        RulesSource(path, settings=settings)


def test_concurrent_readers_see_whole_rule_sets(tmp_path: Path) -> None:
    path, tick = tmp_path / "rules.yaml", [time.time_ns()]
    write(path, GOOD.format(name="v0", action=ACTION_FLOW), tick)
    source = RulesSource(path)
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(source.current().rules[0].name)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(1, 6):
        write(path, GOOD.format(name=f"v{i}", action=ACTION_FLOW), tick)
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen <= {f"v{i}" for i in range(6)}
    assert source.current().rules[0].name == "v5"


def test_a_rule_chooses_the_phases_of_a_4d_series() -> None:
    def action(**extra: Any) -> dict[str, Any]:
        return {"endpoint": "mip3d", "model": "3d", "prompts": ["liver"], "destinations": ["pacs"], **extra}

    def parsed(**extra: Any) -> RuleSet:
        listed = [{"name": "dce", "match": {"kind": "phases"}, "action": action(**extra)}]
        return parse_rules(yaml.safe_dump({"version": 1, "rules": listed}, sort_keys=False))

    assert parsed().get("dce").action.phases == "all"
    assert parsed(phases="last").get("dce").action.phases == "last"
    with pytest.raises(RulesError, match="phases"):
        parsed(phases="second")
