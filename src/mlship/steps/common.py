"""What every step CLI shares: the common flags, the XCom file, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mlship.errors import BadInput, describe
from mlship.mlflow_io.tracking import DEFAULT_EXPERIMENT

# Where KubernetesPodOperator's sidecar picks up a task's return value.
AIRFLOW_XCOM_PATH = "/airflow/xcom/return.json"
# Kubernetes shows this file as the container's termination message; the DAG's pod operator
# puts it into the task's failure.
TERMINATION_LOG = Path("/dev/termination-log")

EX_FAILED = 1
EX_DATAERR = os.EX_DATAERR
"""65: the input is wrong (data, flags, rules, names) and no retry can succeed. The DAG fails
the task at once on it (dags/mlship_pods.py); every other failure exits EX_FAILED and is retried."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise BadInput(f"{message} (see --help)")


def parser(step: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m mlship.steps.{step}", description=description)
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--experiment",
        default=os.environ.get("MLSHIP_EXPERIMENT", DEFAULT_EXPERIMENT),
        help="MLflow experiment (default: $MLSHIP_EXPERIMENT or %(default)s)",
    )
    p.add_argument(
        "--pipeline-run-key",
        default=os.environ.get("MLSHIP_PIPELINE_RUN_KEY"),
        help="identifies the pipeline run (the Airflow run_id); all steps with the same key "
        "are nested under one MLflow parent run (default: $MLSHIP_PIPELINE_RUN_KEY)",
    )
    p.add_argument(
        "--xcom-path",
        default=os.environ.get("MLSHIP_XCOM_PATH"),
        help=f"also write the step's result as JSON here (in a pod: {AIRFLOW_XCOM_PATH}; "
        "default: $MLSHIP_XCOM_PATH, else not written)",
    )
    return p


def json_arg(text: str) -> Any:
    """A JSON value given inline or as @path/to/file.json."""
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text())
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text[:80]!r}") from exc


def write_result(result: dict[str, Any] | list[Any], xcom_path: str | None) -> None:
    text = json.dumps(result, sort_keys=True)
    if xcom_path:
        path = Path(xcom_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(text, flush=True)


def exit_code(exc: BaseException) -> int:
    return EX_DATAERR if getattr(exc, "permanent", False) else EX_FAILED


def _write_termination_message(message: str) -> None:
    if TERMINATION_LOG.exists():
        try:
            TERMINATION_LOG.write_text(message[:4000])
        except OSError:
            pass  # the same line is on stderr


def run(
    step: str,
    build: Callable[[], argparse.ArgumentParser],
    body: Callable[[argparse.Namespace], dict[str, Any] | list[Any]],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse, run the step's body, emit its result; any failure is one line on stderr (and in
    the termination message), exit code EX_DATAERR for bad input, else EX_FAILED."""
    try:
        args = build().parse_args(argv)
        if not args.pipeline_run_key:
            raise BadInput("no pipeline run key: pass --pipeline-run-key")
        result = body(args)
    except Exception as exc:
        if os.environ.get("MLSHIP_DEBUG"):
            traceback.print_exc()
        message = f"mlship {step} failed: {describe(exc)}"
        print(message, file=sys.stderr, flush=True)
        _write_termination_message(message)
        return exit_code(exc)
    write_result(result, args.xcom_path)
    return 0
