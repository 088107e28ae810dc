"""Synthetic inputs for the mock endpoint's tests: a real PNG and a small NIfTI with an oblique affine.

Shared by the unit and integration tests (import as ``tests.unit.service.mock_samples``).
"""

from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import numpy.typing as npt
from isal import igzip

SIZE = 1024

# rotated about z by 30°, anisotropic voxels, translated: any axis mix-up shows
OBLIQUE_AFFINE = np.array(
    [
        [0.8 * np.cos(np.pi / 6), -0.8 * np.sin(np.pi / 6), 0.0, -120.5],
        [0.8 * np.sin(np.pi / 6), 0.8 * np.cos(np.pi / 6), 0.0, 35.25],
        [0.0, 0.0, 2.5, -410.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def grey_image(size: int = SIZE) -> npt.NDArray[np.uint8]:
    """A body with a left-to-right ramp, a bright L off-centre, and a small separate speck.

    The ramp makes every quantile a different region; the speck is brighter than everything and
    must never win, since it is not the largest component.
    """
    s = size / SIZE
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    body = ((yy - 540 * s) / (380 * s)) ** 2 + ((xx - 480 * s) / (330 * s)) ** 2 < 1
    image = np.where(body, 40 + 150 * xx / size, 0.0)
    image[int(300 * s) : int(520 * s), int(560 * s) : int(620 * s)] = 230  # the L: a bar ...
    image[int(460 * s) : int(520 * s), int(560 * s) : int(720 * s)] = 230  # ... and its foot
    image[int(40 * s) : int(60 * s), int(900 * s) : int(920 * s)] = 255
    return np.round(image).astype(np.uint8)


def png_bytes(image: npt.NDArray[np.uint8], *, rgb: bool = True) -> bytes:
    """PNG as the gateway sends it: the grey plane stacked three times."""
    planes = np.stack([image] * 3, axis=-1) if rgb else image
    ok, encoded = cv2.imencode(".png", planes)
    assert ok
    return encoded.tobytes()


def volume(shape: tuple[int, int, int] = (40, 48, 32)) -> npt.NDArray[np.int16]:
    """int16 'CT': air -1000, a body at 0..100 rising along i, an off-centre bright box."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ni, nj, nk = shape
    body = ((i - ni / 2) / (ni * 0.42)) ** 2 + ((j - nj / 2) / (nj * 0.4)) ** 2 < 1
    data = np.where(body & (k > 2) & (k < nk - 3), 100 * i / ni, -1000).astype(np.int16)
    data[ni // 2 : ni // 2 + 8, nj // 3 : nj // 3 + 6, nk // 4 : nk // 2] = 400
    data[1:3, 1:3, 1:3] = 900  # brightest, separate, tiny
    return np.asfortranarray(data)


def nifti_image(data: npt.NDArray[np.generic] | None = None) -> nib.Nifti1Image:
    image = nib.Nifti1Image(volume() if data is None else data, OBLIQUE_AFFINE)
    image.header.set_qform(OBLIQUE_AFFINE, code=1)
    image.header.set_sform(OBLIQUE_AFFINE, code=2)
    return image


def nifti_gz(data: npt.NDArray[np.generic] | None = None) -> bytes:
    return bytes(igzip.compress(nifti_image(data).to_bytes(), 1, mtime=0))
