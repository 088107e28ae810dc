"""The volume phantoms' geometry is what their tags say, and their truth is where their objects are."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_io.testing import Orientation, Phantom, volume_phantom

ORIENTATIONS: list[Orientation] = ["axial", "sagittal", "coronal", "oblique"]


def _pixel_centres_from_tags(ds: Dataset, position: list[float] | None = None) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1 written out independently of the generator: ``[rows, cols, 3]``."""
    ipp = np.array(position if position is not None else ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    r, c = np.indices((int(ds.Rows), int(ds.Columns)))
    centres: np.ndarray = ipp + c[..., None] * column_spacing * iop[:3] + r[..., None] * row_spacing * iop[3:]
    return centres


def _height(ds: Dataset) -> float:
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    return float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), np.cross(iop[:3], iop[3:])))


def test_pixel_centres_by_hand() -> None:
    axial = volume_phantom(slices=3)
    ds = axial.datasets[1]
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    assert list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert list(ds.PixelSpacing) == [0.8, 0.7]
    # Row 2, column 5: 5 columns of 0.7 mm along +x, 2 rows of 0.8 mm along +y.
    np.testing.assert_allclose(axial.pixel_to_patient(1)[2, 5], np.add(ipp, [3.5, 1.6, 0.0]), atol=1e-9)

    sagittal = volume_phantom(orientation="sagittal", slices=3)
    ds = sagittal.datasets[0]
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    assert list(ds.ImageOrientationPatient) == [0, 1, 0, 0, 0, -1]
    # Row 3, column 4: 4 × 0.7 mm along +y (posterior), 3 × 0.8 mm along -z (feet).
    np.testing.assert_allclose(sagittal.pixel_to_patient(0)[3, 4], np.add(ipp, [0.0, 2.8, -2.4]), atol=1e-9)

    coronal = volume_phantom(orientation="coronal", slices=3)
    ds = coronal.datasets[2]
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(coronal.pixel_to_patient(2)[1, 1], np.add(ipp, [0.7, 0.0, -0.8]), atol=1e-9)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("enhanced", [False, True])
def test_pixel_to_patient_is_what_the_tags_say(orientation: Orientation, enhanced: bool) -> None:
    phantom = volume_phantom(orientation=orientation, enhanced=enhanced, slices=6, reverse_order=True)
    if enhanced:
        (ds,) = phantom.datasets
        shared = ds.SharedFunctionalGroupsSequence[0]
        flat = Dataset()
        flat.ImageOrientationPatient = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        flat.PixelSpacing = shared.PixelMeasuresSequence[0].PixelSpacing
        flat.Rows, flat.Columns = ds.Rows, ds.Columns
        assert int(ds.NumberOfFrames) == 6
        for f, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
            position = list(frame.PlanePositionSequence[0].ImagePositionPatient)
            np.testing.assert_allclose(
                phantom.pixel_to_patient(0, f), _pixel_centres_from_tags(flat, position), atol=1e-9
            )
    else:
        for i, ds in enumerate(phantom.datasets):
            np.testing.assert_allclose(phantom.pixel_to_patient(i), _pixel_centres_from_tags(ds), atol=1e-9)


def test_oblique_mixes_every_axis() -> None:
    iop = np.array(
        volume_phantom(orientation="oblique", slices=2).datasets[0].ImageOrientationPatient, dtype=float
    )
    assert np.all(np.abs(iop) > 0.05)
    np.testing.assert_allclose(
        [iop[:3] @ iop[:3], iop[3:] @ iop[3:], iop[:3] @ iop[3:]], [1, 1, 0], atol=1e-12
    )


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("slices", [40, 10])
def test_truth_is_where_the_objects_were_painted(orientation: Orientation, slices: int) -> None:
    phantom = volume_phantom(orientation=orientation, slices=slices)
    values = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in phantom.datasets]
    )
    body, liver, marker = (phantom.truth_volume(label) for label in ("body", "liver", "marker"))
    # Several slices and pixels each, inside the field of view (never touching its border).
    for mask in (body, liver, marker):
        assert mask.any(axis=(1, 2)).sum() >= 3
        assert mask.sum() >= 50
        for edge in (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]):
            assert not edge.any()
    assert not (liver & marker).any()
    # Painted in order, later objects over earlier ones.
    expected = np.select([marker, liver, body], [300.0, 160.0, 40.0], default=-1000.0)
    np.testing.assert_allclose(values, expected, atol=6 * 4.0)
    assert phantom.truth_volume().sum() == liver.sum()  # the target is the default label


