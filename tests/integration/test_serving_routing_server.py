"""Canary and shadow routing between two real model servers: a stable one, routing by the route
pushed to /admin/routing, and a candidate serving another registry version of the same model,
both `python -m mlship.serving` on real ports, spoken to over HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mlflow
import mlflow.sklearn
import pytest
import requests
from _serving_process import Server
from devkit import free_port, wait_for
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlship.traffic import FORWARDED_HEADER, HANDLING_HEADER, ROUTING_PATH, Report, parse_report

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "routing-token-for-the-tests-0123"  # noqa: S105 - a test's own
X, Y = load_iris(return_X_y=True, as_frame=True)
ROWS = X.iloc[[0, 60, 120]].to_dict(orient="split")
BODY = {"dataframe_split": {"columns": ROWS["columns"], "data": ROWS["data"]}}


@dataclass
class Pair:
    stable: Server
    candidate: Server
    stable_version: str
    candidate_version: str
    expected: list[int]


@pytest.fixture(scope="module")
def pair(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two versions of one fitted pipeline (so every answer agrees), each served by its own
    server; only the stable one has the routing token."""
    model = f"iris-routing-{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline([("scale", StandardScaler()), ("rf", RandomForestClassifier(10, random_state=0))])
    pipeline.fit(X, Y)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run():
            logged = mlflow.sklearn.log_model(
                pipeline, name="model", input_example=X.head(2),
                skops_trusted_types=["sklearn.tree._tree.Tree"],
                pip_requirements=["scikit-learn"],  # no inference of the environment: seconds
            )  # fmt: skip
        v1, v2 = (mlflow.register_model(logged.model_uri, model).version for _ in range(2))
    finally:
        mlflow.set_tracking_uri(previous)
    logs = tmp_path_factory.mktemp("routing")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLSHIP_MODEL_NAME": model}
    stable = Server(
        {**env, "MLSHIP_MODEL_VERSION": str(v1), "MLSHIP_ROUTING_TOKEN": TOKEN}, logs / "stable.log"
    )
    candidate = Server({**env, "MLSHIP_MODEL_VERSION": str(v2)}, logs / "candidate.log")
    try:
        stable.wait_ready()
        candidate.wait_ready()
        expected = pipeline.predict(X.iloc[[0, 60, 120]]).tolist()
        yield Pair(stable, candidate, str(v1), str(v2), expected)
    finally:
        stable.stop()
        candidate.stop()


