"""The 348-byte NIfTI-1 header, written directly (nifti1.h), so exporting a volume needs no nibabel.

Importing nibabel costs ~0.3 s, a quarter of a whole ``mip-gateway convert`` run; the header is a
fixed little-endian struct. Tests read every header we write back with nibabel.
"""

from __future__ import annotations

import math
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["HEADER_SIZE", "nifti1_header"]

HEADER_SIZE: Final = 352  # the 348-byte header plus the 4-byte "no extensions" flag

# nifti1.h field order; 's' fields (data_type, db_name, descrip, aux_file, intent_name) stay empty
_LAYOUT: Final = struct.Struct("<i10s18sihbb8h3f4h8f3fhbb4f2i80s24s2h6f4f4f4f16s4s")
assert _LAYOUT.size == 348

_DATATYPES: Final = {
    np.dtype(np.uint8): (2, 8),
    np.dtype(np.int16): (4, 16),
    np.dtype(np.int32): (8, 32),
    np.dtype(np.float32): (16, 32),
    np.dtype(np.float64): (64, 64),
    np.dtype(np.int8): (256, 8),
    np.dtype(np.uint16): (512, 16),
    np.dtype(np.uint32): (768, 32),
}
_SCANNER_ANAT: Final = 1
_UNITS_MM_SEC: Final = 2 | 8


def nifti1_header(
    dtype: np.dtype[np.generic],
    shape: tuple[int, int, int],
    affine: npt.NDArray[np.float64],
    *,
    with_qform: bool,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> bytes:
    """Header + extension flag for a single-file ``.nii`` whose voxels follow at offset 352.

    The sform holds ``affine`` exactly (shear included); the qform, a rotation + zooms + qfac, is
    written only when asked (it cannot hold a shear).
    """
    if dtype not in _DATATYPES:
        raise ValueError(f"no NIfTI-1 datatype for {dtype}")
    code, bitpix = _DATATYPES[dtype]
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    quaternion, qfac = _quaternion(affine[:3, :3] / zooms) if with_qform else ((0.0, 0.0, 0.0), 1.0)
    dims = (3, *shape, 1, 1, 1, 1)
    pixdim = (qfac, *(float(z) for z in zooms), 1.0, 1.0, 1.0, 1.0)
    qoffset = tuple(float(v) for v in affine[:3, 3]) if with_qform else (0.0, 0.0, 0.0)
    rows = [tuple(float(v) for v in affine[i]) for i in range(3)]
    packed = _LAYOUT.pack(
        348, b"", b"", 0, 0, 0, 0,  # sizeof_hdr data_type db_name extents session_error regular dim_info
        *dims,
        0.0, 0.0, 0.0, 0, code, bitpix, 0,  # intent_p1..3, intent_code, datatype, bitpix, slice_start
        *pixdim,
        float(HEADER_SIZE), slope, intercept, 0, 0, _UNITS_MM_SEC,  # vox_offset .. xyzt_units
        0.0, 0.0, 0.0, 0.0, 0, 0,  # cal_max, cal_min, slice_duration, toffset, glmax, glmin
        b"", b"",  # descrip, aux_file: never patient data
        _SCANNER_ANAT if with_qform else 0, _SCANNER_ANAT,
        *quaternion, *qoffset,
        *rows[0], *rows[1], *rows[2],
        b"", b"n+1\0",
    )  # fmt: skip
    return packed + b"\0\0\0\0"


def _quaternion(directions: npt.NDArray[np.float64]) -> tuple[tuple[float, float, float], float]:
    """(b, c, d) of the rotation in unit-column ``directions`` and qfac (−1 for a left-handed grid)."""
    # Nearest orthonormal matrix first: DICOM cosines carry ~1e-6 of rounding.
    u, _, vt = np.linalg.svd(directions)
    rotation = u @ vt
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        qfac = -1.0
        rotation[:, 2] = -rotation[:, 2]
    r = rotation
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    # Shepperd's method: divide by the largest of the four candidates for stability.
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        w, x, y, z = 0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        w, x, y, z = (r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        w, x, y, z = (r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        w, x, y, z = (r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s
    if w < 0:  # NIfTI stores b, c, d and derives a = sqrt(1 - b² - c² - d²) ≥ 0
        x, y, z = -x, -y, -z
    return (float(x), float(y), float(z)), qfac
