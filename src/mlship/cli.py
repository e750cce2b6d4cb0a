"""`mlship run`: the whole pipeline without a cluster.

The same step CLIs the Airflow DAG runs in pods, run here in sequence against a local MLflow
(SQLite + local artifacts under ./.mlship/) or any --tracking-uri. Results pass between steps
exactly as in the cluster: each step writes its result JSON to its --xcom-path.

Launchers: `process` (default) runs each step as a local Python process; `docker` runs each step
from its own image (mlship-step-<step>:<tag>) as a container locked down like the cluster's pods:
uid 10001, read-only root filesystem, a tmpfs /tmp, no capabilities; the run's log directory is
mounted at /airflow/xcom for the result. The step images carry only the MLflow client, so the
docker launcher needs an MLflow server (--tracking-uri http://...), reached over host networking.

Each step's flags are rendered from mlship.contract, as the DAG's pod arguments are: the command's
flags fill the trigger form's fields, earlier steps' results fill the rest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlship import contract, names
from mlship.ml import datasets
from mlship.mlflow_io.tracking import DEFAULT_EXPERIMENT

STEPS = contract.STEPS
LAUNCHERS = ("process", "docker")
JSON_FILE_FLAGS = contract.JSON_FLAGS  # accept @file.json (steps.common.json_arg)
FORM = contract.TRAINING_FORM
UID = 10001  # the non-root user of every mlship image (images/base/Dockerfile)
CONTAINER_XCOM_DIR = "/airflow/xcom"  # where the pods' XCom volume is mounted
# Passed by name (`--env NAME`, value from this process) so secrets never appear in argv.
PASSTHROUGH_ENV = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS", "MLSHIP_MLFLOW_WAIT_SECONDS", "MLSHIP_DEBUG",
)


class LauncherError(ValueError):
    """A step cannot be launched as asked; the message says why."""


class PipelineFailed(RuntimeError):
    def __init__(self, step: str, message: str, log: Path) -> None:
        super().__init__(f"step {step} failed: {message} (full log: {log})")
        self.step = step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlship", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the training pipeline locally")
    r.add_argument("--dataset", required=True, help="sklearn:iris, a .csv/.parquet path or URL")
    # The form's defaults; JSON and none as the text the step CLIs read back.
    text = contract.cli_text
    r.add_argument("--target", default=FORM["target"].default)
    r.add_argument("--task", default=FORM["task"].default, choices=["auto", *datasets.TASKS])
    r.add_argument("--estimator", default=FORM["estimator"].default)
    r.add_argument("--hyperparameters", default=text(FORM["hyperparameters"].default),
                   help="JSON object or @file.json")
    r.add_argument("--rules", default=text(FORM["validation_rules"].default),
                   help="validation rules, JSON object or @file.json")
    r.add_argument("--seed", type=int, default=FORM["seed"].default)
    r.add_argument("--tune-trials", type=int, default=FORM["tune_trials"].default,
                   help="hyperparameter search: how many trials (default: %(default)s, no search)")
    r.add_argument("--tune-search", default=FORM["tune_search"].default,
                   choices=list(contract.TUNE_SEARCHES))
    r.add_argument("--tune-space", default=text(FORM["tune_space"].default),
                   help="hyperparameter -> list of values, JSON object or @file.json "
                   "({}: the estimator's default space)")
    r.add_argument("--tune-folds", type=int, default=FORM["tune_folds"].default)
    r.add_argument("--max-parallel", type=int, default=FORM["max_parallel"].default,
                   help="at most this many trial processes; they run one after another here")
    r.add_argument("--holdout-fraction", type=float, default=FORM["holdout_fraction"].default)
    r.add_argument("--model-name", help="registered model name (default: the dataset's name)")
    r.add_argument("--metric", default=FORM["metric"].default)
    r.add_argument("--threshold", default=text(FORM["threshold"].default),
                   help="quality bar for the gate metric")
    r.add_argument("--margin", type=float, default=FORM["margin"].default)
    # the form promotes by default (a unit test holds them together), so the flag turns it off
    r.add_argument("--no-auto-promote", action="store_true", help="never move `champion`")
    r.add_argument(
        "--home", default=".mlship", type=Path,
        help="local state: SQLite DB, artifacts, step logs (default: %(default)s)",
    )
    r.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None,
        help="use this MLflow instead of the local SQLite one (default: $MLFLOW_TRACKING_URI if set)",
    )
    r.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    r.add_argument(
        "--run-key", help="pipeline run key; reuse one to resume a failed run (default: new)",
    )
    r.add_argument(
        "--launcher", default="process", choices=LAUNCHERS,
        help="run each step as a local process, or as a container from its own image "
        "(needs --tracking-uri of an MLflow server) (default: %(default)s)",
    )
    r.add_argument("--image-prefix", default="mlship-step-",
                   help="docker launcher: step image = PREFIX<step>:TAG (default: %(default)s)")
    r.add_argument("--image-tag", default="dev", help="docker launcher (default: %(default)s)")
    return p


def local_store(home: Path, experiment: str) -> str:
    """A SQLite tracking URI under `home`, with the experiment's artifacts beside it."""
    if importlib.util.find_spec("sqlalchemy") is None:  # mlflow-skinny alone has no SQL store
        raise SystemExit(
            "mlship run: the local SQLite store needs the full mlflow package "
            "(pip install 'mlship[tracking-server]'), or pass --tracking-uri of an MLflow server"
        )
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    from mlship.mlflow_io.tracking import experiment_id

    # Created here so artifacts land in home/artifacts, not in ./mlruns of whatever cwd.
    experiment_id(MlflowClient(uri), experiment, (home.resolve() / "artifacts").as_uri())
    return uri


