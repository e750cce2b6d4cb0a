"""The pod every mlship step task runs in: its own image, the restricted profile, XCom out.

Shared by the DAGs (mlship_training, mlship_drift); holds no DAG itself.
"""

from __future__ import annotations

import mlship_dagspec as spec
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airflow.sdk import Context, XComArg
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s


class StepPodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator whose XCom sidecar runs from a configured image, and whose task
    fails without retries when the step says its input is wrong (exit code 65).

    The provider takes the sidecar image only from the Kubernetes connection's extras (else
    alpine, which an offline cluster cannot pull), and appends the sidecar after any pod
    template is merged, so the built pod is adjusted here (after pod_mutation_hook has run).
    """

    def __init__(self, *, mlship_settings: spec.Settings, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mlship_settings = mlship_settings

    def build_pod_request_obj(
        self, context: Context | None = None, *, dry_run: bool = False
    ) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        overrides = spec.xcom_sidecar(self.mlship_settings, self.hook.get_xcom_sidecar_container_image())
        for container in pod.spec.containers:
            if container.name == PodDefaults.SIDECAR_CONTAINER_NAME:
                container.image = overrides["image"]
                container.image_pull_policy = overrides["image_pull_policy"]
                container.resources = k8s.V1ResourceRequirements(**overrides["resources"])
        return pod

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict | None = None,
        context: Context | None = None,
    ) -> None:
        # The provider's cleanup raises on every failed pod (sync and deferrable paths both
        # end here); a retry only helps when the step did not exit with bad input.
        try:
            super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except Exception as err:
            reason = spec.bad_input_failure(remote_pod, self.base_container_name)
            if reason is None:
                raise
            raise AirflowFailException(reason) from err


def step_env_vars(settings: spec.Settings, step: str) -> list[k8s.V1EnvVar]:
    """The step container's environment: the plain values, then those read from Secrets (a
    missing Secret or key keeps the pod from starting, optional=False, instead of running without)."""
    return [
        *(k8s.V1EnvVar(name=name, value=value) for name, value in spec.step_env(settings).items()),
        *(
            k8s.V1EnvVar(
                name=name,
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name=ref.secret, key=ref.key, optional=False)
                ),
            )
            for name, ref in spec.step_secret_env(settings, step).items()
        ),
    ]


def step_env_from(settings: spec.Settings, step: str) -> list[k8s.V1EnvFromSource]:
    """The step container's envFrom: every key of the source credentials Secret (source steps only;
    a missing Secret keeps the pod from starting, optional=False)."""
    return [
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name, optional=False))
        for name in spec.step_env_from_secrets(settings, step)
    ]


def step_task(
    settings: spec.Settings, step: str, task_id: str | None = None, **extra: object
) -> KubernetesPodOperator:
    """The step's pod; `extra` are more operator arguments (a trigger rule)."""
    return StepPodOperator(**{**step_pod_kwargs(settings, step, task_id), **extra})


def mapped_step_task(settings: spec.Settings, step: str, arguments: XComArg, **extra: object) -> object:
    """One pod per item of `arguments` (an earlier task's result: a list of argument lists),
    otherwise the pod step_task builds: Airflow's dynamic task mapping."""
    kwargs = {**step_pod_kwargs(settings, step), **extra}
    kwargs.pop("arguments")
    return StepPodOperator.partial(**kwargs).expand(arguments=arguments)


def step_pod_kwargs(settings: spec.Settings, step: str, task_id: str | None = None) -> dict[str, object]:
    res = settings.resources[spec.image_step(step)]
    return dict(
        mlship_settings=settings,
        task_id=task_id or step,
        name=f"mlship-{step.replace('_', '-')}",  # a pod name is a DNS label: no underscores
        namespace=settings.namespace,
        image=settings.images[spec.image_step(step)],
        image_pull_policy=settings.image_pull_policy,
        image_pull_secrets=[
            k8s.V1LocalObjectReference(name=n) for n in settings.image_pull_secrets
        ],
        cmds=spec.step_command(step),
        arguments=spec.step_arguments(step),
        env_vars=step_env_vars(settings, step),
        env_from=step_env_from(settings, step) or None,
        labels=spec.labels(step),
        container_resources=k8s.V1ResourceRequirements(
            requests=res.get("requests"), limits=res.get("limits")
        ),
        security_context=spec.pod_security_context(),
        container_security_context=spec.container_security_context(),
        # the sidecar that reads /airflow/xcom must pass the "restricted" profile too
        xcom_sidecar_container_security_context=spec.xcom_sidecar(settings)["security_context"],
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],  # noqa: S108
        service_account_name=settings.service_account,
        # steps talk to MLflow only, never to the Kubernetes API
        automount_service_account_token=False,
        do_xcom_push=True,
        get_logs=True,  # the step's stdout/stderr become the task log in the Airflow UI
        log_events_on_failure=True,
        # the step's own error is its last log line; a dump of the whole V1Pod would bury it
        log_pod_spec_on_failure=False,
        startup_timeout_seconds=settings.startup_timeout_seconds,
        # Succeeded pods are deleted (their logs are already in the task log); failed pods are
        # kept so `kubectl logs/describe` can show what the task log cannot (OOMKilled, image
        # pull errors, evictions). Retries create new pods, so a kept pod never blocks one.
        on_finish_action="delete_succeeded_pod",
    )
