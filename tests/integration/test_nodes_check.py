"""``mip-gateway nodes check`` as an engineer runs it on site, against real peers on loopback:
dcmtk's storescp (answers), a port nobody listens on, Orthanc refusing a calling AE it does not
know, Orthanc's DICOMweb with the right and the wrong password, and the mock endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.mock_endpoint import MockEndpointServer
from tests.peers import Orthanc, StoreSCP

pytestmark = pytest.mark.integration

USER, PASSWORD = "gateway", "nodes-check-pw"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreSCP, Orthanc, str]]:
    work = tmp_path_factory.mktemp("nodes")
    with (
        StoreSCP(work / "scp", ae_title="VIEWER") as viewer,
        Orthanc(work / "orthanc", {"mipgw": ("MIPGW", 1)}, users={USER: PASSWORD}) as pacs,
        MockEndpointServer() as mock,
    ):
        yield viewer, pacs, mock.score_url


def nodes_check(env: dict[str, str], *names: str) -> tuple[int, dict[str, dict[str, object]]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIPGW_")}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "nodes", "check", "--json", *names],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, {f"{row['role']} {row['name']}": row for row in rows}


def test_every_node_is_tried_as_the_gateway_reaches_it(
    tmp_path: Path, peers: tuple[StoreSCP, Orthanc, str]
) -> None:
    viewer, pacs, score_url = peers
    # bound, never listening: nobody else can take the port, and a connection to it is refused
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    dead = holder.getsockname()[1]
    web = {"MIPGW_SOURCES__PACSWEB__KIND": "dicomweb", "MIPGW_SOURCES__PACSWEB__URL": pacs.dicomweb_url}
    env = {
        "MIPGW_DATA_DIR": str(tmp_path / "data"),
        "MIPGW_DESTINATIONS__VIEWER__KIND": "dicom",
        "MIPGW_DESTINATIONS__VIEWER__AE_TITLE": "VIEWER",
        "MIPGW_DESTINATIONS__VIEWER__HOST": "127.0.0.1",
        "MIPGW_DESTINATIONS__VIEWER__PORT": str(viewer.port),
        "MIPGW_DESTINATIONS__GONE__KIND": "dicom",
        "MIPGW_DESTINATIONS__GONE__AE_TITLE": "GONE",
        "MIPGW_DESTINATIONS__GONE__HOST": "127.0.0.1",
        "MIPGW_DESTINATIONS__GONE__PORT": str(dead),
        # Orthanc knows MIPGW, not this calling AE
        "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
        "MIPGW_DESTINATIONS__PACS__AE_TITLE": pacs.aet,
        "MIPGW_DESTINATIONS__PACS__HOST": "127.0.0.1",
        "MIPGW_DESTINATIONS__PACS__PORT": str(pacs.dicom_port),
        "MIPGW_DESTINATIONS__PACS__CALLING_AE_TITLE": "STRANGER",
        "MIPGW_SOURCES__PACS__KIND": "dicom",
        "MIPGW_SOURCES__PACS__AE_TITLE": pacs.aet,
        "MIPGW_SOURCES__PACS__HOST": "127.0.0.1",
        "MIPGW_SOURCES__PACS__PORT": str(pacs.dicom_port),
        "MIPGW_SOURCES__PACS__RETRIEVE": "c-move",
        **web,
        "MIPGW_SOURCES__PACSWEB__USERNAME": USER,
        "MIPGW_SOURCES__PACSWEB__PASSWORD": PASSWORD,
        "MIPGW_DESTINATIONS__PACSWEB__KIND": "dicomweb",
        "MIPGW_DESTINATIONS__PACSWEB__URL": pacs.dicomweb_url,
        "MIPGW_DESTINATIONS__PACSWEB__USERNAME": USER,
        "MIPGW_DESTINATIONS__PACSWEB__PASSWORD": "wrong",
        "MIPGW_ENDPOINTS__MIP3D__URL": score_url,
        "MIPGW_ENDPOINTS__MIP3D__MODEL": "3d",
    }
    code, rows = nodes_check(env)
    assert code == 1  # some fail
    assert set(rows) == {
        "destination viewer", "destination gone", "destination pacs", "destination pacsweb",
        "source pacs", "source pacsweb", "endpoint mip3d",
    }  # fmt: skip
    ok = {key for key, row in rows.items() if row["ok"]}
    assert ok == {"destination viewer", "source pacs", "source pacsweb", "endpoint mip3d"}
    assert str(rows["destination viewer"]["detail"]).startswith("C-ECHO success in ")
    assert rows["destination viewer"]["address"] == f"VIEWER@127.0.0.1:{viewer.port} (as MIPGW)"
    assert str(rows["destination gone"]["detail"]).startswith("connection refused")
    assert "calling AE title not recognised" in str(rows["destination pacs"]["detail"])
    assert (
        rows["destination pacsweb"]["detail"] == f"{pacs.dicomweb_url}/studies rejected the credentials (401)"
    )
    assert str(rows["source pacsweb"]["detail"]).startswith("QIDO-RS answered 200 in ")
    assert "it must know AE MIPGW" in str(rows["source pacs"]["note"])
    assert "answered HTTP" in str(rows["endpoint mip3d"]["detail"])

    only, picked = nodes_check(env, "viewer", "mip3d")
    assert (only, set(picked)) == (0, {"destination viewer", "endpoint mip3d"})
    nothing, none = nodes_check(env, "nobody")
    assert (nothing, none) == (2, {})
    holder.close()
