"""`make up`: bring mlship up on the current cluster and run its main job, end to end.

Stages: pick the cluster (the current kind or minikube context, else hack/cluster on a bare
Linux machine) -> build the images -> load them the way that cluster expects -> helm install ->
apply the example ModelDeployment -> trigger mlship_training through Airflow's REST API and wait
-> wait until the champion answers a prediction -> print where to look.

Safe to re-run: helm upgrade --install, kubectl apply, and training is triggered again only when
no champion exists yet (or with --retrain). `make down` uninstalls (hack/up.py --down).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from devkit import DAG, Airflow, AirflowError, PortForwardFailed, WaitTimeout, port_forward, wait_for

ROOT = Path(__file__).resolve().parents[1]
IRIS_ROW = {"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)",
                                            "petal length (cm)", "petal width (cm)"],
                                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str, look: str) -> None:
        super().__init__(f"{stage} failed: {message}\n  look at: {look}")


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def sh(*cmd: str, stage: str, look: str, timeout: float = 1800, env: dict[str, str] | None = None,
       capture: bool = False, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, text=True, timeout=timeout, env=env, check=False, input=stdin,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-5:] if capture else []
        raise StageFailed(stage, f"`{' '.join(cmd)}` exited {proc.returncode} " + " | ".join(detail), look)
    return proc.stdout or ""


@contextmanager
def stage_of(stage: str, look: str) -> Iterator[None]:
    """A wait that timed out, a port-forward that died or a request Airflow refused fails `stage`,
    saying where to look."""
    try:
        yield
    except (WaitTimeout, PortForwardFailed, AirflowError) as exc:
        raise StageFailed(stage, str(exc), look) from exc


def current_context() -> str:
    if shutil.which("kubectl") is None:
        return ""
    proc = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def pick_cluster(env: dict[str, str]) -> str:
    """'kind:<name>', 'minikube' or 'hack' (bringing hack/cluster up); updates env for kubectl."""
    ctx = current_context()
    if ctx.startswith("kind-"):
        return f"kind:{ctx.removeprefix('kind-')}"
    if ctx == "minikube":
        return "minikube"
    if ctx == "mlship" and os.environ.get("KUBECONFIG", "").startswith("/var/lib/mlship-cluster"):
        return "hack"
    if sys.platform != "linux" or os.geteuid() != 0:
        raise StageFailed("cluster", f"the current context {ctx!r} is neither kind nor minikube, and "
                          "bringing up hack/cluster (a local Kubernetes) needs root on Linux",
                          "`kind create cluster` or `minikube start`, then `make up`; "
                          "or, on bare Linux, `sudo make up`")
    say("no kind or minikube context: bringing up hack/cluster (first time ~16 min)")
    sh(str(ROOT / "hack/cluster"), "up", stage="cluster", look="/var/lib/mlship-cluster/logs/")
    line = sh(str(ROOT / "hack/cluster"), "env", stage="cluster", look="hack/cluster status",
              capture=True).split()
    for assignment in line[1:]:
        key, value = assignment.split("=", 1)
        env[key] = value.replace("$PATH", env["PATH"])
    os.environ.update(env)
    return "hack"


def need_tools(cluster: str) -> None:
    """kind and minikube machines bring their own tools; say which is missing and how to get it."""
    if cluster == "hack":
        return  # hack/cluster builds helm and kubectl, and starts dockerd
    wanted = {"docker": "Docker Engine (Debian: sudo apt-get install -y docker.io; then "
                        "sudo usermod -aG docker $USER and log in again)",
              "helm": "Helm 3 (https://helm.sh/docs/intro/install/)",
              "kubectl": "kubectl (https://kubernetes.io/docs/tasks/tools/)"}
    if cluster.startswith("kind:"):
        wanted["kind"] = "kind (https://kind.sigs.k8s.io/docs/user/quick-start/)"
    else:
        wanted["minikube"] = "minikube (https://minikube.sigs.k8s.io/docs/start/)"
    missing = [how for tool, how in wanted.items() if shutil.which(tool) is None]
    if missing:
        raise StageFailed("tools", "missing: " + "; ".join(missing), "install them, then run make up again")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        raise StageFailed("tools", "Docker is installed but not answering (`docker info` failed)",
                          "sudo systemctl start docker; without sudo: add yourself to the docker "
                          "group (sudo usermod -aG docker $USER) and log in again")


def settle_release(ns: str, release: str) -> None:
    """A `make up` stopped half-way leaves the release pending-install/-upgrade, and helm then
    refuses every operation: roll a pending upgrade back, remove a pending install (its data
    volume and generated secrets are kept by helm.sh/resource-policy: keep)."""
    proc = subprocess.run(["helm", "status", release, "-n", ns, "-o", "json"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return  # no such release yet
    status = json.loads(proc.stdout).get("info", {}).get("status", "")
    look = f"helm history {release} -n {ns}"
    if status in ("pending-upgrade", "pending-rollback"):
        say(f"      release {release} was left {status} by an interrupted run: rolling it back")
        sh("helm", "rollback", release, "-n", ns, "--wait", "--timeout", "10m", stage="chart", look=look)
    elif status == "pending-install":
        say(f"      release {release} was left {status} by an interrupted run: removing it (data kept)")
        sh("helm", "uninstall", release, "-n", ns, "--wait", stage="chart", look=look)


def built_images() -> list[str]:
    out = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", stage="images",
             look="docker images", capture=True)
    return sorted({i for i in out.split() if i.startswith("mlship-") and i.endswith(":dev")})


def load_images(cluster: str, images: list[str], env: dict[str, str]) -> None:
    if cluster.startswith("kind:"):
        sh("kind", "load", "docker-image", "--name", cluster.split(":", 1)[1], *images,
           stage="load", look="kind get clusters")
    elif cluster == "minikube":
        for image in images:
            sh("minikube", "image", "load", image, stage="load", look="minikube image ls")
    else:
        sh(str(ROOT / "hack/cluster"), "load", *images, stage="load", look="hack/cluster status", env=env)


def secret_value(ns: str, name: str, key: str) -> str:
    out = sh("kubectl", "-n", ns, "get", "secret", name, "-o", f"jsonpath={{.data.{key}}}",
             stage="training", look=f"kubectl -n {ns} get secret {name}", capture=True)
    return base64.b64decode(out).decode()


def has_champion(mlflow_url: str, model: str) -> bool:
    resp = requests.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": model, "alias": "champion"}, timeout=30)
    return resp.ok


def train(ns: str, release: str, model: str, dataset: str, retrain: bool) -> str:
    stage, look = "training", f"the Airflow UI (DAG {DAG}), kubectl -n {ns} get pods"
    with stage_of(stage, f"kubectl -n {ns} get svc/{release}-mlflow"), \
            port_forward(ns, f"svc/{release}-mlflow", 5000) as mlflow_url:
        if has_champion(mlflow_url, model) and not retrain:
            say(f"model {model!r} already has a champion: not retraining (--retrain to force)")
            return "skipped"
    password = secret_value(ns, f"{release}-airflow", "admin-password")
    api_server = f"svc/{release}-airflow-api-server"
    with stage_of(stage, f"kubectl -n {ns} get {api_server}"), port_forward(ns, api_server, 8080) as url, \
            stage_of(stage, look):
        airflow = Airflow.connect(url, password, timeout=300)
        run_id = airflow.trigger({"dataset": dataset, "model_name": model}, dag=DAG)
        say(f"triggered {DAG} run {run_id}; waiting for its six step pods")
        state = airflow.wait_run(run_id, 1800, dag=DAG, interval=5)
        if state != "success":
            failed = [t for t, ti in airflow.tasks(run_id, dag=DAG).items() if ti["state"] == "failed"]
            raise StageFailed(stage, f"run {run_id} {state} (failed tasks: {failed})",
                              f"the task logs in the Airflow UI; {look}")
        return run_id


# Degraded reasons that say the version itself failed: no point waiting out the timeout.
VERSION_FAILED = ("RolloutFailed", "RolledBack")


def serving_ready(ns: str, name: str) -> bool:
    out = sh("kubectl", "-n", ns, "get", f"mldep/{name}", "-o", "json", stage="serving",
             look=f"kubectl -n {ns} describe mldep {name}", capture=True)
    conds = {c["type"]: c for c in json.loads(out).get("status", {}).get("conditions", [])}
    degraded = conds.get("Degraded", {})
    if degraded.get("status") == "True" and degraded.get("reason") in VERSION_FAILED:
        raise StageFailed("serving", f"the champion cannot serve: {degraded.get('message')}",
                          f"kubectl -n {ns} describe mldep {name}; kubectl -n {ns} logs -l "
                          f"app.kubernetes.io/instance={name}")
    return conds.get("Ready", {}).get("status") == "True"


def predict(ns: str, name: str) -> Any:
    stage, look = "serving", f"kubectl -n {ns} describe mldep {name}"
    with stage_of(stage, look):
        wait_for(f"ModelDeployment {name} Ready", lambda: serving_ready(ns, name), 600, 3)
    with stage_of(stage, f"kubectl -n {ns} get svc/{name}"), port_forward(ns, f"svc/{name}", 80) as url, \
            stage_of(stage, look):
        # a Response is truthy when it answered 2xx or 3xx
        resp = wait_for("a prediction", lambda: requests.post(
            f"{url}/invocations", json=IRIS_ROW, timeout=30), 120, 3)
        if not resp.ok:
            raise StageFailed(stage, f"/invocations answered {resp.status_code}: {resp.text}", look)
        return resp.json()


def up(a: argparse.Namespace) -> None:
    env = dict(os.environ)
    say("[1/6] cluster")
    cluster = pick_cluster(env)
    say(f"      using {cluster} (context {current_context()})")
    need_tools(cluster)
    say("[2/6] images: hack/build-images")
    if cluster == "hack":
        sh(str(ROOT / "hack/cluster"), "images", stage="images", look="hack/cluster images")
    sh(str(ROOT / "hack/build-images"), stage="images", look="docker build output above")
    images = built_images()
    say(f"      loading {len(images)} images into {cluster}")
    load_images(cluster, images, env)
    say(f"[3/6] chart: helm upgrade --install {a.release} -n {a.namespace}")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": a.namespace, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}}
    sh("kubectl", "apply", "-f", "-", stage="chart", look="kubectl get ns", capture=True,
       stdin=json.dumps(namespace))
    sh("kubectl", "label", "--overwrite", "namespace", a.namespace,
       "pod-security.kubernetes.io/enforce=restricted", stage="chart", look="kubectl get ns", capture=True)
    # Helm installs crds/ once and never upgrades them: apply the CRD so a re-run brings new fields.
    sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "charts/mlship/crds"),
       stage="chart", look="kubectl get crd modeldeployments.mlship.io -o yaml", capture=True)
    settle_release(a.namespace, a.release)
    sh("helm", "upgrade", "--install", a.release, str(ROOT / "charts/mlship"), "-n", a.namespace,
       "--wait", "--timeout", "20m", stage="chart", look=f"kubectl -n {a.namespace} get pods,events")
    say("[4/6] serving: apply the ModelDeployment (it waits for a champion)")
    manifest = {"apiVersion": "mlship.io/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": a.model, "namespace": a.namespace},
                "spec": {"model": a.model, "alias": "champion"}}
    sh("kubectl", "apply", "-f", "-", stage="serving", look="kubectl get crd modeldeployments.mlship.io",
       capture=True, stdin=json.dumps(manifest))
    say("[5/6] training: trigger mlship_training through Airflow's REST API")
    run_id = train(a.namespace, a.release, a.model, a.dataset, a.retrain)
    say(f"      {run_id}")
    say("[6/6] prediction: wait until the champion answers")
    answer = predict(a.namespace, a.model)
    ns, rel = a.namespace, a.release
    print(f"""
