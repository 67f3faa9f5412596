"""What every Ray benchmark here sets up, imported before Ray is.

- Ray's usage stats off, and no cluster on Windows or macOS.
- The repository root importable in this process and, through PYTHONPATH
  (inherited by the cluster ``ray.init`` starts), in every Ray worker: the
  benchmarks' actions are used by reference, like actions from an installed
  package, so workers import ``bench.<script>`` and ``synapse_ray``.
- ``precompile()``: bytecode for ``synapse_ray`` and ``bench/``, called from a
  script's ``main()`` only (never on a worker's import).
"""

from __future__ import annotations

import compileall
import os
import sys

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
if REPO not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)


def precompile() -> str:
    """Write the bytecode an installed package has, so workers measure our code, not a compiler.

    ``pip install`` compiles a package's modules; an editable checkout gets
    bytecode only when Python may write it. Under ``PYTHONDONTWRITEBYTECODE=1``
    (set on some machines and images) every fresh Ray worker compiled our
    modules from source: about 30 ms of CPU per worker here, charged to us in
    every figure that starts workers. Only files whose source changed are
    compiled. Returns a line for the report.
    """
    ok = [compileall.compile_dir(os.path.join(REPO, name), quiet=1) for name in ("synapse_ray", "bench")]
    setting = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    state = "written" if all(ok) else "NOT all written (workers compile from source)"
    return f"bytecode for synapse_ray and bench/: {state} (PYTHONDONTWRITEBYTECODE={setting})"
