"""Pure builders for the mlship_training DAG: settings from the environment, step arguments,
pod security and resources. No scheduler imports here, so it is unit-testable on its own.

The steps, their flags, where each flag's value comes from and the trigger forms' fields are
mlship.contract's: the pod arguments and the Params are rendered from it here.

The chart provides the configuration as environment variables of the scheduler/worker/
dag-processor; every one has a default that works for a local image build (`:dev` tags):

  MLSHIP_IMAGE_<STEP>              image of one step, e.g. MLSHIP_IMAGE_TRAIN (mlship-step-train:dev)
  MLSHIP_XCOM_SIDECAR_IMAGE        image of the XCom sidecar each step pod gets: needs sh, sleep,
                                   cat and pgrep; runs as uid 10001. Unset: the Kubernetes connection's
                                   `xcom_sidecar_container_image` extra, else mlship-base:dev,
                                   never the provider's alpine default (an offline cluster cannot
                                   pull it).
  MLSHIP_IMAGE_PULL_POLICY         Always|IfNotPresent|Never, for steps and sidecar (IfNotPresent)
  MLSHIP_IMAGE_PULL_SECRETS        comma-separated Secret names ("")
  MLSHIP_NAMESPACE                 where the step pods run (mlship)
  MLSHIP_SERVICE_ACCOUNT           the step pods' service account (the namespace default)
  MLSHIP_MLFLOW_TRACKING_URI       MLflow as the pods reach it (http://mlship-mlflow:5000)
  MLSHIP_EXPERIMENT                MLflow experiment (mlship)
  MLSHIP_SCHEDULE                  cron or preset; none = manual only (@daily)
  MLSHIP_TASK_RETRIES, MLSHIP_RETRY_DELAY_SECONDS, MLSHIP_POD_STARTUP_TIMEOUT_SECONDS (2, 60, 600)
  MLSHIP_STEP_RESOURCES            JSON {step: {requests: ..., limits: ...}} overriding the defaults
  MLSHIP_DEFAULT_DATASET, MLSHIP_DEFAULT_MODEL_NAME   trigger-form defaults (sklearn:iris, iris)
  MLSHIP_SOURCE_HEADERS_SECRET     an existing Secret whose key holds the JSON API sources' request
                                   headers by host; the source steps' pods only get it, as
                                   $MLSHIP_SOURCE_HEADERS ("": none)
  MLSHIP_SOURCE_HEADERS_SECRET_KEY that Secret's key (headers.json)
  MLSHIP_SOURCE_CREDENTIALS_SECRET an existing Secret whose every key becomes an environment
                                   variable of the source steps (envFrom): cloud DVC remotes'
                                   credentials, AWS_ACCESS_KEY_ID etc. ("": none)
  MLSHIP_ALERT_WEBHOOK_SECRET      an existing Secret whose key holds the alert webhook's URL; the
                                   register and drift pods get it, as $MLSHIP_ALERT_WEBHOOK_URL
                                   (mlship.alerts; "": no alerts)
  MLSHIP_ALERT_WEBHOOK_SECRET_KEY  that Secret's key (url)
  MLSHIP_MLFLOW_UI_URL, MLSHIP_AIRFLOW_UI_URL   where people open MLflow and Airflow, for the
                                   alerts' links ("": the tracking URI; no Airflow link)

and for mlship_batch_score (dags/mlship_batch_score.py):

  MLSHIP_IMAGE_SCORE               the scoring step's image (mlship-step-score:dev)

and for mlship_drift (dags/mlship_drift.py):

  MLSHIP_IMAGE_DRIFT               the drift check's image (mlship-step-drift:dev)
  MLSHIP_DRIFT_SCHEDULE            cron or preset; none = manual only (@hourly)
  MLSHIP_DRIFT_ALIAS               alias of the served version to check (champion)
  MLSHIP_DRIFT_WINDOW_MINUTES, MLSHIP_DRIFT_MIN_ROWS   recent inputs: how far back, how few (60, 100)
  MLSHIP_DRIFT_THRESHOLD           share of drifted features that triggers training (0.5)
  MLSHIP_INFERENCE_LOG_EXPERIMENT  where serving logs inputs (mlship-inference)
  MLSHIP_DRIFT_EXPERIMENT          where drift reports go (mlship-drift)
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# Both dependency-free, so the DAG processor imports no MLflow, pandas or scikit-learn.
from mlship import contract, names

STEPS: tuple[str, ...] = contract.STEPS
# Every step that runs in a pod of its own image: the training steps, mlship_drift's check and
# mlship_batch_score's step.
POD_STEPS: tuple[str, ...] = (*STEPS, contract.DRIFT, contract.SCORE)
UID = 10001  # the non-root user every step image runs as
# The steps that read dataset sources and so get the sources' credentials (the request headers by
# host, and the environment of the credentials Secret); no other step's pod can read them.
SOURCE_STEPS: tuple[str, ...] = ("ingest", contract.SCORE)
ALERT_STEPS: tuple[str, ...] = ("register", contract.DRIFT)  # the steps that may call mlship.alerts
DEFAULT_ALERT_WEBHOOK_KEY = "url"
DEFAULT_SOURCE_HEADERS_KEY = "headers.json"
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a DNS subdomain
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
XCOM_PATH = "/airflow/xcom/return.json"  # where KubernetesPodOperator's sidecar reads results
DEFAULT_XCOM_SIDECAR_IMAGE = "mlship-base:dev"  # the step images are built FROM it
# A step exits with this when its input is wrong and no retry can succeed (it is
# mlship.steps.common.EX_DATAERR, which this module cannot import: a unit test holds them equal).
BAD_INPUT_EXIT_CODE = os.EX_DATAERR
# The sidecar only sleeps, then `cat`s the result when the operator execs into it.
XCOM_SIDECAR_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "100m", "memory": "64Mi"},  # limits too, for namespaces with a quota
}

# Requests/limits per step; training may use the most. Override with MLSHIP_STEP_RESOURCES (JSON).
# Requests stay small so a step schedules on a 2-core laptop already running a release or two
# (requests are what the scheduler reserves); the CPU limits let a step use an idle node.
_SMALL = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "ingest": _SMALL,
    "validate": _SMALL,
    "featurize": _SMALL,
    "train": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    "evaluate": _SMALL,
    "register": _SMALL,
    "drift": _SMALL,
    # holds the dataset, its predictions and a chunk's features (mlship.steps.score.CHUNK_ROWS)
    "score": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
}


_DRIFT = contract.DRIFT_FORM
_TRAINING = contract.TRAINING_FORM


@dataclass(frozen=True)
class DriftSettings:
    """mlship_drift's settings; all but the schedule are its trigger form's defaults."""

    schedule: str | None = "@hourly"
    alias: str = _DRIFT["alias"].default
    window_minutes: int = _DRIFT["window_minutes"].default
    min_rows: int = _DRIFT["min_rows"].default
    threshold: float = _DRIFT["threshold"].default
    inference_experiment: str = _DRIFT["inference_experiment"].default
    report_experiment: str = _DRIFT["report_experiment"].default


class SettingsError(ValueError):
    """Configuration variables have values that cannot be used; the message names each,
    "; "-separated (every problem at once, like the operator's and serving's configuration)."""


@dataclass(frozen=True)
class Settings:
    images: dict[str, str]
    xcom_sidecar_image: str | None = None  # None: the connection's, else the default
    namespace: str = "mlship"
    tracking_uri: str = "http://mlship-mlflow:5000"
    experiment: str = names.EXPERIMENT_PIPELINE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    schedule: str | None = "@daily"
    retries: int = 2
    retry_delay: timedelta = timedelta(minutes=1)
    startup_timeout_seconds: int = 600
    default_model_name: str = _TRAINING["model_name"].default
    default_dataset: str = _TRAINING["dataset"].default
    resources: dict[str, dict[str, dict[str, str]]] = field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_RESOURCES))
    )
    drift: DriftSettings = field(default_factory=DriftSettings)
    source_headers_secret: str | None = None  # None: the source steps get no request headers
    source_headers_secret_key: str = DEFAULT_SOURCE_HEADERS_KEY
    # None: the source steps get no environment from a Secret (envFrom)
    source_credentials_secret: str | None = None
    alert_webhook_secret: str | None = None  # None: no alerts
    alert_webhook_secret_key: str = DEFAULT_ALERT_WEBHOOK_KEY
    mlflow_ui_url: str | None = None
    airflow_ui_url: str | None = None


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable of a step's container read from a Secret's key by the kubelet
    (the DAG never sees the value)."""

    secret: str
    key: str


