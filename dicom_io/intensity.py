"""Which normalisation a frame or volume gets, and applying it: modality values → 0..255.

The reference code knows two cases (CT: a site window; anything else: 0.5/99.5 percentiles of the
non-zero pixels). X-ray needs two more decisions it leaves open (contract §1.3): we honour the
modality's own VOI LUT when the header carries one, and MONOCHROME1 is inverted so bone is bright,
as in the display-convention PNGs the model was trained on. Colour images pass through as 8-bit RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from dicom_io.frames import Frame
from dicom_io.pixels import has_voi, is_colour, modality_values, to_rgb8, voi_values
from dicom_io.windows import (
    ModelKind,
    WindowPreset,
    get_window,
    percentile_to_unit_range,
    window_to_unit_range,
)

__all__ = [
    "XRAY_MODALITIES",
    "Normalisation",
    "NormalisationKind",
    "default_normalisation",
    "frame_to_model_input",
    "grey_to_unit_range",
]

XRAY_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "IO", "PX"})


class NormalisationKind(StrEnum):
    WINDOW = "window"
    PERCENTILE = "percentile"
    VOI = "voi"  # the header's VOI LUT / window, falling back to percentiles when it has none


@dataclass(frozen=True, slots=True)
class Normalisation:
    kind: NormalisationKind
    window: WindowPreset | None = None

    @classmethod
    def named_window(cls, name: str, model: ModelKind | str) -> Normalisation:
        return cls(NormalisationKind.WINDOW, get_window(name, model))

    @classmethod
    def parse(cls, text: str | None, model: ModelKind | str, modality: str) -> Normalisation:
        """``percentile``, ``voi``, a window preset name, or None for the modality's default."""
        if text is None:
            return default_normalisation(modality, model)
        key = text.strip().lower()
        if key in (NormalisationKind.PERCENTILE, NormalisationKind.VOI):
            return cls(NormalisationKind(key))
        return cls.named_window(key, model)

    def describe(self) -> str:
        if self.window is not None:
            return f"window {self.window.name} [{self.window.lower:g}, {self.window.upper:g}] HU"
        return str(self.kind)


def default_normalisation(modality: str, model: ModelKind | str) -> Normalisation:
    """CT: abdomen (2D) or soft-tissue (3D) window, as the reference examples; X-ray: VOI; else percentile."""
    if modality == "CT":
        return Normalisation.named_window(
            "abdomen" if ModelKind(model) is ModelKind.TWO_D else "soft_tissue", model
        )
    if modality in XRAY_MODALITIES:
        return Normalisation(NormalisationKind.VOI)
    return Normalisation(NormalisationKind.PERCENTILE)


def grey_to_unit_range(
    values: npt.NDArray[np.float32], frame: Frame, normalisation: Normalisation
) -> npt.NDArray[np.float32]:
    """Modality values of one grey frame (or a stack) → float 0..255, not yet rounded."""
    if normalisation.kind is NormalisationKind.WINDOW and normalisation.window is not None:
        scaled = window_to_unit_range(values, normalisation.window)
    elif normalisation.kind is NormalisationKind.VOI and has_voi(frame.instance):
        voi = voi_values(values, frame.instance)
        low, high = float(voi.min()), float(voi.max())
        scaled = (
            np.asarray((voi - np.float32(low)) * np.float32(255.0 / (high - low)), dtype=np.float32)
            if high > low
            else np.zeros_like(voi)
        )
    else:
        scaled = percentile_to_unit_range(values)
    if str(frame.instance.header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = np.float32(255.0) - scaled
    return np.clip(scaled, 0.0, 255.0, out=scaled)  # float rounding can step a hair outside


def frame_to_model_input(
    stored: npt.NDArray[np.generic], frame: Frame, normalisation: Normalisation
) -> npt.NDArray[np.float32] | npt.NDArray[np.uint8]:
    """One frame's stored pixels → what the 2D letterbox takes: float32 grey 0..255 or uint8 RGB."""
    if is_colour(frame.instance):
        return to_rgb8(stored, frame.instance)
    return grey_to_unit_range(modality_values(stored, frame), frame, normalisation)
