"""Per-rule idle timers: real rules, real spool files, the tracker on a fake clock."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from dicom_io.testing.phantoms import volume_phantom
from service.completion import ArrivalFacts, CompletionTracker
from service.idle_policy import RuleIdlePolicy
from workers.jobs import Route
from workers.rules_loader import RulesSource
from workers.storage import DataDir

ACTION = "{endpoint: mip3d, model: 3d, prompts: [liver], destinations: [pacs]}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rules(tmp_path: Path, *rules: tuple[str, str, float | None]) -> RulesSource:
    lines = ["version: 1", "rules:"]
    for name, modality, idle in rules:
        lines += [f"  - name: {name}", f"    match: {{attribute: Modality, equals: {modality}}}"]
        if idle is not None:
            lines.append(f"    completion_idle_s: {idle}")
        lines.append(f"    action: {ACTION}")
    path = tmp_path / "rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    return RulesSource(path)


def _arrive(tracker: CompletionTracker, data: DataDir, datasets: list[Dataset]) -> str:
    for ds in datasets:
        path = data.incoming_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
        tracker.arrived(
            ArrivalFacts(
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                ds.SOPInstanceUID,
                Route.DIMSE,
                "US1",
                None,
                None,
                None,
            )
        )
    return str(datasets[0].SeriesInstanceUID)


def test_a_rule_that_fires_sets_a_longer_timer(tmp_path: Path) -> None:
    data, clock = DataDir(tmp_path / "data"), Clock()
    policy = RuleIdlePolicy(_rules(tmp_path, ("slow-mr", "MR", 120), ("ct", "CT", None)), data)
    tracker = CompletionTracker(idle_s=30, clock=clock, policy=policy)
    mr = _arrive(tracker, data, volume_phantom(modality="MR", slices=3, rows=8, columns=8).datasets)
    ct = _arrive(tracker, data, volume_phantom(modality="CT", slices=3, rows=8, columns=8).datasets)
    clock.now += 31
    (done,) = tracker.due()  # the CT series: no rule for it sets a timer
    assert done.series_instance_uid == ct
    assert done.reason == "no new instance for 30 s"
    clock.now += 60
    assert tracker.due() == []  # the MR series waits for its rule's 120 s
    clock.now += 30
    (done,) = tracker.due()
    assert done.series_instance_uid == mr
    assert done.reason == "no new instance for 120 s (idle timer of rule slow-mr)"


def test_a_shorter_rule_timer_completes_sooner_and_new_instances_reopen_the_decision(tmp_path: Path) -> None:
    data, clock = DataDir(tmp_path / "data"), Clock()
    policy = RuleIdlePolicy(_rules(tmp_path, ("quick-ct", "CT", 5), ("slow-ct", "CT", 8)), data)
    tracker = CompletionTracker(idle_s=30, clock=clock, policy=policy)
    phantom = volume_phantom(modality="CT", slices=4, rows=8, columns=8).datasets
    _arrive(tracker, data, phantom[:2])
    clock.now += 6  # past the shortest timer: decided (the longest of the two rules that fire, 8 s)
    assert tracker.due() == []
    _arrive(tracker, data, phantom[2:])  # more arrives: the decision is taken again later
    clock.now += 7
    assert tracker.due() == []
    clock.now += 1
    (done,) = tracker.due()
    assert done.instances == 4
    assert done.reason == "no new instance for 8 s (idle timer of rule slow-ct)"


def test_without_timed_rules_nothing_is_read(tmp_path: Path) -> None:
    data, clock = DataDir(tmp_path / "data"), Clock()
    policy = RuleIdlePolicy(_rules(tmp_path, ("ct", "CT", None)), data)
    assert policy.shortest() is None
    tracker = CompletionTracker(idle_s=30, clock=clock, policy=policy)
    # nothing in the spool for this series: a policy that read would find no headers
    tracker.arrived(ArrivalFacts("1.2", "1.2.3", "1.2.3.4", Route.DIMSE, None, None, None, None))
    clock.now += 30
    (done,) = tracker.due()
    assert done.reason == "no new instance for 30 s"


def test_a_broken_rules_file_leaves_the_default_timer_in_force(tmp_path: Path) -> None:
    data, clock = DataDir(tmp_path / "data"), Clock()
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules: [{name: Bad Name}]\n")
    policy = RuleIdlePolicy(path, data)
    tracker = CompletionTracker(idle_s=30, clock=clock, policy=policy)
    _arrive(tracker, data, volume_phantom(modality="CT", slices=2, rows=8, columns=8).datasets)
    assert policy.shortest() is None
    clock.now += 30
    (done,) = tracker.due()
    assert done.reason == "no new instance for 30 s"
    _rules(tmp_path, ("slow-ct", "CT", 120))  # fixed: the file's rules apply from now on
    assert policy.shortest() == 120
