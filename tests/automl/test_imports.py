"""aiaas.automl is a pure library: importing it loads no other aiaas module."""

from __future__ import annotations

import json
import subprocess
import sys


def test_automl_imports_no_other_aiaas_module() -> None:
    code = (
        "import json, sys\n"
        "import aiaas.automl, aiaas.automl.fit, aiaas.automl.model, aiaas.automl.onnx_export\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aiaas'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    others = [m for m in loaded if m != "aiaas" and not m.startswith("aiaas.automl")]
    assert others == []


def test_importing_automl_sets_passive_omp_wait_policy() -> None:
    code = "import os, aiaas.automl; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "PASSIVE"
