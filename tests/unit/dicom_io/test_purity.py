"""dicom_io stays pure: importable with the network, queue and database stacks absent."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = [
    "fastapi",
    "celery",
    "kombu",
    "redis",
    "httpx",
    "pynetdicom",
    "sqlalchemy",
    "starlette",
    "uvicorn",
]

PROBE = f"""
import importlib, pkgutil, sys

FORBIDDEN = {FORBIDDEN!r}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"dicom_io must not import {{name}}")
        return None

sys.meta_path.insert(0, Block())
import dicom_io
names = [m.name for m in pkgutil.walk_packages(dicom_io.__path__, "dicom_io.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in FORBIDDEN)
assert not loaded, loaded
print(len(names))
"""


def test_every_dicom_io_module_imports_without_the_service_stacks() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15
