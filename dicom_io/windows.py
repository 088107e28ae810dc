"""Intensity presets and the reference normalisations that turn modality values into 0..255.

Numbers and behaviour follow the public reference code (see ``medimageparse-contract.md`` §1.1,
§1.2 and §4.2): clip, then min-max of the *clipped* values to 0..255. Results stay float until the
very end, because the 2D reference resizes the float image before casting; :func:`to_uint8` clips
and rounds (the reference truncates, which can wrap cubic overshoot).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "WINDOWS_2D",
    "WINDOWS_3D",
    "ModelKind",
    "WindowPreset",
    "get_window",
    "percentile_to_unit_range",
    "to_uint8",
    "window_to_unit_range",
]

FloatArray = npt.NDArray[np.float32]


class ModelKind(StrEnum):
    TWO_D = "2d"
    THREE_D = "3d"


@dataclass(frozen=True, slots=True)
class WindowPreset:
    name: str
    lower: float
    upper: float
    source: str

    @property
    def width(self) -> float:
        return self.upper - self.lower

    @property
    def level(self) -> float:
        return (self.upper + self.lower) / 2


_V1 = "BiomedParse v1 inference_utils/processing_utils.py CT_WINDOWS"
_V2 = "MedImageParse 3D notes / BiomedParse v2 README, recommended preprocessing"

WINDOWS_2D: dict[str, WindowPreset] = {
    p.name: p
    for p in (
        WindowPreset("abdomen", -150, 250, _V1),
        WindowPreset("lung", -1000, 1000, _V1),
        WindowPreset("pelvis", -55, 200, _V1),
        WindowPreset("liver", -25, 230, _V1),
        WindowPreset("colon", -68, 187, _V1),
        WindowPreset("pancreas", -100, 200, _V1),
    )
}

WINDOWS_3D: dict[str, WindowPreset] = {
    p.name: p
    for p in (
        WindowPreset("soft_tissue", -160, 240, _V2),  # W400 L40
        WindowPreset("lung", -910, 590, _V2),  # W1500 L-160
        WindowPreset("brain", 0, 80, _V2),  # W80 L40
        WindowPreset("bone", -500, 1300, _V2),  # W1800 L400
    )
}


def get_window(name: str, model: ModelKind | str = ModelKind.TWO_D) -> WindowPreset:
    """The named preset of the given model; the 2D and 3D models were trained with different ones."""
    table = WINDOWS_2D if ModelKind(model) is ModelKind.TWO_D else WINDOWS_3D
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown {ModelKind(model)} CT window {name!r}; choose one of {', '.join(table)}")
    return table[key]


def _min_max(clipped: FloatArray) -> FloatArray:
    low, high = float(clipped.min()), float(clipped.max())
    if high <= low:
        # a flat image (e.g. all air inside the window): the reference would divide by zero
        return np.zeros_like(clipped, dtype=np.float32)
    return np.asarray((clipped - np.float32(low)) * np.float32(255.0 / (high - low)), dtype=np.float32)


def window_to_unit_range(values: FloatArray, preset: WindowPreset) -> FloatArray:
    """Clip to the window, then min-max the clipped values to 0..255 (reference behaviour)."""
    return _min_max(np.clip(np.asarray(values, dtype=np.float32), preset.lower, preset.upper))


def percentile_to_unit_range(values: FloatArray, low: float = 0.5, high: float = 99.5) -> FloatArray:
    """Clip to the 0.5th/99.5th percentiles of the *non-zero* values, then min-max to 0..255."""
    values = np.asarray(values, dtype=np.float32)
    positive = values[values > 0]
    sample = positive if positive.size else values.ravel()
    lower, upper = np.percentile(sample, [low, high])
    return _min_max(np.clip(values, np.float32(lower), np.float32(upper)))


def to_uint8(values: FloatArray) -> npt.NDArray[np.uint8]:
    """Clip to 0..255 and round to nearest before the cast."""
    return np.asarray(np.clip(np.rint(values), 0, 255), dtype=np.uint8)
