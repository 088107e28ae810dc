"""2D stand-in segmentation — NOT A MODEL: a quantile threshold, the largest blob, a soft edge.

For each prompt (rule in :mod:`service.mock.thresholds`) the grey image is thresholded, the largest
8-connected component is kept, and it is returned the way MedImageParse returns masks: probability
× 255 as uint8 (contract §2.3). The soft edge is a Gaussian blur (σ = 2 px at 1024², scaled with
the image), so thresholding at 128 gives back the component except at corners and strands thinner
than about 2σ. Output size follows the input ("same shape as the input image", ASSETS card): a
client that sends anything but 1024² gets masks its contract decoder rejects, as with the real model.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from service.mock.components import largest_component_2d
from service.mock.thresholds import prompt_thresholds
from workers.endpoint.contract import MODEL_SIZE

__all__ = ["BLUR_SIGMA_AT_MODEL_SIZE", "ImageDecodeError", "decode_grey", "probability_map", "segment_png"]

BLUR_SIGMA_AT_MODEL_SIZE: Final = 2.0

UInt8Array = npt.NDArray[np.uint8]


class ImageDecodeError(ValueError):
    """The bytes are not an image OpenCV can decode."""


def decode_grey(png: bytes) -> UInt8Array:
    # IMREAD_GRAYSCALE: RGB inputs built by stacking one grey plane come back as that plane exactly;
    # colour images (pathology, fundus) as luma; 16-bit PNGs as their top 8 bits.
    grey = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.ndim != 2 or grey.size == 0:
        raise ImageDecodeError("image is not a decodable PNG")
    return np.asarray(grey, dtype=np.uint8)


def probability_map(component: npt.NDArray[np.bool_], sigma: float) -> UInt8Array:
    scaled = component.view(np.uint8) * np.uint8(255)
    return np.asarray(cv2.GaussianBlur(scaled, (0, 0), sigmaX=sigma, sigmaY=sigma), dtype=np.uint8)


def segment_png(png: bytes, n_prompts: int) -> UInt8Array:
    """``[n_prompts, H, W]`` uint8 probability × 255, one mask per prompt in prompt order."""
    grey = decode_grey(png)
    sigma = BLUR_SIGMA_AT_MODEL_SIZE * max(grey.shape) / MODEL_SIZE
    masks = np.empty((n_prompts, *grey.shape), dtype=np.uint8)
    for i, threshold in enumerate(prompt_thresholds(grey, n_prompts)):
        masks[i] = probability_map(largest_component_2d(grey >= threshold), sigma)
    return masks
