"""4D series: the same positions several times in one series become PHASES, one volume per value of
the attribute that tells them apart — or stay a set of 2D images with the reason when none does."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from dicom_io.errors import GeometryError
from dicom_io.nifti3d import export_nifti
from dicom_io.reading import scan
from dicom_io.series import ProblemCode, Series, SeriesKind, Severity, assemble
from dicom_io.testing import volume_phantom, write_datasets
from dicom_io.testing.phases import phased_series

SLICES = 8
GRID = {"rows": 24, "columns": 20, "slices": SLICES}


def read(datasets: list[object], folder: Path) -> Series:
    write_datasets(datasets, folder)  # type: ignore[arg-type]
    (series,) = assemble(scan([folder]).instances)
    return series


def test_temporal_positions_become_one_volume_each(tmp_path: Path) -> None:
    series = read(phased_series((1, 2, 3), **GRID), tmp_path)
    assert series.kind is SeriesKind.PHASES
    assert [p.phase_label for p in series.phases] == [f"TemporalPositionIdentifier {k}" for k in (1, 2, 3)]
    assert all(p.kind is SeriesKind.VOLUME and len(p.frames) == SLICES for p in series.phases)
    assert all(p.series_instance_uid == series.series_instance_uid for p in series.phases)
    # each phase holds its own instances, every one exactly once
    uids = [{f.sop_instance_uid for f in p.frames} for p in series.phases]
    assert sum(map(len, uids)) == 3 * SLICES
    assert len(set().union(*uids)) == 3 * SLICES
    assert [f.sop_instance_uid for f in series.frames] == [
        f.sop_instance_uid for p in series.phases for f in p.frames
    ]
    (problem,) = series.problems
    assert (problem.code, problem.severity) == (ProblemCode.PHASES, Severity.WARNING)
    assert problem.message == f"3 volumes of {SLICES} slices, told apart by TemporalPositionIdentifier"
    with pytest.raises(GeometryError, match="3 phases"):
        series.require_volume()


def test_each_phase_has_the_grid_of_the_volume_it_repeats(tmp_path: Path) -> None:
    single = read(list(volume_phantom(seed=0, reverse_order=True, **GRID).datasets), tmp_path / "one")
    series = read(phased_series((1, 2), reverse_order=True, **GRID), tmp_path / "four-d")
    for phase in series.phases:
        assert phase.require_volume() == single.require_volume()
        _, volume = export_nifti(phase)
        _, reference = export_nifti(single)
        np.testing.assert_allclose(volume.affine, reference.affine)
        # sorted along the normal like the single volume, whatever the instance numbers say
        positions = [f.position for f in phase.frames]
        assert positions == [f.position for f in single.frames]
    assert series.geometry == single.geometry


@pytest.mark.parametrize(
    ("attribute", "values", "labels"),
    [
        (
            "DiffusionBValue",
            (1000, 0, 500),
            ["DiffusionBValue 0", "DiffusionBValue 500", "DiffusionBValue 1000"],
        ),
        ("TriggerTime", (412.5, 12.5), ["TriggerTime 12.5", "TriggerTime 412.5"]),
        ("EchoNumbers", (2, 1), ["EchoNumbers 1", "EchoNumbers 2"]),
    ],
)
def test_phases_follow_the_attribute_in_numeric_order(
    tmp_path: Path, attribute: str, values: tuple[float, ...], labels: list[str]
) -> None:
    series = read(phased_series(values, attribute=attribute, modality="MR", **GRID), tmp_path)
    assert series.kind is SeriesKind.PHASES
    assert [p.phase_label for p in series.phases] == labels


def test_nothing_telling_the_volumes_apart_leaves_a_set_of_images(tmp_path: Path) -> None:
    series = read(phased_series((1, 2), attribute=None, **GRID), tmp_path)
    assert series.kind is SeriesKind.IMAGES
    assert series.phases == ()
    (problem,) = series.problems
    assert problem.code is ProblemCode.MULTIPLE_IMAGES_PER_POSITION
    assert problem.message == f"2 images at each of {SLICES} positions (4D or multi-phase)"


def test_a_phase_missing_a_slice_is_not_split(tmp_path: Path) -> None:
    datasets = phased_series((1, 2), **GRID)
    del datasets[SLICES + 3]  # phase 2 lacks one slice: the volumes no longer match
    series = read(datasets, tmp_path)
    assert series.kind is SeriesKind.IMAGES
    assert [p.code for p in series.problems] == [ProblemCode.MULTIPLE_IMAGES_PER_POSITION]


@pytest.mark.parametrize("by_position", [False, True], ids=["numbered-by-volume", "numbered-by-position"])
def test_announced_temporal_positions_split_by_instance_number(tmp_path: Path, by_position: bool) -> None:
    """GE's EPI: no attribute says which volume an image is in; NumberOfTemporalPositions and the
    instance numbers do (the k-th image at each position is volume k)."""
    datasets = phased_series(
        (1, 2, 3), attribute=None, announce=True, numbered_by_position=by_position, **GRID
    )
    series = read(datasets, tmp_path)
    assert series.kind is SeriesKind.PHASES
    assert [p.phase_label for p in series.phases] == [f"temporal position {k} of 3" for k in (1, 2, 3)]
    (problem,) = series.problems
    assert problem.message == (
        f"3 volumes of {SLICES} slices, told apart by InstanceNumber at each position "
        "(NumberOfTemporalPositions 3)"
    )
    # each volume is one acquisition: the generator's k-th phase, whatever the numbering
    made = [{str(ds.SOPInstanceUID) for ds in datasets[k * SLICES : (k + 1) * SLICES]} for k in range(3)]
    assert [{f.sop_instance_uid for f in p.frames} for p in series.phases] == made


def test_announced_temporal_positions_that_do_not_fit_are_not_guessed(tmp_path: Path) -> None:
    datasets = phased_series((1, 2), attribute=None, **GRID)
    for ds in datasets:
        ds.NumberOfTemporalPositions = 3  # says 3, holds 2 at each position
    series = read(datasets, tmp_path)
    assert series.kind is SeriesKind.IMAGES


def test_an_enhanced_object_says_itself_which_volume_each_frame_is_in(tmp_path: Path) -> None:
    """One enhanced MR object holding two temporal positions: its dimension index (StackID,
    InStackPositionNumber, TemporalPositionIndex) tells the frames apart, as Siemens XA writes them."""
    ds = volume_phantom(enhanced=True, modality="MR", seed=1, **GRID).datasets[0]
    frames = list(ds.PerFrameFunctionalGroupsSequence)
    per_frame = []
    for t in (1, 2):
        for frame in frames:
            item = copy.deepcopy(frame)
            content = item.FrameContentSequence[0]
            content.DimensionIndexValues = [*content.DimensionIndexValues, t]
            content.TemporalPositionIndex = t
            per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.DimensionIndexSequence.append(
        Dataset(
            DimensionIndexPointer=Tag("TemporalPositionIndex"),
            FunctionalGroupPointer=Tag("FrameContentSequence"),
        )
    )
    ds.NumberOfFrames = len(per_frame)
    ds.PixelData = ds.PixelData * 2
    series = read([ds], tmp_path)
    assert series.kind is SeriesKind.PHASES
    assert [p.phase_label for p in series.phases] == ["TemporalPositionIndex 1", "TemporalPositionIndex 2"]
    assert {f.index for f in series.phases[1].frames} == set(range(SLICES, 2 * SLICES))
    assert series.problems[0].message.endswith("told apart by frame content (TemporalPositionIndex)")
    single = read(
        list(volume_phantom(enhanced=True, modality="MR", seed=1, **GRID).datasets), tmp_path / "one"
    )
    assert all(phase.require_volume() == single.require_volume() for phase in series.phases)
