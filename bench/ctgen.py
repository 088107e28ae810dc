"""A realistic-looking synthetic CT series for benchmarks (512² int16-range, body, lungs, spine, noise).

Compression speed and ratio depend on content, so the series is not flat phantom shapes alone: it has
CT-like noise (σ ≈ 12 HU) and air outside the body. Written once per (slices, size, seed) and cached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

CACHE = Path(__file__).resolve().parent / "results" / "data"


def _slice_hu(size: int, z: float, rng: np.random.Generator) -> np.ndarray:
    y, x = (np.mgrid[0:size, 0:size] - size / 2) / (size / 2)
    hu = np.full((size, size), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1
    hu[body] = 40
    lung_scale = 0.5 + 0.5 * np.cos(z / 60)
    for cx in (-0.38, 0.38):
        lung = ((x - cx) / (0.26 * lung_scale + 0.05)) ** 2 + ((y + 0.05) / 0.38) ** 2 <= 1
        hu[lung & body] = -850
    liver = ((x + 0.3) / 0.3) ** 2 + ((y - 0.1) / 0.25) ** 2 <= 1
    hu[liver & body & (hu > -500)] = 60
    spine = (x / 0.09) ** 2 + ((y - 0.42) / 0.09) ** 2 <= 1
    hu[spine] = 700
    noise = rng.normal(0, 12, (size, size))
    return np.where(hu > -990, hu + noise, hu + noise * 0.3)


def ct_series(slices: int = 300, size: int = 512, seed: int = 0) -> Path:
    """Folder of ``slices`` CT files (cached under bench/results/data)."""
    key = hashlib.sha1(f"{slices}-{size}-{seed}".encode()).hexdigest()[:10]
    folder = CACHE / f"ct-{slices}x{size}-{key}"
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == slices:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame_of_reference = (
        generate_uid(entropy_srcs=[key, what]) for what in ("st", "se", "for")
    )
    spacing = 350.0 / size
    for k in range(slices):
        z = -k * 1.0
        hu = _slice_hu(size, z, rng)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[key, str(k)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.Modality = "BENCH^CT", "BENCH", "CT"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = (
            "20260101",
            "120000",
            "",
            "",
        )
        ds.PatientBirthDate, ds.PatientSex, ds.StudyID, ds.SeriesNumber = "", "O", "1", 1
        ds.InstanceNumber = slices - k  # head-first: instance order runs against position
        ds.ImagePositionPatient = [-175.0, -175.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP, ds.Manufacturer = 120, "bench"
        ds.PixelData = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16).tobytes()
        pydicom.dcmwrite(folder / f"CT{k:04d}.dcm", ds, enforce_file_format=True)
    return folder
