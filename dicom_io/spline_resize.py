"""The reference 2D resize, exactly: ``skimage.transform.resize(order=3, mode='constant',
preserve_range=True, anti_aliasing=True)`` of a letterboxed image, as banded matrix products.

That resize is linear and separable: a Gaussian pre-filter (downsampling only, σ = (s − 1)/2), the
cubic B-spline pre-filter, and B-spline sampling at ``(o + 0.5)·s − 0.5``, with zeros outside the
image. So it is one matrix per axis, ``out = A_rows @ image @ A_columns.T``, and each matrix is a
narrow band (the B-spline pre-filter's inverse decays as (√3 − 2)^k). We build the bands in closed
form (no scipy at run time) and apply them as small single-threaded BLAS products; the padding is
folded into the matrices, so the padded image is never built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Letterbox", "resample_plane"]


class Letterbox(Protocol):
    """Where a source image sits in the padded square, and the square's output size."""

    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def pad_top(self) -> int: ...
    @property
    def pad_left(self) -> int: ...
    @property
    def padded_rows(self) -> int: ...
    @property
    def padded_columns(self) -> int: ...
    @property
    def model_size(self) -> int: ...


# The cubic B-spline pre-filter's impulse response is √3·z^|k| with z = √3 − 2; past 15 taps it is
# below 1e-8, i.e. under 1e-5 grey levels for a full-range edge.
_SPLINE_POLE: Final = math.sqrt(3.0) - 2.0
_SPLINE_RADIUS: Final = 15
# skimage/scipy's Gaussian: truncate at 4σ.
_GAUSS_TRUNCATE: Final = 4.0
# Weights below this are dropped when the bands are cut into blocks (< 1e-4 grey levels in all).
_WEIGHT_FLOOR: Final = 1e-7
# Output samples per matrix product in each pass. A product's input window is its share of the input
# plus the band's width (~26 samples), so small blocks waste little; these were fastest in the bench.
_COLUMN_BLOCK: Final = 16
_ROW_BLOCK: Final = 8
# Largest m·n·k per product: below OpenBLAS's threshold for using its thread pool (_axis_products).
_MAX_GEMM_WORK: Final = 2**18
# Output rows clipped and rounded together.
_ROUNDING_BAND: Final = 64


@dataclass(frozen=True, slots=True)
class _Product:
    """One small matrix product of a resize pass along one axis.

    Output samples ``out_start:out_stop`` of the axis are ``weights @ input[in_start:in_stop]``,
    for the slice ``free_start:free_stop`` of the other axis.
    """

    weights: npt.NDArray[np.float32]
    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    free_start: int
    free_stop: int


