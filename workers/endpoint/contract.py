"""The MedImageParse scoring contract (Azure ML / Foundry online endpoint), both directions.

Request (2D and 3D)::

    {"input_data": {"columns": ["image", "text"], "index": [0, 1, ...],
                    "data": [[<base64 PNG or .nii.gz>, "prompt 1 & prompt 2"], ...]}}

2D response: one item per row, ``{"image_features": <JSON string>, "text_features": [...]}`` where the
JSON string holds ``{"data": <base64 of raw bytes>, "shape": [N, 1024, 1024], "dtype": "uint8"}``
(the published example prints it with single quotes, so a Python-literal fallback is kept).
3D response: ``[{"nifti_file": "{\\"data\\": \\"<base64 .nii.gz>\\"}"}]``; one volume per request.

Encoders and decoders for both sides live here so the client and the mock endpoint cannot drift.
Pure functions: bytes and arrays in, values out.
"""

from __future__ import annotations

import ast
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pybase64

from workers.errors import PromptError

__all__ = [
    "CATEGORIES",
    "MODEL_SIZE",
    "ContractError",
    "Prediction2D",
    "Row",
    "decode_2d_response",
    "decode_3d_response",
    "decode_request",
    "encode_2d_item",
    "encode_3d_response",
    "encode_request",
    "join_prompts",
    "split_prompts",
    "validate_prompt",
]

MODEL_SIZE: Final = 1024
MAX_PROMPT_LENGTH: Final = 512
# BIOMED_CLASSES: what text_features can say about each prompt
CATEGORIES: Final = (
    "liver", "lung", "kidney", "pancreas", "heart anatomies", "brain anatomies", "eye anatomies",
    "vessel", "other organ", "tumor", "infection", "other lesion", "fluid disturbance",
    "other abnormality", "histology structure", "other",
)  # fmt: skip


class ContractError(ValueError):
    """A payload that does not follow the contract; the caller adds endpoint/job context."""


@dataclass(frozen=True, slots=True)
class Row:
    """One request row: the image bytes (PNG or .nii.gz) and its prompts."""

    image: bytes
    prompts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Prediction2D:
    masks: npt.NDArray[np.uint8]  # [N, 1024, 1024], probability × 255
    categories: tuple[str, ...]


def validate_prompt(prompt: str) -> str:
    """The prompt as it will be sent, or PromptError: '&' separates prompts on the wire."""
    text = " ".join(str(prompt).split())
    if not text:
        raise PromptError("empty prompt")
    if "&" in text:
        raise PromptError(f"prompt {text!r} contains '&', which the endpoint reads as a separator")
    if len(text) > MAX_PROMPT_LENGTH:
        raise PromptError(f"prompt of {len(text)} characters exceeds {MAX_PROMPT_LENGTH}")
    return text


def join_prompts(prompts: Sequence[str]) -> str:
    if not prompts:
        raise PromptError("no prompts")
    return " & ".join(validate_prompt(p) for p in prompts)


def split_prompts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split("&") if p.strip())


def encode_request(rows: Sequence[Row]) -> bytes:
    """The JSON body for these rows (index 0..n-1; the 3D endpoint takes exactly one row)."""
    data = [[pybase64.b64encode(row.image).decode("ascii"), join_prompts(row.prompts)] for row in rows]
    body = {"input_data": {"columns": ["image", "text"], "index": list(range(len(rows))), "data": data}}
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def decode_request(body: Any) -> list[Row]:
    """Server side: the rows of a request body (parsed JSON), or ContractError."""
    try:
        table = body["input_data"]
        columns, data = table["columns"], table["data"]
    except (KeyError, TypeError) as exc:
        raise ContractError("body must be {'input_data': {'columns': [...], 'data': [...]}}") from exc
    if list(columns) != ["image", "text"]:
        raise ContractError(f"columns must be ['image', 'text'], got {columns!r}")
    rows = []
    for n, item in enumerate(data):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise ContractError(f"row {n} must be [<base64 image>, <text>]")
        rows.append(Row(_b64(item[0], f"row {n} image"), split_prompts(item[1])))
    if not rows:
        raise ContractError("no rows")
    return rows


