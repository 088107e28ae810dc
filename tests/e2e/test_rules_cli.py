"""``mip-gateway rules check`` and ``rules test`` as a user runs them: real processes, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dicom_io.testing import cr_dx_image, volume_phantom

CLI = [sys.executable, "-m", "service.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIPGW_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, check=False, timeout=120, env={**clean, **(env or {})}
    )


def test_check_the_packaged_rules() -> None:
    proc = _run("rules", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"\d+ rules OK \(\d+ enabled\)\n", proc.stdout)


def test_check_a_broken_file_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\n"
        "rules:\n"
        "  - name: ct\n"
        "    match:\n"
        "      all:\n"
        "        - {attribute: Modalty, equals: CT}\n"
        "        - {attribute: StudyDescription, regex: '(abd'}\n"
        "    action:\n"
        "      endpoint: mip2d\n"
        "      model: 2d\n"
        "      prompts: [liver & spleen]\n"
        "      destinations: [pacs]\n"
    )
    proc = _run("rules", "check", str(path), "--no-settings")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(
        f"{path}:6: rule 'ct': match.all[0].attribute: unknown DICOM keyword 'Modalty'"
    )
    assert lines[1].startswith(f"{path}:7: rule 'ct': match.all[1].regex: invalid regex")
    assert lines[2].startswith(
        f"{path}:11: rule 'ct': action.prompts[0]: prompt 'liver & spleen' contains '&'"
    )
    assert lines[3] == f"3 problems in {path}"


def test_check_against_the_settings(tmp_path: Path) -> None:
    env = {
        "MIPGW_ENDPOINTS__MIP2D__URL": "http://127.0.0.1:1/score",
        "MIPGW_ENDPOINTS__MIP2D__MODEL": "2d",
        "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
        "MIPGW_DESTINATIONS__PACS__AE_TITLE": "PACS",
        "MIPGW_DESTINATIONS__PACS__HOST": "127.0.0.1",
        "MIPGW_DESTINATIONS__PACS__PORT": "104",
    }
    proc = _run("rules", "check", env=env)
    assert proc.returncode == 1
    # the packaged 3D rules name mip3d, which these settings lack
    assert re.search(
        r"rules\.yaml:\d+: rule 'ct-abdomen-organs-3d': endpoint 'mip3d' is not configured", proc.stdout
    )
    assert "cr-dx-chest-lungs" not in proc.stdout


def test_rules_test_on_phantom_folders(tmp_path: Path) -> None:
    ct = volume_phantom(rows=24, columns=24, slices=22, seed=1)
    mr = volume_phantom(
        modality="MR",
        rows=24,
        columns=24,
        slices=6,
        body_part_examined="HEAD",
        study_description="MR BRAIN",
        series_description="AX FLAIR",
        seed=2,
    )
    cr = cr_dx_image(rows=64, columns=48, seed=3)
    for name, phantom in (("ct", ct), ("mr", mr), ("cr", cr)):
        phantom.write(tmp_path / name)
    proc = _run("rules", "test", str(tmp_path), "--calling-ae", "MODALITY1")
    assert proc.returncode == 0, proc.stderr
    blocks = {block.splitlines()[0]: block for block in proc.stdout.split("\n\n")[1:]}
    ct_block = blocks[f"series {ct.datasets[0].SeriesInstanceUID}"]
    assert "CT, volume, 22 slices, axial: 'CT ABDOMEN AXIAL'" in ct_block
    assert re.search(r"ct-abdomen-organs-3d +FIRES", ct_block)
    assert re.search(r"ct-chest-2d +no: none of: BodyPartExamined 'ABDOMEN' not in \[CHEST", ct_block)
    assert re.search(r"ct-chest-lungs-3d +disabled", ct_block)
    assert (
        "→ ct-abdomen-organs-3d: 3d model via mip3d; [liver, spleen, pancreas, left kidney, right kidney]"
        in ct_block
    )
    assert "window soft_tissue; NIfTI uint8 slices-first" in ct_block
    mr_block = blocks[f"series {mr.datasets[0].SeriesInstanceUID}"]
    assert re.search(r"mr-brain-flair-2d +FIRES", mr_block)
    assert "→ mr-brain-flair-2d: 2d model via mip2d; [tumor, edema] window percentile" in mr_block
    cr_block = blocks[f"series {cr.datasets[0].SeriesInstanceUID}"]
    assert re.search(r"cr-dx-chest-lungs +FIRES", cr_block)
    assert re.search(r"mr-brain-flair-2d +no: Modality 'CR' is not 'MR'", cr_block)
    assert "[left lung, right lung] window voi" in cr_block
    assert "priority stat" in cr_block

    stopped = tmp_path / "stop.yaml"
    stopped.write_text(
        "version: 1\nrules:\n"
        "  - {name: first, stop: true, match: {calling_ae: MODALITY1},"
        " action: {endpoint: e, model: 2d, prompts: [liver], destinations: [d]}}\n"
        "  - {name: second, match: {route: dimse},"
        " action: {endpoint: e, model: 2d, prompts: [liver], destinations: [d]}}\n"
    )
    proc = _run("rules", "test", str(tmp_path / "cr"), "--rules", str(stopped), "--route", "stow")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"first +no: no calling AE \(route stow\)", proc.stdout)
    assert re.search(r"second +no: route stow not in \[dimse\]", proc.stdout)
    assert "→ no rule fires" in proc.stdout
