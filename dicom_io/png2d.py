"""The 2D MedImageParse image path: letterbox a slice into the model's square, and map masks back.

Forward (contract §1.2 steps 4–6, §1.3): pad the short axis with black, centred, then resize to
1024² exactly as the reference does with ``skimage.transform.resize(order=3, mode='constant',
preserve_range=True, anti_aliasing=True)``, then clip and round to uint8 RGB.

The resize is :mod:`dicom_io.spline_resize`: the reference up to float32 rounding (≤ 1 grey level
on < 5e-5 of pixels after rounding), ~6 ms per 512² slice. OpenCV's INTER_CUBIC (Keys a = −0.75,
replicated borders) costs 0.5 ms but is 0.3–0.5 grey levels off on average, 1.0 on textured colour
(pathology-like), and up to 81 at image borders (``bench/png_export.py`` prints both).

Inverse (contract §3): bilinear resize of the 0..255 probability map to the padded size, threshold,
crop the padding. Padding is recorded in a :class:`LetterboxTransform` so the inverse uses exactly
the forward numbers, including v1's one-short-of-square quirk.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from dicom_io.errors import MaskError
from dicom_io.pngenc import encode_png
from dicom_io.spline_resize import resample_plane

__all__ = [
    "MODEL_SIZE",
    "LetterboxTransform",
    "PadPolicy",
    "encode_png",
    "letterbox_transform",
    "probability_to_masks",
    "to_model_image",
]

MODEL_SIZE: Final = 1024

# Interpolated probabilities within this of the threshold count as reaching it: float32 bilinear
# weights do not always sum to exactly 1, and a plateau at exactly the threshold must not split.
_THRESHOLD_SLACK: Final = 1e-3


class PadPolicy(enum.Enum):
    """Where the odd pixel goes when the two axes differ by an odd number."""

    SQUARE = "square"
    """BiomedParse v2 ``get_padding``: d//2 before, d − d//2 after; the padded image is square."""
    V1_REFERENCE = "v1_reference"
    """BiomedParse v1 ``process_intensity_image``: d//2 on both sides, one short of square when d is
    odd, so the resize stretches that axis by one pixel's worth. Use to match v1 bit for bit."""


