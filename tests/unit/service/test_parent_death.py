"""service.parent_death: what the worker does with ``$MIPGW_STOP_WITH_PARENT`` (the kill itself is
proven end to end in tests/e2e/test_serve.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.parent_death import PARENT_ENV, stop_with_parent


def test_without_a_parent_named_nothing_is_armed() -> None:
    assert stop_with_parent({}) is False
    assert stop_with_parent({PARENT_ENV: ""}) is False
    assert stop_with_parent({PARENT_ENV: "not-a-pid"}) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("parent", ["os.getppid()", str(2**22 + 1)], ids=["ours", "gone"])
def test_a_parent_gone_before_the_child_armed_it_ends_the_child_at_once(parent: str) -> None:
    # in a child process of its own: arming it here would tie pytest itself to its parent
    code = (
        "import os\nfrom service.parent_death import stop_with_parent\n"
        f"assert stop_with_parent({{{PARENT_ENV!r}: str({parent})}})"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    if parent == "os.getppid()":
        assert child.returncode == 0, child.stderr
    else:
        assert child.returncode == 1
        assert f"the process that started it ({parent}) is gone" in child.stderr
