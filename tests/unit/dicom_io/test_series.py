from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.errors import GeometryError
from dicom_io.geometry import Plane
from dicom_io.reading import scan
from dicom_io.series import ProblemCode, Series, SeriesKind, Severity, assemble
from dicom_io.testing.phantoms import volume_phantom
from tests.helpers import written_series


def _codes(series: Series) -> set[ProblemCode]:
    return {p.code for p in series.problems}


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
@pytest.mark.parametrize("reverse_order", [False, True])
def test_volume_is_ordered_by_position_and_its_affine_hits_every_pixel(
    tmp_path: Path, orientation: str, reverse_order: bool
) -> None:
    phantom = volume_phantom(orientation=orientation, reverse_order=reverse_order, slices=12, seed=5)
    series = written_series(phantom, tmp_path)
    assert series.kind is SeriesKind.VOLUME
    assert series.problems == ()
    geometry = series.require_volume()
    assert geometry.shape_ijk == (48, 64, 12)
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(phantom.datasets)}
    normal = geometry.normal
    heights = [float(np.dot(f.position, normal)) for f in series.frames]
    assert heights == sorted(heights)
    rows, columns = np.indices((64, 48))
    for k, frame in enumerate(series.frames):
        ijk = np.stack([columns, rows, np.full_like(rows, k)], axis=-1)
        expected = phantom.pixel_to_patient(index[frame.sop_instance_uid])
        np.testing.assert_allclose(geometry.to_patient(ijk), expected, atol=1e-6)
    if reverse_order:
        numbers = [int(f.instance.header.InstanceNumber) for f in series.frames]
        assert numbers == sorted(numbers, reverse=True)


@pytest.mark.parametrize(
    ("orientation", "plane"),
    [("axial", Plane.AXIAL), ("sagittal", Plane.SAGITTAL), ("coronal", Plane.CORONAL)],
)
def test_plane_labels(tmp_path: Path, orientation: str, plane: Plane) -> None:
    assert written_series(volume_phantom(orientation=orientation, slices=3), tmp_path).plane is plane


def test_strongly_oblique_plane(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=3)
    for ds in phantom.datasets:
        ds.ImageOrientationPatient = [0.7071068, 0.7071068, 0, 0, 0, -1]
    assert written_series(phantom, tmp_path).plane is Plane.OBLIQUE


def test_enhanced_multiframe_is_a_volume_of_its_frames(tmp_path: Path) -> None:
    phantom = volume_phantom(enhanced=True, orientation="coronal", reverse_order=True, slices=10)
    series = written_series(phantom, tmp_path)
    assert series.kind is SeriesKind.VOLUME
    assert len(series.instances) == 1
    assert len(series.frames) == 10
    geometry = series.require_volume()
    for k, frame in enumerate(series.frames):
        expected = phantom.pixel_to_patient(0, frame.index)[0, 0]
        np.testing.assert_allclose(geometry.slice_position(k), expected, atol=1e-6)


def test_gantry_tilt_is_a_sheared_volume_with_a_warning(tmp_path: Path) -> None:
    series = written_series(volume_phantom(gantry_tilt_deg=12.0, slices=8), tmp_path)
    assert series.kind is SeriesKind.VOLUME
    (problem,) = series.problems
    assert problem.code is ProblemCode.GANTRY_TILT
    assert problem.severity is Severity.WARNING
    assert series.require_volume().tilt_degrees == pytest.approx(12.0, abs=1e-6)


def test_missing_slices_block_the_volume_and_say_where(tmp_path: Path) -> None:
    series = written_series(volume_phantom(missing_slices=[4, 5], slices=12), tmp_path)
    assert series.kind is SeriesKind.IMAGES
    assert ProblemCode.MISSING_SLICES in _codes(series)
    with pytest.raises(GeometryError, match=r"2 slice\(s\) missing") as err:
        series.require_volume()
    assert series.series_instance_uid in str(err.value)


def test_irregular_spacing(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=6)
    ds = phantom.datasets[2]
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
        ds.ImagePositionPatient[2] + 0.6
    ]
    assert ProblemCode.IRREGULAR_SPACING in _codes(written_series(phantom, tmp_path))


def test_duplicates_are_dropped_with_a_warning(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=5)
    files = phantom.write(tmp_path)
    (tmp_path / "copy.dcm").write_bytes(files[2].read_bytes())
    (series,) = assemble(scan([tmp_path]).instances)
    assert series.kind is SeriesKind.VOLUME
    assert len(series.frames) == 5
    (problem,) = series.problems
    assert problem.code is ProblemCode.DUPLICATE_INSTANCE
    assert phantom.datasets[2].SOPInstanceUID in problem.message


def test_mixed_sizes_and_orientations_fall_back_to_images(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=4)
    small = volume_phantom(slices=1, rows=32, columns=32, seed=9)
    odd = small.datasets[0]
    odd.SeriesInstanceUID = phantom.datasets[0].SeriesInstanceUID
    phantom.write(tmp_path / "a")
    small.write(tmp_path / "b")
    (series,) = assemble(scan([tmp_path]).instances)
    assert series.kind is SeriesKind.IMAGES
    assert ProblemCode.MIXED_SIZES in _codes(series)

    rotated = volume_phantom(slices=4, seed=2)
    rotated.datasets[1].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    assert ProblemCode.MIXED_ORIENTATIONS in _codes(written_series(rotated, tmp_path / "c"))


def test_repeated_positions_are_4d(tmp_path: Path) -> None:
    first = volume_phantom(slices=4, seed=1)
    second = volume_phantom(slices=4, seed=1)
    for n, ds in enumerate(second.datasets):
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["second", str(n)])
        ds.TemporalPositionIdentifier = 2
    first.write(tmp_path / "t1")
    second.write(tmp_path / "t2")
    (series,) = assemble(scan([tmp_path]).instances)
    assert series.kind is SeriesKind.IMAGES
    (problem,) = series.problems
    assert problem.code is ProblemCode.MULTIPLE_IMAGES_PER_POSITION
    assert "2 images at each of 4 positions" in problem.message


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_missing_or_nan_geometry_is_reported(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=3)
    del phantom.datasets[0].ImagePositionPatient
    phantom.datasets[1].PixelSpacing = ["nan", "0.7"]
    series = written_series(phantom, tmp_path)
    assert series.kind is SeriesKind.IMAGES
    assert ProblemCode.MISSING_GEOMETRY in _codes(series)
    with pytest.raises(GeometryError, match="lack position"):
        series.require_volume()


def test_single_slice_is_an_image(tmp_path: Path) -> None:
    series = written_series(volume_phantom(slices=1), tmp_path)
    assert series.kind is SeriesKind.IMAGES
    assert ProblemCode.TOO_FEW_SLICES in _codes(series)


def test_non_image_series_is_never_processed(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=2)
    for ds in phantom.datasets:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    series = written_series(phantom, tmp_path)
    assert series.kind is SeriesKind.NON_IMAGE
    assert series.frames == ()
    assert "structured report" in series.problems[0].message
    with pytest.raises(GeometryError):
        series.require_volume()


def test_series_are_grouped_by_uid(tmp_path: Path) -> None:
    volume_phantom(slices=3, seed=1).write(tmp_path / "one")
    volume_phantom(slices=4, seed=2, orientation="sagittal").write(tmp_path / "two")
    series = assemble(scan([tmp_path]).instances)
    assert sorted(len(s.frames) for s in series) == [3, 4]
