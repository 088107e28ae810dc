from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import EndpointSettings, Settings


def test_endpoints_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "mip3d.key"
    key_file.write_text("k3d\n")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP2D__URL", "https://a.westeurope.inference.ml.azure.com/score")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP2D__MODEL", "2d")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP2D__KEY", "k2d")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP2D__FALLBACK", "mip2d-north")
    monkeypatch.setenv(
        "MIPGW_ENDPOINTS__MIP2D-NORTH__URL", "https://b.northeurope.inference.ml.azure.com/score"
    )
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP2D-NORTH__MODEL", "2d")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP3D__URL", "http://127.0.0.1:8765/score")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP3D__MODEL", "3d")
    monkeypatch.setenv("MIPGW_ENDPOINTS__MIP3D__KEY_FILE", str(key_file))
    settings = Settings()
    assert set(settings.endpoints) == {"mip2d", "mip2d-north", "mip3d"}
    assert settings.endpoints["mip2d"].api_key() == "k2d"
    assert settings.endpoints["mip3d"].api_key() == "k3d"
    assert settings.endpoints["mip3d"].read_timeout == 180.0
    assert settings.endpoints["mip2d"].read_timeout == 120.0
    assert "k2d" not in repr(settings)


def test_yaml_file_below_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "data_dir: /srv/mipgw\n"
        "endpoints:\n"
        "  mip2d: {url: 'https://x.example/score', model: 2d, max_in_flight: 4}\n"
    )
    monkeypatch.setenv("MIPGW_CONFIG", str(config))
    monkeypatch.setenv("MIPGW_DATA_DIR", "/data")
    settings = Settings()
    assert settings.data_dir == Path("/data")
    assert settings.endpoints["mip2d"].max_in_flight == 4


def test_bad_endpoint_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="not configured"):
        Settings(endpoints={"a": {"url": "https://x/score", "model": "2d", "fallback": "b"}})
    with pytest.raises(ValidationError, match="serves another model"):
        Settings(
            endpoints={
                "a": {"url": "https://x/score", "model": "2d", "fallback": "b"},
                "b": {"url": "https://y/score", "model": "3d"},
            }
        )
    with pytest.raises(ValidationError, match="choose one of key, key_file and entra"):
        EndpointSettings(url="https://x/score", model="2d", key="k", entra=True)
    with pytest.raises(ValidationError, match="not in headers"):
        EndpointSettings(url="https://x/score", model="2d", headers={"Authorization": "Bearer k"})


def test_c_move_sources_name_who_stores_for_a_pull_and_for_whom() -> None:
    node = {"kind": "dicom", "host": "10.0.0.5", "port": 104}
    settings = Settings(
        ae_title="MIPGW",
        sources={
            "pacs": {**node, "ae_title": "PACS", "retrieve": "c-move"},
            "vna": {**node, "ae_title": "VNA", "retrieve": "c-move", "calling_ae_title": "MIPGW_VNA"},
            "old": {**node, "ae_title": "OLDPACS"},  # C-GET: stores on our own association
            "web": {"kind": "dicomweb", "url": "http://pacs/dicom-web"},
        },
    )
    assert settings.sources["old"].retrieve == "c-get"  # type: ignore[union-attr]
    assert settings.move_sources() == {"PACS", "VNA"}
    assert settings.move_originators() == {"MIPGW", "MIPGW_VNA"}
    assert Settings().move_originators() == {"MIPGW"}  # the listener's own AE title, always
    with pytest.raises(ValidationError):
        Settings(sources={"x": {**node, "ae_title": "X", "retrieve": "c-find"}})
