"""Promotion benchmark: time from moving an MLflow alias to the new version answering, per strategy.

On the real cluster (KUBECONFIG, e.g. `eval "$(hack/cluster env)"`), with the operator's DEFAULT
settings (registry poll every 5 s, the default canary and shadow steps, ...): per rollout strategy
(`--strategies`, default Replace and Canary), one ModelDeployment promoted N times between two real
iris forests, the strategies taking turns in one run.

    .venv/bin/python benchmarks/promotion.py [--strategies Replace,Canary] [--promotions 2] [--timeout 180]

Set-up: a local `mlflow server` (127.0.0.1) that pods reach through a reverse proxy at the node's
IP; ONE operator (`python -m mlship_operator`, with a routing key) on the host, watching one fresh
namespace; per strategy its own registered model and a ModelDeployment `iris-<strategy>` (defaults:
1 replica; `spec.rollout: {strategy: S}` unless Replace, so the operator's default steps: Canary
10 % then 50 %, Shadow one step copying 100 %, each held 60 s and judged once the candidate
answered 100 requests). Per CR a probe pod calls the Service by its DNS name from 4 threads, each
looping POST /invocations (the stable pods route only these to a candidate), GET /metadata, a 0.1 s
pause, every request on a new connection; it prints a timestamped line whenever the version that
answered /metadata changes. Pod and host share the node's clock. The clock starts right before
MlflowClient.set_registered_model_alias. Promotions are 2–8 s apart (random, seeded), so they fall
at random points of the operator's poll cycle.

Per promotion it prints when (seconds after the alias move), as seen from the host polling the
API every 0.25 s: for a staged strategy, each step's start and the start of Promoting
(status.rollout); the operator put the new version in the stable Deployment's pod template, the
new pod appeared, it became Ready; the probe's first /metadata answer from the new version; "100 %
new", from when on only the new version answered /metadata (the stable Deployment rolled); and when
the CR reported the new version Ready with the old pod gone. Also the serving process's own "ready
in" (model load + self-test). The summary puts the strategies side by side: alias move → first
answer from the new version (with Canary, its first step: the stable pods forward that share of
POST /invocations to the candidate from then on) and → 100 %, with the probes' request rates,
which a staged step's time depends on. This prints figures; it is not a test and asserts nothing.
Everything is deleted at the end.
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
from mlship_operator.spec import (  # noqa: E402
    CANARY,
    DEFAULT_CANARY_STEPS,
    DEFAULT_SHADOW_STEP,
    REPLACE,
    SHADOW,
    STRATEGIES,
)
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
    start_client,
    stop_client,
    template_version,
)

VERSION_LABEL = "mlship.io/model-version"
POLL = 0.25
# ~25 POST /invocations a second: a 10 % step then reaches its 100 requests in ~40 s, within its
# 60 s. Every CR's probe runs the same, so the strategies share one load.
PROBE_THREADS, PROBE_PAUSE = 4, 0.1
STEPS = {REPLACE: (), CANARY: DEFAULT_CANARY_STEPS, SHADOW: (DEFAULT_SHADOW_STEP,)}


@dataclass
class Promotion:
    source: str
    target: str
    load: float  # 1-minute load average at the alias move
    marks: dict[str, float] = field(default_factory=dict)  # seconds after the alias move
    load_seconds: float | None = None  # the serving process's "ready in"

    @property
    def first_answer(self) -> float | None:
        """When a client first got an answer from the new version: in a canary step from its
        start (status.rollout; the probe does not see which version answered a POST), else when
        the stable Deployment's new pod answered /metadata."""
        return min((self.marks[k] for k in ("canary", "answer") if k in self.marks), default=None)


class ModelDeployment:
    """One ModelDeployment under test: its CR, the stable Deployment and pods, and its probe."""

    def __init__(self, namespace: str, strategy: str, model: str, versions: list[str]) -> None:
        self.namespace, self.strategy, self.model, self.versions = namespace, strategy, model, versions
        # The operator names a candidate's Deployment <name>-canary: no CR here is named so.
        self.name = f"iris-{strategy.lower()}"
        self.probe = f"probe-{self.name}"
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.objects = client.CustomObjectsApi()

    def spec(self) -> dict:
        rollout = {} if self.strategy == REPLACE else {"rollout": {"strategy": self.strategy}}
        return {"model": self.model, **rollout}

    def cr(self) -> dict:
        return get_cr(self.objects, self.namespace, self.name)

    def serving(self, version: str) -> dict | None:
        got = self.cr()
        return got if serves(got, version) else None

    def pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}").items

    def template_version(self) -> str | None:
        return template_version(self.apps.read_namespaced_deployment(self.name, self.namespace))

    def probe_switches(self, since: float = 0) -> list[dict]:
        return [line for line in client_lines(self.core, self.namespace, self.probe)
                if "version" in line and line["t"] >= since]


