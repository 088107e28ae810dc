"""Re-encoding a generated dataset in another transfer syntax, so readers meet every form in the field.

=================================  ====================================================  ==========
transfer syntax                    how                                                    lossless
=================================  ====================================================  ==========
Explicit/Implicit VR Little End.   relabel (pydicom writes the encoding the meta says)    yes
Deflated Explicit VR Little End.   relabel (pydicom deflates on write)                    yes
Explicit VR Big Endian (retired)   relabel and byte-swap the pixel words                  yes
RLE Lossless                       ``Dataset.compress`` (pydicom / pylibjpeg-rle)         yes
JPEG-LS Lossless / Near-Lossless   ``Dataset.compress`` (pyjpegls)                        yes / ±2
JPEG 2000 Lossless / JPEG 2000     ``Dataset.compress`` (pylibjpeg-openjpeg)              yes / PSNR
JPEG Baseline (8-bit only)         Pillow, frame by frame; RGB as YBR_FULL_422            no
JPEG Lossless SV1, JPEG Extended   dcmtk's ``dcmcjpeg`` (``+e1`` / ``+ee``)               yes / no
=================================  ====================================================  ==========

Lossy results keep the SOP Instance UID (a test compares them with their source) but say they are
lossy (LossyImageCompression "01", ratio and method).
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = ["SUPPORTED_TRANSFER_SYNTAXES", "EncoderUnavailableError", "encode"]

_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
_PYDICOM = (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000)
_DCMTK = {JPEGLosslessSV1: "+e1", JPEGExtended12Bit: "+ee"}
_LOSSY_METHOD = {
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEGBaseline8Bit: "ISO_10918_1",
}
SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *_NATIVE,
    ExplicitVRBigEndian,
    *_PYDICOM,
    JPEGBaseline8Bit,
    *_DCMTK,
)


class EncoderUnavailableError(RuntimeError):
    """The encoder a transfer syntax needs is not installed (e.g. dcmtk's ``dcmcjpeg``)."""


def encode(
    ds: Dataset,
    transfer_syntax_uid: str,
    *,
    jls_error: int = 2,
    j2k_psnr: float = 70.0,
    jpeg_quality: int = 95,
) -> Dataset:
    """A new dataset holding ``ds``'s pixels in ``transfer_syntax_uid``; ``ds`` is not changed.

    ``jls_error`` (JPEG-LS near-lossless), ``j2k_psnr`` (lossy JPEG 2000, dB) and ``jpeg_quality``
    (JPEG baseline) set the loss of the lossy syntaxes. Raises ``ValueError`` for a syntax or a
    pixel format the syntax cannot carry, :class:`EncoderUnavailableError` if ``dcmcjpeg`` is missing.
    """
    target = UID(transfer_syntax_uid)
    if target not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"cannot encode to {target} ({target.name})")
    result = copy.deepcopy(ds)
    # A dataset read from a file remembers its encoding, and pydicom refuses to write it in the
    # other byte order; decode every element and forget it, so any target can be written.
    for _ in result.iterall():
        pass
    result.set_original_encoding(None, None)
    if result.file_meta.TransferSyntaxUID.is_compressed:
        result.decompress(generate_instance_uid=False)
    original_size = len(result.PixelData)
    if target in _NATIVE:
        result.file_meta.TransferSyntaxUID = target
    elif target == ExplicitVRBigEndian:
        _to_big_endian(result)
    elif target in _PYDICOM:
        result.compress(
            target,
            generate_instance_uid=False,
            jls_error=jls_error if target == JPEGLSNearLossless else None,
            j2k_psnr=[j2k_psnr] if target == JPEG2000 else None,
        )
    elif target == JPEGBaseline8Bit:
        _jpeg_baseline(result, jpeg_quality)
    else:
        result = _dcmcjpeg(result, _DCMTK[target], jpeg_quality)
    if target in _LOSSY_METHOD:
        result.LossyImageCompression = "01"
        result.LossyImageCompressionRatio = round(original_size / len(result.PixelData), 2)
        result.LossyImageCompressionMethod = _LOSSY_METHOD[target]
    return result


def _to_big_endian(ds: Dataset) -> None:
    """Relabel as Explicit VR Big Endian; pydicom writes PixelData's bytes as they are, so the
    words are swapped here (8-bit data has nothing to swap)."""
    bits = int(ds.BitsAllocated)
    if bits > 8:
        little = np.dtype(f"<u{bits // 8}")
        ds.PixelData = np.frombuffer(ds.PixelData, dtype=little).astype(little.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian


def _jpeg_baseline(ds: Dataset, quality: int) -> None:
    """Encode each frame with Pillow (8-bit grey, or RGB as 4:2:2 YCbCr) and encapsulate them."""
    if int(ds.BitsAllocated) != 8 or int(ds.PixelRepresentation) != 0:
        raise ValueError("JPEG Baseline carries 8-bit unsigned samples only")
    rgb = int(ds.SamplesPerPixel) == 3
    if rgb and ds.PhotometricInterpretation != "RGB":
        raise ValueError(f"cannot JPEG-encode {ds.PhotometricInterpretation} colour")
    pixels = ds.pixel_array
    frames = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        # subsampling=1 is 4:2:2, what YBR_FULL_422 states.
        Image.fromarray(frame, mode="RGB" if rgb else "L").save(
            buffer, format="JPEG", quality=quality, subsampling=1 if rgb else 0
        )
        encoded.append(buffer.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if rgb:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _dcmcjpeg(ds: Dataset, process: str, quality: int) -> Dataset:
    """Run dcmtk's ``dcmcjpeg`` with ``process`` (+e1 or +ee), keeping the SOP Instance UID.

    ``+sr`` scales by the stored range rather than the image's min/max, so a lossy result keeps
    its stored values (and CT its rescale) apart from the compression error; dcmcjpeg marks lossy
    output DERIVED with a DerivationDescription itself.
    """
    tool = shutil.which("dcmcjpeg")
    if tool is None:
        raise EncoderUnavailableError("dcmcjpeg (dcmtk) is not installed")
    if process == "+ee" and int(ds.BitsStored) > 12:
        raise ValueError("JPEG Extended carries at most 12 bits stored")
    with tempfile.TemporaryDirectory(prefix="mipgw-dcmcjpeg-") as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.dcm")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(source, enforce_file_format=True)
        completed = subprocess.run(
            [
                tool,
                process,
                "+un",
                "+sr",
                *(["+q", str(quality)] if process == "+ee" else []),
                str(source),
                str(target),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise ValueError(
                f"dcmcjpeg {process} failed: {completed.stderr.strip() or completed.stdout.strip()}"
            )
        # Read all of it now: the file goes with the folder.
        return pydicom.dcmread(io.BytesIO(target.read_bytes()))
