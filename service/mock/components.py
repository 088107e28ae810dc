"""The largest connected component of a binary image (8-connected) or volume (6-connected).

3D is built from OpenCV's 2D labelling: every slice is labelled (4-connected in plane), components
of neighbouring slices that share a pixel are joined in a graph, and the graph's connected
components are the 3D components — the same partition as ``scipy.ndimage.label``'s default, but
1.3-4x faster single-threaded on 300×512×512 CT-like volumes (noisy to clean), and parallel over
slices on top. Ties go to the component met first, scanning slices along the slowest axis.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from service.mock.threads import parallel_map
from service.mock.thresholds import chunked_bincount

__all__ = ["bounding_box", "largest_component_2d", "largest_component_3d"]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

_NO_EDGES: Final = (np.zeros(0, np.intp), np.zeros(0, np.intp))


def largest_component_2d(binary: BoolArray) -> BoolArray:
    """An image of the largest 8-connected component; all False when ``binary`` is."""
    # connectedComponents + bincount: the WithStats variant costs more than the count it saves
    count, labels = cv2.connectedComponents(binary.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return np.zeros_like(binary)
    areas = chunked_bincount(labels.ravel(), count)
    areas[0] = 0
    return np.asarray(labels == int(np.argmax(areas)))


class _Plane(NamedTuple):
    components: int  # in this plane, background excluded
    labels: npt.NDArray[np.int32]
    areas: npt.NDArray[np.int64]


def largest_component_3d(binary: BoolArray) -> tuple[tuple[slice, ...], BoolArray] | None:
    """The largest 6-connected component as (bounding box, mask inside it); None when all False."""
    box = bounding_box(binary)
    if box is None:
        return None
    inside = binary[box]
    # Slice along the axis with the largest stride, so each plane is (nearly) contiguous.
    axis = int(np.argmax(np.abs(inside.strides)))
    stack = np.moveaxis(inside, axis, 0)
    planes = parallel_map(lambda i: _label_plane(stack[i]), range(stack.shape[0]))
    counts = np.array([plane.components for plane in planes], dtype=np.intp)
    total = int(counts.sum())
    # node id of label l (>= 1) of plane i: offsets[i] + l - 1
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def edges(i: int) -> tuple[IntArray, IntArray]:
        below, above = planes[i], planes[i + 1]
        if not (below.components and above.components):
            return _NO_EDGES
        touching = (below.labels > 0) & (above.labels > 0)
        heads, tails = below.labels[touching], above.labels[touching]
        if heads.size == 0:
            return _NO_EDGES
        # neighbouring pixels mostly repeat the previous pair: drop runs before building the graph
        new = np.empty(heads.size, dtype=np.bool_)
        new[0] = True
        np.not_equal(heads[1:], heads[:-1], out=new[1:])
        new[1:] |= tails[1:] != tails[:-1]
        return heads[new] + (offsets[i] - 1), tails[new] + (offsets[i + 1] - 1)

    pairs = parallel_map(edges, range(stack.shape[0] - 1))
    heads = np.concatenate([pair[0] for pair in pairs] + [_NO_EDGES[0]])
    tails = np.concatenate([pair[1] for pair in pairs] + [_NO_EDGES[1]])
    graph = sparse.csr_matrix((np.ones(heads.size, dtype=np.int8), (heads, tails)), shape=(total, total))
    _, group = connected_components(graph, directed=False)
    sizes = np.bincount(group, weights=np.concatenate([plane.areas for plane in planes]))
    winner = int(np.argmax(sizes))

    result = np.zeros(stack.shape, dtype=np.bool_)

    def paint(i: int) -> None:
        plane = planes[i]
        if plane.components:
            keep = np.zeros(plane.components + 1, dtype=np.bool_)
            keep[1:] = group[offsets[i] : offsets[i] + plane.components] == winner
            if keep.any():
                result[i] = keep[plane.labels]

    parallel_map(paint, range(stack.shape[0]))
    return box, np.moveaxis(result, 0, axis)


def bounding_box(binary: BoolArray) -> tuple[slice, ...] | None:
    # Labelling only the box around the candidates: higher quantiles select small regions.
    box = []
    for axis in range(binary.ndim):
        others = tuple(a for a in range(binary.ndim) if a != axis)
        hits = np.flatnonzero(binary.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _label_plane(plane: BoolArray) -> _Plane:
    image = np.ascontiguousarray(plane).view(np.uint8)
    count, labels = cv2.connectedComponents(image, connectivity=4, ltype=cv2.CV_32S)
    areas = chunked_bincount(labels.ravel(), count)[1:]
    return _Plane(count - 1, np.asarray(labels, dtype=np.int32), areas)