def form_values(a: argparse.Namespace) -> dict[str, str]:
    """The trigger form's fields as `mlship run` fills them, as command-line text (pure)."""
    values = {
        "dataset": a.dataset,
        "target": a.target,
        "task": a.task,
        "estimator": a.estimator,
        "hyperparameters": a.hyperparameters,
        "tune_trials": a.tune_trials,
        "tune_search": a.tune_search,
        "tune_space": a.tune_space,
        "tune_folds": a.tune_folds,
        "max_parallel": a.max_parallel,
        "seed": a.seed,
        "holdout_fraction": a.holdout_fraction,
        "validation_rules": a.rules,
        "model_name": a.model_name or datasets.dataset_name(a.dataset),
        "metric": a.metric,
        "threshold": a.threshold,
        "margin": a.margin,
        "auto_promote": not a.no_auto_promote,
        "reason": FORM["reason"].default,  # no flag: a local run is a manual one
    }
    return {name: contract.cli_text(values[name]) for name in FORM}


def step_commands(a: argparse.Namespace, out: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The flags of each step, given the results of the steps before it (pure); a result not
    there yet is an empty string."""
    values = form_values(a)
    return {
        step: contract.render(
            step,
            lambda name, _field: values[name],
            lambda i: result_text(i, out),
        )
        for step in (*STEPS, contract.TUNE_PLAN, contract.TUNE_BEST)
    }


def result_text(i: contract.Input, out: dict[str, Any]) -> str:
    """An earlier step's result as a step flag's text: a key of it ("" when not there yet), the
    whole of it as JSON, or an optional one as JSON (null when its step did not run)."""
    result = out.get(i.source)
    if i.name == contract.WHOLE:
        return json.dumps(result)
    if i.optional:
        return json.dumps((result or {}).get(i.name))
    return str((result or {}).get(i.name, ""))


def step_image(step: str, prefix: str, tag: str) -> str:
    return f"{prefix}{step}:{tag}"


def step_module(step: str) -> str:
    """The module a step runs: its own, or for the search's steps mlship.steps.tune."""
    return f"mlship.steps.{contract.TUNE_MODULE if step in contract.TUNE_STEPS else step}"


def process_command(
    step: str, flags: list[str], common: list[str], logdir: Path, name: str | None = None
) -> list[str]:
    """The step as a local process; its result goes to logdir/<name or step>.json (pure)."""
    return [
        sys.executable, "-m", step_module(step), *common,
        "--xcom-path", str(logdir / f"{name or step}.json"), *flags,
    ]


def _bind(source: Path, target: str, readonly: bool) -> list[str]:
    # --mount, not -v: -v splits on ':', which run keys (Airflow run ids) and paths may contain
    if "," in str(source) or "," in target:
        raise LauncherError(f"docker launcher: cannot mount a path containing ',': {source}")
    return ["--mount", f"type=bind,source={source},target={target}" + (",readonly" if readonly else "")]


def container_inputs(flags: list[str], cwd: Path) -> tuple[list[str], list[str]]:
    """Local files a step reads (a --source path, @file.json values) as absolute paths, each
    bind-mounted read-only at the same path, so the flags mean the same inside (pure)."""
    out: list[str] = []
    mounts: list[str] = []
    for i, value in enumerate(flags):
        previous = flags[i - 1] if i else ""
        if previous == "--source" and datasets.source_kind(value) == "file":
            path = cwd / value
            out.append(str(path))
        elif previous in JSON_FILE_FLAGS and value.startswith("@"):
            path = cwd / value[1:]
            out.append(f"@{path}")
        else:
            out.append(value)
            continue
        mounts += _bind(path, str(path), readonly=True)
    return out, mounts


def docker_command(
    step: str,
    flags: list[str],
    common: list[str],
    *,
    image: str,
    logdir: Path,
    cwd: Path,
    env_names: tuple[str, ...] = (),
    name: str | None = None,
) -> list[str]:
    """The step as a container from its own image, with the restrictions of the cluster's pods
    (PodSecurity "restricted", read-only root filesystem, /tmp an emptyDir); the image's
    entrypoint is the step (the search's steps run mlship.steps.tune from train's image). `logdir`
    and `cwd` must be absolute; the result is logdir/<name or step>.json (pure)."""
    flags, input_mounts = container_inputs(flags, cwd)
    entrypoint = ["--entrypoint", "python"] if step in contract.TUNE_STEPS else []
    module = ["-m", step_module(step)] if entrypoint else []
    env = ["HOME=/tmp", "TMPDIR=/tmp", "PYTHONUNBUFFERED=1", *env_names]  # noqa: S108
    return [
        "docker", "run", "--rm",
        "--network", "host",  # a tracking URI on 127.0.0.1 means the same inside
        "--user", f"{UID}:{UID}",
        "--read-only", "--tmpfs", "/tmp:rw,size=1g",  # noqa: S108
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--label", f"mlship.io/step={step}",
        *[x for e in env for x in ("--env", e)],
        *_bind(logdir, CONTAINER_XCOM_DIR, readonly=False),
        *input_mounts,
        *entrypoint,
        image,
        *module, *common, "--xcom-path", f"{CONTAINER_XCOM_DIR}/{name or step}.json", *flags,
    ]


def run_step(step: str, cmd: list[str], logdir: Path, name: str | None = None) -> Any:
    result = logdir / f"{name or step}.json"
    log = logdir / f"{name or step}.log"
    result.unlink(missing_ok=True)  # a resumed run key must not read an earlier attempt's result
    with open(log, "wb") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in lines if ln.startswith(f"mlship {step} failed:")]
        message = errors[-1].split(": ", 1)[1] if errors else (lines[-1] if lines else "no output")
        raise PipelineFailed(step, message, log)
    return json.loads(result.read_text())


