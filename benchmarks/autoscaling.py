"""Autoscaling benchmark: a ModelDeployment with spec.autoscaling under sustained load, scaling out
and back in, with the timeline a person would watch.

On the real cluster (KUBECONFIG, e.g. `eval "$(hack/cluster env)"`), which needs a metrics server
(hack/cluster runs one):

    .venv/bin/python benchmarks/autoscaling.py [--rate 300] [--load-seconds 180] [--max-replicas 4]

Set-up, as benchmarks/promotion.py: a local `mlflow server` that pods reach through a reverse proxy
at the node's IP, the operator (`python -m mlship_operator`) on the host watching one fresh
namespace, one real iris forest. The ModelDeployment starts at 1 replica with
`autoscaling {minReplicas: 1, maxReplicas, targetCPUUtilizationPercentage, scaleDownStabilizationSeconds}`
and a CPU limit per pod (`--cpu-request`, `--cpu-limit`), as pods have in production: one pod
cannot take the whole machine, so more pods are more capacity even on one node.

Load comes from a pod inside the cluster: open loop at `--rate` requests/s of one iris row to the
Service (POST /invocations, a new connection each), whatever the answers' speed, so a slow server
shows as latency (measured from each request's scheduled time: queueing counts) rather than as
fewer requests. After `--load-seconds` the rate drops to `--low-rate` and the benchmark watches
the scale-in, under that traffic, for up to `--settle-seconds`.

Every 10 s it prints: the CR's replicas (spec, i.e. what the autoscaler asked for, and ready), the
autoscaler's current CPU utilisation, and the load pod's requests/s, failures, p50 and p99 over
those 10 s. At the end: when it scaled out, the p99 of the first and of the last loaded window
against `--p99-target-ms`, when it was back at 1 replica, and the failed requests of all sent.
It prints figures; it is not a test and asserts nothing. Everything is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "cluster"), str(REPO / "tests"), str(REPO / "hack")]

from cluster_helpers import python_pod  # noqa: E402
from devkit import MlflowServer, wait_for  # noqa: E402
from kubernetes import client, config  # noqa: E402
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
    iris_request,
    node_ip_and_images,
    register_forests,
)

NAME = "iris"
WINDOW = 10.0

# Runs in the load pod (stdlib only). A pacer thread puts one scheduled time per request on a
# queue at the given rate; workers take them and POST on a new connection each (so the Service
# spreads the load over the pods as they come). Latency counts from the scheduled time. Every
# WINDOW seconds it prints one JSON line for the window; it stops at /tmp/stop or the time limit.
LOAD_SCRIPT = r"""
import json, os, queue, sys, threading, time, urllib.error, urllib.request

url, body = sys.argv[1] + "/invocations", sys.argv[2].encode()
rate, workers, high, window = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
low_rate, limit = float(sys.argv[7]), high + float(sys.argv[8])  # then a low rate, while it scales in
jobs = queue.Queue()
lock = threading.Lock()
latencies, failures, errors = [], [0], []
start = time.time()
stop = threading.Event()

def pacer():
    due = start
    while not stop.is_set():
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        jobs.put(due)
        due += 1 / (rate if due - start < high else low_rate)

def worker():
    while True:
        due = jobs.get()
        if due is None:
            return
        try:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
                ok = resp.status == 200
                error = None if ok else f"HTTP {resp.status}"
        except Exception as e:
            ok, error = False, f"{type(e).__name__}: {e}"
        with lock:
            if ok:
                latencies.append(time.time() - due)
            else:
                failures[0] += 1
                if len(errors) < 5:
                    errors.append(error)

def pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] if values else None

threading.Thread(target=pacer, daemon=True).start()
pool = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
for w in pool:
    w.start()
k = 1
while True:
    time.sleep(max(0.0, start + k * window - time.time()))
    done = os.path.exists("/tmp/stop") or time.time() - start >= limit
    with lock:
        got, failed, errs = sorted(latencies), failures[0], list(errors)
        latencies.clear(); failures[0] = 0; errors.clear()
    print(json.dumps({"t": time.time(), "ok": len(got), "failed": failed, "errors": errs,
                      "p50": pct(got, 0.50), "p99": pct(got, 0.99), "backlog": jobs.qsize()}),
          flush=True)
    k += 1
    if done:
        stop.set()
        for _ in pool:
            jobs.put(None)
        break
