"""Promotion benchmark: time from moving an MLflow alias to the new version answering.

On the real cluster (KUBECONFIG, e.g. `eval "$(hack/cluster env)"`), with the operator's DEFAULT
settings (registry poll every 5 s, ...): N promotions alternating between two real iris forests.

    .venv/bin/python benchmarks/promotion.py [--promotions 5] [--timeout 180]

Set-up: a local `mlflow server` (127.0.0.1) that pods reach through a reverse proxy at the node's
IP; the operator (`python -m mlship_operator`) on the host, watching one fresh namespace; one
ModelDeployment (defaults: 1 replica). A probe pod calls the Service by its DNS name,
GET /metadata every 150 ms on a new connection, and prints a timestamped line whenever the version
that answered changes; pod and host share the node's clock. The clock starts right before
MlflowClient.set_registered_model_alias. Promotions are 2–8 s apart (random, seeded), so they fall
at random points of the operator's poll cycle.

Per promotion it prints when (seconds after the alias move), as seen from the host polling the
API every 0.25 s: the operator put the new version in the Deployment's pod template, the new pod
appeared, it became Ready; then when the probe first got an answer from the new version (THE
figure), when the old version stopped answering, and when the CR reported the new version Ready
with the old pod gone. Also the serving process's own "ready in" (model load + self-test).
This prints figures; it is not a test and asserts nothing. Everything is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the operator harness the cluster tests use, the helpers it imports, and hack/devkit.py
sys.path[:0] = [str(REPO / "tests" / "cluster"), str(REPO / "tests"), str(REPO / "hack")]

from devkit import MlflowServer, wait_for  # noqa: E402
from kubernetes import client, config  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from operator_harness import (  # noqa: E402
    SERVING_IMAGE,
    HttpForwarder,
    Operator,
    apply_crd,
    client_lines,
    condition,
    create_cr,
    delete_crs,
    get_cr,
    has_image,
    node_ip_and_images,
    register_forests,
    start_client,
    template_version,
)

NAME = "iris"
INSTANCE = f"app.kubernetes.io/instance={NAME}"
VERSION_LABEL = "mlship.io/model-version"
POLL = 0.25


@dataclass
class Promotion:
    source: str
    target: str
    marks: dict[str, float] = field(default_factory=dict)  # seconds after the alias move
    load_seconds: float | None = None  # the serving process's "ready in"


class Cluster:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.objects = client.CustomObjectsApi()

    def serving(self, version: str) -> dict | None:
        got = get_cr(self.objects, self.namespace, NAME)
        ready = condition(got, "Ready").get("status") == "True"
        return got if ready and got["status"].get("servingVersion") == version else None

    def pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=INSTANCE).items

    def template_version(self) -> str | None:
        return template_version(self.apps.read_namespaced_deployment(NAME, self.namespace))

    def probe_switches(self) -> list[dict]:
        return [line for line in client_lines(self.core, self.namespace, "probe")
                if "version" in line]


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def promote(kube: Cluster, mlflow: MlflowClient, model: str, source: str, target: str,
            timeout: float) -> Promotion:
    result = Promotion(source, target)
    marks = result.marks
    new_pod = None
    t0 = time.time()
    mlflow.set_registered_model_alias(model, "champion", target)
    deadline = time.monotonic() + timeout
    while not {"applied", "pod", "pod_ready", "answer", "settled"} <= marks.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"promotion {source}→{target}: after {timeout:g}s only {marks}")
        now = time.time() - t0
        if "applied" not in marks and kube.template_version() == target:
            marks["applied"] = now
        pods = kube.pods()
        for pod in pods:
            if pod.metadata.labels.get(VERSION_LABEL) == target and not (
                    pod.metadata.deletion_timestamp):
                new_pod = pod.metadata.name
                marks.setdefault("pod", now)
                if is_ready(pod):
                    marks.setdefault("pod_ready", now)
        switches = [s for s in kube.probe_switches() if s["t"] >= t0]
        if "answer" not in marks:
            first = next((s for s in switches if s["version"] == target), None)
            if first:
                marks["answer"] = first["t"] - t0
        if "answer" in marks and "settled" not in marks and kube.serving(target) and all(
                p.metadata.labels.get(VERSION_LABEL) == target for p in pods):
            marks["settled"] = now  # CR Ready with the new version, the old pod gone
        time.sleep(POLL)
    time.sleep(1)  # any answer from the old version after its pod went is a late switch back
    switches = [s for s in kube.probe_switches() if s["t"] >= t0]
    if switches and switches[-1]["version"] == target:
        marks["only_new"] = switches[-1]["t"] - t0  # from here on, only the new version answered
    if new_pod:
        log = kube.core.read_namespaced_pod_log(new_pod, kube.namespace, _preload_content=False)
        found = re.search(r"ready in ([\d.]+)s", log.data.decode(errors="replace"))
        result.load_seconds = float(found.group(1)) if found else None
    return result


COLUMNS = [
    ("applied", "template"),
    ("pod", "pod seen"),
    ("pod_ready", "pod Ready"),
    ("answer", "1st answer"),
    ("only_new", "only new"),
    ("settled", "CR Ready+old gone"),
]


def report(results: list[Promotion]) -> None:
    print("\nseconds after set_registered_model_alias (host polls the API every 0.25 s; the probe"
          " calls /metadata every 0.15 s)")
    header = f"{'#':>2} {'versions':>8} " + " ".join(f"{title:>17}" for _, title in COLUMNS)
    print(header + f" {'server ready in':>15}")
    for i, r in enumerate(results, 1):
        cells = " ".join(f"{r.marks[k]:>17.1f}" if k in r.marks else f"{'-':>17}"
                         for k, _ in COLUMNS)
        load = f"{r.load_seconds:.1f}" if r.load_seconds is not None else "-"
        print(f"{i:>2} {r.source + '→' + r.target:>8} {cells} {load:>15}")
    for key, title in COLUMNS:
        values = [r.marks[key] for r in results if key in r.marks]
        if values:
            print(f"{title:>17}: median {statistics.median(values):5.1f}  "
                  f"min {min(values):5.1f}  max {max(values):5.1f}  (n={len(values)})")
    answers = [r.marks["answer"] for r in results]
    print(f"\nalias move → new version answering through the Service: median "
          f"{statistics.median(answers):.1f} s (target ≤ 15 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--promotions", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=180, help="seconds per promotion")
    parser.add_argument("--seed", type=int, default=0, help="for the pauses between promotions")
    args = parser.parse_args()
    if not 1 <= args.promotions <= 50:
        parser.error("--promotions must be between 1 and 50")

    config.load_kube_config()
    core = client.CoreV1Api()
    node_ip, images = node_ip_and_images(core)
    if not has_image(images, SERVING_IMAGE):
        sys.exit(f"the serving image {SERVING_IMAGE} is not in the cluster")
    print(f"load average at start: {os.getloadavg()}; node {node_ip}; image {SERVING_IMAGE}")

    namespace = f"bench-promotion-{uuid.uuid4().hex[:5]}"
    kube = Cluster(namespace)
    operators: list[Operator] = []
    with tempfile.TemporaryDirectory() as tmp, \
            MlflowServer(Path(tmp), log=Path(tmp) / "mlflow.log") as mlflow_server:
        uri = mlflow_server.uri
        proxy = HttpForwarder(uri)
        model, versions = register_forests(uri, 2, prefix="bench")
        apply_crd(client.ApiClient())
        core.create_namespace({"metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        try:
            # Defaults for everything but where MLflow is and which namespace to watch.
            operators.append(Operator({
                "MLFLOW_TRACKING_URI": uri,
                "MLSHIP_SERVING_TRACKING_URI": f"http://{node_ip}:{proxy.port}",
                "MLSHIP_WATCH_NAMESPACES": namespace,
            }, Path(tmp) / "operator.log"))
            create_cr(kube.objects, namespace, NAME, {"model": model})
            got = wait_for(f"version {versions[0]} Ready", lambda: kube.serving(versions[0]), 300, POLL,
                           retry=())
            start_client(core, namespace, "probe", got["status"]["url"], threads=1, pause=0.15,
                         limit=args.promotions * args.timeout + 300)
            wait_for("the probe's first answer", kube.probe_switches, 120, POLL, retry=())

            mlflow = MlflowClient(tracking_uri=uri)
            results = []
            pause = random.Random(args.seed)
            for i in range(args.promotions):
                source, target = versions[i % 2], versions[(i + 1) % 2]
                results.append(promote(kube, mlflow, model, source, target, args.timeout))
                r = results[-1]
                print(f"promotion {i + 1}: {source}→{target} first answer after "
                      f"{r.marks['answer']:.1f} s", flush=True)
                # A random pause, so the alias moves fall at random points of the operator's
                # poll cycle (5 s polls on 2 s ticks) instead of in step with it.
                time.sleep(2 + pause.uniform(0, 6))
            report(results)
            print(f"load average at end: {os.getloadavg()}")
        finally:
            delete_crs(kube.objects, namespace, operators)
            core.delete_namespace(namespace)
            proxy.stop()


if __name__ == "__main__":
    main()
