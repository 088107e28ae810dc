"""A minimal QIDO-RS peer on 127.0.0.1 for the API tests: ``GET {url}/studies/{uid}/series`` answers
the series it was given for that study (``*``: any study), paged by ``offset`` as dicomweb-client asks.

Only the edge cases of ``POST /jobs`` use it (a study-only request without Orthanc, a source that
answers 500 or 404); the real pulls run against Orthanc in tests/integration/test_api_pull.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["QidoStub"]

_SERIES = re.compile(r"^/dicom-web/studies/([0-9.]+)/series$")


class QidoStub:
    def __init__(self, series: Mapping[str, list[str]], *, status: int = 200) -> None:
        self.series = dict(series)
        self.status = status
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(self.path)
                parts = urlsplit(self.path)
                match = _SERIES.match(parts.path)
                if stub.status != 200 or match is None:
                    self._answer(stub.status if match else 404, b"")
                    return
                offset = int(parse_qs(parts.query).get("offset", ["0"])[0])
                uids = stub.series.get(match.group(1), stub.series.get("*", []))
                found = [{"0020000E": {"vr": "UI", "Value": [uid]}} for uid in uids[offset:]]
                self._answer(200, json.dumps(found).encode() if found else b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="qido-stub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/dicom-web"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
