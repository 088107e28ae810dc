"""Real DICOM peers on loopback for tests: dcmtk's ``storescp`` and Orthanc (with its DICOMweb plugin).

    with StoreSCP(tmp_path) as scp:                     # scp.port, scp.received_files()
        ...
    with Orthanc(tmp_path, modalities={"mipgw": ("MIPGW", 11112)}) as pacs:
        ...                                             # pacs.dicom_port, pacs.find_instance(uid)

Ports are picked at run time (bind port 0, read it, close) and a peer counts as started only once
its own PID holds the listening sockets (read from /proc on Linux; a TCP probe elsewhere): a port
taken by someone else in between is not mistaken for ours, and the peer is started again on new
ports (three tries). Peers are stopped by PID (SIGTERM, then SIGKILL), also at interpreter exit if
a test run is interrupted. Missing binaries skip the test with the reason (``pytest.skip``).
Both peers listen on every interface (neither has a bind-address option); they are contained by
policy as /work/shared/docs/peers.md describes: Orthanc answers HTTP on loopback only and takes
DICOM only from the modalities listed at 127.0.0.1; storescp is short-lived.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from config.settings import DicomNode, DicomWebNode
from tests.helpers import system_tool
from workers.delivery import verify_signature

__all__ = [
    "Orthanc",
    "QueryRetrieveSCP",
    "StoreSCP",
    "TLSFiles",
    "free_ports",
    "make_tls_files",
    "write_sample_seg",
]

LOOPBACK = "127.0.0.1"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
_START_TRIES = 3


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all bound at once, then closed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


_PROC = Path("/proc/self/fd").is_dir()


def _listening_ports(pid: int) -> set[int] | None:
    """TCP ports ``pid`` listens on, from /proc; None only on a system without /proc.

    A process that is exiting (say, storescp that could not bind) loses its /proc entries while
    the parent has not reaped it yet: that reads as "listens on nothing", never as "cannot tell",
    since a TCP probe would then find whoever else holds the port.
    """
    if not _PROC:
        return None
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return set()
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def _dicom_node(ae_title: str, port: int, overrides: Mapping[str, Any], **extra: Any) -> DicomNode:
    """A node for a peer on loopback, as the gateway's settings would name it (short test timeouts)."""
    values: dict[str, Any] = {"ae_title": ae_title, "host": LOOPBACK, "port": port, "timeout_s": 10, **extra}
    return DicomNode(**(values | dict(overrides)))


def _require(binary: str, package: str) -> str:
    path = system_tool(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package {package})")
    return path


class _Peer:
    """Start (on fresh ports, retried), wait until the process itself listens, stop by PID."""

    name = "peer"
    port_count = 1
    start_timeout_s = 10.0
    stop_grace_s = 10.0  # SIGTERM, then SIGKILL after this long

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.tmp_dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        # set to come back on the same port(s) after a stop (a destination that was down comes up)
        self.fixed_ports: list[int] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _command(self, ports: Sequence[int]) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self, ports: Sequence[int]) -> bool:
        """Beyond listening (e.g. an HTTP API that answers); called until true or timeout."""
        return True

    def __enter__(self) -> Self:
        for _ in range(_START_TRIES):
            ports = self.fixed_ports or free_ports(self.port_count)
            command = self._command(ports)
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=self._env()
                )
            atexit.register(self._stop)
            if self._wait(ports):
                return self
            self._stop()
        raise RuntimeError(f"{self.name} did not start in {_START_TRIES} tries:\n{self.log_text()[-2000:]}")

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _wait(self, ports: Sequence[int]) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:  # e.g. could not bind: try other ports
                return False
            held = _listening_ports(self._process.pid)
            listening = set(ports) <= held if held is not None else all(_accepts(p) for p in ports)
            # still alive after the check: an answer from a process that has just died is not its own
            if listening and self._ready(ports) and self._process.poll() is None:
                return True
            time.sleep(0.02)
        return False

    def _stop(self) -> None:
        process, self._process = self._process, None
        atexit.unregister(self._stop)
        if process is None or process.poll() is not None:
            return
        if self.stop_grace_s > 0:
            process.terminate()
        try:
            process.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 / localhost and a client certificate signed
    by it, and a stranger's self-signed client certificate; PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path
    stranger_cert_file: Path
    stranger_key_file: Path