def encode_2d_item(masks: npt.NDArray[np.uint8], categories: Sequence[str]) -> dict[str, Any]:
    """Server side: one response item, as the endpoint writes it."""
    features = {
        "data": pybase64.b64encode(np.ascontiguousarray(masks).tobytes()).decode("ascii"),
        "shape": list(masks.shape),
        "dtype": str(masks.dtype),
    }
    return {"image_features": json.dumps(features), "text_features": list(categories)}


def decode_2d_response(body: Any, prompts_per_row: Sequence[int]) -> list[Prediction2D]:
    """Client side: one prediction per row, checked against what was asked."""
    if not isinstance(body, list):
        raise ContractError(f"response is a {type(body).__name__}, expected a list of items")
    if len(body) != len(prompts_per_row):
        raise ContractError(f"response has {len(body)} items for {len(prompts_per_row)} images")
    pairs = enumerate(zip(body, prompts_per_row, strict=True))
    return [_decode_2d_item(item, n, expected) for n, (item, expected) in pairs]


def _decode_2d_item(item: Any, n: int, expected: int) -> Prediction2D:
    if not isinstance(item, Mapping) or "image_features" not in item:
        raise ContractError(f"item {n} has no image_features")
    features = _json_or_literal(item["image_features"], f"item {n} image_features")
    try:
        raw, shape, dtype = features["data"], features["shape"], np.dtype(features["dtype"])
    except (KeyError, TypeError) as exc:
        raise ContractError(f"item {n} image_features lacks data/shape/dtype") from exc
    expected_shape = [expected, MODEL_SIZE, MODEL_SIZE]
    if list(shape) != expected_shape or dtype != np.uint8:
        raise ContractError(f"item {n} is {dtype} {list(shape)}, expected uint8 {expected_shape}")
    buffer = _b64(raw, f"item {n} image_features data")
    if len(buffer) != expected * MODEL_SIZE * MODEL_SIZE:
        raise ContractError(f"item {n} holds {len(buffer)} bytes for shape {expected_shape}")
    masks = np.frombuffer(buffer, dtype=np.uint8).reshape(expected_shape)
    categories = item.get("text_features") or []
    if not isinstance(categories, list) or len(categories) != expected:
        raise ContractError(f"item {n} text_features {categories!r} do not match {expected} prompts")
    return Prediction2D(masks, tuple(str(c) for c in categories))


def encode_3d_response(nifti: bytes) -> list[dict[str, str]]:
    """Server side: the 3D answer, a stringified JSON around base64 .nii.gz bytes."""
    return [{"nifti_file": json.dumps({"data": pybase64.b64encode(nifti).decode("ascii")})}]


def decode_3d_response(body: Any) -> bytes:
    """Client side: the .nii(.gz) bytes of the one volume answered."""
    if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], Mapping):
        raise ContractError("response must be a list with exactly one item")
    if "nifti_file" not in body[0]:
        raise ContractError("the item has no nifti_file")
    inner = _json_or_literal(body[0]["nifti_file"], "nifti_file")
    if not isinstance(inner, Mapping) or "data" not in inner:
        raise ContractError("nifti_file has no data")
    return _b64(inner["data"], "nifti_file data")


def _json_or_literal(value: Any, what: str) -> Any:
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        raise ContractError(f"{what} is a {type(value).__name__}, expected a JSON string")
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:  # the published example prints a Python dict (single quotes)
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ContractError(f"{what} is neither JSON nor a Python literal") from exc


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ContractError(f"{what} is not a base64 string")
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # MIME-style base64 (a newline every 76 characters, as the notebooks send) is valid too
        return pybase64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(f"{what} is not valid base64") from exc