def serves(cr: dict, version: str) -> bool:
    """Ready with `version`, and no staged rollout under way."""
    status = cr.get("status") or {}
    return (condition(cr, "Ready").get("status") == "True"
            and status.get("servingVersion") == version and not status.get("rollout"))


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def note_rollout(marks: dict[str, float], cr: dict, target: str, now: float) -> None:
    """The staged rollout's steps and Promoting as status.rollout shows them; an abort ends the
    promotion (the version is not tried again until the alias moves)."""
    status = cr.get("status") or {}
    failure = status.get("lastFailure") or {}
    if failure.get("version") == target:
        raise RuntimeError(f"version {target} failed: {failure.get('message')}")
    rollout = status.get("rollout") or {}
    if rollout.get("candidate") != target:
        return
    if rollout.get("phase") == "Analysing":
        marks.setdefault(f"step{rollout.get('step', 0) + 1}", now)
        if rollout.get("mode") == "Canary":
            marks.setdefault("canary", now)
    elif rollout.get("phase") == "Promoting":
        marks.setdefault("promoting", now)


def promote(md: ModelDeployment, mlflow: MlflowClient, source: str, target: str,
            timeout: float) -> Promotion:
    result = Promotion(source, target, os.getloadavg()[0])
    marks = result.marks
    new_pod = None
    t0 = time.time()
    mlflow.set_registered_model_alias(md.model, "champion", target)
    deadline = time.monotonic() + timeout
    while not {"applied", "pod", "pod_ready", "answer", "settled"} <= marks.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"promotion {source}→{target}: after {timeout:g}s only {marks}")
        now = time.time() - t0
        cr = md.cr()
        note_rollout(marks, cr, target, now)
        if "applied" not in marks and md.template_version() == target:
            marks["applied"] = now
        pods = md.pods()
        for pod in pods:
            if pod.metadata.labels.get(VERSION_LABEL) == target and not (
                    pod.metadata.deletion_timestamp):
                new_pod = pod.metadata.name
                marks.setdefault("pod", now)
                if is_ready(pod):
                    marks.setdefault("pod_ready", now)
        if "answer" not in marks:
            first = next((s for s in md.probe_switches(t0) if s["version"] == target), None)
            if first:
                marks["answer"] = first["t"] - t0
        if "answer" in marks and "settled" not in marks and serves(cr, target) and all(
                p.metadata.labels.get(VERSION_LABEL) == target for p in pods):
            marks["settled"] = now  # CR Ready with the new version, the old pod gone
        time.sleep(POLL)
    time.sleep(1)  # any answer from the old version after its pod went is a late switch back
    switches = md.probe_switches(t0)
    if switches and switches[-1]["version"] == target:
        marks["only_new"] = switches[-1]["t"] - t0  # from here on, only the new version answered
    if new_pod:
        log = md.core.read_namespaced_pod_log(new_pod, md.namespace, _preload_content=False)
        found = re.search(r"ready in ([\d.]+)s", log.data.decode(errors="replace"))
        result.load_seconds = float(found.group(1)) if found else None
    return result


COLUMNS = [
    ("applied", "template"),
    ("pod", "pod seen"),
    ("pod_ready", "pod Ready"),
    ("answer", "1st /metadata"),
    ("only_new", "100 % new"),
    ("settled", "CR Ready+old gone"),
]


def columns(strategy: str) -> list[tuple[str, str]]:
    steps = [(f"step{i}", f"step {i} start") for i in range(1, len(STEPS[strategy]) + 1)]
    return steps + ([("promoting", "Promoting")] if steps else []) + COLUMNS


def table(strategy: str, results: list[Promotion]) -> None:
    cols = columns(strategy)
    print(f"\n{strategy}")
    print(f"{'#':>2} {'versions':>8} {'load':>5} " + " ".join(title for _, title in cols)
          + " server ready in")
    for i, r in enumerate(results, 1):
        cells = " ".join(f"{r.marks[k]:>{len(title)}.1f}" if k in r.marks else f"{'-':>{len(title)}}"
                         for k, title in cols)
        load = f"{r.load_seconds:.1f}" if r.load_seconds is not None else "-"
        print(f"{i:>2} {r.source + '→' + r.target:>8} {r.load:>5.1f} {cells} {load:>15}")


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f}, "
            f"n={len(values)})")


def report(results: dict[str, list[Promotion]], probes: dict[str, dict], loads: list[float]) -> None:
    print("\nseconds after set_registered_model_alias (the host polls the API every 0.25 s)")
    for strategy, done in results.items():
        table(strategy, done)

    def row(title: str, cells: list[str]) -> None:
        print(f"{title:<34}" + "".join(f"{cell:>26}" for cell in cells))

    print()
    row("alias move → median (min–max, n)", list(results))
    row("  1st answer from the new version",
        [spread([r.first_answer for r in done if r.first_answer is not None])
         for done in results.values()])
    row("  100 % from the new version",
        [spread([r.marks["only_new"] for r in done if "only_new" in r.marks])
         for done in results.values()])
    row("probe POST /invocations per s",
        [f"{p.get('/invocations', 0) / p['seconds']:.1f}" for p in probes.values()])
    row("probe requests failed", [str(p.get("failed", 0)) for p in probes.values()])
    print("1st answer: with Canary when its first step started; otherwise the probe's first GET\n"
          "/metadata answered by it. 100 %: from then on only the new version answered /metadata.")
    print(f"load average (1 min) at start {loads[0]:.1f}, at end {loads[1]:.1f}")


