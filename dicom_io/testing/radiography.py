"""The CR- and DX-specific modules of a generated radiograph, and its VOI."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

__all__ = ["WINDOW", "add_radiography_modules", "voi_lut"]

# (centre, width) in stored values: spans background to marker whatever the polarity.
WINDOW = (2100.0, 3800.0)
_ENTRIES = 4096


def voi_lut() -> list[int]:
    """A 4096-entry sigmoid VOI LUT with 16-bit output, centred like :data:`WINDOW`."""
    centre, width = WINDOW
    stored = np.arange(_ENTRIES, dtype=np.float64)
    curve = 65535.0 / (1.0 + np.exp(-(stored - centre) / (width / 8.0)))
    return [int(v) for v in np.rint(curve)]


def add_radiography_modules(ds: Dataset, *, monochrome1: bool, voi_lut_sequence: bool) -> None:
    """CR Series/CR Image or DX Series/Anatomy/Image/Detector, and the VOI LUT module."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = "PA"
    ds.KVP = 110
    ds.ImagerPixelSpacing = [0.15, 0.143]
    ds.DistanceSourceToDetector = 1800
    ds.ExposureTime = 12
    ds.XRayTubeCurrent = 200
    if ds.Modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower stored values mean less beam (bone); MONOCHROME2 stores the inverse.
        ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelSpacing = list(ds.ImagerPixelSpacing)
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "MAGNIFICATION CORRECTED"
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = Sequence()
        ds.AnatomicRegionSequence = Sequence([_code("43799004", "SCT", "Chest")])
        ds.ViewCodeSequence = Sequence([_code("399348003", "SCT", "postero-anterior")])
    if voi_lut_sequence:
        lut = Dataset()
        lut.add_new("LUTDescriptor", "US", [_ENTRIES, 0, 16])
        lut.LUTExplanation = "SIGMOID"
        lut.add_new("LUTData", "US", voi_lut())
        ds.VOILUTSequence = Sequence([lut])
    else:
        ds.WindowCenter, ds.WindowWidth = WINDOW
        ds.WindowCenterWidthExplanation = "PHANTOM"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code