def test_orientations_image_the_scene_differently() -> None:
    phantoms = {o: volume_phantom(orientation=o) for o in ORIENTATIONS}
    markers = {o: p.object_named("marker").center for o, p in phantoms.items()}
    assert len(set(markers.values())) == 4
    middle = {o: p.truth_mask(20, label="liver") for o, p in phantoms.items()}
    for a in ORIENTATIONS:
        for b in ORIENTATIONS:
            if a < b:
                assert not np.array_equal(middle[a], middle[b]), (a, b)
    # The body is not centred on the volume: a centring bug moves it.
    body = phantoms["axial"].object_named("body")
    assert np.linalg.norm(np.subtract(body.center, (-31.7, 12.3, 104.9))) > 0.5
    assert (
        phantoms["axial"].object_named("body").semi_axes != phantoms["oblique"].object_named("body").semi_axes
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_any_flip_moves_the_marker(axis: int) -> None:
    marker = volume_phantom(orientation="oblique").truth_volume("marker")
    flipped = np.flip(marker, axis=axis)
    assert (marker & flipped).sum() < 0.2 * marker.sum()


def test_a_transposed_slice_does_not_fit() -> None:
    phantom = volume_phantom(rows=48, columns=48)
    mask = phantom.truth_volume("marker")
    transposed = mask.transpose(0, 2, 1)
    assert (mask & transposed).sum() < 0.2 * mask.sum()


@pytest.mark.parametrize("enhanced", [False, True])
def test_reverse_order_runs_instance_numbers_against_the_normal(enhanced: bool) -> None:
    def heights(phantom: Phantom) -> list[float]:
        normal = phantom.planes[0][0].normal
        return [float(np.dot(plane.position, normal)) for frames in phantom.planes for plane in frames]

    forward = volume_phantom(slices=8, enhanced=enhanced)
    backward = volume_phantom(slices=8, enhanced=enhanced, reverse_order=True)
    assert np.all(np.diff(heights(forward)) > 0)
    assert np.all(np.diff(heights(backward)) < 0)
    assert heights(backward) == heights(forward)[::-1]
    if enhanced:
        frames = backward.datasets[0].PerFrameFunctionalGroupsSequence
        assert [f.FrameContentSequence[0].InStackPositionNumber for f in frames] == list(range(1, 9))
    else:
        assert [int(ds.InstanceNumber) for ds in backward.datasets] == list(range(1, 9))
        assert [_height(ds) for ds in backward.datasets] == pytest.approx(heights(backward), abs=1e-9)
        assert backward.datasets[0].ImagePositionPatient[2] > backward.datasets[-1].ImagePositionPatient[2]


def test_gantry_tilt_shears_the_stack() -> None:
    phantom = volume_phantom(gantry_tilt_deg=15.0, slices=5)
    steps = np.diff([np.array(ds.ImagePositionPatient, dtype=float) for ds in phantom.datasets], axis=0)
    np.testing.assert_allclose(steps, [[0.0, 0.0, 1.5]] * 4, atol=1e-9)  # the table moves along z
    ds = phantom.datasets[0]
    assert float(ds.GantryDetectorTilt) == 15.0
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose(iop, [1, 0, 0, 0, np.cos(np.radians(15)), np.sin(np.radians(15))], atol=1e-12)
    normal = np.cross(iop[:3], iop[3:])
    # The planes are tilted: the step is not along their normal.
    assert abs(float(np.dot(steps[0], normal)) - 1.5 * np.cos(np.radians(15))) < 1e-9


def test_missing_slices_are_gone() -> None:
    full = volume_phantom(slices=10)
    gapped = volume_phantom(slices=10, missing_slices=[3, 4, 7])
    assert len(gapped.datasets) == 7
    kept = [0, 1, 2, 5, 6, 8, 9]
    assert [int(ds.InstanceNumber) for ds in gapped.datasets] == [k + 1 for k in kept]
    assert [list(ds.ImagePositionPatient) for ds in gapped.datasets] == [
        list(full.datasets[k].ImagePositionPatient) for k in kept
    ]
    enhanced = volume_phantom(slices=10, missing_slices=[3], enhanced=True)
    assert int(enhanced.datasets[0].NumberOfFrames) == 9
    with pytest.raises(ValueError, match="missing_slices"):
        volume_phantom(slices=4, missing_slices=[4])


@pytest.mark.parametrize("slices", [1, 2, 3, 5])
def test_thin_stacks_still_cut_every_object(slices: int) -> None:
    phantom = volume_phantom(slices=slices, orientation="oblique")
    for label in phantom.labels:
        assert phantom.truth_volume(label).any(axis=(1, 2)).all(), label