class _CatchAll(BaseHTTPRequestHandler):
    """What an address with no backend may be answered by on these machines: some other HTTP
    server, which refuses everything."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"404 page not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def catch_all() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CatchAll)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _admin(
    server: Server, method: str = "GET", body: object = None, token: str | None = TOKEN
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, server.url + ROUTING_PATH, json=body, headers=headers, timeout=10)


def _push(pair: Pair, share: float, mode: str, candidate: str | None = None) -> str:
    rollout = f"{pair.candidate_version}/{uuid.uuid4().hex[:8]}"  # a new id: new counts
    route = {
        "rollout": rollout, "candidate": candidate or pair.candidate.url,
        "version": pair.candidate_version, "share": share, "mode": mode,
    }  # fmt: skip
    answer = _admin(pair.stable, "PUT", route)
    assert answer.status_code == 200, answer.text
    report = parse_report(answer.json())
    assert (report.rollout, report.share, report.mode) == (rollout, share, mode)
    assert report.stable.requests == report.candidate.requests == 0
    return rollout


def _report(pair: Pair) -> Report:
    answer = _admin(pair.stable)
    assert answer.status_code == 200, answer.text
    return parse_report(answer.json())


def _send(pair: Pair, n: int, clients: int = 8) -> list[requests.Response]:
    local = threading.local()

    def one(i: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(
            pair.stable.url + "/invocations", json=BODY, headers={"X-Request-Id": f"req-{i}"}, timeout=30
        )

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(autouse=True)
def _stop_routing(pair: Pair) -> Iterator[None]:
    yield
    _admin(pair.stable, "PUT", {"rollout": None})


# --- the admin endpoint -----------------------------------------------------------------------


def test_the_admin_endpoint_wants_the_routing_token(pair: Pair) -> None:
    missing = _admin(pair.stable, token=None)
    assert missing.status_code == 401
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert "MLSHIP_ROUTING_TOKEN" in missing.json()["message"]
    assert _admin(pair.stable, token=TOKEN + "x").status_code == 401
    assert _admin(pair.stable, "PUT", {"rollout": None}, token="not-the-token").status_code == 401  # noqa: S106
    # Without a token configured, there is no such endpoint.
    assert _admin(pair.candidate).status_code == 404
    report = _report(pair)
    assert (report.rollout, report.share, report.mode) == (None, 0.0, None)


def test_a_bad_push_is_refused_and_the_route_stays(pair: Pair) -> None:
    rollout = _push(pair, 0.0, "canary")
    bad = requests.put(
        pair.stable.url + ROUTING_PATH, data=b"{not json", timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert bad.status_code == 400 and bad.json()["message"].startswith("the body is not JSON")
    for route, message in [
        ({"rollout": "x", "candidate": "iris-canary", "version": "2", "share": 0.5, "mode": "canary"},
         "candidate='iris-canary' is not an http(s) URL"),
        ({"rollout": "x", "candidate": pair.candidate.url, "version": "2", "share": 2, "mode": "canary"},
         "share=2.0 is outside [0, 1]"),
    ]:  # fmt: skip
        answer = _admin(pair.stable, "PUT", route)
        assert answer.status_code == 400
        assert answer.json()["error_code"] == "BAD_REQUEST"
        assert answer.json()["message"].startswith(f"route: {message}")
    report = _report(pair)
    assert (report.rollout, report.share, report.mode) == (rollout, 0.0, "canary")


# --- canary -----------------------------------------------------------------------------------


def test_a_canary_share_of_requests_is_answered_by_the_candidate(pair: Pair) -> None:
    _push(pair, 0.3, "canary")
    sent = 400
    answers = _send(pair, sent)
    assert [a.status_code for a in answers] == [200] * sent
    assert all(a.json() == {"predictions": pair.expected} for a in answers)
    assert [a.headers["x-request-id"] for a in answers] == [f"req-{i}" for i in range(sent)]
    versions = [a.headers["x-model-version"] for a in answers]
    assert set(versions) == {pair.stable_version, pair.candidate_version}
    by_candidate = versions.count(pair.candidate_version)
    assert abs(by_candidate / sent - 0.3) <= 0.08, by_candidate  # 3.5 standard deviations
    report = _report(pair)
    assert report.stable.requests + report.candidate.requests == sent
    assert report.candidate.requests == by_candidate
    assert report.stable.errors == report.candidate.errors == 0
    assert report.candidate.compared == 3 * by_candidate  # three rows a request
    assert report.candidate.agreement == 1.0
    assert report.stable.quantile_ms(0.99) is not None and report.candidate.quantile_ms(0.99) is not None


def test_a_push_with_the_same_rollout_keeps_the_counts(pair: Pair) -> None:
    rollout = _push(pair, 1.0, "canary")
    _send(pair, 20)
    route = {"rollout": rollout, "candidate": pair.candidate.url, "version": pair.candidate_version,
             "share": 0.0, "mode": "canary"}  # fmt: skip
    paused = parse_report(_admin(pair.stable, "PUT", route).json())
    assert (paused.share, paused.candidate.requests, paused.stable.requests) == (0.0, 20, 0)
    answers = _send(pair, 10)
    assert {a.headers["x-model-version"] for a in answers} == {pair.stable_version}
    report = _report(pair)
    assert (report.candidate.requests, report.stable.requests) == (20, 10)  # still counted
    stopped = parse_report(_admin(pair.stable, "PUT", {"rollout": None}).json())
    assert (stopped.rollout, stopped.stable.requests, stopped.candidate.requests) == (None, 0, 0)


def test_a_candidate_url_answered_by_another_server_fails_no_request(pair: Pair, catch_all: str) -> None:
    _push(pair, 1.0, "canary", candidate=catch_all)
    answers = _send(pair, 50)
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.headers["x-model-version"] for a in answers} == {pair.stable_version}
    report = _report(pair)
    assert (report.candidate.requests, report.candidate.errors) == (50, 50)
    assert report.stable.requests == 0 and report.candidate.compared == 0


def test_a_candidate_url_with_nothing_behind_it_fails_no_request(pair: Pair) -> None:
    _push(pair, 1.0, "canary", candidate=f"http://127.0.0.1:{free_port()}")  # nothing listens
    answers = _send(pair, 20)
    assert [a.status_code for a in answers] == [200] * 20
    report = _report(pair)
    assert (report.candidate.requests, report.candidate.errors) == (20, 20)


def test_a_route_back_to_the_stable_server_does_not_loop(pair: Pair) -> None:
    # Its answers are not the candidate version's: each request is answered once, here.
    _push(pair, 1.0, "canary", candidate=pair.stable.url)
    answers = _send(pair, 20)
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.headers["x-model-version"] for a in answers} == {pair.stable_version}
    report = _report(pair)
    assert (report.candidate.requests, report.candidate.errors, report.stable.requests) == (20, 20, 0)


def test_bad_input_gets_the_stable_servers_answer_and_is_no_candidate_error(pair: Pair) -> None:
    _push(pair, 1.0, "canary")
    bad_column = requests.post(
        pair.stable.url + "/invocations", json={"dataframe_split": {"columns": ["nope"], "data": [[1]]}},
        timeout=10,
    )
    not_json = requests.post(pair.stable.url + "/invocations", data=b"{", timeout=10,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert (bad_column.status_code, not_json.status_code) == (400, 400)
    assert bad_column.headers["x-model-version"] == pair.stable_version
    report = _report(pair)
    assert report.stable.errors == report.candidate.errors == 0
    assert report.stable.requests + report.candidate.requests == 2


# --- shadow -----------------------------------------------------------------------------------


def test_shadow_copies_go_to_the_candidate_and_clients_see_only_the_stable(pair: Pair) -> None:
    _push(pair, 1.0, "shadow")
    sent = 100
    answers = _send(pair, sent)
    assert [a.status_code for a in answers] == [200] * sent
    assert {a.headers["x-model-version"] for a in answers} == {pair.stable_version}
    report = wait_for(
        "every shadow copy counted",
        lambda: (r := _report(pair)).candidate.requests == sent and r,
        timeout=30, interval=0.05,
    )
    assert report.stable.requests == sent and report.stable.errors == 0
    assert report.candidate.errors == 0 and report.candidate.agreement == 1.0
    assert report.candidate.compared == 3 * sent
    assert f"routing: rollout {report.rollout}, shadow of 100% of /invocations" in pair.stable.log()


def test_the_logs_do_not_show_the_token(pair: Pair) -> None:
    assert TOKEN not in pair.stable.log() and TOKEN not in pair.candidate.log()


def test_a_forwarded_request_is_answered_with_the_candidates_own_handling_time(pair: Pair) -> None:
    url = pair.candidate.url + "/invocations"
    forwarded = requests.post(url, json=BODY, headers={FORWARDED_HEADER: "2/0"}, timeout=30)
    plain = requests.post(url, json=BODY, timeout=30)
    assert forwarded.status_code == plain.status_code == 200
    assert 0 < float(forwarded.headers[HANDLING_HEADER]) < 30_000
    assert HANDLING_HEADER not in plain.headers  # a client's request pays nothing for it
