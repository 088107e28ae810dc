"""``mip-gateway run`` as a user runs it: the mock endpoint in-process, SEGs and report.json out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest

from dicom_io.testing import cr_dx_image
from dicom_io.testing.phantoms import volume_phantom
from tests.helpers import dciodvfy_errors

CLI = [sys.executable, "-m", "service.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "run", *args], capture_output=True, text=True, check=False, timeout=180)


def test_demo_with_the_packaged_rules_writes_valid_segs(tmp_path: Path) -> None:
    volume_phantom(slices=24, seed=1).write(tmp_path / "in" / "ct")  # the rule wants >= 20 slices
    cr_dx_image(seed=2).write(tmp_path / "in" / "cr")
    proc = _run(str(tmp_path / "in"), "--demo", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by_rule = {entry["rule"]: entry for entry in report["series"]}
    assert by_rule["ct-abdomen-organs-3d"]["state"] == "done"
    assert by_rule["cr-dx-chest-lungs"]["state"] in ("done", "no_findings")
    assert report["sent"] is False
    for entry in report["series"]:
        for seg in entry["segs"]:
            path = tmp_path / "out" / seg["file"]
            assert dciodvfy_errors(path) == []
            assert hd.seg.segread(path).SegmentSequence
    liver = by_rule["ct-abdomen-organs-3d"]["segs"][0]["segments"][0]
    assert liver["prompt"] == "liver"
    assert liver["volume_ml"] > 0


def test_adhoc_prompts_without_a_rules_file(tmp_path: Path) -> None:
    volume_phantom(slices=6, seed=3, modality="MR").write(tmp_path / "mr")
    proc = _run(
        str(tmp_path / "mr"),
        "--demo",
        "--model",
        "2d",
        "--prompt",
        "liver",
        "--prompt",
        "kidney",
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["series"]
    assert entry["rule"] == "adhoc"
    assert [s["prompt"] for s in entry["segs"][0]["segments"]] == ["liver", "kidney"]
    assert entry["segs"][0]["segments"][0]["category"] == "liver"


@pytest.mark.parametrize("prompt", ["liver & spleen", ""])
def test_bad_adhoc_prompts_are_refused_before_anything_runs(tmp_path: Path, prompt: str) -> None:
    volume_phantom(slices=3).write(tmp_path / "ct")
    proc = _run(
        str(tmp_path / "ct"), "--demo", "--model", "2d", "--prompt", prompt, "--out", str(tmp_path / "o")
    )
    assert proc.returncode != 0
    assert "prompt" in proc.stderr
    assert not (tmp_path / "o" / "report.json").exists()
