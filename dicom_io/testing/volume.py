"""The settings of one generated volume, and what follows from them (values, UIDs, pixel module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.testing.geometry import Orientation, Vector
from dicom_io.testing.modules import SeriesInfo, StudyInfo, set_pixel_data
from dicom_io.testing.uids import seeded_uid

__all__ = ["VolumeSpec", "VolumeUIDs", "modality_to_stored"]

# Painted values before noise: background, then body, liver, marker (HU for CT, signal for MR).
_VALUES: dict[str, tuple[float, tuple[float, float, float]]] = {
    "CT": (-1000.0, (40.0, 160.0, 300.0)),
    "MR": (0.0, (400.0, 900.0, 1600.0)),
}
_NOISE_SD = {"CT": 4.0, "MR": 6.0}


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """Everything that shapes a volume phantom except the seed and the study (see ``volume_phantom``)."""

    modality: Literal["CT", "MR"]
    orientation: Orientation
    rows: int
    columns: int
    slices: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    reverse_order: bool
    gantry_tilt_deg: float
    enhanced: bool
    missing_slices: tuple[int, ...]
    monochrome1: bool
    stored_dtype: Literal["uint16", "int16"]
    rescale_slope: float
    rescale_intercept: float | None
    noise_sd: float | None
    center: Vector
    series_description: str | None
    body_part_examined: str | None
    series_number: int

    def validate(self) -> None:
        if self.modality not in _VALUES:
            raise ValueError(f"modality must be CT or MR, not {self.modality!r}")
        if self.stored_dtype not in ("uint16", "int16"):
            raise ValueError(f"stored_dtype must be uint16 or int16, not {self.stored_dtype!r}")
        if self.modality == "MR" and (self.rescale_slope != 1.0 or self.rescale_intercept is not None):
            raise ValueError("MR phantoms carry no rescale attributes")
        if self.rescale_slope <= 0:
            raise ValueError("rescale_slope must be positive")
        if self.enhanced and self.monochrome1:
            raise ValueError("Enhanced CT and MR images are MONOCHROME2 only")
        if any(not 0 <= k < self.slices for k in self.missing_slices):
            raise ValueError(f"missing_slices must lie in 0..{self.slices - 1}")
        if len(self.missing_slices) >= self.slices:
            raise ValueError("missing_slices would drop every slice")

    @property
    def intercept(self) -> float:
        if self.rescale_intercept is not None:
            return self.rescale_intercept
        return -1024.0 if self.stored_dtype == "uint16" else 0.0

    @property
    def bits_stored(self) -> int:
        return 12 if self.stored_dtype == "uint16" else 16

    @property
    def noise(self) -> float:
        return _NOISE_SD[self.modality] if self.noise_sd is None else self.noise_sd

    @property
    def background_value(self) -> float:
        return _VALUES[self.modality][0]

    @property
    def object_values(self) -> tuple[float, float, float]:
        return _VALUES[self.modality][1]

    @property
    def photometric_interpretation(self) -> str:
        return "MONOCHROME1" if self.monochrome1 else "MONOCHROME2"

    def add_pixel_module(self, ds: Dataset, stored: npt.NDArray[np.integer]) -> None:
        set_pixel_data(
            ds,
            stored,
            photometric_interpretation=self.photometric_interpretation,
            bits_stored=self.bits_stored,
        )


def modality_to_stored(spec: VolumeSpec, values: npt.NDArray[np.float64]) -> npt.NDArray[np.integer]:
    """Invert the modality LUT (CT) and clip to the stored range."""
    if spec.modality == "CT":
        values = (values - spec.intercept) / spec.rescale_slope
    if spec.stored_dtype == "int16":
        low, high = -(1 << (spec.bits_stored - 1)), (1 << (spec.bits_stored - 1)) - 1
    else:
        low, high = 0, (1 << spec.bits_stored) - 1
    stored: npt.NDArray[np.integer] = np.clip(np.rint(values), low, high).astype(spec.stored_dtype)
    return stored


@dataclass(frozen=True, slots=True)
class VolumeUIDs:
    """The series-level UIDs of one phantom; instance UIDs follow from ``series`` and a position."""

    seed: int
    series: str
    frame_of_reference: str
    dimension_organization: str

    @classmethod
    def seeded(cls, seed: int, spec: VolumeSpec, study: StudyInfo) -> VolumeUIDs:
        key = (spec, study.study_instance_uid)
        return cls(
            seed=seed,
            series=seeded_uid(seed, "series", key),
            # One per study and seed: series of one study share a patient coordinate system, and
            # the scene is fixed in it, whatever their orientation.
            frame_of_reference=seeded_uid(seed, "frame-of-reference", study.study_instance_uid),
            dimension_organization=seeded_uid(seed, "dimension-organization", key),
        )

    def series_info(self, spec: VolumeSpec) -> SeriesInfo:
        body_part = spec.body_part_examined
        default_description = f"{spec.modality} {body_part or 'PHANTOM'} {spec.orientation.upper()}"
        return SeriesInfo(
            modality=spec.modality,
            series_instance_uid=self.series,
            series_description=spec.series_description or default_description,
            body_part_examined=body_part,
            series_number=spec.series_number,
            patient_position="HFS",
        )
