"""The event stream on the installed system (#15): every answered request is a prediction event in
the record with its request id, labels posted to /feedback are joined to them, and nothing is
lost or duplicated when the broker, a serving pod or the record's consumer is killed mid-traffic.

Runs on the session's release (tests/e2e/release.py), whose Kafka broker and record consumer the
chart installs by default; trains a champion first if no earlier test left one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from devkit import port_forward, wait_for
from e2e.kit import IRIS_COLUMNS, IRIS_ROWS, MODEL, Release, condition
from e2e.test_drift_loop import TRAINING_DAG, champion_version, finish

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

NAME = "iris-events"
CLIENTS = 8
RECORD_WAIT_S = 240  # the record writes every 10 s; a restarted consumer rejoins within ~30 s


@pytest.fixture(scope="module")
def served(release: Release) -> Iterator[str]:
    """The champion, two replicas, every request an event."""
    if champion_version(release) is None:
        with release.airflow() as airflow:
            finish(airflow, TRAINING_DAG, airflow.trigger())
    release.apply_model_deployment(
        NAME, {"model": MODEL, "alias": "champion", "replicas": 2, "inferenceLog": {"sampleRate": 1.0}}
    )
    wait_for(
        f"ModelDeployment {NAME} to be Ready",
        lambda: condition(release.model_deployment(NAME), "Ready").get("status") == "True",
        timeout=600,
        interval=3,
    )
    yield release.model_deployment(NAME)["status"]["servingVersion"]
    release.delete_model_deployment(NAME)


class Traffic:
    """One-row requests with our own request ids, from CLIENTS threads; what was answered 200,
    what failed, and the labels of the rows sent."""

    def __init__(self, tag: str) -> None:
        self.tag = f"e2e-{tag}-{uuid.uuid4().hex[:6]}"
        self.answered: set[str] = set()
        self.failed: dict[str, str] = {}
        self.labels: dict[str, int] = {}
        self._lock = threading.Lock()

    def send(self, url: str, n: int, stop_on_failure: bool = False) -> None:
        """n requests; with stop_on_failure, none after the first that fails (the target is gone)."""
        session = requests.Session()
        stop = threading.Event()

        def one(i: int) -> None:
            if stop.is_set():
                return
            row, label = IRIS_ROWS[i % len(IRIS_ROWS)]
            rid = f"{self.tag}-{i}"
            try:
                resp = session.post(
                    f"{url}/invocations",
                    json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": [row]}},
                    headers={"X-Request-Id": rid},
                    timeout=30,
                )
                ok = resp.status_code == 200 and resp.headers.get("x-request-id") == rid
                problem = "" if ok else f"{resp.status_code} {resp.text[:200]}"
            except requests.RequestException as e:
                ok, problem = False, f"{type(e).__name__}: {e}"
            with self._lock:
                if ok:
                    self.answered.add(rid)
                    self.labels[rid] = label
                else:
                    self.failed[rid] = problem
                    if stop_on_failure:
                        stop.set()

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(one, range(n)))


def recorded(release: Release, version: str, prefix: str) -> Any:
    from mlship.events.reader import read_record

    with release.mlflow_client() as mlflow:
        rec = read_record(mlflow, MODEL, version=version, since=time.time() - 3600)
    rows = rec.rows[rec.rows["request_id"].str.startswith(prefix)]
    return rows, rec


def wait_recorded(release: Release, version: str, traffic: Traffic) -> Any:
    """The record's rows of this traffic, once every answered request is in it."""
    seen: dict[str, Any] = {}

    def complete() -> bool:
        rows, rec = recorded(release, version, traffic.tag)
        seen.update(rows=rows, rec=rec)
        return traffic.answered <= set(rows["request_id"])

    wait_for(
        f"{len(traffic.answered)} answered requests of {traffic.tag} in the record",
        complete,
        timeout=RECORD_WAIT_S,
        interval=10,
    )
    return seen["rows"], seen["rec"]


def stored_prediction_rows(release: Release, version: str, prefix: str, tmp: Path) -> list[str]:
    """The request ids of every prediction row in the record's Parquet files, duplicates included
    (the reader would hide them)."""
    import pyarrow.parquet as pq

    from mlship.events import record

    ids: list[str] = []
    with release.mlflow_client() as mlflow:
        for run in record.find_runs(mlflow, record.EXPERIMENT, MODEL):
            root = record.model_dir(record.PREDICTIONS_DIR, MODEL)
            local = Path(mlflow.download_artifacts(run.info.run_id, root, str(tmp)))
            for path in local.rglob(f"*{record.SUFFIX}"):
                ids += [r for r in pq.read_table(path, columns=["request_id"]).column(0).to_pylist()
                        if r.startswith(prefix)]
    return ids


def during(action: Callable[[], None], after_s: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(after_s), action()), daemon=True)
    thread.start()
    return thread