def make_tls_files(folder: Path) -> TLSFiles:
    """Create the CA and the certificates with openssl (skips without openssl)."""
    openssl = _require("openssl", "openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: object) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)

    def signed(name: str, extensions: str) -> tuple[Path, Path]:
        cert, key, csr, ext = (folder / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
        ext.write_text(extensions)
        run("req", *new_key, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", ext, "-out", cert)  # fmt: skip
        return cert, key

    run("req", "-x509", *new_key, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=mipgw-test-ca")
    cert, key = signed(
        "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client_cert, client_key = signed("modality", "extendedKeyUsage=clientAuth\n")
    stranger_cert, stranger_key = folder / "x.pem", folder / "x.key"
    run(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        stranger_key,
        "-out",
        stranger_cert,
        "-days",
        "2",
        "-subj",
        "/CN=x",
    )
    return TLSFiles(ca, cert, key, client_cert, client_key, stranger_cert, stranger_key)


class StoreSCP(_Peer):
    """dcmtk ``storescp`` (one process, all transfer syntaxes, TCP_NODELAY) writing into ``received/``.

    It accepts any called AE title. With ``tls`` it speaks DICOM TLS with that certificate and does
    not ask for a client certificate.
    """

    name = "storescp"

    def __init__(self, tmp_dir: Path, ae_title: str = "TESTSCP", *, tls: TLSFiles | None = None) -> None:
        self.binary = _require("storescp", "dcmtk")
        super().__init__(tmp_dir)
        self.ae_title = ae_title
        self.tls = tls
        self.output_dir = self.tmp_dir / "received"
        self.output_dir.mkdir(exist_ok=True)
        self.host = LOOPBACK
        self.port = 0

    def _command(self, ports: Sequence[int]) -> list[str]:
        (self.port,) = ports
        tls = ["+tls", str(self.tls.key_file), str(self.tls.cert_file), "-ic"] if self.tls else []
        return [self.binary, "-aet", self.ae_title, "-od", str(self.output_dir), "+xa", *tls, str(self.port)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise

    def received_files(self) -> list[Path]:
        return sorted(path for path in self.output_dir.iterdir() if path.is_file())

    def dicom_node(self, **overrides: Any) -> DicomNode:
        tls = {"tls": True, "tls_ca_file": self.tls.ca_file} if self.tls is not None else {}
        return _dicom_node(self.ae_title, self.port, overrides, **tls)


class QueryRetrieveSCP(_Peer):
    """dcmtk ``dcmqrscp`` (single process), an archive that answers C-FIND / C-GET / C-MOVE.

    ``hosts`` maps a name to the (AE title, port) at 127.0.0.1 of each move destination it knows;
    any other destination gets 0xA801. :meth:`add` indexes files into its database directly
    (``dcmqridx``), as if they had been stored.
    """

    name = "dcmqrscp"

    def __init__(
        self, tmp_dir: Path, hosts: Mapping[str, tuple[str, int]], ae_title: str = "DCMQRSCP"
    ) -> None:
        self.binary = _require("dcmqrscp", "dcmtk")
        self.indexer = _require("dcmqridx", "dcmtk")
        super().__init__(tmp_dir)
        self.ae_title = ae_title
        self.hosts = dict(hosts)
        self.database = self.tmp_dir / "db"
        self.database.mkdir(exist_ok=True)
        self.host = LOOPBACK
        self.port = 0

    def _command(self, ports: Sequence[int]) -> list[str]:
        (self.port,) = ports
        hosts = "\n".join(f"{name} = ({aet}, {LOOPBACK}, {port})" for name, (aet, port) in self.hosts.items())
        config = self.tmp_dir / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 65536\nMaxAssociations = 8\n\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
            f"AETable BEGIN\n{self.ae_title} {self.database} RW (200, 1024mb) ANY\nAETable END\n"
        )
        return [self.binary, "--single-process", "-c", str(config), str(self.port)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TCP_NODELAY": "1"}

    def add(self, files: Sequence[Path]) -> None:
        subprocess.run([self.indexer, str(self.database), *map(str, files)], check=True, capture_output=True)

    def dicom_node(self, **overrides: Any) -> DicomNode:
        return _dicom_node(self.ae_title, self.port, overrides)


class Orthanc(_Peer):
    """Orthanc with DICOMweb on free HTTP and DICOM ports, its database under ``tmp_dir``.

    ``modalities`` maps a name to the (AE title, port) of a peer at 127.0.0.1 allowed to talk to it
    (and that it sends to). ``users`` turns on HTTP basic auth (REST and DICOMweb); the helpers
    authenticate as the first user. ``config`` overrides or adds configuration keys.

    Orthanc needs ~3.3 s to stop cleanly (its HTTP and DICOM servers poll); the database is thrown
    away with ``tmp_dir``, so it is killed outright unless ``graceful_stop`` is set.
    """

    name = "orthanc"
    port_count = 2

    def __init__(
        self,
        tmp_dir: Path,
        modalities: Mapping[str, tuple[str, int]] | None = None,
        *,
        aet: str = "ORTHANC",
        users: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        graceful_stop: bool = False,
    ) -> None:
        self.binary = _require("Orthanc", "orthanc")
        self.stop_grace_s = 10.0 if graceful_stop else 0.0
        if not DICOMWEB_PLUGIN.exists():
            pytest.skip(f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}, orthanc-dicomweb)")
        super().__init__(tmp_dir)
        self.modalities = dict(modalities or {})
        self.aet = aet
        self.users = dict(users or {})
        self.extra_config = dict(config or {})
        self.host = LOOPBACK
        self.http_port = self.dicom_port = 0
        self._auth = httpx.BasicAuth(*next(iter(self.users.items()))) if self.users else None
        self._client: httpx.Client | None = None

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def _command(self, ports: Sequence[int]) -> list[str]:
        self.http_port, self.dicom_port = ports
        storage = self.tmp_dir / "db"
        logs = self.tmp_dir / "logs"
        logs.mkdir(exist_ok=True)
        config = {
            "Name": "TEST-PACS",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "UnknownSopClassAccepted": True,
            "StableAge": 3,
            "OverwriteInstances": True,
            "SaveJobs": False,
            "DicomModalities": {
                name: {"AET": aet, "Host": LOOPBACK, "Port": port}
                for name, (aet, port) in self.modalities.items()
            },
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
            **self.extra_config,
        }
        config_file = self.tmp_dir / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        return [self.binary, f"--logdir={logs}", str(config_file)]

    def _ready(self, ports: Sequence[int]) -> bool:
        try:
            return httpx.get(f"{self.http_url}/system", auth=self._auth, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        texts = [super().log_text()]
        logs = sorted(path for path in (self.tmp_dir / "logs").glob("*") if not path.is_symlink())
        texts += [path.read_text(errors="replace") for path in logs]
        return "\n".join(texts)

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().__exit__(*exc_info)

    @property
    def client(self) -> httpx.Client:
        """An HTTP client on the REST API, authenticated when users are configured."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.http_url, auth=self._auth, timeout=30)
        return self._client

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        response = self.client.get("/instances")
        response.raise_for_status()
        return list(response.json())

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """The Orthanc ID of the instance with this SOP Instance UID, None when not stored."""
        response = self.client.post("/tools/lookup", content=sop_instance_uid)
        response.raise_for_status()
        found = [item["ID"] for item in response.json() if item.get("Type") == "Instance"]
        return found[0] if found else None

    def instance_file(self, orthanc_id: str) -> bytes:
        response = self.client.get(f"/instances/{orthanc_id}/file")
        response.raise_for_status()
        return response.content

    def set_modality(self, name: str, aet: str, port: int) -> None:
        """Add or change a modality at 127.0.0.1 while running (a peer whose port is known only later)."""
        response = self.client.put(f"/modalities/{name}", json={"AET": aet, "Host": LOOPBACK, "Port": port})
        response.raise_for_status()
        self.modalities[name] = (aet, port)

    def upload(self, path: Path) -> dict[str, Any]:
        """Store a Part 10 file through the REST API; Orthanc's answer (``ID``, ``ParentStudy``...)."""
        response = self.client.post("/instances", content=Path(path).read_bytes())
        response.raise_for_status()
        return dict(response.json())

    def dicom_node(self, **overrides: Any) -> DicomNode:
        return _dicom_node(self.aet, self.dicom_port, overrides)

    def dicomweb_node(self, **overrides: Any) -> DicomWebNode:
        values: dict[str, Any] = {"url": self.dicomweb_url, "timeout_s": 30}
        return DicomWebNode(**(values | overrides))


def write_sample_seg(folder: Path, *, seed: int = 0, name: str = "seg.dcm") -> Path:
    """A small valid BINARY SEG (one "liver" segment) over a generated CT volume, as a Part 10 file."""
    import datetime as dt

    from dicom_io.seg import AlgorithmInfo, SegmentRequest, SegOptions, build_seg
    from dicom_io.testing.phantoms import volume_phantom

    phantom = volume_phantom(rows=64, columns=48, slices=24, seed=seed)
    result = build_seg(
        list(phantom.datasets),
        [(index, 0) for index in range(len(phantom.datasets))],
        phantom.truth_volume()[..., None],
        [SegmentRequest("liver")],
        AlgorithmInfo("test", "1"),
        SegOptions(
            rule_name="delivery-test",
            software_version="test",
            device_serial_number="0",
            content_datetime=dt.datetime(2026, 1, 1, 12, 0, 0),
        ),
    )
    assert result.dataset is not None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    result.dataset.save_as(path, enforce_file_format=True)
    return path


WEBHOOK_SECRET = "hook-secret-31337"


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next status of ``script`` (then 204); 401 for a bad signature."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[int] = []
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/mipgw"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = verify_signature(
            WEBHOOK_SECRET, self.headers["X-Mipgw-Timestamp"], body, self.headers.get("X-Mipgw-Signature", "")
        )
        status = (self.server.script.pop(0) if self.server.script else 204) if signed else 401
        if status == 204:
            self.server.accepted.append((self.headers["X-Mipgw-Event"], json.loads(body)))
        self.server.answers.append(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
