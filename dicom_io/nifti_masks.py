"""A 3D model's NIfTI mask → one boolean mask per prompt per source slice, mapped through the affines.

The endpoint's output layout is not documented (contract §4.1): it may keep our affine, reorder axes,
or drop the affine altogether. So the mask's own affine decides how its voxels map onto ours, and it
must be our grid up to an axis permutation and flips; when the mask has no affine (qform and sform
codes 0) it is taken to be on the grid we sent, which its shape must then match exactly.
"""

from __future__ import annotations

import io
from enum import StrEnum
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from isal import igzip

from dicom_io.errors import GeometryError, MaskError
from dicom_io.nifti3d import NiftiVolume

__all__ = ["MaskEncoding", "load_nifti", "masks_from_nifti"]

BoolArray = npt.NDArray[np.bool_]

_AXIS_TOLERANCE = 1e-3  # direction cosine error accepted after float32 storage
_OFFSET_TOLERANCE = 0.05  # voxels


class MaskEncoding(StrEnum):
    AUTO = "auto"
    LABELS = "labels"  # 0 = background, k = k-th prompt
    PROBABILITY = "probability"  # float in [0, 1], threshold 0.5
    UINT8_PROBABILITY = "uint8"  # 0..255, threshold 128


def load_nifti(data: bytes, *, series_instance_uid: str | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image from (optionally gzipped) bytes, without touching the disk."""
    try:
        raw = igzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        return nib.Nifti1Image.from_stream(io.BytesIO(raw))
    except Exception as exc:  # nibabel and gzip fail in many ways on garbage
        raise MaskError(
            f"mask is not a readable NIfTI-1 file ({exc})", series_instance_uid=series_instance_uid
        ) from exc


def masks_from_nifti(
    mask: bytes | nib.Nifti1Image,
    volume: NiftiVolume,
    n_prompts: int,
    encoding: MaskEncoding = MaskEncoding.AUTO,
) -> BoolArray:
    """``[n_prompts, slices, rows, columns]`` masks aligned with ``volume.frames``."""
    uid = volume.series_instance_uid
    image = load_nifti(mask, series_instance_uid=uid) if isinstance(mask, bytes) else mask
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise MaskError(
            f"mask has {data.ndim} dimensions; expected 3 (or 4 with one channel per prompt)",
            series_instance_uid=uid,
        )
    header = image.header
    has_affine = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    mask_affine = np.asarray(image.affine if has_affine else volume.affine, dtype=np.float64)
    data = _onto_source_grid(data, mask_affine, volume)
    return _split(data, n_prompts, encoding, uid)


def _onto_source_grid(
    data: npt.NDArray[Any], mask_affine: npt.NDArray[np.float64], volume: NiftiVolume
) -> npt.NDArray[Any]:
    """Reorder the mask's spatial axes to ``[k, row, column]`` of the source volume."""
    geometry = volume.geometry
    source_shape = geometry.shape_ijk  # (i, j, k)
    to_source = np.linalg.inv(geometry.affine_ras()) @ mask_affine  # mask voxel → source (i, j, k)
    rotation, offset = to_source[:3, :3], to_source[:3, 3]
    uid = volume.series_instance_uid
    mismatch = GeometryError(
        f"mask grid {data.shape[:3]} with affine {np.round(mask_affine, 3).tolist()} is not the source grid "
        f"{source_shape} (up to axis order and flips)",
        series_instance_uid=uid,
    )
    target_of = np.argmax(np.abs(rotation), axis=0)  # for each mask axis, the source axis it runs along
    if sorted(target_of.tolist()) != [0, 1, 2]:
        raise mismatch
    permutation = np.zeros((3, 3))
    permutation[target_of, [0, 1, 2]] = np.sign(rotation[target_of, [0, 1, 2]])
    if np.abs(rotation - permutation).max() > _AXIS_TOLERANCE:
        raise mismatch
    oriented = data
    for mask_axis in range(3):
        source_axis = int(target_of[mask_axis])
        if data.shape[mask_axis] != source_shape[source_axis]:
            raise mismatch
        flipped = permutation[source_axis, mask_axis] < 0
        expected_offset = source_shape[source_axis] - 1 if flipped else 0
        if abs(offset[source_axis] - expected_offset) > _OFFSET_TOLERANCE:
            raise mismatch
        if flipped:
            oriented = np.flip(oriented, axis=mask_axis)
    # axes now in mask order; bring them to source (i, j, k) and then to [k, j, i]
    order = [int(np.flatnonzero(target_of == s)[0]) for s in range(3)]
    extra = list(range(3, data.ndim))
    ijk = np.transpose(oriented, order + extra)
    return np.transpose(ijk, [2, 1, 0, *extra])


def _split(data: npt.NDArray[Any], n_prompts: int, encoding: MaskEncoding, uid: str) -> BoolArray:
    if data.ndim == 4:
        if data.shape[3] != n_prompts:
            raise MaskError(
                f"mask has {data.shape[3]} channels for {n_prompts} prompts", series_instance_uid=uid
            )
        threshold = (
            0.5 if encoding is not MaskEncoding.UINT8_PROBABILITY and float(data.max()) <= 1.0 else 128
        )
        return np.moveaxis(data >= threshold, 3, 0)
    if encoding is MaskEncoding.AUTO:
        encoding = _guess_encoding(data, n_prompts, uid)
    if encoding is MaskEncoding.LABELS:
        labels = np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data
        if labels.min() < 0 or labels.max() > n_prompts:
            raise MaskError(f"label map holds values outside 0..{n_prompts}", series_instance_uid=uid)
        return np.stack([labels == k for k in range(1, n_prompts + 1)])
    if n_prompts != 1:
        raise MaskError(
            f"a single probability map cannot answer {n_prompts} prompts", series_instance_uid=uid
        )
    threshold = 0.5 if encoding is MaskEncoding.PROBABILITY else 128
    return (data >= threshold)[np.newaxis]


def _guess_encoding(data: npt.NDArray[Any], n_prompts: int, uid: str) -> MaskEncoding:
    low, high = float(data.min()), float(data.max())
    integral = data.dtype.kind in "iub" or bool(np.array_equal(data, np.rint(data)))
    if integral and low >= 0 and high <= n_prompts:
        return MaskEncoding.LABELS
    if not integral and low >= 0 and high <= 1:
        return MaskEncoding.PROBABILITY
    if integral and low >= 0 and high <= 255 and n_prompts == 1:
        return MaskEncoding.UINT8_PROBABILITY
    raise MaskError(
        f"cannot tell how the mask is encoded (values {low:g}..{high:g}, dtype {data.dtype}, "
        f"{n_prompts} prompt(s))",
        series_instance_uid=uid,
    )
