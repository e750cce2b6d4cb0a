"""The names that cross a process boundary: one definition, used by every side."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from mlship import names
from mlship.ml import gate
from mlship.mlflow_io import tracking
from mlship.monitoring import inference_log
from mlship.steps import drift, ingest, register

ROOT = Path(__file__).resolve().parents[2]


def test_modules_use_the_shared_names() -> None:
    assert gate.CHAMPION == names.CHAMPION and gate.CHALLENGER == names.CHALLENGER
    assert tracking.TAG_RUN_KEY == names.TAG_RUN_KEY and tracking.TAG_STEP == names.TAG_STEP
    assert inference_log.TAG_MODEL_VERSION == names.TAG_MODEL_VERSION
    assert ingest.TAG_DIGEST == names.TAG_DATASET_DIGEST
    assert register.TAG_GATE == names.TAG_GATE
    assert drift.TAG_DATASET_URI == names.TAG_DATASET_URI


def test_names_is_dependency_free() -> None:
    tree = ast.parse((ROOT / "src/mlship/names.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__"}, imported


def test_no_tag_key_is_spelled_outside_names() -> None:
    """A "mlship.<tag>" string literal anywhere in the shipped code but names.py is a second copy."""
    found = []
    for base in ("src/mlship", "operator/mlship_operator", "dags"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if path.name == "names.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith("mlship.")
                    and " " not in node.value
                    and node.value.split(".")[1] not in ("io", "steps", "serving")
                    and not node.value.startswith("mlship.io/")
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert not found, found


def test_dagspec_and_operator_default_alias() -> None:
    sys.path.insert(0, str(ROOT / "dags"))
    sys.path.insert(0, str(ROOT / "operator"))
    import mlship_dagspec
    from mlship_operator import resource

    assert mlship_dagspec.DriftSettings().alias == names.CHAMPION
    assert resource.DEFAULT_ALIAS == names.CHAMPION


def test_experiment_defaults_agree() -> None:
    sys.path.insert(0, str(ROOT / "dags"))
    import mlship_dagspec

    settings = mlship_dagspec.settings_from_env({})
    assert settings.experiment == tracking.DEFAULT_EXPERIMENT == names.EXPERIMENT_PIPELINE
    assert settings.drift.inference_experiment == inference_log.DEFAULT_EXPERIMENT
    assert settings.drift.report_experiment == drift.DEFAULT_REPORT_EXPERIMENT
