"""Small synthetic source images for the SEG tests and the SEG benchmark.

Complete enough for highdicom and dciodvfy (Patient, General Study/Series, Frame of Reference,
General Equipment, General Image, Image Plane, Image Pixel, CT Image, SOP Common), deterministic
(UIDs from the seed), and independent of the phantom generators being written in parallel.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _uid(*parts: object) -> str:
    # generate_uid(prefix=None) ignores its entropy sources, so derive a 2.25 UID ourselves.
    name = "/".join(str(p) for p in ("mip-gateway-seg-tests", *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _common(ds: Dataset, seed: int, modality: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Test^Segmentation"
    ds.PatientID = f"SEG-{seed}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.StudyDate = "20240102"
    ds.StudyTime = "101112"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = f"ACC{seed}"
    ds.Modality = modality
    ds.SeriesInstanceUID = _uid(seed, "series", modality)
    ds.SeriesNumber = 3
    ds.Manufacturer = "Synthetic"
    ds.ManufacturerModelName = "seg_sources"


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def ct_stack(
    slices: int = 8,
    rows: int = 32,
    columns: int = 32,
    *,
    seed: int = 0,
    spacing: tuple[float, float] = (0.8, 0.7),
    thickness: float = 2.5,
    pixels: bool = True,
) -> list[Dataset]:
    """An axial CT series, one instance per slice, slice k at z = 2.5·k mm (rows ≠ columns on purpose)."""
    rng = np.random.default_rng(seed)
    datasets = []
    for k in range(slices):
        ds = Dataset()
        _common(ds, seed, "CT")
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid(seed, "ct", k)
        ds.FrameOfReferenceUID = _uid(seed, "for")
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber = 1
        ds.ContentDate = "20240102"
        ds.ContentTime = "101500"
        ds.PixelSpacing = list(spacing)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-12.5, -20.0, float(k) * thickness]
        ds.SliceThickness = thickness
        ds.SliceLocation = float(k) * thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = 120
        if pixels:
            ds.PixelData = rng.integers(-1000, 1000, (rows, columns), dtype=np.int16).tobytes()
        _file_meta(ds)
        datasets.append(ds)
    return datasets


def radiographs(count: int = 3, rows: int = 40, columns: int = 24, *, seed: int = 1) -> list[Dataset]:
    """CR images of one series: no Frame of Reference, no plane geometry (like the real thing)."""
    datasets = []
    for k in range(count):
        ds = Dataset()
        _common(ds, seed, "CR")
        ds.SOPClassUID = CR_IMAGE_STORAGE
        ds.SOPInstanceUID = _uid(seed, "cr", k)
        ds.InstanceNumber = k + 1
        ds.PatientOrientation = ["L", "F"]
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = np.zeros((rows, columns), np.uint16).tobytes()
        _file_meta(ds)
        datasets.append(ds)
    return datasets


def write(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
