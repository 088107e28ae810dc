"""The demo's DICOM node (``mip-gateway serve --demo``): a modality/PACS stand-in on loopback.

It sends a study to the gateway as a C-STORE SCU (:func:`send_study`) and receives what the gateway
sends back as a C-STORE SCP (:class:`DemoNode`), writing each instance to ``folder/<SOP UID>.dcm``.
It is a real DICOM peer (pynetdicom), not a shortcut around the network.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from workers.dimse_reactor import pause_safely

__all__ = ["DemoNode", "send_study"]

log = structlog.get_logger(__name__)

_SUCCESS = 0x0000
_CANNOT_STORE = 0xA700


class DemoNode:
    """A Storage SCP on ``host`` (port picked by the OS) in a background thread; use as a context."""

    def __init__(self, folder: Path, *, ae_title: str, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.host = host
        self.port = 0
        self._server: object | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        server = ae.start_server(
            (self.host, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        assert server is not None  # block=False returns the server
        self._server = server
        self.port = int(server.server_address[1])
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]

    def received(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))

    def _on_store(self, event: Event) -> int:
        try:
            sop = str(event.request.AffectedSOPInstanceUID)  # type: ignore[union-attr]
            target = self.folder / f"{sop}.dcm"
            part = target.with_suffix(".part")
            with open(part, "wb") as fh:
                fh.write(event.encoded_dataset(include_meta=True))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, target)
        except (OSError, ValueError) as exc:
            log.error("demo_node.store_failed", reason=str(exc))
            return _CANNOT_STORE
        log.info("demo_node.received", sop_instance_uid=sop, calling_ae=event.assoc.requestor.ae_title)
        return _SUCCESS


def send_study(folder: Path, *, host: str, port: int, calling_ae: str, called_ae: str) -> tuple[str, int]:
    """C-STORE every ``*.dcm`` under ``folder`` in one association; (StudyInstanceUID, count sent).

    Raises RuntimeError when the association is refused or an instance is not stored."""
    files = sorted(folder.rglob("*.dcm"))
    if not files:
        raise RuntimeError(f"no DICOM files in {folder}")
    datasets = [dcmread(path) for path in files]
    ae = AE(calling_ae)
    for pair in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}):
        ae.add_requested_context(pair[0], pair[1])
    assoc = pause_safely(ae.associate(host, port, ae_title=called_ae))
    if not assoc.is_established:
        raise RuntimeError(f"{called_ae} at {host}:{port} refused the association")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != _SUCCESS:
                raise RuntimeError(f"C-STORE of {ds.SOPInstanceUID} answered {code!r}")
    except BaseException:
        assoc.abort()
        raise
    assoc.release()  # the release tells the listener the series is complete
    return str(datasets[0].StudyInstanceUID), len(datasets)