def resample_plane(plane: npt.NDArray[np.float32], transform: Letterbox) -> npt.NDArray[np.uint8]:
    """One channel through padding + the skimage-equivalent resize + clip + round."""
    low, high = float(plane.min()), float(plane.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("image contains NaN or infinite values")
    size = transform.model_size

    # Columns first: across[r, o] = Σ_c plane[r, c]·A_columns[o, c]; the row pass then reads whole
    # contiguous rows of it.
    across = np.empty((transform.rows, size), dtype=np.float32)
    column_pass = _axis_products(
        transform.padded_columns, size, transform.pad_left, transform.columns, _COLUMN_BLOCK, transform.rows
    )
    for p in column_pass:
        np.matmul(
            plane[p.free_start : p.free_stop, p.in_start : p.in_stop],
            p.weights.T,
            out=across[p.free_start : p.free_stop, p.out_start : p.out_stop],
        )

    # skimage clips to the range of its (padded) input, widened to include the 0 it pads with when the
    # result reaches it; we then also clip to [0, 255] and round.
    if (transform.padded_rows, transform.padded_columns) != (transform.rows, transform.columns):
        low, high = min(low, 0.0), max(high, 0.0)
    row_pass = _axis_products(
        transform.padded_rows, size, transform.pad_top, transform.rows, _ROW_BLOCK, size
    )
    may_widen = not low <= 0.0 <= high
    out, reached = _row_pass(across, row_pass, size, low, high, track_minimum=may_widen)
    if may_widen and reached <= 0.0:
        # Rare: an unpadded, all-positive image whose overshoot reaches 0 somewhere. Redo with 0 let in.
        out, _ = _row_pass(across, row_pass, size, 0.0, high, track_minimum=False)
    return out


def _row_pass(
    across: npt.NDArray[np.float32],
    products: tuple[_Product, ...],
    size: int,
    low: float,
    high: float,
    *,
    track_minimum: bool,
) -> tuple[npt.NDArray[np.uint8], float]:
    """``A_rows @ across`` clipped to [low, high] ∩ [0, 255] and rounded (and its minimum if asked)."""
    floor = np.float32(min(max(low, 0.0), 255.0))
    ceiling = np.float32(max(min(high, 255.0), 0.0))
    out = np.empty((size, size), dtype=np.uint8)
    # Products land in a small float buffer that is clipped and rounded a band of rows at a time:
    # no size² float image is allocated and the working set stays in cache.
    band = np.empty((_ROUNDING_BAND, size), dtype=np.float32)
    reached = math.inf
    index = 0
    for band_start in range(0, size, _ROUNDING_BAND):
        band_stop = min(size, band_start + _ROUNDING_BAND)
        while index < len(products) and products[index].out_start < band_stop:
            p = products[index]
            np.matmul(
                p.weights,
                across[p.in_start : p.in_stop, p.free_start : p.free_stop],
                out=band[p.out_start - band_start : p.out_stop - band_start, p.free_start : p.free_stop],
            )
            index += 1
        values = band[: band_stop - band_start]
        if track_minimum:
            reached = min(reached, float(values.min()))
        np.clip(values, floor, ceiling, out=values)
        np.rint(values, out=values)
        out[band_start:band_stop] = values
    return out, reached


@lru_cache(maxsize=64)
def _axis_products(
    padded: int, size: int, start: int, count: int, block: int, free: int
) -> tuple[_Product, ...]:
    """The resize matrix of one axis cut into products of ``block`` outputs over ``free`` samples.

    Each product is kept below ``_MAX_GEMM_WORK`` multiply-adds by splitting the free axis: OpenBLAS
    hands a GEMM to its thread pool once m·n·k reaches about 2^19 (2^18 in older releases), and on
    a busy 2-core machine that hand-off cost 10–100× the product itself (measured: 0.18 ms instead of
    0.02 ms each, 200 ms per image while other processes ran) and fought OpenCV's own pool. One
    thread per image is predictable; a worker gets its parallelism from several images at once.
    """
    band, columns = _axis_band(padded, size, start, count)
    products = []
    for out_start in range(0, size, block):
        out_stop = min(size, out_start + block)
        rows, cols = band[out_start:out_stop], columns[out_start:out_stop]
        keep = np.abs(rows) > _WEIGHT_FLOOR
        if keep.any():
            in_start, in_stop = int(cols[keep].min()), int(cols[keep].max()) + 1
        else:
            in_start = in_stop = 0  # all padding: an empty product, i.e. zeros
        weights = np.zeros((out_stop - out_start, in_stop - in_start), dtype=np.float32)
        r, c = np.nonzero(keep)
        weights[r, cols[r, c] - in_start] = rows[r, c]
        weights.flags.writeable = False  # shared through the cache
        pieces = max(1, -(-weights.size * free // _MAX_GEMM_WORK))
        step = -(-free // pieces)
        for free_start in range(0, free, step):
            free_stop = min(free, free_start + step)
            products.append(_Product(weights, in_start, in_stop, out_start, out_stop, free_start, free_stop))
    return tuple(products)


@lru_cache(maxsize=8)  # only feeds _axis_products; a band is ~1 MB
def _axis_band(
    padded: int, size: int, start: int, count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The banded resize matrix of one axis: weights ``[size, L]`` and the input sample of each.

    ``padded`` is the axis length after padding, of which the image occupies ``start:start+count``;
    the padding is zeros, so its weights are zeroed and inputs are re-indexed to the image's own.
    """
    scale = padded / size
    centres = (np.arange(size) + 0.5) * scale - 0.5  # skimage/scipy grid_mode sample positions
    first = np.floor(centres).astype(np.int64) - 1
    spline = _cubic_bspline(centres[:, None] - (first[:, None] + np.arange(4)))  # on coefficients first..+3

    # Coefficient j of an image that is zero outside 0..padded-1 is Σ_i h[j - i]·x[i], h[k] = √3·z^|k|.
    # In offsets d = i - first: weight[o, d] = Σ_k spline[o, k]·h[k - d].
    radius = _SPLINE_RADIUS
    kernel = math.sqrt(3.0) * _SPLINE_POLE ** np.abs(np.arange(-radius - 3, radius + 4))
    local = np.arange(-radius, radius + 4)
    band = np.zeros((size, local.size))
    for k in range(4):
        band += spline[:, k : k + 1] * kernel[(k - local) + radius + 3]
    inside = (first[:, None] + local >= 0) & (first[:, None] + local < padded)
    band[~inside] = 0.0  # the spline stage sees zeros outside the (padded) image

    sigma = max(0.0, (scale - 1.0) / 2.0)
    if sigma > 0.0:
        # The anti-aliasing Gaussian runs first, on the padded image with zeros outside, so the
        # composite weight is the band above correlated with the (symmetric) Gaussian.
        gauss = _gaussian_kernel(sigma)
        reach = gauss.size // 2
        widened = np.zeros((size, local.size + 2 * reach))
        for q, g in enumerate(gauss):
            widened[:, q : q + local.size] += g * band
        band = widened
        local = np.arange(-radius - reach, radius + 4 + reach)
        inside = (first[:, None] + local >= 0) & (first[:, None] + local < padded)
        band[~inside] = 0.0

    columns = first[:, None] + local - start
    band[(columns < 0) | (columns >= count)] = 0.0
    return band, columns


def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float64]:
    """scipy.ndimage.gaussian_filter's kernel (truncated at 4σ), as skimage's resize uses it."""
    reach = int(_GAUSS_TRUNCATE * sigma + 0.5)
    x = np.arange(-reach, reach + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / (sigma * sigma) * x * x)
    return np.asarray(kernel / kernel.sum(), dtype=np.float64)


def _cubic_bspline(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    t = np.abs(t)
    near = 2.0 / 3.0 - t * t + 0.5 * t**3
    far = (2.0 - t) ** 3 / 6.0
    return np.asarray(np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0)), dtype=np.float64)