def _secret_name(env: Mapping[str, str], name: str, errs: list[str]) -> str | None:
    """A Secret's name from `name`; None when unset or blank."""
    value = env.get(name, "").strip()
    if value and not _SECRET_NAME.match(value):
        errs.append(f"{name}={value!r} is not a Secret name")
    return value or None


def _secret_key(env: Mapping[str, str], name: str, default: str, errs: list[str]) -> str:
    """A key of a Secret from `name`; `default` when unset or blank."""
    value = env.get(name, "").strip() or default
    if not _SECRET_KEY.match(value):
        errs.append(f"{name}={value!r} is not a Secret key")
    return value


def _int(env: Mapping[str, str], name: str, default: int, errs: list[str]) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        errs.append(f"{name}={raw!r} is not an integer")
        return default
    if value < 0:
        errs.append(f"{name}={raw!r} must be >= 0")
        return default
    return value


def _schedule(env: Mapping[str, str], name: str, default: str) -> str | None:
    value = env.get(name, default).strip()
    return None if value.lower() in ("", "none", "null") else value


def _raise_if(errs: list[str]) -> None:
    if errs:
        raise SettingsError("; ".join(errs))


def drift_settings_from_env(env: Mapping[str, str], errs: list[str] | None = None) -> DriftSettings:
    """The drift settings; problems go to `errs` when given, else raise SettingsError at once."""
    problems: list[str] = [] if errs is None else errs
    default = DriftSettings()
    raw = env.get("MLSHIP_DRIFT_THRESHOLD", "").strip()
    threshold = default.threshold
    try:
        threshold = float(raw) if raw else default.threshold
    except ValueError:
        problems.append(f"MLSHIP_DRIFT_THRESHOLD={raw!r} is not a number")
    else:
        if not 0 < threshold <= 1:
            problems.append(f"MLSHIP_DRIFT_THRESHOLD={raw!r} must be in (0, 1]")
    window = _int(env, "MLSHIP_DRIFT_WINDOW_MINUTES", default.window_minutes, problems)
    min_rows = _int(env, "MLSHIP_DRIFT_MIN_ROWS", default.min_rows, problems)
    for name, value in (("MLSHIP_DRIFT_WINDOW_MINUTES", window), ("MLSHIP_DRIFT_MIN_ROWS", min_rows)):
        if value < 1:
            problems.append(f"{name}={value} must be >= 1")
    if errs is None:
        _raise_if(problems)
    return DriftSettings(
        schedule=_schedule(env, "MLSHIP_DRIFT_SCHEDULE", default.schedule or "none"),
        alias=env.get("MLSHIP_DRIFT_ALIAS") or default.alias,
        window_minutes=window,
        min_rows=min_rows,
        threshold=threshold,
        inference_experiment=env.get("MLSHIP_INFERENCE_LOG_EXPERIMENT") or default.inference_experiment,
        report_experiment=env.get("MLSHIP_DRIFT_EXPERIMENT") or default.report_experiment,
    )


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The DAGs' settings; raise one SettingsError naming every bad variable."""
    errs: list[str] = []
    images = {
        s: env.get(f"MLSHIP_IMAGE_{s.upper()}") or f"mlship-step-{s}:dev" for s in POD_STEPS
    }
    policy = env.get("MLSHIP_IMAGE_PULL_POLICY", "IfNotPresent")
    if policy not in ("Always", "IfNotPresent", "Never"):
        errs.append(f"MLSHIP_IMAGE_PULL_POLICY={policy!r}: use Always|IfNotPresent|Never")
    resources = json.loads(json.dumps(DEFAULT_RESOURCES))
    if env.get("MLSHIP_STEP_RESOURCES"):
        try:
            override = json.loads(env["MLSHIP_STEP_RESOURCES"])
        except json.JSONDecodeError as exc:
            errs.append(f"MLSHIP_STEP_RESOURCES is not JSON: {exc}")
            override = {}
        unknown = set(override) - set(POD_STEPS)
        if unknown:
            errs.append(f"MLSHIP_STEP_RESOURCES names unknown step(s): {sorted(unknown)}")
        else:
            for step, spec in override.items():
                resources[step] = spec
    raw_secrets = env.get("MLSHIP_IMAGE_PULL_SECRETS", "").split(",")
    secrets = tuple(s.strip() for s in raw_secrets if s.strip())
    retries = _int(env, "MLSHIP_TASK_RETRIES", 2, errs)
    retry_delay = _int(env, "MLSHIP_RETRY_DELAY_SECONDS", 60, errs)
    startup_timeout = _int(env, "MLSHIP_POD_STARTUP_TIMEOUT_SECONDS", 600, errs)
    drift = drift_settings_from_env(env, errs)
    headers_secret = _secret_name(env, "MLSHIP_SOURCE_HEADERS_SECRET", errs)
    headers_key = _secret_key(env, "MLSHIP_SOURCE_HEADERS_SECRET_KEY", DEFAULT_SOURCE_HEADERS_KEY, errs)
    credentials_secret = _secret_name(env, "MLSHIP_SOURCE_CREDENTIALS_SECRET", errs)
    alert_secret = _secret_name(env, "MLSHIP_ALERT_WEBHOOK_SECRET", errs)
    alert_key = _secret_key(env, "MLSHIP_ALERT_WEBHOOK_SECRET_KEY", DEFAULT_ALERT_WEBHOOK_KEY, errs)
    ui_urls = {}
    for name in ("MLSHIP_MLFLOW_UI_URL", "MLSHIP_AIRFLOW_UI_URL"):  # the chart's, as the steps
        url = env.get(name, "").strip()
        if url and not re.match(r"^https?://[^\s/]+", url):
            errs.append(f"{name}={url!r} is not an http(s) URL")
        ui_urls[name] = url or None
    _raise_if(errs)
    return Settings(
        images=images,
        xcom_sidecar_image=env.get("MLSHIP_XCOM_SIDECAR_IMAGE", "").strip() or None,
        namespace=env.get("MLSHIP_NAMESPACE") or "mlship",
        tracking_uri=env.get("MLSHIP_MLFLOW_TRACKING_URI") or "http://mlship-mlflow:5000",
        experiment=env.get("MLSHIP_EXPERIMENT") or names.EXPERIMENT_PIPELINE,
        image_pull_policy=policy,
        image_pull_secrets=secrets,
        service_account=env.get("MLSHIP_SERVICE_ACCOUNT") or None,
        schedule=_schedule(env, "MLSHIP_SCHEDULE", "@daily"),
        retries=retries,
        retry_delay=timedelta(seconds=retry_delay),
        startup_timeout_seconds=startup_timeout,
        default_model_name=env.get("MLSHIP_DEFAULT_MODEL_NAME") or _TRAINING["model_name"].default,
        default_dataset=env.get("MLSHIP_DEFAULT_DATASET") or _TRAINING["dataset"].default,
        resources=resources,
        drift=drift,
        source_headers_secret=headers_secret,
        source_headers_secret_key=headers_key,
        source_credentials_secret=credentials_secret,
        alert_webhook_secret=alert_secret,
        alert_webhook_secret_key=alert_key,
        mlflow_ui_url=ui_urls["MLSHIP_MLFLOW_UI_URL"],
        airflow_ui_url=ui_urls["MLSHIP_AIRFLOW_UI_URL"],
    )


