"""The pod-launching power, contained (#19): attacks on the installed release (tests/conftest.py:
`release`) made with the identities its pods hold, each refused by the chart's defaults.

KubernetesPodOperator needs Airflow's ServiceAccount to create pods and exec into them; on its own
that lets Airflow's token start a pod under any ServiceAccount, read any Secret through it, or exec
into PostgreSQL. The chart's admission policy (pipeline.restrictStepPods) keeps it to step pods.
Every training run of the e2e tier is the proof that the steps still run under it. (The host
namespaces and hostPath volumes the policy also refuses are refused before it here, by the
namespace's PodSecurity "restricted".)
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from e2e.kit import SOURCE_HEADERS_KEY, SOURCE_HEADERS_SECRET, Release, run

pytestmark = [pytest.mark.security, pytest.mark.timeout(600)]


def account(release: Release, component: str) -> str:
    return f"system:serviceaccount:{release.namespace}:{release.name(component)}"


def kubectl_as(
    release: Release, component: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = ["kubectl", f"--as={account(release, component)}", "-n", release.namespace, *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def step_pod(release: Release, **spec: Any) -> dict[str, Any]:
    """A pod as the DAGs build a source step's (tests/unit/test_dag.py checks the DAGs' side),
    with `spec` replacing fields of its spec."""
    base: dict[str, Any] = {
        "serviceAccountName": release.name("steps"),
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "xcom", "emptyDir": {}}],
        "containers": [
            {
                "name": "base",
                "image": "python:3.11-slim-bookworm",
                "command": ["true"],
                "env": [
                    {
                        "name": "MLSHIP_SOURCE_HEADERS",
                        "valueFrom": {
                            "secretKeyRef": {"name": SOURCE_HEADERS_SECRET, "key": SOURCE_HEADERS_KEY}
                        },
                    }
                ],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            },
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "probe-"},
        "spec": {**base, **spec},
    }


def create_as_airflow(release: Release, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl_as(release, "airflow", "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))


def refused(proc: subprocess.CompletedProcess[str], message: str) -> bool:
    return proc.returncode != 0 and "forbidden" in proc.stderr.lower() and message in proc.stderr


def test_a_step_pods_account_can_do_nothing_with_the_api(release: Release) -> None:
    for verb, resource in (
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("list", "pods"),
        ("get", "configmaps"),
    ):
        proc = run(
            "kubectl",
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            release.namespace,
            f"--as={account(release, 'steps')}",
        )
        assert proc.stdout.strip() == "no", (
            f"the steps' ServiceAccount may {verb} {resource}: {proc.stdout}{proc.stderr}"
        )
    sa = release.core.read_namespaced_service_account(release.name("steps"), release.namespace)
    assert sa.automount_service_account_token is False


def test_airflow_can_start_a_step_pod(release: Release) -> None:
    # without this, every refusal below could be a policy that refuses everything
    proc = create_as_airflow(release, step_pod(release))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("attack", "spec", "message"),
    [
        (
            "run as the operator's account",
            {"serviceAccountName": "mlship-operator"},
            "Airflow may create only step pods, which run as ServiceAccount mlship-steps"
            " (this pod: mlship-operator)",
        ),
        ("run as the namespace's default account", {"serviceAccountName": "default"}, "(this pod: default)"),
        (
            "mount an API token",
            {"automountServiceAccountToken": True},
            "must not mount a ServiceAccount token",
        ),
        (
            "mount PostgreSQL's Secret",
            {"volumes": [{"name": "s", "secret": {"secretName": "mlship-postgresql"}}]},
            "emptyDir volumes only",
        ),
        (
            "mount a token by projection",
            {
                "volumes": [
                    {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
                ]
            },
            "emptyDir volumes only",
        ),
    ],
)
def test_airflow_cannot_start_any_other_pod(
    release: Release, attack: str, spec: dict[str, Any], message: str
) -> None:
    proc = create_as_airflow(release, step_pod(release, **spec))
    assert refused(proc, message), f"{attack}: {proc.returncode} {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("secret", ["mlship-postgresql", "mlship-airflow"])
def test_airflow_cannot_hand_a_step_pod_another_secret(release: Release, secret: str) -> None:
    by_env = step_pod(release)
    by_env["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}
    ]
    by_env_from = step_pod(release)
    by_env_from["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": secret}}]
    for pod in (by_env, by_env_from):
        proc = create_as_airflow(release, pod)
        assert refused(proc, "A step pod may read only the sources' and the alerts' Secrets"), proc.stderr


def test_airflow_cannot_exec_into_change_or_delete_postgresql(release: Release) -> None:
    [pod] = release.pods("app.kubernetes.io/component=postgresql")
    name = pod.metadata.name
    container = pod.spec.containers[0].name
    attempts = {
        "exec": kubectl_as(release, "airflow", "exec", name, "-c", container, "--", "true"),
        "set image": kubectl_as(
            release, "airflow", "set", "image", f"pod/{name}", f"{container}=evil", "--dry-run=server"
        ),
        "delete": kubectl_as(release, "airflow", "delete", "pod", name, "--dry-run=server"),
    }
    assert refused(attempts["exec"], "may only exec into the XCom sidecar"), attempts["exec"].stderr
    assert refused(attempts["set image"], "Airflow may update only step pods"), attempts["set image"].stderr
    assert refused(attempts["delete"], "Airflow may delete only step pods"), attempts["delete"].stderr
    # and PostgreSQL is untouched
    [after] = release.pods("app.kubernetes.io/component=postgresql")
    assert after.metadata.uid == pod.metadata.uid
    assert after.spec.containers[0].image == pod.spec.containers[0].image