def summary(tracking_uri: str, reg: dict[str, Any], ing: dict[str, Any]) -> str:
    if tracking_uri.startswith("sqlite:"):
        ui = f"mlflow ui --backend-store-uri {tracking_uri}"
        where = f"{ui}   # then open http://127.0.0.1:5000"
    else:
        where = tracking_uri
    aliases = ", ".join(reg["aliases"]) or "none"
    ref = f"@{names.CHAMPION}" if names.CHAMPION in reg["aliases"] else f"/{reg['version']}"
    again = ""
    if reg["already_registered"]:
        again = " (already registered by this run key: nothing new)"
    return "\n".join(
        [
            f"model:    {reg['model_name']} version {reg['version']}{again}",
            f"aliases:  {aliases}",
            f"gate:     {reg['reason']}",
            f"compiled: {reg.get('compiled_detail') or 'not recorded'}",
            f"dataset:  {ing['dataset_name']} digest {ing['dataset_digest']}",
            f"load it:  mlflow.pyfunc.load_model('models:/{reg['model_name']}{ref}')",
            f"look:     {where}",
        ]
    )


def docker_preflight(a: argparse.Namespace) -> None:
    """The docker launcher's requirements, checked before anything is recorded."""
    if urlparse(a.tracking_uri or "").scheme not in ("http", "https"):
        raise SystemExit(
            "mlship run --launcher docker: the step images carry only the MLflow client, not "
            "the SQLite store; pass --tracking-uri http://HOST:PORT of an MLflow server"
        )
    if shutil.which("docker") is None:
        raise SystemExit("mlship run --launcher docker: no `docker` command on PATH")