def _xcom(i: contract.Input) -> str:
    """An earlier step's result as a Jinja template: one key of it, the whole of it as JSON
    (contract.WHOLE), or for an optional one (the search's, skipped when there is none) the key
    as JSON, `null` when the step did not run."""
    pull = "ti.xcom_pull(task_ids='%s')" % i.source  # noqa: UP031 - Jinja braces
    if i.name == contract.WHOLE:
        return "{{ %s | tojson }}" % pull  # noqa: UP031
    if i.optional:
        return "{{ (%s or {}).get('%s') | tojson }}" % (pull, i.name)  # noqa: UP031
    return "{{ %s['%s'] }}" % (pull, i.name)  # noqa: UP031


def _param(name: str, f: contract.Field) -> str:
    return "{{ params.%s%s }}" % (name, " | tojson" if f.json else "")  # noqa: UP031 - Jinja


def image_step(step: str) -> str:
    """Whose image (and resources) a step's pod uses: its own, but the search's steps run from
    train's (mlship.steps.tune is in it), so the search costs no image of its own."""
    return "train" if step in contract.TUNE_STEPS else step


def step_command(step: str) -> list[str]:
    module = contract.TUNE_MODULE if step in contract.TUNE_STEPS else step
    return ["python", "-m", f"mlship.steps.{module}"]