def test_every_answer_is_an_event_and_posted_labels_are_joined(release: Release, served: str) -> None:
    traffic = Traffic("all")
    started = time.monotonic()
    with release.serving(NAME) as url:
        traffic.send(url, 10_000)
        sent_s = time.monotonic() - started
        assert not traffic.failed, list(traffic.failed.items())[:5]
        labelled = sorted(traffic.answered)[:2000]
        for i in range(0, len(labelled), 500):
            body = [{"request_id": rid, "label": traffic.labels[rid]} for rid in labelled[i:i + 500]]
            resp = requests.post(f"{url}/feedback", json=body, timeout=30)
            assert resp.status_code == 202, resp.text
            assert resp.json() == {"accepted": len(body)}
        # an unknown request id is accepted (another pod may have answered it) and never joined
        resp = requests.post(f"{url}/feedback", json={"request_id": f"{traffic.tag}-unknown", "label": 1},
                             timeout=30)
        assert resp.status_code == 202, resp.text

    rows, _ = wait_recorded(release, served, traffic)
    release.figures["events_10k_requests_seconds"] = round(sent_s, 1)
    release.figures["events_10k_to_recorded_seconds"] = round(time.monotonic() - started, 1)
    assert len(rows) == 10_000 and set(rows["request_id"]) == traffic.answered
    assert set(rows["version"]) == {served}

    def joined() -> bool:
        rows, _ = recorded(release, served, traffic.tag)
        return int(rows["label"].notna().sum()) >= 2000

    wait_for("2,000 labels joined", joined, timeout=RECORD_WAIT_S, interval=10)
    rows, rec = recorded(release, served, traffic.tag)
    with_label = rows[rows["label"].notna()]
    assert set(with_label["request_id"]) == set(labelled)
    assert all(int(r.label) == traffic.labels[r.request_id] for r in with_label.itertuples())
    assert rec.unmatched_labels >= 1


def test_malformed_feedback_is_refused_with_the_reason(release: Release, served: str) -> None:
    with release.serving(NAME) as url:
        resp = requests.post(f"{url}/feedback", data=b"{not json", timeout=30,
                             headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and "not valid JSON" in resp.text, resp.text
        resp = requests.post(f"{url}/feedback", json=[{"request_id": "a", "label": 1},
                                                      {"request_id": "b", "label": [1]}], timeout=30)
        assert resp.status_code == 400 and "item 1" in resp.text and "not a class" in resp.text, resp.text
        resp = requests.post(f"{url}/feedback", json={"label": 1}, timeout=30)
        assert resp.status_code == 400 and "request_id" in resp.text, resp.text


def test_the_broker_killed_mid_traffic_fails_no_request_and_loses_no_event(
    release: Release, served: str
) -> None:
    traffic = Traffic("broker")
    broker = f"{release.name('kafka')}-0"
    with release.serving(NAME) as url:
        killer = during(lambda: release.core.delete_namespaced_pod(broker, release.namespace), 3)
        traffic.send(url, 3000)
        killer.join()
    assert not traffic.failed, list(traffic.failed.items())[:5]
    rows, _ = wait_recorded(release, served, traffic)
    assert len(rows) == 3000


def test_a_serving_pod_deleted_mid_traffic_loses_no_event(release: Release, served: str) -> None:
    """Traffic to one pod until it is deleted: whatever it answered reaches the record (its
    producer flushes on SIGTERM)."""
    traffic = Traffic("pod")
    pod = release.serving_pods(NAME)[0].metadata.name
    gone = threading.Event()

    def delete() -> None:
        release.core.delete_namespaced_pod(pod, release.namespace)
        gone.set()

    with port_forward(release.namespace, f"pod/{pod}", 8080) as url:
        killer = during(delete, 3)
        traffic.send(url, 20_000, stop_on_failure=True)
        killer.join()
    assert gone.is_set() and len(traffic.answered) > 100, (len(traffic.answered), len(traffic.failed))
    release.figures["events_pod_deleted_answered"] = len(traffic.answered)
    rows, _ = wait_recorded(release, served, traffic)
    assert set(rows["request_id"]) >= traffic.answered


def test_the_consumer_killed_and_restarted_duplicates_no_row(
    release: Release, served: str, tmp_path: Path
) -> None:
    traffic = Traffic("consumer")
    [consumer] = release.pods("app.kubernetes.io/component=record")

    def kill() -> None:  # no grace: the batch it held is neither stored nor committed
        release.core.delete_namespaced_pod(consumer.metadata.name, release.namespace,
                                           grace_period_seconds=0)

    with release.serving(NAME) as url:
        killer = during(kill, 5)
        traffic.send(url, 3000)
        killer.join()
    assert not traffic.failed, list(traffic.failed.items())[:5]
    wait_recorded(release, served, traffic)
    stored = stored_prediction_rows(release, served, traffic.tag, tmp_path)
    assert len(stored) == len(set(stored)) == 3000