"""


def start_load(core: client.CoreV1Api, namespace: str, url: str, args: argparse.Namespace) -> None:
    pod = python_pod("load", LOAD_SCRIPT, container={
        "args": [url.rstrip("/"), iris_request(), str(args.rate), str(args.workers),
                 str(args.load_seconds), str(WINDOW), str(args.low_rate), str(args.settle_seconds)],
        # the load must not starve for CPU behind the pods it measures
        "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    })
    pod["spec"]["activeDeadlineSeconds"] = int(args.load_seconds + args.settle_seconds) + 120
    core.create_namespaced_pod(namespace, pod)


def utilization(namespace: str) -> int | None:
    hpa = client.AutoscalingV2Api().read_namespaced_horizontal_pod_autoscaler(NAME, namespace)
    for metric in (hpa.status.current_metrics or []):
        if metric.resource is not None and metric.resource.current is not None:
            return metric.resource.current.average_utilization
    return None


def row(elapsed: float, cr: dict[str, Any], util: int | None, window: dict | None) -> str:
    status = cr.get("status") or {}
    cells = [f"{elapsed:6.0f}", f"{cr['spec'].get('replicas', '-'):>8}",
             f"{status.get('readyReplicas', 0):>6}", f"{util if util is not None else '-':>6}"]
    if window:
        p50, p99 = window["p50"], window["p99"]
        cells += [f"{window['ok'] / WINDOW:8.0f}", f"{window['failed']:>6}",
                  f"{p50 * 1000:8.1f}" if p50 is not None else f"{'-':>8}",
                  f"{p99 * 1000:8.1f}" if p99 is not None else f"{'-':>8}"]
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300, help="requests/s the load pod sends")
    parser.add_argument("--workers", type=int, default=32, help="the load pod's concurrent requests")
    parser.add_argument("--load-seconds", type=float, default=180)
    parser.add_argument("--settle-seconds", type=float, default=240,
                        help="after the load, how long to watch the scale-in (at --low-rate)")
    parser.add_argument("--low-rate", type=float, default=20,
                        help="requests/s after the load: the scale-in happens under traffic")
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--target-cpu", type=int, default=60, help="targetCPUUtilizationPercentage")
    parser.add_argument("--scale-down-seconds", type=int, default=30,
                        help="scaleDownStabilizationSeconds (the autoscaler's default is 300)")
    parser.add_argument("--cpu-request", default="200m")
    parser.add_argument("--cpu-limit", default="250m")
    parser.add_argument("--p99-target-ms", type=float, default=100)
    args = parser.parse_args()

    config.load_kube_config()
    core = client.CoreV1Api()
    node_ip, images = node_ip_and_images(core)
    if not has_image(images, SERVING_IMAGE):
        sys.exit(f"the serving image {SERVING_IMAGE} is not in the cluster")
    try:
        client.CustomObjectsApi().list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    except client.ApiException as err:
        sys.exit(f"no metrics server answers metrics.k8s.io ({err.status} {err.reason}): "
                 "an autoscaler cannot see CPU without one")
    print(f"load average at start: {os.getloadavg()}; node {node_ip}; {vars(args)}")

    namespace = f"bench-autoscaling-{uuid.uuid4().hex[:5]}"
    objects = client.CustomObjectsApi()
    operators: list[Operator] = []
    with tempfile.TemporaryDirectory() as tmp, \
            MlflowServer(Path(tmp), log=Path(tmp) / "mlflow.log") as mlflow_server:
        uri = mlflow_server.uri
        proxy = HttpForwarder(uri)
        model, _ = register_forests(uri, 1, prefix="bench-scale")
        apply_crd(client.ApiClient())
        core.create_namespace({"metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        try:
            operators.append(Operator({
                "MLFLOW_TRACKING_URI": uri,
                "MLSHIP_SERVING_TRACKING_URI": f"http://{node_ip}:{proxy.port}",
                "MLSHIP_WATCH_NAMESPACES": namespace,
            }, Path(tmp) / "operator.log"))
            create_cr(objects, namespace, NAME, {
                "model": model,
                "resources": {"requests": {"cpu": args.cpu_request, "memory": "256Mi"},
                              "limits": {"cpu": args.cpu_limit, "memory": "1Gi"}},
                "autoscaling": {"minReplicas": 1, "maxReplicas": args.max_replicas,
                                "targetCPUUtilizationPercentage": args.target_cpu,
                                "scaleDownStabilizationSeconds": args.scale_down_seconds},
            })

            def ready() -> dict | None:
                got = get_cr(objects, namespace, NAME)
                return got if condition(got, "Ready").get("status") == "True" else None

            got = wait_for("the first version Ready", ready, 300, 1, retry=())
            wait_for("the autoscaler to read the pods' CPU",
                     lambda: utilization(namespace) is not None, 180, 2, retry=())
            start_load(core, namespace, got["status"]["url"], args)
            print(f"\n{'s':>6}  {'replicas':>8}  {'ready':>6}  {'cpu %':>6}  {'req/s':>8}  "
                  f"{'failed':>6}  {'p50 ms':>8}  {'p99 ms':>8}")
            t0 = time.time()
            windows: list[dict] = []
            timeline: list[tuple[float, int, int]] = []
            end = t0 + args.load_seconds + args.settle_seconds
            settled: int | None = None
            while time.time() < end:
                time.sleep(WINDOW - (time.time() - t0) % WINDOW)
                cr = get_cr(objects, namespace, NAME)
                lines = [line for line in client_lines(core, namespace, "load") if "ok" in line]
                new = lines[len(windows):]
                windows.extend(new)
                replicas = int(cr["spec"].get("replicas", 1))
                ready_n = int((cr.get("status") or {}).get("readyReplicas", 0))
                timeline.append((time.time() - t0, replicas, ready_n))
                print(row(time.time() - t0, cr, utilization(namespace), new[-1] if new else None),
                      flush=True)
                if time.time() - t0 > args.load_seconds + WINDOW and replicas == 1 and ready_n == 1:
                    settled = settled + 1 if settled is not None else 0
                    if settled >= 2:  # two more windows of traffic once back at one pod
                        break
            summary(args, t0, windows, timeline)
            print(f"load average at end: {os.getloadavg()}")
        finally:
            delete_crs(objects, namespace, operators)
            core.delete_namespace(namespace)
            proxy.stop()


def summary(args: argparse.Namespace, t0: float, windows: list[dict],
            timeline: list[tuple[float, int, int]]) -> None:
    sent = sum(w["ok"] + w["failed"] for w in windows)
    failed = sum(w["failed"] for w in windows)
    top = max((r for _, r, _ in timeline), default=1)
    out = next((t for t, r, _ in timeline if r > 1), None)
    full = next((t for t, r, ready in timeline if r == top and ready == top), None)
    back = next((t for t, r, ready in timeline if t > args.load_seconds and r == 1), None)
    loaded = [w for w in windows if w["p99"] is not None and w["t"] - t0 <= args.load_seconds + 1]
    print(f"\nscaled out to {top} replicas (max {args.max_replicas}): first above 1 at "
          f"{out if out is None else round(out)} s, all {top} ready at "
          f"{full if full is None else round(full)} s; back at 1 replica at "
          f"{back if back is None else round(back)} s (load stopped at {args.load_seconds:g} s)")
    if loaded:
        first, last = loaded[0]["p99"] * 1000, loaded[-1]["p99"] * 1000
        print(f"p99 of the first loaded window {first:.1f} ms, of the last {last:.1f} ms "
              f"(target {args.p99_target_ms:g} ms: {'met' if last <= args.p99_target_ms else 'NOT met'})")
    during = [w for w in windows if w["t"] - t0 > args.load_seconds + 1]
    print(f"failed requests: {failed} of {sent} (of them after the load, while it scaled in: "
          f"{sum(w['failed'] for w in during)} of {sum(w['ok'] + w['failed'] for w in during)})")
    errors = [e for w in windows for e in w.get("errors", [])]
    if errors:
        print(f"first errors: {json.dumps(errors[:5])}")


if __name__ == "__main__":
    main()
