"""Received instances into the data directory, as the front door uses it.

An instance is acknowledged (C-STORE success, STOW ReferencedSOPSequence) only after
:func:`store_instance` returned: the bytes are on disk (fsync), under their final name (rename),
in the folder of their study and series. The writing itself lives in :mod:`workers.storage`, which
pulls from other nodes use too; this module adds what only a listener asks (free space).
"""

from __future__ import annotations

import shutil

from workers.storage import DataDir, SpoolError, StoredInstance, store_instance

__all__ = ["SpoolError", "StoredInstance", "free_bytes", "store_instance"]


def free_bytes(data: DataDir) -> int:
    """Free space where the spool lives (the data directory, created if needed)."""
    data.root.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(data.root).free
