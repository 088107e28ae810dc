"""The scoring script of the mock endpoint: request body in, response body out, no HTTP.

Rows are routed by content, as one deployment cannot tell them apart otherwise: a PNG signature
is a 2D row, gzip or a NIfTI-1 magic a 3D row. 3D takes exactly one row (contract §4.1) and a
request never mixes the two. Output faults (wrong shape, wrong count, no affine, malformed JSON)
are applied here so they look exactly like a scoring script that misbehaves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Final

from service.mock.categories import category_for
from service.mock.faults import FaultPlan
from service.mock.segment2d import ImageDecodeError, segment_png
from service.mock.segment3d import (
    GZIP_MAGIC,
    NIFTI1_MAGICS,
    VolumeDecodeError,
    segment_nifti,
)
from service.mock.threads import parallel_map
from workers.endpoint.contract import ContractError, Row, decode_request, encode_2d_item, encode_3d_response

__all__ = ["PNG_SIGNATURE", "RowKind", "ScoringError", "parse_rows", "row_kind", "score_rows"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_NIFTI1_MAGIC_SLICE: Final = slice(344, 348)


class RowKind(StrEnum):
    IMAGE_2D = "2d"
    VOLUME_3D = "3d"


class ScoringError(Exception):
    """A request the scoring script refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def row_kind(image: bytes) -> RowKind | None:
    if image.startswith(PNG_SIGNATURE):
        return RowKind.IMAGE_2D
    if image.startswith(GZIP_MAGIC) or image[_NIFTI1_MAGIC_SLICE] in NIFTI1_MAGICS:
        return RowKind.VOLUME_3D
    return None


def parse_rows(body: bytes) -> tuple[list[Row], RowKind]:
    """The rows of a request body and what they hold, or ScoringError (400)."""
    try:
        document = json.loads(body)
    except ValueError as exc:  # also UnicodeDecodeError
        raise ScoringError(f"request body is not JSON ({exc})") from exc
    try:
        rows = decode_request(document)
    except ContractError as exc:
        raise ScoringError(str(exc)) from exc
    kinds = set()
    for n, row in enumerate(rows):
        kind = row_kind(row.image)
        if kind is None:
            raise ScoringError(f"row {n}: image is neither a PNG nor a NIfTI-1 (.nii/.nii.gz) file")
        if not row.prompts:
            raise ScoringError(f"row {n}: text holds no prompt")
        kinds.add(kind)
    if len(kinds) > 1:
        raise ScoringError("a request holds either 2D images (PNG) or one 3D volume (NIfTI), not both")
    kind = kinds.pop()
    if kind is RowKind.VOLUME_3D and len(rows) != 1:
        raise ScoringError(f"the 3D endpoint takes exactly one volume per request, got {len(rows)}")
    return rows, kind


def score_rows(rows: Sequence[Row], kind: RowKind, faults: FaultPlan) -> bytes:
    """The JSON response body for these rows, with the plan's output faults applied."""
    items: list[Any]
    if kind is RowKind.IMAGE_2D:
        items = parallel_map(lambda n: _score_2d(n, rows[n], faults), range(len(rows)))
    else:
        try:
            nifti = segment_nifti(
                rows[0].image,
                len(rows[0].prompts),
                keep_affine=not faults.drop_affine,
                drop_last_slice=faults.wrong_shape,
            )
        except VolumeDecodeError as exc:
            raise ScoringError(f"row 0: {exc}") from exc
        items = encode_3d_response(nifti)
    if faults.wrong_count:
        items = items[:-1]
    body = json.dumps(items, separators=(",", ":")).encode("ascii")
    if faults.malformed_json:  # any proper prefix of a JSON array is invalid JSON
        body = body[: len(body) // 2]
    return body


def _score_2d(n: int, row: Row, faults: FaultPlan) -> dict[str, Any]:
    try:
        masks = segment_png(row.image, len(row.prompts))
    except ImageDecodeError as exc:
        raise ScoringError(f"row {n}: {exc}") from exc
    if faults.wrong_shape:
        masks = masks[:, ::2, ::2]
    return encode_2d_item(masks, [category_for(prompt) for prompt in row.prompts])
