"""How the gateway names itself to DICOM peers: on every association it opens or accepts, and in the
Part 10 files the listener writes. A PACS administrator reading a peer's log sees mip-gateway and
its release, not the networking library underneath.
"""

from __future__ import annotations

import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

from pynetdicom import AE

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "identify"]

# Fixed for ever (a name-based UUID under 2.25, PS3.5 §B.2).
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:mip-gateway:implementation').int}"


def _version_name() -> str:
    try:
        release = version("mip-gateway")
    except PackageNotFoundError:
        release = "0"
    return f"MIPGW_{release}"[:16]  # SH: at most 16 characters


IMPLEMENTATION_VERSION_NAME = _version_name()

_AE = TypeVar("_AE", bound=AE)


def identify(ae: _AE) -> _AE:
    """``ae`` with the gateway's implementation class UID and version name (A-ASSOCIATE user info)."""
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return ae
