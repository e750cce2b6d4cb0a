"""Each step runs from its own image as a container: the issue's done-when checks again through
`mlship run --launcher docker`, against the real MLflow server (reached over host networking).

Needs a usable `docker` and the step images (`hack/build-images base step-ingest step-validate
step-featurize step-train step-evaluate step-register`); skipped with the reason otherwise (failed
under MLSHIP_REQUIRE, as in CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest
from mlflow.tracking import MlflowClient
from testkit import CSV_WITH_NULLS, assert_stopped_at_validate, require_or_skip

from mlship.cli import STEPS
from mlship.ml import datasets

pytestmark = pytest.mark.images

TAG = "dev"
IMAGES = [f"mlship-step-{step}:{TAG}" for step in STEPS]


def docker_unusable() -> str | None:
    """Why the images tier cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no `docker` command on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return f"docker daemon not usable: {(info.stderr or info.stdout).strip()[:200]}"
    missing = [
        image for image in IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                          timeout=60, check=False).returncode != 0
    ]
    if missing:
        return f"step images not built ({', '.join(missing)}): run hack/build-images"
    return None


@pytest.fixture(scope="module")
def docker_steps() -> None:
    reason = docker_unusable()
    if reason:
        require_or_skip(reason, "images")


def field(stdout: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.*)$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1).strip()


def step_times(stdout: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^  (\w+)\s+ok  ([\d.]+)s$", stdout, re.MULTILINE)}


@pytest.fixture(scope="module")
def in_containers(docker_steps, mlflow_server, run_mlship, tmp_path_factory):
    """Runs `mlship run --launcher docker` twice on iris, as the done-when asks."""
    home = tmp_path_factory.mktemp("iris-docker")
    model = f"iris-docker-{uuid.uuid4().hex[:8]}"
    args = ("run", "--dataset", "sklearn:iris", "--model-name", model, "--launcher", "docker",
            "--image-tag", TAG, "--tracking-uri", mlflow_server, "--threshold", "0.8")
    runs = []
    for _ in range(2):
        proc = run_mlship(*args, cwd=home)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        key = re.search(r"^pipeline run (\S+) ->", proc.stdout, re.MULTILINE).group(1)
        print(f"\n[--launcher docker] step times: {step_times(proc.stdout)}")
        runs.append({"proc": proc, "logdir": home / ".mlship" / "runs" / key})
    return {"model": model, "first": runs[0], "second": runs[1]}


def test_every_step_ran_in_its_container_and_wrote_its_result_there(in_containers):
    first = in_containers["first"]
    assert list(step_times(first["proc"].stdout)) == list(STEPS)
    assert "  images    mlship-step-<step>:dev" in first["proc"].stdout
    for step in STEPS:
        result = first["logdir"] / f"{step}.json"
        # written through the /airflow/xcom mount by the image's user, not by this process
        assert result.stat().st_uid == 10001, step


def test_first_run_registers_champion_from_the_images(in_containers, mlflow_server):
    out = in_containers["first"]["proc"].stdout
    model = in_containers["model"]
    assert field(out, "model") == f"{model} version 1"
    assert field(out, "aliases") == "challenger, champion"
    assert "no champion yet: promoted to champion" in field(out, "gate")
    # the container computed the digest the host computes from the same bytes
    digest = datasets.load("sklearn:iris").digest
    assert field(out, "dataset") == f"iris digest {digest}"
    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias(model, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["mlship.dataset_digest"] == digest


def test_second_run_same_digest_no_promotion_unless_better(in_containers, mlflow_server):
    first, second = (in_containers[k]["proc"].stdout for k in ("first", "second"))
    model = in_containers["model"]
    assert field(second, "dataset") == field(first, "dataset")
    assert field(second, "model") == f"{model} version 2"
    assert field(second, "aliases") == "challenger"
    assert "not beaten strictly: stays challenger" in field(second, "gate")
    client = MlflowClient(mlflow_server)
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(model, "challenger").version) == "2"


def test_validation_failure_in_a_container_registers_nothing(
    docker_steps, mlflow_server, run_mlship, tmp_path
):
    # a local file: the launcher mounts it read-only into the ingest container
    csv = tmp_path / "sensors.csv"
    csv.write_text(CSV_WITH_NULLS)
    model = f"sensors-{uuid.uuid4().hex[:8]}"
    proc = run_mlship("run", "--dataset", "sensors.csv", "--model-name", model,
                      "--launcher", "docker", "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert_stopped_at_validate(proc)
    assert re.search(r"^  ingest    ok  ", proc.stdout, re.MULTILINE), proc.stdout + proc.stderr
    assert MlflowClient(mlflow_server).search_registered_models(f"name = '{model}'") == []


@pytest.mark.parametrize("step", [*STEPS, "drift", "score"])
def test_every_step_image_starts_its_cli(step: str) -> None:
    """Each image holds what its module imports (a missing extra fails here, not in a pod)."""
    reason = docker_unusable()
    image = f"mlship-step-{step}:{TAG}"
    if reason is None and subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                                         timeout=60, check=False).returncode != 0:
        reason = f"{image} not built: run hack/build-images step-{step}"
    if reason:
        require_or_skip(reason, "images")
    proc = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--network", "none", image, "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: python -m mlship.steps.{step}" in proc.stdout
