"""3D stand-in segmentation — NOT A MODEL: a quantile threshold and the largest 3D blob per prompt.

The answer is a label map on the input grid (contract §4.1, the v2 ``merge_multiclass_masks``
reading): uint8, 0 = background, k = the k-th prompt. Prompts are painted in order, so where two
regions overlap the later prompt wins; with the quantile rule later prompts have higher thresholds,
so their regions usually lie inside earlier ones and the map comes out nested.

The input's qform and sform (codes, quaternion, rows, pixdim) are copied into the mask header. The
real endpoint's affine handling is undocumented, so ``keep_affine=False`` writes a header with both
codes 0 for testing the client's "mask without affine" path. Everything happens in memory.
"""

from __future__ import annotations

from typing import Any, Final

import nibabel as nib
import numpy as np
import numpy.typing as npt
from isal import igzip

from service.mock.components import largest_component_3d
from service.mock.thresholds import prompt_thresholds

__all__ = ["GZIP_MAGIC", "NIFTI1_MAGICS", "VolumeDecodeError", "load_volume", "segment_nifti"]

GZIP_MAGIC: Final = b"\x1f\x8b"
NIFTI1_MAGIC_OFFSET: Final = 344
NIFTI1_MAGICS: Final = (b"n+1\x00", b"ni1\x00")
MAX_LABELS: Final = 255

_GEOMETRY_FIELDS: Final = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "xyzt_units",
)  # fmt: skip
_COMPRESS_LEVEL: Final = 1  # label maps are mostly runs of zeros; level 1 already shrinks them ~100x


class VolumeDecodeError(ValueError):
    """The bytes are not a single-file NIfTI-1 volume (optionally gzipped) the mock can read."""


def load_volume(data: bytes) -> tuple[nib.Nifti1Image, npt.NDArray[Any]]:
    try:
        raw: bytes = igzip.decompress(data) if data[:2] == GZIP_MAGIC else data  # type: ignore[no-untyped-call]
    except Exception as exc:  # isal raises OSError, EOFError or zlib errors on damaged streams
        raise VolumeDecodeError(f"gzip stream is damaged ({exc})") from exc
    magic = raw[NIFTI1_MAGIC_OFFSET : NIFTI1_MAGIC_OFFSET + 4]
    if magic == NIFTI1_MAGICS[1]:
        raise VolumeDecodeError("a NIfTI-1 pair header (ni1) carries no voxels; send a single .nii(.gz)")
    if magic != NIFTI1_MAGICS[0]:
        raise VolumeDecodeError("image is not a NIfTI-1 file")
    try:
        image = nib.Nifti1Image.from_bytes(raw)
        volume = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel fails in many ways on truncated or inconsistent headers
        raise VolumeDecodeError(f"NIfTI-1 file is not readable ({exc})") from exc
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise VolumeDecodeError(f"volume has shape {list(image.shape)}; expected 3 dimensions")
    return image, volume


def segment_nifti(
    data: bytes, n_prompts: int, *, keep_affine: bool = True, drop_last_slice: bool = False
) -> bytes:
    """The gzipped NIfTI-1 label map for a (gzipped) NIfTI-1 volume and ``n_prompts`` prompts."""
    if n_prompts > MAX_LABELS:
        raise VolumeDecodeError(f"{n_prompts} prompts do not fit a uint8 label map (at most {MAX_LABELS})")
    image, volume = load_volume(data)
    labels = np.zeros(volume.shape, dtype=np.uint8, order="F")
    for k, threshold in enumerate(prompt_thresholds(volume, n_prompts), start=1):
        found = largest_component_3d(volume >= threshold)
        if found is not None:
            box, inside = found
            labels[box][inside] = k
    if drop_last_slice:  # the wrong-shape fault
        labels = labels[..., :-1]
    labels = labels.reshape(labels.shape + (1,) * (len(image.shape) - 3), order="F")
    # A new image without an affine has qform and sform codes 0: the drop-affine fault as it is.
    mask = nib.Nifti1Image(labels, None)  # type: ignore[no-untyped-call]
    if keep_affine:
        for field in _GEOMETRY_FIELDS:
            mask.header[field] = image.header[field]
    return igzip.compress(mask.to_bytes(), _COMPRESS_LEVEL, mtime=0)