mlship is up. The champion {a.model!r} answered: {json.dumps(answer)}

  Airflow UI:  kubectl -n {ns} port-forward svc/{rel}-airflow-api-server 8080:8080  -> http://localhost:8080
               user admin, password:
               kubectl -n {ns} get secret {rel}-airflow -o jsonpath='{{.data.admin-password}}' | base64 -d
  MLflow UI:   kubectl -n {ns} port-forward svc/{rel}-mlflow 5000:5000  -> http://localhost:5000
  Predictions: kubectl -n {ns} port-forward svc/{a.model} 8081:80
               curl -s localhost:8081/invocations -H 'Content-Type: application/json' \\
                 -d '{json.dumps(IRIS_ROW)}'
  Status:      kubectl -n {ns} get mldep {a.model} -o wide
  Drift:       the DAG mlship_drift (hourly once unpaused in the Airflow UI) compares what the model
               is asked with its training data; reports in MLflow's experiment mlship-drift
""")


def down(a: argparse.Namespace) -> None:
    subprocess.run(["kubectl", "-n", a.namespace, "delete", "mldep", a.model, "--ignore-not-found",
                    "--wait"], check=False)
    subprocess.run(["helm", "uninstall", a.release, "-n", a.namespace, "--wait"], check=False)
    say(f"uninstalled; the namespace {a.namespace} keeps the database and artifact volumes "
        f"(kubectl delete namespace {a.namespace} removes them)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--down", action="store_true", help="uninstall instead")
    p.add_argument("--namespace", default="mlship")
    p.add_argument("--release", default="mlship")
    p.add_argument("--model", default="iris")
    p.add_argument("--dataset", default="sklearn:iris")
    p.add_argument("--retrain", action="store_true", help="trigger training even if a champion exists")
    a = p.parse_args()
    try:
        (down if a.down else up)(a)
    except StageFailed as exc:
        print(f"\nmake up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