@dataclass(frozen=True, slots=True)
class LetterboxTransform:
    """How a ``rows × columns`` image was padded and scaled into the ``model_size²`` model image."""

    rows: int
    columns: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    model_size: int = MODEL_SIZE
    policy: PadPolicy = PadPolicy.SQUARE

    def __post_init__(self) -> None:
        for name in ("rows", "columns", "model_size"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("pad_top", "pad_bottom", "pad_left", "pad_right"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not isinstance(self.policy, PadPolicy):
            object.__setattr__(self, "policy", PadPolicy(self.policy))

    @property
    def padded_rows(self) -> int:
        return self.pad_top + self.rows + self.pad_bottom

    @property
    def padded_columns(self) -> int:
        return self.pad_left + self.columns + self.pad_right

    @property
    def scale(self) -> tuple[float, float]:
        """Model pixels per source pixel along (rows, columns); equal unless v1 padding is odd."""
        return self.model_size / self.padded_rows, self.model_size / self.padded_columns

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the derived sizes and scale are included for readers, checked on load."""
        return {
            "rows": self.rows,
            "columns": self.columns,
            "pad_top": self.pad_top,
            "pad_bottom": self.pad_bottom,
            "pad_left": self.pad_left,
            "pad_right": self.pad_right,
            "padded_rows": self.padded_rows,
            "padded_columns": self.padded_columns,
            "model_size": self.model_size,
            "scale": list(self.scale),
            "policy": self.policy.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LetterboxTransform:
        try:
            transform = cls(
                rows=data["rows"],
                columns=data["columns"],
                pad_top=data["pad_top"],
                pad_bottom=data["pad_bottom"],
                pad_left=data["pad_left"],
                pad_right=data["pad_right"],
                model_size=data.get("model_size", MODEL_SIZE),
                policy=PadPolicy(data.get("policy", PadPolicy.SQUARE.value)),
            )
        except KeyError as exc:
            raise ValueError(f"letterbox transform is missing {exc.args[0]!r}") from exc
        for name in ("padded_rows", "padded_columns"):
            if name in data and data[name] != getattr(transform, name):
                raise ValueError(
                    f"{name}={data[name]!r} does not match the padding ({getattr(transform, name)})"
                )
        if "scale" in data and not np.allclose(data["scale"], transform.scale, rtol=1e-12, atol=0.0):
            raise ValueError(f"scale={data['scale']!r} does not match the padding ({transform.scale})")
        return transform


def letterbox_transform(
    rows: int, columns: int, size: int = MODEL_SIZE, policy: PadPolicy | str = PadPolicy.SQUARE
) -> LetterboxTransform:
    """Centred black padding of the short axis (contract §1.2 step 4), then scaling to ``size``."""
    policy = PadPolicy(policy)
    difference = abs(rows - columns)
    before = difference // 2
    after = difference - before if policy is PadPolicy.SQUARE else before
    if columns > rows:
        return LetterboxTransform(rows, columns, before, after, 0, 0, size, policy)
    return LetterboxTransform(rows, columns, 0, 0, before, after, size, policy)


def to_model_image(
    image: npt.NDArray[np.floating[Any]] | npt.NDArray[np.uint8], transform: LetterboxTransform
) -> npt.NDArray[np.uint8]:
    """The ``[size, size, 3]`` uint8 model image for a source image.

    ``image`` is either grey ``[rows, columns]`` float already scaled to 0..255 and not yet rounded
    (contract §1.2 steps 1–3), or colour ``[rows, columns, 3]`` uint8 resized per channel with no
    intensity change (§1.3). The reference's uint8 cast truncates and can wrap; this clips to
    [0, 255] and rounds (at most one grey level from the reference, by design).
    """
    shape = (transform.rows, transform.columns)
    if image.ndim == 2 and np.issubdtype(image.dtype, np.floating) and image.shape == shape:
        grey = resample_plane(np.asarray(image, dtype=np.float32), transform)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
    if image.ndim == 3 and image.dtype == np.uint8 and image.shape == (*shape, 3):
        planes = [resample_plane(image[:, :, c].astype(np.float32), transform) for c in range(3)]
        return np.asarray(cv2.merge(planes), dtype=np.uint8)
    raise ValueError(
        f"expected float [{transform.rows}, {transform.columns}] grey or uint8 "
        f"[{transform.rows}, {transform.columns}, 3] colour, got {image.dtype} {list(image.shape)}"
    )


def probability_to_masks(
    prob: npt.NDArray[Any],
    transform: LetterboxTransform,
    *,
    threshold: int = 128,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> npt.NDArray[np.bool_]:
    """Boolean ``[N, rows, columns]`` masks from the model's uint8 ``[N, size, size]`` probabilities.

    Contract §3: bilinear resize (half-pixel centres, like torch ``align_corners=False``) to the
    padded size, ``≥ threshold``, crop the padding. A single ``[size, size]`` map is taken as N = 1.
    """
    if not 1 <= threshold <= 255:
        raise ValueError(f"threshold must be 1..255, got {threshold}")
    size = transform.model_size

    def bad(reason: str) -> MaskError:
        return MaskError(reason, sop_instance_uid=sop_instance_uid, series_instance_uid=series_instance_uid)

    if not isinstance(prob, np.ndarray):
        raise bad(f"probability map is a {type(prob).__name__}, expected a uint8 array")
    if prob.dtype != np.uint8:
        raise bad(f"probability map has dtype {prob.dtype}, expected uint8")
    maps = prob[np.newaxis] if prob.ndim == 2 else prob
    if maps.ndim != 3 or maps.shape[0] < 1 or maps.shape[1:] != (size, size):
        raise bad(f"probability map has shape {list(prob.shape)}, expected [N, {size}, {size}] with N ≥ 1")

    padded = (transform.padded_columns, transform.padded_rows)  # cv2 sizes are (width, height)
    rows = slice(transform.pad_top, transform.pad_top + transform.rows)
    columns = slice(transform.pad_left, transform.pad_left + transform.columns)
    masks = np.empty((maps.shape[0], transform.rows, transform.columns), dtype=np.bool_)
    for index, plane in enumerate(maps):
        # Interpolate in float: cv2's uint8 path rounds the interpolated value to an integer first,
        # which moves the cut from ≥ 128 to ≥ 127.5 between pixel centres.
        resized = cv2.resize(plane.astype(np.float32), padded, interpolation=cv2.INTER_LINEAR)
        np.greater_equal(resized[rows, columns], threshold - _THRESHOLD_SLACK, out=masks[index])
    return masks
