"""``mip-gateway serve`` hands its worker child the settings it runs on itself, through the environment."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from config.settings import Settings
from service.cli import _parser
from service.commands.serve import _child_env, _plan


def _args(*argv: str) -> object:
    return _parser().parse_args(["serve", *argv])


def test_endpoint_flags_override_every_endpoint_here_and_in_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Settings(
        endpoints={
            "mip3d": {"url": "https://old.example/score", "model": "3d", "key": "old", "max_attempts": 3}
        },
        destinations={"pacs": {"kind": "dicom", "ae_title": "PACS", "host": "pacs", "port": 104}},
    )
    args = _args(
        "--data-dir",
        str(tmp_path / "d"),
        "--endpoint",
        "http://127.0.0.1:9/score",
        "--endpoint-key",
        "new",
        "--ae-title",
        "GW",
        "--dicom-port",
        "0",
        "--http-port",
        "0",
        "--bind",
        "127.0.0.1",
    )
    with ExitStack() as stack:
        plan = _plan(base, args, stack)  # type: ignore[arg-type]
    settings = plan.settings
    assert {name: str(e.url) for name, e in settings.endpoints.items()} == {
        "mip2d": "http://127.0.0.1:9/score",  # named by the packaged rules, configured by the flag
        "mip3d": "http://127.0.0.1:9/score",
    }
    assert settings.endpoints["mip3d"].api_key() == "new"
    assert settings.endpoints["mip3d"].max_attempts == 3  # only the URL and the key change
    assert (settings.listener.port, settings.api.port, settings.listener.bind) == (0, 0, "127.0.0.1")
    inherited = {"MIPGW_ENDPOINTS__MIP3D__KEY_FILE": "/run/secrets/k", "PATH": "/bin"}
    env = _child_env(inherited, plan)
    assert "MIPGW_ENDPOINTS__MIP3D__KEY_FILE" not in env
    assert env["PATH"] == "/bin"
    for name in [n for n in list(os.environ) if n.startswith("MIPGW_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("MIPGW_"):
            monkeypatch.setenv(name, value)
    # what the worker reads (its other settings it inherits, like the destination here) matches ours
    worker = Settings(destinations=base.destinations)
    assert {n: (str(e.url), e.model, e.api_key()) for n, e in worker.endpoints.items()} == {
        n: (str(e.url), e.model, e.api_key()) for n, e in settings.endpoints.items()
    }
    assert (worker.data_dir, worker.ae_title) == ((tmp_path / "d").resolve(), "GW")


def test_an_endpoint_key_without_an_endpoint_is_refused(tmp_path: Path) -> None:
    with ExitStack() as stack, pytest.raises(ValueError, match="--endpoint URL"):
        _plan(Settings(), _args("--data-dir", str(tmp_path), "--endpoint-key", "k"), stack)  # type: ignore[arg-type]
