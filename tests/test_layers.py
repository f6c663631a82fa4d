"""The layer rules of pyproject.toml's import-linter contracts hold: no upward imports between layers, no import
cycles between sibling modules, the simulator apart from production code, the REST service without ray or vllm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout and "5 kept, 0 broken" in proc.stdout


def test_every_module_of_the_pipeline_is_in_a_layer():
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.split(":")}
    children = {f"stepwise.pipeline.{p.stem}" for p in (ROOT / "pipeline").iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.stem != "__init__"}
    assert children <= named, f"not in any layer: {sorted(children - named)}"