def step_arguments(step: str) -> list[str]:
    """The step's flags as Jinja templates (mlship.contract.INPUTS): params come from the trigger
    form (mlship_drift's check reads drift_params_schema's), earlier steps' results from XCom.
    {{ run_id }} is the pipeline run key: clearing and re-running a DAG run keeps it, so the steps
    find the same MLflow parent run and register stays idempotent. A search step's first argument
    is its command (plan, best); the trial pods' arguments are the plan's result, not these."""
    command = [contract.TUNE_COMMANDS[step]] if step in contract.TUNE_STEPS else []
    return [
        *command,
        *contract.render(step, _param, _xcom),
        "--pipeline-run-key", "{{ run_id }}", "--xcom-path", XCOM_PATH,
    ]


def tune_requested(params: Mapping[str, Any]) -> bool:
    """Whether a run searches hyperparameters (tune_trials above 0); when not, the search's
    tasks are skipped and train runs as without them."""
    return int(params.get("tune_trials") or 0) > 0


def step_env(settings: Settings) -> dict[str, str]:
    env = {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLSHIP_EXPERIMENT": settings.experiment,
        # the root filesystem is read-only; /tmp is an emptyDir
        "HOME": "/tmp",  # noqa: S108
        "TMPDIR": "/tmp",  # noqa: S108
        "PYTHONUNBUFFERED": "1",  # step logs reach the task log as they are written
        "MLSHIP_MLFLOW_WAIT_SECONDS": "30",
    }
    if settings.mlflow_ui_url:
        env[names.MLFLOW_UI_ENV] = settings.mlflow_ui_url
    if settings.airflow_ui_url:
        env[names.AIRFLOW_UI_ENV] = settings.airflow_ui_url
    return env


