"""Putting generated series into one study after the fact."""

from __future__ import annotations

import copy
import dataclasses
from typing import TypeVar

from pydicom.dataset import Dataset

from dicom_io.testing.modules import StudyInfo
from dicom_io.testing.scene import ImagePhantom, Phantom
from dicom_io.testing.uids import seeded_uid

__all__ = ["study_of"]

P = TypeVar("P", bound=Phantom | ImagePhantom)

_PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
)


def study_of(*phantoms: P, study: StudyInfo | None = None) -> tuple[P, ...]:
    """Copies of ``phantoms`` in one study: ``study``'s patient and study, or else the first
    phantom's. SeriesNumber becomes 1, 2, … in argument order. Series and SOP Instance UIDs are
    re-derived from the old ones and the study, so the copies never collide with the originals
    (a store that saw both would otherwise hold one instance in two studies)."""
    if not phantoms:
        return ()
    source = _study_dataset(study) if study is not None else phantoms[0].datasets[0]
    moved = []
    for number, phantom in enumerate(phantoms, start=1):
        datasets = tuple(_moved(ds, source, number) for ds in phantom.datasets)
        moved.append(dataclasses.replace(phantom, datasets=datasets))
    return tuple(moved)


def _moved(ds: Dataset, source: Dataset, series_number: int) -> Dataset:
    result = copy.deepcopy(ds)
    for keyword in _PATIENT_AND_STUDY:
        if keyword in source:
            setattr(result, keyword, copy.deepcopy(source[keyword].value))
    study_uid = str(source.StudyInstanceUID)
    result.SeriesInstanceUID = seeded_uid(0, "moved-series", ds.SeriesInstanceUID, study_uid)
    result.SOPInstanceUID = seeded_uid(0, "moved-instance", ds.SOPInstanceUID, study_uid)
    result.file_meta.MediaStorageSOPInstanceUID = result.SOPInstanceUID
    result.SeriesNumber = series_number
    return result


def _study_dataset(study: StudyInfo) -> Dataset:
    ds = Dataset()
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientAge = study.patient_age
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description
    ds.ReferringPhysicianName = ""
    return ds
