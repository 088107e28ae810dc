"""Seeded DICOM test data with analytic truth, shipped like ``structlog.testing``.

Every generator is deterministic in its ``seed`` (pixel noise and UIDs), so the same call gives
byte-identical files. The geometry follows PS3.3 C.7.6.2 exactly, and each phantom carries the
truth of where its objects are — in patient space (LPS, mm) for volumes, in pixel space for 2D
images — computed analytically from the geometry written to the files, never from the pixels::

    phantom = volume_phantom(orientation="oblique", reverse_order=True, seed=3)
    paths = phantom.write(tmp_path)
    truth = phantom.truth_mask(dataset_index=5, label="marker")   # bool [Rows, Columns]
    rle = encode(phantom.datasets[5], RLELossless)
"""

from dicom_io.testing.encode import SUPPORTED_TRANSFER_SYNTAXES, EncoderUnavailableError, encode
from dicom_io.testing.geometry import Orientation, PlaneGeometry
from dicom_io.testing.images2d import cr_dx_image, secondary_capture, us_rgb
from dicom_io.testing.modules import SeriesInfo, StudyInfo
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.scene import Ellipse, Ellipsoid, ImagePhantom, Phantom, Rectangle, Shape2D
from dicom_io.testing.study import study_of
from dicom_io.testing.write import write_datasets

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Ellipse",
    "Ellipsoid",
    "EncoderUnavailableError",
    "ImagePhantom",
    "Orientation",
    "Phantom",
    "PlaneGeometry",
    "Rectangle",
    "SeriesInfo",
    "Shape2D",
    "StudyInfo",
    "cr_dx_image",
    "encode",
    "secondary_capture",
    "study_of",
    "us_rgb",
    "volume_phantom",
    "write_datasets",
]