def run(a: argparse.Namespace) -> int:
    if a.launcher == "docker":
        docker_preflight(a)
    key = a.run_key or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    tracking_uri = a.tracking_uri or local_store(a.home, a.experiment)
    logdir = (a.home / "runs" / key).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    if a.launcher == "docker":
        # the containers run as uid 10001 and write their results here
        logdir.chmod(0o777)
    common = [
        "--tracking-uri", tracking_uri, "--experiment", a.experiment, "--pipeline-run-key", key,
    ]
    env_names = tuple(n for n in PASSTHROUGH_ENV if n in os.environ)

    def command(step: str, flags: list[str], name: str | None = None) -> list[str]:
        if a.launcher == "docker":
            own = "train" if step in contract.TUNE_STEPS else step  # the search runs from train's
            image = step_image(own, a.image_prefix, a.image_tag)
            return docker_command(step, flags, common, image=image, logdir=logdir,
                                  cwd=Path.cwd(), env_names=env_names, name=name)
        return process_command(step, flags, common, logdir, name)

    out: dict[str, dict[str, Any]] = {}
    print(f"pipeline run {key} -> {tracking_uri}", flush=True)
    if a.launcher == "docker":
        print(f"  images    {step_image('<step>', a.image_prefix, a.image_tag)}", flush=True)
    try:
        for step in STEPS:
            if step == "train" and a.tune_trials > 0:
                search(a, out, command, logdir)
            print(f"  {step:<10}", end="", flush=True)
            started = time.monotonic()
            out[step] = run_step(step, command(step, step_commands(a, out)[step]), logdir)
            print(f"ok  {time.monotonic() - started:.1f}s", flush=True)
    except (PipelineFailed, LauncherError) as exc:
        print("FAILED", flush=True)
        print(f"mlship run: {exc}", file=sys.stderr)
        return 1
    print(summary(tracking_uri, out["register"], out["ingest"]))
    return 0


def without_flag(argv: list[str], flag: str) -> list[str]:
    """`argv` without `flag` and its value (pure)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            out.append(arg)
    return out


def search(
    a: argparse.Namespace, out: dict[str, Any], command: Any, logdir: Path
) -> None:
    """The hyperparameter search as the DAG runs it, its trial pods one after another: plan,
    each share of the trials (a failed one is reported and the search goes on), best."""
    commands = step_commands(a, out)
    for step in (contract.TUNE_PLAN, contract.TUNE_BEST):
        commands[step] = [contract.TUNE_COMMANDS[step], *commands[step]]
    print(f"  {'tune plan':<10}", end="", flush=True)
    out[contract.TUNE_PLAN] = run_step(
        contract.TUNE_PLAN, command(contract.TUNE_PLAN, commands[contract.TUNE_PLAN]), logdir)
    print(f"ok  {len(out[contract.TUNE_PLAN])} trial process(es)", flush=True)
    for n, argv in enumerate(out[contract.TUNE_PLAN]):
        name = f"{contract.TUNE_TRIAL}-{n}"
        print(f"  {'tune ' + str(n):<10}", end="", flush=True)
        started = time.monotonic()
        try:  # the plan's own --xcom-path would overwrite its result: each trial has its own
            run_step(contract.TUNE_TRIAL, command(
                contract.TUNE_TRIAL, without_flag(argv, "--xcom-path"), name), logdir, name)
            print(f"ok  {time.monotonic() - started:.1f}s", flush=True)
        except PipelineFailed as exc:
            print(f"FAILED ({exc}); the search goes on", flush=True)
    commands = step_commands(a, out)
    print(f"  {'tune best':<10}", end="", flush=True)
    out[contract.TUNE_BEST] = run_step(contract.TUNE_BEST, command(
        contract.TUNE_BEST, [contract.TUNE_COMMANDS[contract.TUNE_BEST], *commands[contract.TUNE_BEST]]
    ), logdir)
    best = out[contract.TUNE_BEST]
    print(f"ok  {best['succeeded']}/{best['trials']} trials, best {best['metric']} "
          f"{best['score']:.4f}: {json.dumps(best['params'])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.command == "run":
        return run(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    raise SystemExit(main())
