"""Stored values, modality LUTs, identity tags, files and determinism of the volume phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_modality_lut

from dicom_io.testing import StudyInfo, study_of, us_rgb, volume_phantom
from tests.unit.dicom_io.testing.part10 import part10_bytes, reread


@pytest.mark.parametrize(
    ("stored_dtype", "slope", "intercept", "representation", "bits"),
    [("uint16", 1.0, -1024.0, 0, 12), ("int16", 1.0, 0.0, 1, 16), ("uint16", 0.5, -1024.0, 0, 12)],
)
def test_ct_modality_lut_gives_hounsfield_units(
    stored_dtype: str, slope: float, intercept: float, representation: int, bits: int
) -> None:
    phantom = volume_phantom(stored_dtype=stored_dtype, rescale_slope=slope, slices=30)  # type: ignore[arg-type]
    index = 15
    ds = reread(phantom.datasets[index])
    assert (ds.PixelRepresentation, ds.BitsStored, ds.HighBit) == (representation, bits, bits - 1)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (slope, intercept)
    hu = apply_modality_lut(ds.pixel_array, ds)
    liver = phantom.truth_mask(index, label="liver")
    assert liver.any()
    assert abs(float(np.median(hu[liver])) - 160) <= 1
    assert abs(float(np.median(hu[~phantom.truth_mask(index, label="body")])) + 1000) <= 1
    if stored_dtype == "int16":
        assert ds.pixel_array.min() < 0


def test_mr_has_no_rescale_and_is_zero_outside_the_body() -> None:
    phantom = volume_phantom(modality="MR", slices=20)
    ds = reread(phantom.datasets[10])
    assert "RescaleSlope" not in ds
    assert "RescaleIntercept" not in ds
    assert (ds.PhotometricInterpretation, ds.PixelRepresentation) == ("MONOCHROME2", 0)
    body = phantom.truth_mask(10, label="body")
    assert (ds.pixel_array[~body] == 0).all()
    assert (ds.pixel_array[body] > 0).all()
    assert ds.PatientName == "PHANTOM^MR"


def test_monochrome1_only_relabels() -> None:
    plain = volume_phantom(slices=2)
    inverted = volume_phantom(slices=2, monochrome1=True)
    assert inverted.datasets[0].PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(inverted.datasets[0].pixel_array, plain.datasets[0].pixel_array)
    with pytest.raises(ValueError, match="MONOCHROME2"):
        volume_phantom(slices=2, monochrome1=True, enhanced=True)


def test_enhanced_ct_carries_its_rescale_in_the_functional_groups() -> None:
    (ds,) = volume_phantom(enhanced=True, rescale_slope=0.5, slices=4).datasets
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    assert (float(transform.RescaleSlope), float(transform.RescaleIntercept)) == (0.5, -1024.0)
    assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage
    assert ds.pixel_array.shape == (4, 64, 48)


def test_descriptions_are_settable() -> None:
    ds = volume_phantom(
        slices=1,
        study_description="CT CHEST",
        series_description="LUNG 1.0",
        body_part_examined="CHEST",
        patient_id="P1",
    ).datasets[0]
    assert (ds.StudyDescription, ds.SeriesDescription, ds.BodyPartExamined, ds.PatientID) == (
        "CT CHEST",
        "LUNG 1.0",
        "CHEST",
        "P1",
    )
    default = volume_phantom(slices=1).datasets[0]
    assert (default.StudyDescription, default.BodyPartExamined, default.PatientName) == (
        "CT ABDOMEN",
        "ABDOMEN",
        "PHANTOM^CT",
    )


def test_same_seed_same_bytes_other_seed_other_uids() -> None:
    def files(**kwargs: object) -> list[bytes]:
        return [part10_bytes(ds) for ds in volume_phantom(slices=3, **kwargs).datasets]  # type: ignore[arg-type]

    assert files(seed=4) == files(seed=4)
    assert files(seed=4, enhanced=True) == files(seed=4, enhanced=True)
    a, b = volume_phantom(slices=2, seed=1), volume_phantom(slices=2, seed=2)
    assert a.datasets[0].StudyInstanceUID != b.datasets[0].StudyInstanceUID
    assert a.datasets[0].SOPInstanceUID != b.datasets[0].SOPInstanceUID
    assert not np.array_equal(a.datasets[0].pixel_array, b.datasets[0].pixel_array)
    sagittal = volume_phantom(slices=2, seed=1, orientation="sagittal")
    assert sagittal.datasets[0].SeriesInstanceUID != a.datasets[0].SeriesInstanceUID
    uids = [ds.SOPInstanceUID for ds in volume_phantom(slices=40).datasets]
    assert len(set(uids)) == 40
    assert all(uid.is_valid and uid.startswith("2.25.") for uid in uids)


def test_write_gives_part10_files_in_file_order(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=4, reverse_order=True)
    paths = phantom.write(tmp_path / "series")
    assert [p.name for p in paths] == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"]
    for path, ds in zip(paths, phantom.datasets, strict=True):
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"
        read = pydicom.dcmread(path)
        assert read.SOPInstanceUID == ds.SOPInstanceUID == read.file_meta.MediaStorageSOPInstanceUID
        np.testing.assert_array_equal(read.pixel_array, ds.pixel_array)


def test_study_of_puts_series_in_one_study() -> None:
    ct, mr, us = study_of(volume_phantom(slices=2), volume_phantom(modality="MR", slices=2), us_rgb())
    first = ct.datasets[0]
    for phantom, number in ((ct, 1), (mr, 2), (us, 3)):
        for ds in phantom.datasets:
            assert ds.StudyInstanceUID == first.StudyInstanceUID
            assert (ds.PatientID, ds.PatientName, ds.SeriesNumber) == (
                first.PatientID,
                first.PatientName,
                number,
            )
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert mr.datasets[0].SOPInstanceUID != volume_phantom(modality="MR", slices=2).datasets[0].SOPInstanceUID

    study = StudyInfo.seeded(
        3, patient_name="PHANTOM^MULTI", patient_id="M1", study_description="MULTI", key="x"
    )
    together = [volume_phantom(slices=1, study=study), volume_phantom(slices=1, modality="MR", study=study)]
    assert {p.datasets[0].StudyInstanceUID for p in together} == {study.study_instance_uid}
    assert together[0].datasets[0].SeriesInstanceUID != together[1].datasets[0].SeriesInstanceUID
