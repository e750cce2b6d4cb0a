"""Canary and shadow rollouts on the real cluster (#16): the stable pods send each step's share of
requests (or a copy of it) to the candidate, the operator judges the candidate on what they
counted, and promotes it or aborts.

One stable and one candidate pod; a client on the host keeps calling the model's Service (by its
cluster IP) and notes which version answered each request (X-Model-Version) and how long it took.
Canary: a good version goes through both steps, with the operator killed and restarted in the
second, and is promoted; a version trained on shuffled labels is aborted at the first step by the
agreement analysis. Shadow: a version that answers as the stable one but 0.5 s later is aborted on
latency, and clients never wait for it; a good version is then held by the paused annotation
past its step's time, and promoted once it is removed. None of it costs a client a failed
request. Harness: tests/cluster/operator_harness.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import requests
from devkit import WaitTimeout, wait_for
from mlflow import MlflowClient
from operator_harness import (
    GROUP,
    PLURAL,
    SERVING_IMAGE,
    VERSION,
    condition,
    create_cr,
    get_cr,
    register_forests,
    register_slow_forest,
)
from slow_forest import DELAY_S

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

NAME = "iris"
FIRST_STEP = {"weight": 10, "durationSeconds": 20, "minRequests": 120}
SECOND_STEP = {"weight": 50, "durationSeconds": 10, "minRequests": 100}
CANARY = {"strategy": "Canary", "steps": [FIRST_STEP, SECOND_STEP]}
SHADOW = {"strategy": "Shadow", "shadow": {"weight": 50, "durationSeconds": 15, "minRequests": 100}}
CLIENTS = 4


class Client:
    """CLIENTS threads posting iris rows (all 150, in turn) to `url`; each answer's time, status
    and X-Model-Version."""

    def __init__(self, url: str) -> None:
        from sklearn.datasets import load_iris

        x = load_iris(as_frame=True).data
        self.bodies = [{"dataframe_split": {"columns": list(x.columns), "data": [row]}}
                       for row in x.to_numpy().tolist()]
        self.url = f"{url}/invocations"
        self.answers: list[tuple[float, int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(i,)) for i in range(CLIENTS)]
        for t in self._threads:
            t.start()

    def _work(self, offset: int) -> None:
        session, i = requests.Session(), offset
        while not self._stop.is_set():
            i += CLIENTS
            try:
                sent = time.monotonic()
                # a new connection per request, as the other rollout tests' clients: a kept-alive
                # one to a stable pod being replaced can be reset by its shutdown (noted on #16)
                resp = session.post(self.url, json=self.bodies[i % len(self.bodies)], timeout=30,
                                    headers={"Connection": "close"})
                self.answers.append((time.monotonic(), time.monotonic() - sent, resp.status_code,
                                     resp.headers.get("x-model-version", "")))
                if resp.status_code != 200:
                    self.failures.append(f"{resp.status_code} {resp.text[:200]}")
            except requests.RequestException as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                session = requests.Session()

    def share(self, version: str, start: float, end: float) -> tuple[float, int]:
        answered = [v for t, _, status, v in self.answers if start <= t <= end and status == 200]
        return (sum(v == version for v in answered) / len(answered) if answered else 0.0,
                len(answered))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def event_messages(core: Any, namespace: str, reason: str) -> list[str]:
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={NAME}")
    return [e.message for e in events.items if e.reason == reason]


def annotate(objects: Any, namespace: str, annotations: dict[str, str | None]) -> None:
    objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME,
                                           {"metadata": {"annotations": annotations}})


def aborted(objects: Any, namespace: str, version: str) -> dict[str, Any] | None:
    """The CR once `version` failed (status.lastFailure names it), else None."""
    got = get_cr(objects, namespace, NAME)
    failure = got["status"].get("lastFailure") or {}
    return got if failure.get("version") == version else None


def rollout(cr: dict[str, Any]) -> dict[str, Any]:
    return (cr.get("status") or {}).get("rollout") or {}


@pytest.fixture
def staged_cr(request, operator, objects, core, apps, namespace, mlflow_server, serving_mlflow):
    """A ModelDeployment with the rollout request.param, serving the first of two good forests
    and a client calling it; versions "shuffled" (canary) or "slow" (shadow) are registered too."""
    rollout_spec = request.param
    model, (good, better, *bad) = register_forests(
        mlflow_server, 3 if rollout_spec is CANARY else 2, "op-staged", shuffled=frozenset({2}))
    versions = {"good": good, "better": better}
    if rollout_spec is CANARY:
        versions["shuffled"] = bad[0]
    else:
        versions["slow"] = register_slow_forest(mlflow_server, model)
    env = {"MLSHIP_SERVING_TRACKING_URI": serving_mlflow, "MLSHIP_SERVING_IMAGE": SERVING_IMAGE,
           "MLSHIP_ROUTING_KEY": uuid.uuid4().hex}
    ops = [operator(**env)]
    create_cr(objects, namespace, NAME, {"model": model, "rollout": rollout_spec})
    wait_for(f"version {good} Ready\n{ops[0].log()}", lambda: serving(objects, namespace, good),
             240, 2)
    service = core.read_namespaced_service(NAME, namespace)
    client = Client(f"http://{service.spec.cluster_ip}")
    yield {"model": model, **versions, "client": client,
           "ops": ops, "env": env, "start": lambda: ops.append(operator(**env))}
    client.stop()


def serving(objects: Any, namespace: str, version: str) -> dict[str, Any] | None:
    got = get_cr(objects, namespace, NAME)
    ready = condition(got, "Ready").get("status") == "True"
    done = ready and got["status"].get("servingVersion") == version and not rollout(got)
    return got if done else None


def waiter(c: dict[str, Any], objects: Any, namespace: str) -> Any:
    def wait(what: str, check: Any, timeout: float, interval: float = 1) -> Any:
        """wait_for, saying on a timeout where the rollout stood and what the operator logged."""
        try:
            return wait_for(what, check, timeout, interval)
        except WaitTimeout:
            status = get_cr(objects, namespace, NAME).get("status")
            pytest.fail(f"{what}: timed out; status {status}\n{c['ops'][-1].log()}")
    return wait


@pytest.mark.parametrize("staged_cr", [CANARY], indirect=True, ids=["canary"])
def test_a_good_canary_is_promoted_step_by_step_and_a_bad_one_aborted(
    staged_cr, objects, core, apps, namespace, mlflow_server
) -> None:
    c = staged_cr
    client, mlflow = c["client"], MlflowClient(tracking_uri=mlflow_server)
    wait = waiter(c, objects, namespace)

    def at_step(step: int) -> dict[str, Any] | None:
        got = get_cr(objects, namespace, NAME)
        r = rollout(got)
        return got if r.get("phase") == "Analysing" and r.get("step") == step else None

    # A good version: 10 %, then 50 % (the operator killed and restarted there), then promoted.
    moved = time.monotonic()
    mlflow.set_registered_model_alias(c["model"], "champion", c["better"])
    wait("step 1", lambda: at_step(0), 180, 0.5)
    first = time.monotonic()
    wait("step 2", lambda: at_step(1), 180, 0.5)
    second = time.monotonic()
    share, n = client.share(c["better"], first + 3, second - 1)  # a tick to reach the pods
    c["ops"][-1].stop()
    time.sleep(4)  # the pods keep routing 50 % while no operator runs
    c["start"]()
    got = wait(f"version {c['better']} promoted", lambda: serving(objects, namespace, c["better"]), 240)
    promoted = time.monotonic() - moved
    assert not apps.list_namespaced_deployment(
        namespace, label_selector=f"app.kubernetes.io/instance={NAME}-canary").items
    assert len(event_messages(core, namespace, "CanaryStep")) == 2  # step 2 was not started again
    assert event_messages(core, namespace, "CanaryPromoted")
    print(f"canary share at the 10 % step: {share:.1%} of {n} requests; alias moved → "
          f"promoted in {promoted:.0f} s")
    assert n >= 1000 and abs(share - 0.10) <= 0.03, (share, n)
    assert condition(got, "Degraded").get("status") == "False"

    # A version that loads but answers wrong: aborted at the first step, stable throughout.
    aborted_at = len(client.answers)
    mlflow.set_registered_model_alias(c["model"], "champion", c["shuffled"])

    got = wait(f"version {c['shuffled']} aborted", lambda: aborted(objects, namespace, c["shuffled"]),
               180)
    degraded = condition(got, "Degraded")
    assert degraded.get("status") == "True" and "agreement" in degraded["message"], degraded
    assert "at step 1" in got["status"]["lastFailure"]["message"]
    assert got["status"]["servingVersion"] == c["better"]
    time.sleep(8)  # several registry polls: no second try of the same version
    got = get_cr(objects, namespace, NAME)
    assert not rollout(got) and len(event_messages(core, namespace, "CanaryAborted")) == 1
    assert not apps.list_namespaced_deployment(
        namespace, label_selector=f"app.kubernetes.io/instance={NAME}-canary").items
    tail = [v for *_, v in client.answers[aborted_at:][-200:]]
    assert set(tail) == {c["better"]}, set(tail)
    print(f"shuffled-label version aborted: {degraded['message']}")

    client.stop()
    assert client.failures == [], client.failures[:10]
    print(f"client: {len(client.answers)} requests, 0 failed")


@pytest.mark.parametrize("staged_cr", [SHADOW], indirect=True, ids=["shadow"])
def test_a_slow_shadow_is_aborted_on_latency_unseen_and_a_good_one_promoted(
    staged_cr, objects, core, apps, namespace, mlflow_server
) -> None:
    c = staged_cr
    client, mlflow = c["client"], MlflowClient(tracking_uri=mlflow_server)
    wait = waiter(c, objects, namespace)

    def shadowing() -> bool:
        r = rollout(get_cr(objects, namespace, NAME))
        return r.get("phase") == "Analysing" and r.get("mode") == "Shadow"

    # A version as right as the stable one but 0.5 s slower: aborted on its p99, unseen.
    mlflow.set_registered_model_alias(c["model"], "champion", c["slow"])
    wait("the slow version's shadow step", shadowing, 180, 0.5)
    started = time.monotonic()
    got = wait(f"version {c['slow']} aborted", lambda: aborted(objects, namespace, c["slow"]), 120,
               0.5)
    ended = time.monotonic()
    degraded = condition(got, "Degraded")
    assert degraded.get("status") == "True" and "p99 latency" in degraded["message"], degraded
    assert "shadow of version" in degraded["message"] and "at step 1" in degraded["message"]
    assert got["status"]["servingVersion"] == c["good"]
    assert event_messages(core, namespace, "ShadowAborted")
    seen = sorted(s for t, s, status, v in client.answers if started <= t <= ended)
    versions = {v for t, _, _, v in client.answers if started <= t <= ended}
    p99 = seen[int(0.99 * (len(seen) - 1))]
    print(f"slow shadow aborted in {ended - started:.1f} s of shadowing: {degraded['message']};"
          f" clients' p99 meanwhile {p99 * 1000:.0f} ms over {len(seen)} requests")
    assert versions == {c["good"]} and len(seen) >= 100, (versions, len(seen))
    assert p99 < DELAY_S / 2, p99  # the clients never waited for the shadow

    # A good version, shadowed while paused by hand: held past its step's time; then promoted.
    annotate(objects, namespace, {"mlship.io/paused": "true"})
    mlflow.set_registered_model_alias(c["model"], "champion", c["better"])
    wait("the good version's shadow step", shadowing, 180, 0.5)

    def judged_and_held() -> dict[str, Any] | None:
        r = rollout(get_cr(objects, namespace, NAME))
        return r if r.get("requests", 0) >= 100 and "paused" in r.get("message", "") else None

    held = wait("the step judged, and held", judged_and_held, 60, 0.5)
    time.sleep(SHADOW["shadow"]["durationSeconds"] + 4)
    r = rollout(get_cr(objects, namespace, NAME))
    assert (r.get("phase"), r.get("step")) == ("Analysing", 0), r
    annotate(objects, namespace, {"mlship.io/paused": None})
    got = wait(f"version {c['better']} promoted",
               lambda: serving(objects, namespace, c["better"]), 240)
    print(f"paused shadow held: {held['message']}")
    assert event_messages(core, namespace, "ShadowPromoted")
    assert condition(got, "Degraded").get("status") == "False"
    assert not apps.list_namespaced_deployment(
        namespace, label_selector=f"app.kubernetes.io/instance={NAME}-canary").items

    client.stop()
    assert client.failures == [], client.failures[:10]
    print(f"client: {len(client.answers)} requests, 0 failed")