def strategy_list(value: str) -> list[str]:
    known = {s.lower(): s for s in STRATEGIES}
    chosen = [known.get(name.strip().lower(), name.strip()) for name in value.split(",")]
    unknown = [name for name in chosen if name not in STRATEGIES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {', '.join(map(repr, unknown))}; choose from {', '.join(STRATEGIES)}")
    if len(set(chosen)) < len(chosen):
        raise argparse.ArgumentTypeError(f"{value!r} names a strategy twice")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", type=strategy_list, default=[REPLACE, CANARY],
                        help=f"comma-separated, from {', '.join(STRATEGIES)} (default Replace,Canary)")
    parser.add_argument("--promotions", type=int, default=2, help="per strategy")
    steps_seconds = {s: sum(step.seconds for step in steps) for s, steps in STEPS.items()}
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds per promotion; a staged strategy gets this plus its steps'"
                             f" durations (Canary +{steps_seconds[CANARY]}, Shadow"
                             f" +{steps_seconds[SHADOW]})")
    parser.add_argument("--seed", type=int, default=0, help="for the pauses between promotions")
    args = parser.parse_args()
    if not 1 <= args.promotions <= 50:
        parser.error("--promotions must be between 1 and 50")
    timeouts = {s: args.timeout + steps_seconds[s] for s in args.strategies}

    config.load_kube_config()
    core = client.CoreV1Api()
    node_ip, images = node_ip_and_images(core)
    if not has_image(images, SERVING_IMAGE):
        sys.exit(f"the serving image {SERVING_IMAGE} is not in the cluster")
    loads = [os.getloadavg()[0]]
    print(f"load average at start: {os.getloadavg()}; node {node_ip}; image {SERVING_IMAGE}")

    namespace = f"bench-promotion-{uuid.uuid4().hex[:5]}"
    operators: list[Operator] = []
    with tempfile.TemporaryDirectory() as tmp, \
            MlflowServer(Path(tmp), log=Path(tmp) / "mlflow.log") as mlflow_server:
        uri = mlflow_server.uri
        proxy = HttpForwarder(uri)
        mds = [ModelDeployment(namespace, s, *register_forests(uri, 2, prefix=f"bench-{s.lower()}"))
               for s in args.strategies]
        objects = client.CustomObjectsApi()
        apply_crd(client.ApiClient())
        core.create_namespace({"metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        try:
            # Defaults for everything but where MLflow is, which namespace to watch, and the
            # routing key that staged strategies need.
            operators.append(Operator({
                "MLFLOW_TRACKING_URI": uri,
                "MLSHIP_SERVING_TRACKING_URI": f"http://{node_ip}:{proxy.port}",
                "MLSHIP_WATCH_NAMESPACES": namespace,
                "MLSHIP_ROUTING_KEY": uuid.uuid4().hex,
            }, Path(tmp) / "operator.log"))
            for md in mds:
                create_cr(objects, namespace, md.name, md.spec())
            # the probes outlive every promotion reaching its timeout
            limit = sum(args.promotions * (timeouts[md.strategy] + 10) for md in mds) + 300
            for md in mds:
                got = wait_for(f"{md.name}: version {md.versions[0]} Ready",
                               lambda md=md: md.serving(md.versions[0]), 300, POLL, retry=())
                start_client(core, namespace, md.probe, got["status"]["url"], body=iris_request(),
                             threads=PROBE_THREADS, pause=PROBE_PAUSE, limit=limit)
            for md in mds:
                wait_for(f"{md.probe}'s first answer", md.probe_switches, 120, POLL, retry=())

            mlflow = MlflowClient(tracking_uri=uri)
            results: dict[str, list[Promotion]] = {md.strategy: [] for md in mds}
            pause = random.Random(args.seed)
            try:
                for i in range(args.promotions):
                    for md in mds:
                        source, target = md.versions[i % 2], md.versions[(i + 1) % 2]
                        r = promote(md, mlflow, source, target, timeouts[md.strategy])
                        results[md.strategy].append(r)
                        print(f"{md.strategy} promotion {i + 1}: {source}→{target} first answer "
                              f"after {r.first_answer:.1f} s, 100 % after "
                              f"{r.marks.get('only_new', float('nan')):.1f} s", flush=True)
                        # A random pause, so the alias moves fall at random points of the
                        # operator's poll cycle (5 s polls on 2 s ticks) instead of in step with it.
                        time.sleep(2 + pause.uniform(0, 6))
            except (TimeoutError, RuntimeError) as stopped:  # report what was measured so far
                print(f"{md.strategy}: {stopped}; no more promotions\n{operators[0].log()}")
            probes = {md.strategy: stop_client(core, namespace, md.probe) for md in mds}
            loads.append(os.getloadavg()[0])
            report(results, probes, loads)
        finally:
            delete_crs(objects, namespace, operators)
            core.delete_namespace(namespace)
            proxy.stop()


if __name__ == "__main__":
    main()