def step_secret_env(settings: Settings, step: str) -> dict[str, SecretEnv]:
    """The step's environment variables that come from Secrets: the JSON API sources' request
    headers (names.SOURCE_HEADERS_ENV) for the steps that read sources, and the alert webhook's
    URL (names.ALERT_WEBHOOK_ENV) for the steps that alert, each when its Secret is set."""
    env: dict[str, SecretEnv] = {}
    if step in SOURCE_STEPS and settings.source_headers_secret is not None:
        env[names.SOURCE_HEADERS_ENV] = SecretEnv(
            settings.source_headers_secret, settings.source_headers_secret_key
        )
    if step in ALERT_STEPS and settings.alert_webhook_secret is not None:
        env[names.ALERT_WEBHOOK_ENV] = SecretEnv(
            settings.alert_webhook_secret, settings.alert_webhook_secret_key
        )
    return env


def step_env_from_secrets(settings: Settings, step: str) -> tuple[str, ...]:
    """The Secrets whose every key becomes an environment variable of the step's container
    (envFrom, resolved by the kubelet): the sources' credentials Secret, for the source steps."""
    if step not in SOURCE_STEPS or settings.source_credentials_secret is None:
        return ()
    return (settings.source_credentials_secret,)


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the PodSecurity "restricted" profile (camelCase: API shape)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Per-container settings of "restricted", for the step and for the XCom sidecar."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def xcom_sidecar(settings: Settings, connection_image: str | None = None) -> dict[str, Any]:
    """What mlship sets on the provider's XCom sidecar container (snake_case: V1Container
    attributes); its command, volume and name stay the provider's. `connection_image` is the
    Kubernetes connection's `xcom_sidecar_container_image` extra, if any."""
    return {
        "image": settings.xcom_sidecar_image or connection_image or DEFAULT_XCOM_SIDECAR_IMAGE,
        "image_pull_policy": settings.image_pull_policy,
        "resources": json.loads(json.dumps(XCOM_SIDECAR_RESOURCES)),
        "security_context": container_security_context(),
    }


