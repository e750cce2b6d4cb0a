"""Step CLIs tell bad input (exit 65: no retry can succeed) from trouble a retry may clear
(exit 1), and the DAG's pod operator fails a task at once only on the former.

The CLIs run as processes, as in a pod; every case fails before MLflow would be asked, except
the unreachable one, which names a closed port."""

from __future__ import annotations

import http.server
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from devkit import free_port
from kubernetes.client import models as k8s

from mlship import errors
from mlship.ml import datasets
from mlship.steps import common

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
import mlship_dagspec as spec  # noqa: E402
from testkit import local_http

pytestmark = pytest.mark.unit


def run_step(step: str, *flags: str, uri: str | None = None) -> tuple[int, str]:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLSHIP_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "mlship-test-pycache")
    env["MLSHIP_MLFLOW_WAIT_SECONDS"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", f"mlship.steps.{step}",
         "--tracking-uri", uri or f"http://127.0.0.1:{free_port()}",
         "--pipeline-run-key", "exit-codes",
         *flags],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        code = int(self.path.strip("/").split("/")[0])
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """http://host:port/<status>/data.csv answers that status."""
    with local_http(_Status) as url:
        yield url


def test_a_missing_target_column_is_bad_input(tmp_path: Path) -> None:
    csv = tmp_path / "houses.csv"
    csv.write_text("rooms,price\n3,100\n4,150\n")
    code, said = run_step("ingest", "--source", str(csv), "--target", "target")
    assert (code, said) == (
        65, f"mlship ingest failed: target column 'target' not in {csv} (columns: rooms, price)"
    )


def test_a_dataset_url_answering_404_is_bad_input_and_503_is_not(web: str) -> None:
    code, said = run_step("ingest", "--source", f"{web}/404/data.csv")
    assert code == 65, said
    assert said == f"mlship ingest failed: cannot download {web}/404/data.csv: HTTP Error 404: Not Found"
    code, said = run_step("ingest", "--source", f"{web}/503/data.csv")
    assert code == 1, said
    assert "HTTP Error 503" in said


def test_bad_flags_and_rules_are_bad_input() -> None:
    code, said = run_step("ingest", "--no-such-flag")
    assert code == 65, said
    assert said.startswith("mlship ingest failed: the following arguments are required: --source")
    code, said = run_step("validate", "--dataset-uri", "runs:/r/d.parquet", "--task",
                          "classification", "--rules", '{"colums": {}}')
    assert (code, said) == (65, "mlship validate failed: unknown validation rule key(s): colums")


def test_unreachable_mlflow_is_retried() -> None:
    code, said = run_step("ingest", "--source", "sklearn:iris")
    assert code == 1, said
    assert "cannot reach MLflow tracking server" in said
    uri = "http://no-such-host.invalid:5000"
    code, said = run_step("ingest", "--source", "sklearn:iris", uri=uri)
    assert code == 1, said
    assert said.startswith(
        f"mlship ingest failed: cannot reach MLflow tracking server at {uri}: cannot resolve host"
        " 'no-such-host.invalid' ("
    ), said


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.BadInput("x"), 65),
        (datasets.DatasetError("file not found"), 65),
        (datasets.DatasetError("cannot download: timed out", permanent=False), 1),
        (ValueError("something deep in a library"), 1),
        (RuntimeError("boom"), 1),
    ],
)
def test_exit_code_of_an_error(exc: Exception, code: int) -> None:
    assert common.exit_code(exc) == code


def test_the_dag_and_the_steps_agree_on_the_code() -> None:
    assert spec.BAD_INPUT_EXIT_CODE == common.EX_DATAERR == 65


def _pod(*containers: tuple[str, int | None, str | None]) -> k8s.V1Pod:
    statuses = [
        k8s.V1ContainerStatus(
            name=name, image="i", image_id="", ready=False, restart_count=0,
            state=k8s.V1ContainerState(
                terminated=None if code is None
                else k8s.V1ContainerStateTerminated(exit_code=code, message=message)
            ),
        )
        for name, code, message in containers
    ]
    return k8s.V1Pod(status=k8s.V1PodStatus(container_statuses=statuses))


def test_a_pod_whose_step_exited_65_fails_without_retries_with_the_steps_message() -> None:
    said = "mlship ingest failed: target column 'y' not in data.csv (columns: a, b)"
    reason = spec.bad_input_failure(_pod(("airflow-xcom-sidecar", 0, None), ("base", 65, said)),
                                    "base")
    assert reason is not None
    assert reason.startswith(said + "\n")
    assert "without retries" in reason
    bare = spec.bad_input_failure(_pod(("base", 65, None)), "base")
    assert bare is not None and "task log" in bare


@pytest.mark.parametrize(
    "pod",
    [
        _pod(("base", 1, "mlship ingest failed: cannot reach MLflow")),  # transient: retried
        _pod(("base", 137, None)),  # OOMKilled, evicted: retried
        _pod(("base", None, None)),  # not terminated (the pod was lost)
        _pod(("airflow-xcom-sidecar", 65, None)),  # another container's code means nothing
        k8s.V1Pod(),  # no status at all
    ],
)
def test_any_other_failure_is_left_to_retries(pod: k8s.V1Pod) -> None:
    assert spec.bad_input_failure(pod, "base") is None
