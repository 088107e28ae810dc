"""The IOD modules every generated instance shares: Patient, General Study, Patient Study,
General Series, General Equipment, Image Pixel, SOP Common and the File Meta Information.

Values are fixed or seeded so that generated files are byte-identical from run to run; nothing
resembles a real person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from dicom_io.testing.uids import seeded_uid

__all__ = [
    "CONTENT_DATE",
    "CONTENT_TIME",
    "SeriesInfo",
    "StudyInfo",
    "add_common_modules",
    "set_pixel_data",
]

CONTENT_DATE = "20240102"
CONTENT_TIME = "101500"
_IMPLEMENTATION_VERSION = "MIPGW_TESTING"


@dataclass(frozen=True, slots=True)
class StudyInfo:
    """Patient and study attributes; the same object on several series puts them in one study."""

    patient_name: str
    patient_id: str
    study_instance_uid: str
    study_description: str
    study_id: str = "1"
    accession_number: str = "PHANTOM0001"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    patient_age: str = "054Y"
    study_date: str = CONTENT_DATE
    study_time: str = CONTENT_TIME

    @classmethod
    def seeded(
        cls, seed: int, *, patient_name: str, patient_id: str, study_description: str, key: object
    ) -> StudyInfo:
        """A study whose UID and accession number follow from ``seed`` and ``key``."""
        uid = seeded_uid(seed, "study", patient_id, key)
        return cls(
            patient_name=patient_name,
            patient_id=patient_id,
            study_instance_uid=uid,
            study_description=study_description,
            # Accession numbers are SH (16 chars): the UID's tail keeps them distinct per study.
            accession_number=f"ACC{uid[-10:]}",
        )


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """General Series attributes of one generated series."""

    modality: str
    series_instance_uid: str
    series_description: str
    body_part_examined: str | None
    series_number: int = 1
    patient_position: str | None = None
    # Type 2C in General Series: None omits it (an unpaired body part is named), "" sends it empty
    # (nothing says what was imaged).
    laterality: str | None = None


def add_common_modules(
    ds: Dataset,
    *,
    study: StudyInfo,
    series: SeriesInfo,
    sop_class_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    manufacturer: str = "mip-gateway phantom",
) -> None:
    """Fill the Patient, Study, Series, Equipment, General Image and SOP Common modules and the file meta."""
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = CONTENT_DATE
    ds.InstanceCreationTime = CONTENT_TIME
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.ContentDate = CONTENT_DATE
    ds.StudyTime = study.study_time
    ds.SeriesTime = study.study_time
    ds.ContentTime = CONTENT_TIME
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = series.series_description
    ds.ManufacturerModelName = "seeded phantom"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientAge = study.patient_age
    if series.body_part_examined is not None:
        ds.BodyPartExamined = series.body_part_examined
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1"
    if series.patient_position is not None:
        ds.PatientPosition = series.patient_position
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = instance_number
    if series.laterality is not None:
        ds.Laterality = series.laterality
    set_file_meta(ds)


def set_file_meta(ds: Dataset, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> None:
    """Part 10 File Meta Information matching the dataset's SOP Class and Instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds.file_meta = meta


def set_pixel_data(
    ds: Dataset,
    pixels: npt.NDArray[np.integer],
    *,
    photometric_interpretation: str,
    bits_stored: int,
) -> None:
    """Image Pixel module from an array ``[rows, cols]``, ``[frames, rows, cols]`` or with a last
    axis of 3 samples (colour, stored colour-by-pixel: PlanarConfiguration 0).

    ``NumberOfFrames`` is the caller's business: a 3-D array is written as frames either way.
    """
    samples = 3 if photometric_interpretation in {"RGB", "YBR_FULL"} else 1
    shape = pixels.shape[:-1] if samples == 3 else pixels.shape
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric_interpretation
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(shape[-2]), int(shape[-1])
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    low, high = _stored_range(bits_stored, signed=pixels.dtype.kind == "i")
    if pixels.size and (int(pixels.min()) < low or int(pixels.max()) > high):
        raise ValueError(f"pixel values outside the {bits_stored}-bit stored range")
    # Little-endian bytes whatever the host, since the file meta says Explicit VR Little Endian.
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def _stored_range(bits_stored: int, *, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1
