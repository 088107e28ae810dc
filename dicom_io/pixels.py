"""Pixel data → arrays: decoding, the modality LUT, the VOI LUT, MONOCHROME1 and colour to RGB.

Native little-endian pixel data is read straight from the file at the offset :mod:`reading` found
(no second parse); everything else goes through pydicom's decoders (pylibjpeg, openjpeg, RLE,
JPEG-LS). A decoding failure becomes an :class:`UnsupportedPixelDataError` naming the instance and
its transfer syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_io.errors import UnsupportedPixelDataError
from dicom_io.frames import Frame
from dicom_io.reading import Instance, read_dataset

__all__ = [
    "has_voi",
    "is_colour",
    "modality_values",
    "read_frames",
    "to_rgb8",
    "uniform_rescale",
    "voi_values",
]

PixelArray = npt.NDArray[Any]  # stored values: any integer (or float) dtype

_NATIVE_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                  (32, 0): np.uint32, (32, 1): np.int32}  # fmt: skip


def read_frames(instance: Instance, indices: Sequence[int] | None = None) -> PixelArray:
    """Stored values of the given frames (default all): ``[n, rows, cols]`` or ``[n, rows, cols, 3]``.

    Colour data comes back as RGB whatever its photometric interpretation (YBR is converted).
    PALETTE COLOR comes back as palette indices; :func:`to_rgb8` applies the palette.
    """
    wanted = list(range(instance.number_of_frames)) if indices is None else list(indices)
    for i in wanted:
        if not 0 <= i < instance.number_of_frames:
            raise IndexError(f"frame {i} outside 0..{instance.number_of_frames - 1}")
    raw = _read_native(instance, wanted)
    if raw is not None:
        return raw
    return _decode(instance, wanted)


def _read_native(instance: Instance, wanted: list[int]) -> PixelArray | None:
    ds = instance.header
    photometric = str(ds.get("PhotometricInterpretation", ""))
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    dtype = _NATIVE_DTYPES.get((instance.bits_allocated, int(ds.get("PixelRepresentation", 0) or 0)))
    if (
        instance.pixel_data_offset is None
        or dtype is None
        or (instance.samples_per_pixel == 3 and (planar != 0 or photometric != "RGB"))
    ):
        return None
    shape: tuple[int, ...] = (instance.rows, instance.columns)
    if instance.samples_per_pixel == 3:
        shape += (3,)
    per_frame = int(np.prod(shape))
    out = np.empty((len(wanted), *shape), dtype=dtype)
    with instance.path.open("rb") as fh:
        for n, index in enumerate(wanted):
            fh.seek(instance.pixel_data_offset + index * per_frame * out.itemsize)
            chunk = np.fromfile(fh, dtype=dtype, count=per_frame)
            if chunk.size != per_frame:
                raise _undecodable(instance, f"pixel data ends early in frame {index}")
            out[n] = chunk.reshape(shape)
    return _mask_unused_bits(out, int(ds.get("BitsStored", instance.bits_allocated)), instance.bits_allocated)


def _mask_unused_bits(arr: PixelArray, bits_stored: int, bits_allocated: int) -> PixelArray:
    """Bits above BitsStored are not pixel data (old overlays live there); signed values are sign-extended."""
    if bits_stored >= bits_allocated:
        return arr
    shift = bits_allocated - bits_stored
    if np.issubdtype(arr.dtype, np.signedinteger):
        return (arr << shift) >> shift
    masked: PixelArray = np.bitwise_and(arr, np.array((1 << bits_stored) - 1, dtype=arr.dtype))
    return masked


def _decode(instance: Instance, wanted: list[int]) -> PixelArray:
    try:
        # one parse of the file; only the wanted frames are decoded
        frames = list(iter_pixels(_source(instance), indices=wanted))
    except Exception as exc:  # decoders raise anything from RuntimeError to struct.error
        description = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise _undecodable(
            instance, f"cannot decode {instance.transfer_syntax_name} pixel data ({description})"
        ) from exc
    return np.stack(frames)


def _undecodable(instance: Instance, reason: str) -> UnsupportedPixelDataError:
    return UnsupportedPixelDataError(
        reason,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        sop_instance_uid=instance.sop_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        path=instance.path,
    )


def _source(instance: Instance) -> pydicom.Dataset | str:
    # Conformant Part 10 files decode straight from disk (one frame at a time); the rare files
    # without preamble or meta header go through our tolerant reader, and so do deflated ones
    # (pydicom inflates those only when reading a whole dataset).
    if instance.transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        with instance.path.open("rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return str(instance.path)
    return read_dataset(instance.path)


def is_colour(instance: Instance) -> bool:
    photometric = str(instance.header.get("PhotometricInterpretation", ""))
    return instance.samples_per_pixel == 3 or photometric == "PALETTE COLOR"


def to_rgb8(stored: PixelArray, instance: Instance) -> npt.NDArray[np.uint8]:
    """Colour frames (``[..., rows, cols(, 3)]``) as 8-bit RGB."""
    ds = instance.header
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = apply_color_lut(stored, ds)
        # LUT entries are 8 or 16 bits wide; the descriptor says which
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return np.asarray(rgb >> (bits - 8) if bits > 8 else rgb, dtype=np.uint8)
    if stored.dtype == np.uint8:
        return np.asarray(stored)
    bits = int(ds.get("BitsStored", instance.bits_allocated))
    scaled = np.asarray(stored, dtype=np.float32) * (255.0 / ((1 << bits) - 1))
    return np.asarray(np.clip(np.rint(scaled), 0, 255), dtype=np.uint8)


def uniform_rescale(frames: Sequence[Frame]) -> tuple[float, float] | None:
    """The one (slope, intercept) all frames share, or None when they differ or a LUT sequence is used."""
    seen: set[tuple[float, float]] = set()
    for frame in frames:
        if "ModalityLUTSequence" in frame.instance.header:
            return None
        seen.add(_rescale(frame))
        if len(seen) > 1:
            return None
    return seen.pop() if seen else None


def _rescale(frame: Frame) -> tuple[float, float]:
    if frame.rescale is not None:
        return frame.rescale
    ds = frame.instance.header
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (float(slope) if slope is not None else 1.0, float(intercept) if intercept is not None else 0.0)


def modality_values(stored: PixelArray, frame: Frame) -> npt.NDArray[np.float32]:
    """Stored values → modality units (HU for CT): Modality LUT Sequence or Rescale Slope/Intercept.

    A missing RescaleSlope/Intercept means 1/0 (many CR, DX and MR files have none).
    """
    ds = frame.instance.header
    if frame.rescale is None and "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope, intercept = _rescale(frame)
    values = np.asarray(stored, dtype=np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def has_voi(instance: Instance) -> bool:
    ds = instance.header
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def voi_values(values: npt.NDArray[np.float32], instance: Instance) -> npt.NDArray[np.float32]:
    """Apply the first VOI LUT or window the header carries (what the modality meant for display)."""
    if "VOILUTSequence" in instance.header and np.array_equal(values, np.rint(values)):
        # a LUT is indexed by integer input values
        return np.asarray(apply_voi_lut(values.astype(np.int32), instance.header, index=0), dtype=np.float32)
    return np.asarray(apply_voi_lut(values, instance.header, index=0), dtype=np.float32)
