"""The client package stands alone: importing and using it loads no server code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import synapse_ray.backend

BACKEND_DIR = Path(synapse_ray.backend.__file__).parent


def test_client_modules_never_import_the_local_backend_or_aiohttp() -> None:
    offenders = []
    for path in sorted(BACKEND_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if "localbackend" in n or n.startswith("aiohttp")]
            offenders += [f"{path.name}: {n}" for n in bad]
    assert offenders == []


def test_importing_the_client_loads_no_server_module() -> None:
    code = (
        "import sys, synapse_ray.backend as b; "
        "b.BackendSpec(base_url='http://127.0.0.1:1/'); "
        "print(sorted(m for m in sys.modules if 'localbackend' in m or m.startswith('aiohttp')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
