"""`pip install mlship` without extras, then `mlship run`: a sentence naming the extra, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UV = str(ROOT / "hack" / "uv")


def test_mlship_run_without_the_steps_extra_names_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", "3.11", str(venv)], check=True)
    subprocess.run([UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(ROOT)],
                   check=True)
    proc = subprocess.run([str(venv / "bin" / "mlship"), "run", "--dataset", "sklearn:iris"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'mlship[steps]'" in proc.stderr
    assert "pandas" in proc.stderr  # names what is missing
