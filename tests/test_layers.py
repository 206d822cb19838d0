"""The package's layers (.importlinter): each layer imports only the ones below it, the core
imports no torch/TF/OpenCV, the porting toolkit (srn_port.port) nothing of TF or SRN, and no
package has an import cycle. Checked by import-linter on the package as it is, and shown to
fail on a copy with a cycle or a torch import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("importlinter", reason="needs import-linter (the dev extra)")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c;"
        " sys.exit(c())", "--no-cache"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(LINT, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    run = _lint(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 kept, 0 broken" in run.stdout


def test_a_cycle_or_a_torch_import_in_the_core_breaks_the_contracts(tmp_path):
    shutil.copytree(REPO / "srn_port", tmp_path / "srn_port",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    with open(tmp_path / "srn_port" / "core" / "naming.py", "a") as f:
        f.write("\nfrom . import convert  # a cycle: convert imports naming\n")
    # (naming: a core module that srn_port.data does not import, so that only the core's
    # contract breaks; data/video.py imports core.tolerances)
    with open(tmp_path / "srn_port" / "core" / "naming.py", "a") as f:
        f.write("\nimport torch\n")
    with open(tmp_path / "srn_port" / "nn" / "ops" / "resize.py", "a") as f:
        f.write("\nfrom ...api import weights  # upwards\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    out = run.stdout
    assert "srn_port.core.naming -> torch" in out
    assert ".naming -> .convert" in out
    assert "srn_port.nn.ops.resize -> srn_port.api.weights" in out
    # the porting toolkit uses nn.ops.resize, which now reaches SRN's model through api
    assert "The porting toolkit imports neither TensorFlow nor anything specific to SRN BROKEN" \
        in out
    assert "1 kept, 4 broken" in out
