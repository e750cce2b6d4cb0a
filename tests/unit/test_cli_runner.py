"""`mlship run` builds the same flags the step CLIs accept."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from mlship import cli

pytestmark = pytest.mark.unit

RESULTS = {
    "ingest": {"dataset_uri": "runs:/i/data/dataset.parquet", "task": "regression",
               "dataset_digest": "ab" * 16, "dataset_name": "houses"},
    "featurize": {"train_uri": "runs:/f/features/train.parquet",
                  "holdout_uri": "runs:/f/features/holdout.parquet",
                  "features_uri": "runs:/f/features/features.json"},
    "train": {"model_uri": "models:/m-1"},
    "evaluate": {"evaluation_uri": "runs:/e/evaluation/evaluation.json"},
}


@pytest.mark.parametrize("step", cli.STEPS)
def test_runner_flags_parse_with_each_step_cli(step):
    args = cli.build_parser().parse_args([
        "run", "--dataset", "data/houses.csv", "--target", "price", "--estimator", "ridge",
        "--hyperparameters", '{"alpha": 0.5}', "--threshold", "0.3", "--no-auto-promote",
    ])
    flags = cli.step_commands(args, RESULTS)[step]
    common = ["--pipeline-run-key", "local-1", "--tracking-uri", "http://x:5000"]
    parsed = importlib.import_module(f"mlship.steps.{step}").build().parse_args(common + flags)
    if step == "ingest":
        assert (parsed.source, parsed.target, parsed.task) == ("data/houses.csv", "price", "auto")
    if step in ("validate", "featurize"):
        assert parsed.task == "regression"  # from ingest's result, not the "auto" flag
    if step == "train":
        assert parsed.hyperparameters == {"alpha": 0.5} and parsed.estimator == "ridge"
    if step == "register":
        assert parsed.model_name == "houses"  # defaults to the dataset's name
        assert parsed.auto_promote is False and parsed.threshold == 0.3
        assert parsed.dataset_digest == "ab" * 16


def test_summary_points_at_the_champion_and_the_ui():
    reg = {"model_name": "iris", "version": "3", "aliases": ["challenger", "champion"],
           "reason": "beats champion v2", "already_registered": False}
    ing = {"dataset_name": "iris", "dataset_digest": "d" * 32}
    text = cli.summary("sqlite:////w/.mlship/mlflow.db", reg, ing)
    assert "model:    iris version 3" in text
    assert "models:/iris@champion" in text
    assert "mlflow ui --backend-store-uri sqlite:////w/.mlship/mlflow.db" in text
    assert "compiled: not recorded" in text
    held = "held: 0 of 30 rows differ, max abs error 0 (classes identical; ...)"
    assert f"compiled: {held}" in cli.summary("http://m:5000", {**reg, "compiled_detail": held}, ing)
    rejected = cli.summary("http://mlflow:5000", {**reg, "aliases": []}, ing)
    assert "aliases:  none" in rejected and "models:/iris/3" in rejected


# --- launchers -------------------------------------------------------------------------------

COMMON = ["--tracking-uri", "http://127.0.0.1:5000", "--experiment", "mlship",
          "--pipeline-run-key", "manual__2026-01-01T00:00:00+00:00"]
LOGDIR = Path("/work/.mlship/runs/manual__2026-01-01T00:00:00+00:00")


def docker_cmd(step: str, flags: list[str], **kw) -> list[str]:
    return cli.docker_command(step, flags, COMMON, image=f"mlship-step-{step}:dev", logdir=LOGDIR,
                              cwd=Path("/home/u/project"), **kw)


def option_values(cmd: list[str], option: str) -> list[str]:
    return [cmd[i + 1] for i, x in enumerate(cmd) if x == option]


def test_launcher_defaults_to_process():
    args = cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"])
    assert (args.launcher, args.image_prefix, args.image_tag) == ("process", "mlship-step-", "dev")
    assert cli.step_image("train", "reg.local/mlship/step-", "1.2") == "reg.local/mlship/step-train:1.2"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--dataset", "x.csv", "--launcher", "podman"])


def test_process_command_runs_the_step_module_with_its_result_in_the_logdir():
    cmd = cli.process_command("train", ["--estimator", "ridge"], COMMON, LOGDIR)
    assert cmd[:3] == [sys.executable, "-m", "mlship.steps.train"]
    assert option_values(cmd, "--xcom-path") == [str(LOGDIR / "train.json")]
    assert cmd[-2:] == ["--estimator", "ridge"]


def test_the_search_runs_mlship_steps_tune_from_trains_image_each_trial_its_own_result():
    from mlship.steps import tune

    trial = ["trial", "--search-run-id", "s", "--share", "[]"]
    cmd = cli.process_command("tune_trial", trial, COMMON, LOGDIR, "tune_trial-1")
    assert cmd[:3] == [sys.executable, "-m", "mlship.steps.tune"]
    assert option_values(cmd, "--xcom-path") == [str(LOGDIR / "tune_trial-1.json")]
    cmd = cli.docker_command("tune_trial", trial, COMMON, image="mlship-step-train:dev", logdir=LOGDIR,
                             cwd=Path("/home/u/project"), name="tune_trial-1")
    image = cmd.index("mlship-step-train:dev")
    assert cmd[image - 2:image] == ["--entrypoint", "python"]  # train's entrypoint is train
    assert cmd[image + 1:image + 3] == ["-m", "mlship.steps.tune"]
    parsed = tune.build().parse_args(cmd[image + 3:])
    assert (parsed.command, parsed.search_run_id) == ("trial", "s")
    assert parsed.xcom_path == "/airflow/xcom/tune_trial-1.json"
    assert "--entrypoint" not in docker_cmd("train", [])


def test_without_flag_drops_the_flag_and_its_value():
    assert cli.without_flag(["a", "--xcom-path", "/p", "--x", "1"], "--xcom-path") == ["a", "--x", "1"]
    assert cli.without_flag(["a"], "--xcom-path") == ["a"]


@pytest.mark.parametrize("step", cli.STEPS)
def test_docker_command_runs_the_step_image_with_flags_its_cli_accepts(step):
    args = cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"])
    cmd = docker_cmd(step, cli.step_commands(args, RESULTS)[step])
    image = cmd.index(f"mlship-step-{step}:dev")
    # everything after the image goes to the image's entrypoint, `python -m mlship.steps.<step>`
    parsed = importlib.import_module(f"mlship.steps.{step}").build().parse_args(cmd[image + 1:])
    assert parsed.xcom_path == f"/airflow/xcom/{step}.json"
    assert parsed.pipeline_run_key == "manual__2026-01-01T00:00:00+00:00"
    assert parsed.tracking_uri == "http://127.0.0.1:5000"


def test_docker_command_locks_the_container_down_like_the_cluster_pods():
    cmd = docker_cmd("train", ["--estimator", "ridge"])
    assert cmd[:3] == ["docker", "run", "--rm"]
    head = cmd[:cmd.index("mlship-step-train:dev")]
    assert option_values(head, "--network") == ["host"]
    assert option_values(head, "--user") == ["10001:10001"]
    assert "--read-only" in head
    assert option_values(head, "--tmpfs") == ["/tmp:rw,size=1g"]
    assert option_values(head, "--cap-drop") == ["ALL"]
    assert option_values(head, "--security-opt") == ["no-new-privileges"]
    assert {"HOME=/tmp", "TMPDIR=/tmp"} <= set(option_values(head, "--env"))
    # the run's log directory, key with colons and all, is the writable XCom volume
    assert option_values(head, "--mount") == [f"type=bind,source={LOGDIR},target=/airflow/xcom"]
    assert "-v" not in head and "--privileged" not in head


def test_docker_command_passes_secrets_by_name_only():
    cmd = docker_cmd("register", [], env_names=("MLFLOW_TRACKING_PASSWORD",))
    assert "MLFLOW_TRACKING_PASSWORD" in option_values(cmd, "--env")
    assert not any("MLFLOW_TRACKING_PASSWORD=" in x for x in cmd)


def test_local_inputs_are_mounted_read_only_at_their_absolute_paths():
    flags, mounts = cli.container_inputs(
        ["--source", "data/houses.csv", "--target", "@price", "--rules", "@rules.json"],
        Path("/home/u/project"),
    )
    assert flags == ["--source", "/home/u/project/data/houses.csv", "--target", "@price",
                     "--rules", "@/home/u/project/rules.json"]
    assert mounts == [
        "--mount", "type=bind,source=/home/u/project/data/houses.csv,"
        "target=/home/u/project/data/houses.csv,readonly",
        "--mount", "type=bind,source=/home/u/project/rules.json,"
        "target=/home/u/project/rules.json,readonly",
    ]
    for source in ("sklearn:iris", "https://example.org/d.csv", "/abs/d.parquet"):
        flags, mounts = cli.container_inputs(["--source", source], Path("/w"))
        assert flags == ["--source", source]
        assert bool(mounts) == source.startswith("/")


def test_a_path_docker_cannot_mount_is_a_clear_error():
    with pytest.raises(cli.LauncherError, match="cannot mount a path containing ',': /w/a,b.csv"):
        cli.container_inputs(["--source", "a,b.csv"], Path("/w"))


def test_docker_launcher_needs_an_mlflow_server(tmp_path, capsys):
    with pytest.raises(SystemExit, match="pass --tracking-uri http://HOST:PORT of an MLflow server"):
        cli.main(["run", "--dataset", "sklearn:iris", "--launcher", "docker",
                  "--home", str(tmp_path / "home")])
    assert not (tmp_path / "home").exists()  # refused before anything was recorded


def test_tracking_uri_defaults_to_mlflow_tracking_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    args = cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"])
    assert args.tracking_uri == "http://mlflow.example:5000"
    explicit = cli.build_parser().parse_args(
        ["run", "--dataset", "sklearn:iris", "--tracking-uri", "http://other:5000"])
    assert explicit.tracking_uri == "http://other:5000"


def test_no_tracking_uri_means_the_local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"]).tracking_uri is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # set but empty: as if unset, like MLflow
    assert cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"]).tracking_uri is None
