"""docker-compose.yml stays true to the code: Docker cannot run here, so what compose would hand the
gateway (commands, MIPGW_ variables) is checked against the real CLI parser and settings model."""

from __future__ import annotations

import importlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from config.rules_file import default_rules_path, parse_rules
from config.settings import Settings
from service.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GATEWAY_IMAGE = "mip-gateway:latest"
NOT_SETTINGS = {"MIPGW_MOCK_KEY", "MIPGW_CONFIG", "MIPGW_SECRETS_DIR"}  # read outside the model
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the x-gateway merge keys
    assert isinstance(data, dict)
    return data


def _gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = {name: s for name, s in compose["services"].items() if s.get("image") == GATEWAY_IMAGE}
    assert {"scp", "api", "worker", "mock-endpoint"} <= set(services)
    return services


def _interpolate(value: object) -> str:
    """What compose hands the container when the variable is unset: ``${VAR:-default}`` → default."""
    text = str(value)
    assert "${" not in _DEFAULT.sub("", text), f"{text!r}: give every ${{VAR}} a default (${{VAR:-...}})"
    return _DEFAULT.sub(lambda m: m.group(2), text)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation allows (through Annotated, Optional, unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _is_setting(parts: list[str], annotation: Any) -> bool:
    """Does the env path ``parts`` (lower-case, split on ``__``) name a field under ``annotation``?"""
    if not parts:
        return True  # a whole model or a leaf value
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_setting(parts, typing.get_args(annotation)[0])
    if origin is dict:  # endpoints, destinations, sources: the next part is the entry's name
        return _is_setting(parts[1:], typing.get_args(annotation)[1])
    for model in _models(annotation):
        field = model.model_fields.get(parts[0])
        if field is not None and _is_setting(parts[1:], field.annotation):
            return True
    return False


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping"
    return {name: _interpolate(value) for name, value in env.items()}


def test_every_gateway_command_is_accepted_by_the_cli(compose: dict[str, Any]) -> None:
    for name, service in _gateway_services(compose).items():
        command = service.get("command")
        assert isinstance(command, list), name
        assert all(isinstance(a, str) for a in command), name
        try:
            args = _parser().parse_args(command)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"service {name}: mip-gateway {' '.join(command)} is refused ({exc})")
        module, _, function = args.handler.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_the_front_door_services_listen_where_compose_publishes(compose: dict[str, Any]) -> None:
    services = _gateway_services(compose)
    scp = _parser().parse_args(services["scp"]["command"])
    api = _parser().parse_args(services["api"]["command"])
    assert (scp.command, scp.port, scp.bind) == ("scp", 11112, "0.0.0.0")
    assert (api.command, api.port, api.bind) == ("api", 8080, "0.0.0.0")
    assert any(p.endswith(":11112:11112") for p in services["scp"]["ports"])
    assert any(p.endswith(":8080:8080") for p in services["api"]["ports"])
    # scalable: `--scale worker=4` needs no fixed name and no host port
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]


def test_every_mipgw_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable in _environment(service):
            if not variable.startswith("MIPGW_") or variable in NOT_SETTINGS:
                continue
            parts = variable.removeprefix("MIPGW_").lower().split("__")
            assert _is_setting(parts, Settings), f"service {name}: {variable} is not a setting"


def test_the_settings_compose_gives_are_valid_and_fit_the_packaged_rules(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = parse_rules(default_rules_path().read_bytes(), source="rules.yaml")
    for name, service in _gateway_services(compose).items():
        for variable in [v for v in os.environ if v.startswith("MIPGW_")]:
            monkeypatch.delenv(variable)
        for variable, value in _environment(service).items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert str(settings.data_dir) == "/data", name
        assert str(settings.broker_url).startswith("redis://redis:"), name
        assert "@postgres:" in str(settings.database_url), name
        assert rules.problems_against(settings) == [], name
        if name == "api":
            assert settings.api.keys, "the API service needs a key (it refuses to start open)"


def test_orthanc_routes_to_the_gateway_and_takes_the_segs_back(compose: dict[str, Any]) -> None:
    orthanc = compose["services"]["orthanc"]
    assert orthanc["image"].startswith(("orthancteam/orthanc", "jodogne/orthanc-plugins"))
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in orthanc["volumes"] if m.startswith("./")}
    config = json.loads(next(p for t, p in mounts.items() if t.endswith(".json")).read_text())
    for script in config["LuaScripts"]:
        assert mounts[script].is_file(), script
        assert "OnStableSeries" in mounts[script].read_text()
    lua = mounts[config["LuaScripts"][0]].read_text()
    modality = re.search(r"/modalities/(\w+)/store", lua)
    assert modality is not None
    target = config["DicomModalities"][modality.group(1)]
    scp = _parser().parse_args(compose["services"]["scp"]["command"])
    gateway = _environment(compose["services"]["scp"])
    assert (target["AET"], target["Host"], target["Port"]) == (gateway["MIPGW_AE_TITLE"], "scp", scp.port)
    assert config["DicomWeb"]["Enable"] is True
    node = {"KIND": "dicom", "AE_TITLE": config["DicomAet"], "HOST": "orthanc", "PORT": "4242"}
    pacs = {
        k.removeprefix("MIPGW_DESTINATIONS__PACS__"): v for k, v in gateway.items() if "_DESTINATIONS__" in k
    }
    assert pacs == node
    # the pull source is the same Orthanc by C-MOVE, into the listener it knows as a modality
    source = {k.removeprefix("MIPGW_SOURCES__PACS__"): v for k, v in gateway.items() if "_SOURCES__" in k}
    assert source == node | {"RETRIEVE": "c-move"}
    assert config["DicomPort"] == 4242


def test_every_service_has_a_healthcheck_and_a_graceful_stop(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {}).get("test")
        assert check, f"{name}: no healthcheck"
        assert check[0] in ("CMD", "CMD-SHELL"), name
        assert service.get("stop_signal") == "SIGTERM", name
        assert re.fullmatch(r"\d+s", str(service.get("stop_grace_period"))), name
    # pynetdicom's Python echoscu comes first on the image's PATH: the check must name dcmtk's
    assert compose["services"]["scp"]["healthcheck"]["test"][1] == "/usr/bin/echoscu"