COMPONENTS = {contract.DRIFT: "drift-check", contract.SCORE: "batch-score"}


def labels(step: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "mlship",
        "app.kubernetes.io/component": COMPONENTS.get(step, "training-step"),
        "mlship.io/step": step,
    }


def _params(form: dict[str, contract.Field], defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A form as Params' arguments: name -> (default, JSON-schema keywords, description); the
    settings' `defaults` replace the contract's for the fields the chart configures."""
    out: dict[str, dict[str, Any]] = {}
    for name, f in form.items():
        param = {"default": defaults[name] if name in defaults else f.default, **f.schema}
        if f.description:
            param["description"] = f.description
        out[name] = copy.deepcopy(param)  # Airflow's Param may keep what it is given
    return out


def params_schema(settings: Settings) -> dict[str, dict[str, Any]]:
    """The trigger form (mlship.contract.TRAINING_FORM), dataset and model name from the chart."""
    return _params(contract.TRAINING_FORM, {
        "dataset": settings.default_dataset, "model_name": settings.default_model_name,
    })


def drift_params_schema(settings: Settings) -> dict[str, dict[str, Any]]:
    """mlship_drift's trigger form (mlship.contract.DRIFT_FORM), defaults from the chart's drift
    values."""
    d = settings.drift
    return _params(contract.DRIFT_FORM, {
        "model_name": settings.default_model_name, "alias": d.alias,
        "window_minutes": d.window_minutes, "min_rows": d.min_rows, "threshold": d.threshold,
        "inference_experiment": d.inference_experiment, "report_experiment": d.report_experiment,
    })


def score_params_schema(settings: Settings) -> dict[str, dict[str, Any]]:
    """mlship_batch_score's trigger form (mlship.contract.BATCH_FORM); the model name from the chart."""
    return _params(contract.BATCH_FORM, {"model_name": settings.default_model_name})


def bad_input_failure(pod: Any, container: str) -> str | None:
    """Why a finished step pod must fail its task without retries, or None.

    `pod` is a kubernetes V1Pod; when `container` terminated with BAD_INPUT_EXIT_CODE the answer
    carries the step's own one-line error (its termination message).
    """
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    for status in statuses:
        terminated = getattr(getattr(status, "state", None), "terminated", None)
        if status.name != container or terminated is None:
            continue
        if terminated.exit_code != BAD_INPUT_EXIT_CODE:
            return None
        said = (terminated.message or "").strip() or "see the task log for the step's error"
        return (
            f"{said}\n(exit code {BAD_INPUT_EXIT_CODE}: the input is wrong, so the task fails"
            " without retries)"
        )
    return None
